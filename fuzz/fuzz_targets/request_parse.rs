//! `explain::parse_request` on arbitrary fields, then the Cedar request it
//! builds, decided against the default policy.
//!
//! Input: lossy UTF-8, split on `\n`: principal, action, resource, then one
//! `key=value` context entry per line. Errors are fine; panics are not.
#![no_main]

use corral_policy::explain::parse_request;
use corral_policy::{check, default_policy, Evaluator, Source};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn evaluator() -> &'static Evaluator {
    static EV: OnceLock<Evaluator> = OnceLock::new();
    EV.get_or_init(|| {
        let text = default_policy::render("/work/project", "/home/agent")
            .unwrap_or_else(|e| panic!("default policy does not render: {e}"));
        let checked = check(vec![Source::new("default.cedar", text)]);
        let doc = checked
            .doc
            .unwrap_or_else(|| panic!("default policy does not load: {:?}", checked.diagnostics));
        Evaluator::new(&doc)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let principal = lines.next().unwrap_or("");
    let action = lines.next().unwrap_or("");
    let resource = lines.next().unwrap_or("");
    let context: Vec<String> = lines.take(16).map(str::to_string).collect();
    let Ok(req) = parse_request(principal, action, resource, &context) else {
        return;
    };
    let _ = req.action();
    let _ = req.principal();
    let _ = req.resource_uid();
    if req.to_cedar().is_ok() {
        let _ = evaluator().decide(&req);
    }
});
