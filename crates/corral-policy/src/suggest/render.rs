//! Writing suggested rules as Cedar, in the default policy's style, and the
//! diff against the current policy.

use super::{Entry, Rule};
use crate::request::Protocol;
use crate::schema::Action;
use corral_core::SessionId;
use std::fmt::Write as _;

/// `session s3` / `sessions s3, s4`.
fn sessions_text(sessions: &[SessionId]) -> String {
    let ids: Vec<String> = sessions.iter().map(ToString::to_string).collect();
    match ids.as_slice() {
        [one] => format!("session {one}"),
        _ => format!("sessions {}", ids.join(", ")),
    }
}

/// `resource in [\n    A,\n    B\n  ]`.
fn in_list(items: &[String]) -> String {
    format!("resource in [\n    {}\n  ]", items.join(",\n    "))
}

/// One `permit` with its comment and `@id`.
pub(super) fn rule(
    id: &str,
    principal: &str,
    action: Action,
    entries: &[Entry],
    sessions: &[SessionId],
    events: usize,
) -> String {
    let mut trees = Vec::new();
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut hosts: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for e in entries {
        match e {
            Entry::Tree(d) => trees.push(format!("Dir::\"{d}\"")),
            Entry::File(f) => files.push(format!("File::\"{f}\"")),
            Entry::Dir(d) => dirs.push(format!("resource == Dir::\"{d}\"")),
            Entry::Host { host_port, protocol } => {
                let i = usize::from(*protocol == Protocol::Udp);
                if let Some(h) = hosts.get_mut(i) {
                    h.push(format!("Host::\"{host_port}\""));
                }
            }
        }
    }
    // Strict validation rejects sets mixing `Dir` and `File`: one list each.
    let mut clauses = Vec::new();
    if !trees.is_empty() {
        clauses.push(in_list(&trees));
    }
    if !files.is_empty() {
        clauses.push(in_list(&files));
    }
    clauses.extend(dirs);
    let net: Vec<(&str, &Vec<String>)> = [("tcp", &hosts[0]), ("udp", &hosts[1])]
        .into_iter()
        .filter(|(_, h)| !h.is_empty())
        .collect();
    let single = clauses.is_empty() && net.len() == 1;
    for (proto, h) in net {
        let c = format!("context.protocol == \"{proto}\" &&\n  {}", in_list(h));
        clauses.push(if single { c } else { format!("({c})") });
    }
    let plural = if events == 1 { "event" } else { "events" };
    format!(
        "// suggested by corral from {} ({events} {plural})\n@id(\"{id}\")\npermit (principal == Agent::\"{principal}\", action == Action::\"{}\", resource)\nwhen {{\n  {}\n}};\n",
        sessions_text(sessions),
        action.name(),
        clauses.join(" ||\n  ")
    )
}

/// The current text with the rules appended as one block.
pub(super) fn policy(current: &str, rules: &[Rule]) -> String {
    if rules.is_empty() {
        return current.to_string();
    }
    let mut out = current.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "// ---- added by `corral policy suggest`: what the session did that the rules above deny ----"
    );
    for r in rules {
        out.push('\n');
        out.push_str(&r.text);
    }
    out
}

/// Unified diff with both names in the header.
pub(super) fn diff(current: &str, suggested: &str, current_name: &str, suggested_name: &str) -> String {
    similar::TextDiff::from_lines(current, suggested)
        .unified_diff()
        .context_radius(3)
        .header(current_name, suggested_name)
        .to_string()
}
