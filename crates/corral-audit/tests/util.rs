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

pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("audit.db")).unwrap();
    (dir, store)
}
