//! The network layer on this host: cgroup connect4/6 and sendmsg4/6 BPF
//! programs on a real session cgroup, real sockets, real errno.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{cgroup_name, kt, plan, require_root, rt};
use corral_core::{Decision, Mode, Transport, What};
use corral_kernel::cgroup::Cgroup;
use corral_kernel::session::KernelSession;
use std::net::{TcpListener, UdpSocket};

const EPERM: i32 = 1;

struct Ports {
    a: u16,
    b: u16,
    _l: Vec<TcpListener>,
    _u: Vec<UdpSocket>,
}

/// Listeners (outside the session) on 127.0.0.0/8 and ::1, TCP and UDP,
/// on two free ports.
fn listeners() -> Ports {
    let l1 = TcpListener::bind("0.0.0.0:0").unwrap();
    let a = l1.local_addr().unwrap().port();
    let l2 = TcpListener::bind("0.0.0.0:0").unwrap();
    let b = l2.local_addr().unwrap().port();
    let mut l = vec![l1, l2];
    let mut u = Vec::new();
    for p in [a, b] {
        if let Ok(x) = TcpListener::bind(("::1", p)) {
            l.push(x);
        }
        if let Ok(x) = UdpSocket::bind(("0.0.0.0", p)) {
            u.push(x);
        }
        if let Ok(x) = UdpSocket::bind(("::1", p)) {
            u.push(x);
        }
    }
    Ports { a, b, _l: l, _u: u }
}

fn policy(p: &Ports) -> String {
    format!(
        r#"
@id("loopback-a")
permit (principal, action == Action::"NetworkConnect", resource)
when {{ context.ip.isInRange(ip("127.0.0.0/8")) && context.port == {a} }};
@id("v6-loopback")
permit (principal, action == Action::"NetworkConnect", resource)
when {{ context.ip.isInRange(ip("::1/128")) }};
@id("no-127-0-0-2")
forbid (principal, action == Action::"NetworkConnect", resource)
when {{ context.ip.isInRange(ip("127.0.0.2/32")) }};
@id("no-udp-a")
forbid (principal, action == Action::"NetworkConnect", resource)
when {{ context.protocol == "udp" && context.port == {a} }};
"#,
        a = p.a
    )
}

#[test]
fn connect_decisions_v4_v6_cidr_port_udp() {
    if !require_root("connect_decisions_v4_v6_cidr_port_udp") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let p = listeners();
    let cg = Cgroup::create(&cgroup_name("net-decisions")).unwrap();
    let (session, _rx) = KernelSession::start(common::net_only(1, cg.path()), &plan(&policy(&p))).unwrap();
    let (a, b) = (p.a, p.b);
    let cases: Vec<(String, bool)> = vec![
        (format!("tcp 127.0.0.1 {a}"), true),
        (format!("tcp 127.0.0.1 {b}"), false),
        (format!("tcp 127.0.0.2 {a}"), false),
        (format!("tcp 127.0.0.3 {a}"), true),
        (format!("tcp ::1 {b}"), true),
        (format!("tcp ::ffff:127.0.0.1 {a}"), true),
        (format!("tcp ::ffff:127.0.0.1 {b}"), false),
        (format!("tcp ::ffff:127.0.0.2 {a}"), false),
        (format!("tcp 0.0.0.0 {a}"), true),
        (format!("tcp 0.0.0.0 {b}"), false),
        (format!("tcp :: {b}"), true),
        (format!("udp 127.0.0.1 {a}"), false),
        (format!("udp 127.0.0.1 {b}"), false),
        (format!("udpc 127.0.0.1 {a}"), false),
        (format!("udp ::1 {a}"), false),
        (format!("udp ::1 {b}"), true),
        (format!("udp ::ffff:127.0.0.1 {a}"), false),
        (format!("tfo 127.0.0.1 {b}"), false),
    ];
    let mut wrong = Vec::new();
    for (action, allowed) in &cases {
        let (code, out) = kt(Some(&cg), action);
        let ok = if *allowed { code == 0 } else { code == EPERM };
        if !ok {
            wrong.push(format!(
                "{action}: expected {}, got {out}",
                if *allowed { "ok" } else { "EPERM" }
            ));
        }
    }
    // Outside the session nothing is decided.
    let (code, out) = kt(None, &format!("tcp 127.0.0.1 {b}"));
    if code != 0 {
        wrong.push(format!("outside the cgroup: expected ok, got {out}"));
    }
    // A child cgroup created after attach is governed.
    let child = cg.child("later").unwrap();
    let (code, out) = kt(Some(&child), &format!("tcp 127.0.0.1 {b}"));
    if code != EPERM {
        wrong.push(format!("child cgroup: expected EPERM, got {out}"));
    }
    let (code, out) = kt(Some(&child), &format!("tcp 127.0.0.1 {a}"));
    if code != 0 {
        wrong.push(format!("child cgroup allowed: expected ok, got {out}"));
    }
    drop(session);
    assert!(wrong.is_empty(), "wrong decisions:\n{}", wrong.join("\n"));
}

