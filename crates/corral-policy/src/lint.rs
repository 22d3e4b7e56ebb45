//! Warnings about things a policy author likely did not mean. Every warning
//! names the policy and points at the literal or clause concerned.

use crate::analyze::{is_canonical_dir, is_canonical_file, Facts};
use crate::diag::{Diagnostic, Severity};
use crate::load::PolicyDoc;
use serde_json::Value;

pub(crate) fn lint(doc: &PolicyDoc) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, info) in doc.policies.iter().enumerate() {
        let Some(policy) = doc.policy(i) else { continue };
        let facts = Facts::of(policy);
        // Something that can never match voids a forbid's protection (an
        // error) but only narrows a permit (fail-closed: a warning).
        let sev = if info.is_forbid() { Severity::Error } else { Severity::Warning };
        let at = |needle: &str, d: Diagnostic| -> Diagnostic {
            let off = info.text.find(needle).unwrap_or(0);
            let len = if info.text.contains(needle) { needle.len() } else { 1 };
            match doc.source_of(info) {
                Some(src) => d.at(src, info.start + off, len).policy(info.id.clone()),
                None => d.policy(info.id.clone()),
            }
        };

        if facts.actions.is_empty() {
            let est = policy.to_json().ok();
            let names_fileopen = est
                .as_ref()
                .and_then(|e| e.get("action"))
                .and_then(|a| a.get("entity"))
                .and_then(|e| e.get("id"))
                .and_then(Value::as_str)
                == Some("FileOpen");
            // Unknown actions are validation errors already.
            if names_fileopen {
                out.push(at(
                    "action",
                    Diagnostic::new(
                        sev,
                        "never-applies",
                        "`action == Action::\"FileOpen\"` never matches: file opens are requested as `FileOpenReadOnly` or `FileOpenReadWrite`",
                    )
                    .help("write `action in Action::\"FileOpen\"` to cover both"),
                ));
            }
        }

        for id in facts.entities_of("Dir") {
            let lit = format!("Dir::\"{id}\"");
            if !id.starts_with('/') {
                out.push(at(&lit, Diagnostic::new(sev,
                    "relative-path",
                    format!("`{lit}` is not an absolute path and can never match"),
                ).help("paths in requests are absolute: write `Dir::\"/...\"`")));
            } else if !id.ends_with('/') {
                out.push(at(&lit, Diagnostic::new(sev,
                    "dir-without-slash",
                    format!("`{lit}` has no trailing slash: requests place paths in `Dir::\"{id}/\"`, so this directory contains nothing"),
                ).help(format!("write `Dir::\"{id}/\"`"))));
            } else if !is_canonical_dir(id) {
                out.push(at(&lit, Diagnostic::new(sev,
                    "non-canonical-path",
                    format!("`{lit}` is not canonical (`//`, `.` or `..`) and can never match"),
                )));
            }
        }
        for id in facts.entities_of("File") {
            let lit = format!("File::\"{id}\"");
            if !id.starts_with('/') {
                out.push(at(&lit, Diagnostic::new(sev,
                    "relative-path",
                    format!("`{lit}` is not an absolute path and can never match"),
                )));
            } else if id.ends_with('/') {
                out.push(at(&lit, Diagnostic::new(sev,
                    "file-with-slash",
                    format!("`{lit}` ends with `/`: a file is never named so"),
                ).help(format!("for a directory and its contents write `Dir::\"{id}\"`"))));
            } else if !is_canonical_file(id) {
                out.push(at(&lit, Diagnostic::new(sev,
                    "non-canonical-path",
                    format!("`{lit}` is not canonical (`//`, `.` or `..`) and can never match"),
                )));
            }
        }

        // `resource == Host::"h:p"` / `Host::"*..."`: those are groups, never a request's resource.
        if let Some(res) = policy.to_json().ok().and_then(|e| e.get("resource").cloned()) {
            if res.get("op").and_then(Value::as_str) == Some("==") {
                if let Some(id) = res
                    .get("entity")
                    .filter(|e| e.get("type").and_then(Value::as_str) == Some("Host"))
                    .and_then(|e| e.get("id"))
                    .and_then(Value::as_str)
                {
                    let is_group = id.starts_with('*') || (id.contains(':') && id.parse::<std::net::IpAddr>().is_err());
                    if is_group {
                        out.push(at(&format!("Host::\"{id}\""), Diagnostic::new(sev,
                            "never-applies",
                            format!("`resource == Host::\"{id}\"` never matches: the request's resource is the bare host, which is *in* `Host::\"{id}\"`"),
                        ).help(format!("write `resource in Host::\"{id}\"`"))));
                    }
                }
            }
        }
    }
    out
}
