//! Warnings about things a policy author likely did not mean. Every warning
//! names the policy and points at the literal or clause concerned.

use crate::analyze::{is_canonical_dir, is_canonical_file};
use crate::diag::{Diagnostic, Severity};
use crate::load::PolicyDoc;
use serde_json::Value;

pub(crate) fn lint(doc: &PolicyDoc) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, info) in doc.policies.iter().enumerate() {
        let Some(policy) = doc.policy(i) else { continue };
        let Some(facts) = doc.facts(i) else { continue };
        // Something that can never match voids a forbid's protection (an
        // error) but only narrows a permit (fail-closed: a warning).
        let sev = if info.is_forbid() {
            Severity::Error
        } else {
            Severity::Warning
        };
        let at = |needle: &str, d: Diagnostic| -> Diagnostic {
            let off = info
                .text
                .find(needle)
                .unwrap_or_else(|| crate::source::effect_offset(&info.text));
            let len = if info.text.contains(needle) {
                needle.len()
            } else {
                1
            };
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

        for ty in ["Dir", "File"] {
            for id in facts.entities_of(ty) {
                if let Some((code, msg, help)) = path_literal_problem(ty, id) {
                    let lit = format!("{ty}::\"{id}\"");
                    let mut d = Diagnostic::new(sev, code, msg);
                    if let Some(h) = help {
                        d = d.help(h);
                    }
                    out.push(at(&lit, d));
                }
            }
        }
        for id in facts.entities_of("Host") {
            if let Err((why, help)) = host_form(id) {
                let lit = format!("Host::\"{id}\"");
                out.push(at(
                    &lit,
                    Diagnostic::new(
                        sev,
                        "host-never-matches",
                        format!("`{lit}` can never match: {why}"),
                    )
                    .help(help),
                ));
            }
        }
        for ip in &facts.ips {
            let mapped = ip
                .split('/')
                .next()
                .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
                .is_some_and(|a| a.to_ipv4_mapped().is_some());
            if mapped {
                out.push(at(
                    &format!("ip(\"{ip}\")"),
                    Diagnostic::new(
                        sev,
                        "ip-never-matches",
                        format!("`ip(\"{ip}\")` is an IPv4-mapped IPv6 address; requests present such addresses as IPv4, so it never matches"),
                    )
                    .help("write the IPv4 address or range instead"),
                ));
            }
        }
        // `resource == Host::"h:p"` / `Host::"*..."` (in the scope or a condition):
        // those are groups, never a request's resource.
        if let Ok(est) = policy.to_json() {
            let mut groups = Vec::new();
            resource_eq_hosts(&est, &mut groups);
            for id in groups {
                let is_group =
                    id.starts_with('*') || (id.contains(':') && id.parse::<std::net::IpAddr>().is_err());
                if is_group {
                    out.push(at(
                        &format!("Host::\"{id}\""),
                        Diagnostic::new(
                            sev,
                            "never-applies",
                            format!("`resource == Host::\"{id}\"` never matches: the request's resource is the bare host, which is *in* `Host::\"{id}\"`"),
                        )
                        .help(format!("write `resource in Host::\"{id}\"`")),
                    ));
                }
            }
        }
    }
    out
}

/// Why a `Dir`/`File` literal can never match a request, if it cannot:
/// `(code, message, help)`.
fn path_literal_problem(ty: &str, id: &str) -> Option<(&'static str, String, Option<String>)> {
    let lit = format!("{ty}::\"{id}\"");
    if !id.starts_with('/') {
        return Some((
            "relative-path",
            format!("`{lit}` is not an absolute path and can never match"),
            Some(format!("paths in requests are absolute: write `{ty}::\"/...\"`")),
        ));
    }
    let is_dir = ty == "Dir";
    if is_dir && !id.ends_with('/') {
        return Some((
            "dir-without-slash",
            format!("`{lit}` has no trailing slash: requests place paths in `Dir::\"{id}/\"`, so this directory contains nothing"),
            Some(format!("write `Dir::\"{id}/\"`")),
        ));
    }
    if !is_dir && id.ends_with('/') {
        return Some((
            "file-with-slash",
            format!("`{lit}` ends with `/`: a file is never named so"),
            Some(format!("for a directory and its contents write `Dir::\"{id}\"`")),
        ));
    }
    let canonical = if is_dir {
        is_canonical_dir(id)
    } else {
        is_canonical_file(id)
    };
    (!canonical).then(|| {
        (
            "non-canonical-path",
            format!("`{lit}` is not canonical (`//`, `.` or `..`) and can never match"),
            None,
        )
    })
}

