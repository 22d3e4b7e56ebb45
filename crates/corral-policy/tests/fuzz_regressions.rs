//! Inputs the fuzzer once crashed on (fuzz/regressions/<target>/*): the
//! pipeline must now answer them with diagnostics or a plan, not a panic.

// Test code: a panic is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use corral_policy::{check, Source};
use std::path::PathBuf;

#[test]
fn fuzz_regressions_do_not_panic() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/policy_pipeline");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("regressions directory exists") {
        let path = entry.expect("dir entry").path();
        let bytes = std::fs::read(&path).expect("read regression input");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let name = path.display().to_string();
        let checked = check(vec![Source::new(name.clone(), text)]);
        // An answer, not a crash: a plan, or diagnostics that say where.
        assert!(
            checked.plan.is_some() || checked.diagnostics.iter().any(|d| d.is_error()),
            "{name}: neither a plan nor an error"
        );
        for d in &checked.diagnostics {
            if d.line.is_some() {
                assert!(d.render().starts_with(&format!("{name}:")), "{}", d.render());
            }
        }
        n += 1;
    }
    assert!(n > 0, "no regression inputs found in {}", dir.display());
}