#[test]
fn events_carry_decision_fields() {
    if !require_root("events_carry_decision_fields") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let p = listeners();
    let cg = Cgroup::create(&cgroup_name("net-events")).unwrap();
    let (mut session, mut rx) =
        KernelSession::start(common::net_only(7, cg.path()), &plan(&policy(&p))).unwrap();
    assert_eq!(kt(Some(&cg), &format!("tcp 127.0.0.2 {}", p.a)).0, EPERM);
    assert_eq!(kt(Some(&cg), &format!("udp ::1 {}", p.b)).0, 0);
    rt.block_on(session.flush());
    let mut evs = Vec::new();
    while let Ok(e) = rx.try_recv() {
        evs.push(e);
    }
    let deny = evs
        .iter()
        .find(|e| matches!(e.what, What::Connect { port, .. } if port == p.a))
        .unwrap_or_else(|| panic!("no event for the denied connect: {evs:#?}"));
    assert_eq!(deny.decision, Some(Decision::Deny));
    assert_eq!(deny.policies, vec!["no-127-0-0-2".to_string()]);
    assert_eq!(deny.principal, "claude");
    assert_eq!(deny.session.0, 7);
    assert!(deny.proc.pid > 0 && deny.ts_ns > 0);
    assert_eq!(deny.proc.comm, "corral-kt");
    match &deny.what {
        What::Connect { ip, transport, .. } => {
            assert_eq!(ip.to_string(), "127.0.0.2");
            assert_eq!(*transport, Transport::Tcp);
        }
        other => panic!("{other:?}"),
    }
    let udp = evs
        .iter()
        .find(|e| matches!(e.what, What::Connect { port, transport: Transport::Udp, .. } if port == p.b))
        .unwrap_or_else(|| panic!("no event for the udp send: {evs:#?}"));
    assert_eq!(udp.decision, Some(Decision::Allow));
    assert_eq!(udp.policies, vec!["v6-loopback".to_string()]);
}

#[test]
fn hot_swap_flips_a_running_process() {
    if !require_root("hot_swap_flips_a_running_process") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let p = listeners();
    let cg = Cgroup::create(&cgroup_name("net-swap")).unwrap();
    let (mut session, _rx) =
        KernelSession::start(common::net_only(2, cg.path()), &plan(&policy(&p))).unwrap();
    let mut agent = common::Served::start(&cg);
    let mut ask = |line: &str| agent.ask(line);
    let target = format!("tcp 127.0.0.1 {}", p.a);
    assert_eq!(ask(&target), "ok");
    let forbid = format!(
        "{}\n@id(\"swapped\") forbid (principal, action == Action::\"NetworkConnect\", resource) when {{ context.port == {} }};",
        policy(&p),
        p.a
    );
    session.swap(&plan(&forbid), None).unwrap();
    assert_eq!(ask(&target), "err 1 EPERM");
    session.swap(&plan(&policy(&p)), None).unwrap();
    assert_eq!(ask(&target), "ok");
}

