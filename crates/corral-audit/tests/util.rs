//! Helpers: events of every kind, temporary stores.

use corral_audit::{Store, Stored};
use corral_core::{Access, Decision, Event, Layer, Proc, SessionId, Transport, What};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn event(session: u32, what: What, decision: Option<Decision>) -> Event {
    Event {
        session: SessionId(session),
        principal: format!("Agent::\"a{session}\""),
        ts_ns: 1_000,
        proc: Proc {
            pid: 42,
            ppid: 1,
            comm: "bash".into(),
            exe: Some("/usr/bin/bash".into()),
        },
        what,
        decision,
        layer: Layer::BpfLsm,
        policies: if decision.is_some() {
            vec!["policy0".into(), "read-tmp".into()]
        } else {
            vec![]
        },
        mcp_call: None,
    }
}

pub fn stored(wall_ns: u64, event: Event) -> Stored {
    let policy_at = event
        .policies
        .iter()
        .enumerate()
        .map(|(i, _)| format!("policy.cedar:{}", i + 3))
        .collect();
    Stored {
        id: None,
        wall_ns,
        policy_at,
        event,
    }
}

/// One event of each `What` variant, with assorted decisions.
pub fn one_of_each(session: u32) -> Vec<Event> {
    vec![
        event(
            session,
            What::FileOpen {
                path: "/etc/passwd".into(),
                access: Access::Read,
            },
            Some(Decision::Allow),
        ),
        event(
            session,
            What::FileOpen {
                path: "/home/me/.ssh/id_ed25519".into(),
                access: Access::Write,
            },
            Some(Decision::Deny),
        ),
        event(
            session,
            What::Exec {
                path: "/usr/bin/curl".into(),
                argv: Some(vec!["curl".into(), "https://example.com".into()]),
            },
            Some(Decision::WouldDeny),
        ),
        event(
            session,
            What::Connect {
                ip: IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)),
                port: 443,
                transport: Transport::Tcp,
            },
            Some(Decision::Allow),
        ),
        event(
            session,
            What::Connect {
                ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
                port: 53,
                transport: Transport::Udp,
            },
            Some(Decision::Deny),
        ),
        event(session, What::Fork { child: 43 }, None),
        event(session, What::Exit { code: 137 }, None),
        event(
            session,
            What::ExecTrace {
                path: "/usr/bin/ls".into(),
                argv: vec!["ls".into(), "-la".into()],
            },
            None,
        ),
        event(session, What::Lost { count: 7 }, None),
    ]
}

/// A denied MCP tool call over stdio, as the wrapper records it.
pub fn mcp_denied_call(session: u32) -> Event {
    let mut e = event(
        session,
        What::Mcp {
            transport: "stdio".into(),
            server: "everything".into(),
            direction: "to_server".into(),
            stage: "request".into(),
            method: "tools/call".into(),
            rpc_id: Some("4".into()),
            tool: Some("printEnv".into()),
            args: Some("{}".into()),
            args_truncated: false,
            hidden: vec![],
            error: Some("a forbid denies McpCall for tool `printEnv` of MCP server `everything`".into()),
            duration_us: None,
            conversation: "m1".into(),
            session_id: None,
            bytes: 70,
        },
        Some(Decision::Deny),
    );
    e.layer = Layer::Mcp;
    e.policies = vec!["no-env".into()];
    e
}

/// An allowed request through the proxy by a known process (pid 42): a
/// secret swapped in, one withheld, a header injected.
pub fn http_request(session: u32) -> Event {
    let mut e = event(
        session,
        What::Http {
            stage: "request".into(),
            method: "POST".into(),
            scheme: "https".into(),
            host: "api.anthropic.com".into(),
            port: 443,
            path: "/v1/messages".into(),
            status: Some(200),
            bytes_in: 1_229,
            bytes_out: 34_000,
            duration_us: 812_345,
            injected: vec!["x-api-key".into()],
            secrets_used: vec!["ANTHROPIC_API_KEY".into()],
            secrets_withheld: vec!["GITHUB_TOKEN".into()],
            error: None,
            pid_known: true,
        },
        Some(Decision::Allow),
    );
    e.layer = Layer::Proxy;
    e
}

/// A connection the proxy refused before any request (not TLS), its
/// process unknown: empty `proc`, no policy, an error.
pub fn http_refused(session: u32) -> Event {
    let mut e = event(
        session,
        What::Http {
            stage: "connection".into(),
            method: String::new(),
            scheme: "https".into(),
            host: "evil.example".into(),
            port: 443,
            path: String::new(),
            status: None,
            bytes_in: 0,
            bytes_out: 0,
            duration_us: 0,
            injected: vec![],
            secrets_used: vec![],
            secrets_withheld: vec![],
            error: Some("not a TLS handshake".into()),
            pid_known: false,
        },
        Some(Decision::Deny),
    );
    e.layer = Layer::Proxy;
    e.proc = Proc::default();
    e.policies.clear();
    e
}

pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("audit.db")).unwrap();
    (dir, store)
}
