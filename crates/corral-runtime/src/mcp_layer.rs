//! The session's MCP layer: one [`Authority`] shared by the stdio wrapper's
//! supervisor side and the egress proxy, and its reports as audit events.

use corral_core::{Event, Layer, Proc, SessionId, What};
use corral_mcp::{Authority, Limits, McpEvent, McpPolicy, McpSink};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The layer for a session, and the count of its reports the recorder's
/// queue had no room for. Events go to `tx`, never waited on.
pub fn authority(
    session: SessionId,
    principal: &str,
    policy: McpPolicy,
    mode: corral_core::Mode,
    limits: Limits,
    tx: tokio::sync::mpsc::Sender<Event>,
) -> (Arc<Authority>, Arc<AtomicU64>) {
    let dropped = Arc::new(AtomicU64::new(0));
    let sink: McpSink = {
        let dropped = dropped.clone();
        let principal = principal.to_string();
        Arc::new(move |e: McpEvent| {
            if tx.try_send(to_event(session, &principal, e)).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    (Authority::new(principal, policy, mode, limits, sink), dropped)
}

/// An MCP report as an audit event: the decision and its policies, the
/// agent-side process when the transport knew it, and the tool call it
/// belongs to.
pub fn to_event(session: SessionId, principal: &str, e: McpEvent) -> Event {
    let proc_ = match &e.client {
        Some((pid, comm)) => Proc {
            pid: *pid,
            ppid: 0,
            comm: comm.clone(),
            exe: None,
        },
        None => Proc::default(),
    };
    Event {
        session,
        principal: principal.to_string(),
        ts_ns: crate::session::mono_ns(),
        proc: proc_,
        decision: e.decision,
        layer: Layer::Mcp,
        policies: e.policies.iter().map(|p| p.id.clone()).collect(),
        mcp_call: e.call.clone(),
        what: What::Mcp {
            transport: e.transport.as_str().to_string(),
            server: e.server,
            direction: match e.direction {
                corral_mcp::Direction::ToServer => "to_server",
                corral_mcp::Direction::ToClient => "to_client",
            }
            .to_string(),
            stage: e.stage.as_str().to_string(),
            method: e.method,
            rpc_id: e.rpc_id,
            tool: e.tool,
            args: e.args,
            args_truncated: e.args_truncated,
            hidden: e.hidden,
            error: e.error,
            duration_us: e.duration_us,
            conversation: e.conversation,
            session_id: e.session,
            bytes: e.bytes,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use corral_core::Decision;
    use corral_policy::Source;

    #[test]
    fn a_denied_call_becomes_a_deny_event_naming_its_policy() {
        let doc = corral_policy::load(vec![Source::new(
            "p.cedar",
            "@id(\"no-env\") forbid (principal, action == Action::\"McpCall\", resource == MCP::Tool::\"printEnv\");\npermit (principal, action == Action::\"McpCall\", resource);",
        )])
        .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let (auth, dropped) = authority(
            SessionId(7),
            "claude",
            McpPolicy::new(doc),
            corral_core::Mode::Enforce,
            Limits::default(),
            tx,
        );
        let mut g = auth.governor("everything", corral_mcp::Transport::Stdio);
        g.set_client(4242, "node");
        g.from_client(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"printEnv"}}"#);
        g.from_client(br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}"#);
        let denied = rx.try_recv().unwrap();
        assert_eq!(denied.decision, Some(Decision::Deny));
        assert_eq!(denied.layer, Layer::Mcp);
        assert_eq!(denied.policies, ["no-env"]);
        assert_eq!(denied.proc.pid, 4242);
        assert!(denied.mcp_call.is_none());
        let allowed = rx.try_recv().unwrap();
        assert_eq!(
            allowed.mcp_call.as_deref(),
            Some(format!("{}#1", g.label()).as_str())
        );
        match &allowed.what {
            What::Mcp { tool, stage, .. } => {
                assert_eq!(tool.as_deref(), Some("echo"));
                assert_eq!(stage, "request");
            }
            w => panic!("{w:?}"),
        }
        // A full queue counts what it could not take.
        for i in 3..10 {
            g.from_client(format!(r#"{{"jsonrpc":"2.0","method":"notifications/n{i}"}}"#).as_bytes());
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
    }
}