#[test]
fn mode_switch_flips_a_running_process() {
    if !require_root("mode_switch_flips_a_running_process") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let p = listeners();
    let cg = Cgroup::create(&cgroup_name("net-mode")).unwrap();
    let (mut session, mut rx) =
        KernelSession::start(common::net_only(8, cg.path()), &plan(&policy(&p))).unwrap();
    let mut agent = common::Served::start(&cg);
    let mut ask = |line: &str| agent.ask(line);
    // Port b is not permitted.
    let target = format!("tcp 127.0.0.1 {}", p.b);
    assert_eq!(ask(&target), "err 1 EPERM");
    session.set_mode(Mode::Shadow).unwrap();
    assert_eq!(session.mode(), Mode::Shadow);
    assert_eq!(ask(&target), "ok", "shadow lets the same connect through");
    session.set_mode(Mode::Enforce).unwrap();
    assert_eq!(ask(&target), "err 1 EPERM", "enforce refuses it again");
    drop(agent);
    rt.block_on(session.flush());
    let decisions: Vec<Decision> = std::iter::from_fn(|| rx.try_recv().ok())
        .filter(|e| matches!(e.what, What::Connect { port, .. } if port == p.b))
        .filter_map(|e| e.decision)
        .collect();
    assert_eq!(decisions, [Decision::Deny, Decision::WouldDeny, Decision::Deny]);
}

#[test]
fn shadow_mode_lets_through_and_reports_would_deny() {
    if !require_root("shadow_mode_lets_through_and_reports_would_deny") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let p = listeners();
    let cg = Cgroup::create(&cgroup_name("net-shadow")).unwrap();
    let mut cfg = common::net_only(3, cg.path());
    cfg.mode = Mode::Shadow;
    let (mut session, mut rx) = KernelSession::start(cfg, &plan(&policy(&p))).unwrap();
    assert_eq!(kt(Some(&cg), &format!("tcp 127.0.0.1 {}", p.b)).0, 0);
    rt.block_on(session.flush());
    let ev = std::iter::from_fn(|| rx.try_recv().ok())
        .find(|e| matches!(e.what, What::Connect { port, .. } if port == p.b))
        .expect("event");
    assert_eq!(ev.decision, Some(Decision::WouldDeny));
}

#[test]
fn control_port_is_unreachable_even_when_permitted() {
    if !require_root("control_port_is_unreachable_even_when_permitted") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let p = listeners();
    let cg = Cgroup::create(&cgroup_name("net-ctl")).unwrap();
    let mut cfg = common::net_only(4, cg.path());
    cfg.ctl_port = Some(p.a);
    let all = r#"permit (principal, action == Action::"NetworkConnect", resource);"#;
    let (_session, _rx) = KernelSession::start(cfg, &plan(all)).unwrap();
    assert_eq!(kt(Some(&cg), &format!("tcp 127.0.0.1 {}", p.a)).0, EPERM);
    assert_eq!(kt(Some(&cg), &format!("tcp ::1 {}", p.a)).0, EPERM);
    assert_eq!(kt(Some(&cg), &format!("tcp 127.0.0.1 {}", p.b)).0, 0);
}

#[test]
fn a_full_event_channel_is_counted_and_changes_no_decision() {
    if !require_root("a_full_event_channel_is_counted_and_changes_no_decision") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let p = listeners();
    let cg = Cgroup::create(&cgroup_name("net-lost")).unwrap();
    let mut cfg = common::net_only(5, cg.path());
    cfg.channel = 1;
    let (mut session, _rx) = KernelSession::start(cfg, &plan(&policy(&p))).unwrap();
    let mut cmd = std::process::Command::new("/bin/sh");
    let bin = env!("CARGO_BIN_EXE_corral-kt");
    cmd.arg("-c").arg(format!(
        "n=0; for i in $(seq 1 20); do {bin} tcp 127.0.0.1 {a} >/dev/null && n=$((n+1)); done; echo $n",
        a = p.a
    ));
    cg.place(&mut cmd).unwrap();
    let out = cmd.output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "20",
        "every allowed connect succeeded"
    );
    rt.block_on(session.flush());
    assert!(
        session.lost() >= 19,
        "lost {} of 20 events with a 1-slot channel",
        session.lost()
    );
}