/// Host ids of `resource == Host::"..."` comparisons anywhere in a policy.
fn resource_eq_hosts(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            // Scope form: {"op": "==", "entity": {...}} under "resource".
            if let Some(res) = map.get("resource") {
                if res.get("op").and_then(Value::as_str) == Some("==") {
                    if let Some(id) = host_id(res.get("entity")) {
                        out.push(id);
                    }
                }
            }
            if let Some(eq) = map.get("==") {
                let (l, r) = (eq.get("left"), eq.get("right"));
                for (a, b) in [(l, r), (r, l)] {
                    let is_res = a.and_then(|a| a.get("Var")).and_then(Value::as_str) == Some("resource");
                    if let (true, Some(id)) = (
                        is_res,
                        host_id(b.and_then(|b| b.get("Value")).and_then(|v| v.get("__entity"))),
                    ) {
                        out.push(id);
                    }
                }
            }
            map.values().for_each(|x| resource_eq_hosts(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| resource_eq_hosts(x, out)),
        _ => {}
    }
}

fn host_id(e: Option<&Value>) -> Option<String> {
    let e = e?;
    (e.get("type").and_then(Value::as_str) == Some("Host")).then_some(())?;
    e.get("id").and_then(Value::as_str).map(str::to_string)
}

/// Checks that a `Host` literal is one of the forms requests use:
/// a lower-case name or canonical address, optionally `:port` (`[v6]:port`),
/// `*`, `*:port`, `*.zone`, `*.zone:port`. Returns why not, and a fix.
pub(crate) fn host_form(id: &str) -> Result<(), (String, String)> {
    use crate::request::{ip_text, normalize_host};
    use std::net::IpAddr;
    let bad = |why: &str, help: String| Err((why.to_string(), help));
    if id.contains('/') {
        return bad(
            "host groups are names, addresses and wildcards, not CIDR ranges",
            format!("write `context.ip.isInRange(ip(\"{id}\"))`"),
        );
    }
    // Split an optional port.
    let (host, port) = if let Some(rest) = id.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((h, p)) => (h, Some(p)),
            None => {
                return bad(
                    "a bracketed IPv6 address must be followed by `:port`",
                    format!("write `Host::\"{}\"`", rest.trim_end_matches(']')),
                )
            }
        }
    } else if id.parse::<IpAddr>().is_ok() {
        (id, None)
    } else {
        match id.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (id, None),
        }
    };
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return bad(
                "the port is not a number from 0 to 65535",
                "write `Host::\"name:443\"`".into(),
            );
        }
        if host.contains(':') && !id.starts_with('[') {
            return bad(
                "an IPv6 address with a port is written in brackets",
                format!("write `Host::\"[{host}]:{p}\"`"),
            );
        }
    }
    if host == "*" {
        return Ok(());
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.contains('*') {
        return bad(
            "a wildcard is `*` alone or a leading `*.` before a DNS zone",
            "write `Host::\"*.example.com\"` (which matches every name below example.com, not example.com itself)".into(),
        );
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        if host.starts_with("*.") {
            return bad(
                "an address has no DNS zone to wildcard",
                format!("write `Host::\"{name}\"`"),
            );
        }
        let canon = ip_text(ip);
        if canon != name {
            return bad(
                "requests name addresses in canonical form (IPv4-mapped IPv6 as IPv4, IPv6 compressed)",
                format!("write `Host::\"{canon}\"`"),
            );
        }
        return Ok(());
    }
    match normalize_host(name) {
        Ok(n) if n == name => Ok(()),
        Ok(n) => bad(
            "requests name hosts in lower case without a trailing dot",
            format!("write `Host::\"{}\"`", id.replacen(name, &n, 1)),
        ),
        Err(_) => bad(
            "it is not a valid host name",
            "host names use letters, digits, `-`, `_` and `.`".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::host_form;

    #[test]
    fn host_forms() {
        for ok in [
            "*",
            "*:443",
            "*.example.com",
            "*.example.com:443",
            "api.example.com",
            "a.b:1",
            "10.0.0.1",
            "10.0.0.1:22",
            "2001:db8::1",
            "[2001:db8::1]:53",
        ] {
            assert!(host_form(ok).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.0/8",
            "Evil.COM",
            "::ffff:10.1.1.1",
            "*evil.com",
            "a.b:x",
            "2001:0db8::1",
            "*.10.0.0.1",
            "[::1]",
            "evil.com.",
        ] {
            assert!(host_form(bad).is_err(), "{bad}");
        }
    }
}
