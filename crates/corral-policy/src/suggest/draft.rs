//! One rule for one event: the control UI's "allow this" / "forbid this".
//! The rule is as narrow as the event: its principal, its one action, its
//! exact file, host:port or MCP tool. Literal checks and host handling are
//! the ones [`super::suggest`] uses.

use super::asked::{canonical, literal_safe};
use crate::request::{host_port, ip_text, normalize_host};
use crate::schema::Action;
use corral_core::{Access, Event, Transport, What};

/// Permit or forbid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// `permit`.
    Permit,
    /// `forbid`.
    Forbid,
}

impl Effect {
    fn keyword(self) -> &'static str {
        match self {
            Effect::Permit => "permit",
            Effect::Forbid => "forbid",
        }
    }
}

/// Why no rule can be drafted for an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DraftError {
    /// The event is not a decision a rule can be written for.
    #[error("no rule can be drafted for a `{0}` event (only file opens, execs, connections, HTTP requests and MCP tool calls)")]
    Unsupported(String),
    /// A name in the event cannot be written as a Cedar literal.
    #[error("{0}")]
    BadLiteral(String),
}

/// The principal's name: `Agent::"name"` → `name`, else as recorded.
fn agent_name(p: &str) -> &str {
    p.strip_prefix("Agent::\"")
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(p)
}

/// The event's kind as serialized (`file_open`, `fork`, ...).
fn kind_name(what: &What) -> String {
    serde_json::to_value(what)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// A Cedar rule with `@id(id)` and a comment naming `origin` (e.g. `event
/// 102 of s3`) that permits or forbids exactly what `event` asked.
pub fn draft(event: &Event, effect: Effect, id: &str, origin: &str) -> Result<String, DraftError> {
    let bad = DraftError::BadLiteral;
    let principal = agent_name(&event.principal);
    literal_safe("principal", principal).map_err(bad)?;
    literal_safe("id", id).map_err(bad)?;
    let file = |path: &str| -> Result<String, DraftError> {
        literal_safe("path", path)
            .and_then(|()| canonical(path))
            .map_err(bad)?;
        Ok(format!("resource == File::\"{path}\""))
    };
    let (action, condition, what) = match &event.what {
        What::FileOpen { path, access } => {
            let action = match access {
                Access::Read => format!("action == Action::\"{}\"", Action::FileOpenReadOnly.name()),
                Access::Write => format!("action == Action::\"{}\"", Action::FileOpenReadWrite.name()),
                // Decided against both tables.
                Access::Exec => "action in Action::\"FileOpen\"".to_string(),
            };
            (action, file(path)?, format!("opening `{path}`"))
        }
        What::Exec { path, .. } => (
            format!("action == Action::\"{}\"", Action::ProcessExec.name()),
            file(path)?,
            format!("running `{path}`"),
        ),
        What::Connect { ip, port, transport } => {
            let proto = match transport {
                Transport::Tcp => "tcp",
                Transport::Udp => "udp",
            };
            let hp = host_port(&ip_text(*ip), *port);
            (
                format!("action == Action::\"{}\"", Action::NetworkConnect.name()),
                format!("context.protocol == \"{proto}\" && resource in Host::\"{hp}\""),
                format!("connecting to {hp} ({proto})"),
            )
        }
        What::Http {
            host, port, stage, ..
        } if stage != "connection" || !host.is_empty() => {
            let h = normalize_host(host).map_err(|e| bad(e.to_string()))?;
            let hp = host_port(&h, *port);
            (
                format!("action == Action::\"{}\"", Action::HttpRequest.name()),
                format!("resource in Host::\"{hp}\""),
                format!("HTTP requests to {hp}"),
            )
        }
        What::Mcp {
            server,
            tool: Some(tool),
            ..
        } => {
            literal_safe("MCP server", server).map_err(bad)?;
            literal_safe("MCP tool", tool).map_err(bad)?;
            (
                format!("action == Action::\"{}\"", Action::McpCall.name()),
                format!("resource == MCP::Tool::\"{tool}\" && resource in MCP::Server::\"{server}\""),
                format!("calling MCP tool `{tool}` of `{server}`"),
            )
        }
        other => return Err(DraftError::Unsupported(kind_name(other))),
    };
    let verb = match effect {
        Effect::Permit => "allow",
        Effect::Forbid => "forbid",
    };
    Ok(format!(
        "// drafted by corral from {origin}: {verb} {what}\n@id(\"{id}\")\n{} (principal == Agent::\"{principal}\", {action}, resource)\nwhen {{ {condition} }};\n",
        effect.keyword()
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::{check, Source};
    use corral_core::{Decision, Layer, Proc, SessionId};

    fn ev(what: What) -> Event {
        Event {
            session: SessionId(3),
            principal: "Agent::\"claude\"".into(),
            ts_ns: 1,
            proc: Proc::default(),
            what,
            decision: Some(Decision::Deny),
            layer: Layer::Fanotify,
            policies: vec![],
            mcp_call: None,
        }
    }

    /// Every drafted rule validates in strict mode on its own.
    #[test]
    fn drafts_validate() {
        let whats = [
            What::FileOpen {
                path: "/etc/shadow".into(),
                access: Access::Read,
            },
            What::FileOpen {
                path: "/tmp/x".into(),
                access: Access::Exec,
            },
            What::Exec {
                path: "/usr/bin/id".into(),
                argv: None,
            },
            What::Connect {
                ip: "10.0.0.1".parse().unwrap(),
                port: 443,
                transport: Transport::Tcp,
            },
            What::Mcp {
                transport: "stdio".into(),
                server: "everything".into(),
                direction: "to_server".into(),
                stage: "request".into(),
                method: "tools/call".into(),
                rpc_id: None,
                tool: Some("echo".into()),
                args: None,
                args_truncated: false,
                hidden: vec![],
                error: None,
                duration_us: None,
                conversation: "m1".into(),
                session_id: None,
                bytes: 1,
            },
        ];
        for w in whats {
            for effect in [Effect::Permit, Effect::Forbid] {
                let text = draft(&ev(w.clone()), effect, "ui-1", "event 1 of s3").unwrap();
                assert!(text.starts_with("// drafted by corral"), "{text}");
                assert!(
                    text.contains(&format!("\n{} (principal == Agent::\"claude\"", effect.keyword())),
                    "{text}"
                );
                let c = check(vec![Source::new("d.cedar", text.clone())]);
                assert!(c.ok(), "{text}\n{:?}", c.diagnostics);
            }
        }
    }

    #[test]
    fn unsupported_and_bad_literals_are_errors() {
        let e = draft(&ev(What::Fork { child: 3 }), Effect::Permit, "x", "e").unwrap_err();
        assert_eq!(e, DraftError::Unsupported("fork".into()));
        let e = draft(
            &ev(What::FileOpen {
                path: "/tmp/a\"b".into(),
                access: Access::Read,
            }),
            Effect::Forbid,
            "x",
            "e",
        )
        .unwrap_err();
        assert!(matches!(e, DraftError::BadLiteral(_)), "{e}");
    }
}
