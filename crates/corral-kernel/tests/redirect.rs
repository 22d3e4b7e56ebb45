//! Transparent redirect of a session's TCP connections to the egress
//! proxy, on this host: cgroup connect4/6 rewrite, sock_ops recording the
//! original destination for the proxy, getpeername4/6 hiding the rewrite.
//! A listener on loopback plays the proxy; the destinations are
//! documentation addresses, which are never reached (the rewrite happens
//! before routing).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{cgroup_name, kt, plan, require_root, rt};
use corral_core::{Decision, Event, Mode, Transport, What};
use corral_kernel::cgroup::Cgroup;
use corral_kernel::session::{KernelSession, SessionConfig};
use corral_kernel::{Origin, Redirect};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const EPERM: i32 = 1;

/// The stand-in proxy: a v4 listener and, where the host has ::1, a v6 one.
struct Proxy {
    v4: TcpListener,
    v6: Option<TcpListener>,
}

impl Proxy {
    fn new() -> Proxy {
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = TcpListener::bind("[::1]:0").ok();
        for l in std::iter::once(&v4).chain(v6.as_ref()) {
            l.set_nonblocking(true).unwrap();
        }
        Proxy { v4, v6 }
    }

    fn redirect(&self) -> Redirect {
        let v4 = match self.v4.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        let v6 = self.v6.as_ref().map(|l| match l.local_addr().unwrap() {
            SocketAddr::V6(a) => a,
            other => panic!("{other}"),
        });
        Redirect { v4, v6 }
    }
}

/// A connection a listener accepted: its peer and the bytes sent on it.
struct Accepted {
    peer: SocketAddr,
    bytes: Vec<u8>,
}

/// Accepts one connection within `wait` and reads it to EOF (or 2 s).
fn accept(l: &TcpListener, wait: Duration) -> Option<Accepted> {
    let deadline = Instant::now() + wait;
    loop {
        match l.accept() {
            Ok((s, peer)) => {
                return Some(Accepted {
                    peer,
                    bytes: read_all(s),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn read_all(mut s: TcpStream) -> Vec<u8> {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Nothing is waiting on `l` (checked after the client has finished).
fn nothing_accepted(l: &TcpListener) -> bool {
    accept(l, Duration::from_millis(100)).is_none()
}

/// `tcpw`/`uring` output: `ok PEER PID`.
fn peer_and_pid(out: &str) -> (SocketAddr, u32) {
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f.first(), Some(&"ok"), "{out}");
    (f[1].parse().unwrap(), f[2].parse().unwrap())
}

fn policy() -> String {
    r#"
@id("web")
permit (principal, action == Action::"NetworkConnect", resource)
when { context.ip.isInRange(ip("192.0.2.0/24")) && context.port == 443 };
@id("v6-doc")
permit (principal, action == Action::"NetworkConnect", resource)
when { context.ip.isInRange(ip("2001:db8::/32")) };
@id("no-evil")
forbid (principal, action == Action::"NetworkConnect", resource)
when { context.ip.isInRange(ip("198.51.100.0/24")) || context.ip.isInRange(ip("2001:db8:bad::/48")) };
@id("udp-out")
permit (principal, action == Action::"NetworkConnect", resource)
when { context.protocol == "udp" && context.ip.isInRange(ip("203.0.113.0/24")) && context.port == 9 };
@id("names")
permit (principal, action == Action::"NetworkConnect", resource in Host::"*.example.org");
"#
    .to_string()
}

#[test]
fn default_deny_on_a_port_no_name_rule_mentions_is_refused_in_the_kernel() {
    let t = "default_deny_on_a_port_no_name_rule_mentions_is_refused_in_the_kernel";
    if !require_root(t) {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let proxy = Proxy::new();
    let cg = Cgroup::create(&cgroup_name("redir-noname")).unwrap();
    let text = r#"@id("api") permit (principal, action == Action::"NetworkConnect", resource in Host::"api.example.org:443");"#;
    let (mut s, mut rx) = session(29, &cg, Some(proxy.redirect()), text);
    // 443: a name rule may permit it, so the proxy decides.
    let named: SocketAddr = "203.0.113.7:443".parse().unwrap();
    assert_redirected(&cg, &s, &proxy.v4, "tcpw", "203.0.113.7 443", named, named);
    // 80: nothing could permit it: EPERM here, with a default-deny event.
    let (code, out) = kt(Some(&cg), "tcpw 203.0.113.7 80");
    assert_eq!(code, EPERM, "{out}");
    assert!(
        nothing_accepted(&proxy.v4),
        "a connect no rule could allow reached the proxy"
    );
    let evs = drain(&rt, &mut s, &mut rx);
    let deny = connect_events(&evs, 80);
    assert_eq!(deny.len(), 1, "{evs:#?}");
    assert_eq!(deny[0].decision, Some(Decision::Deny));
    assert!(deny[0].policies.is_empty(), "{:?}", deny[0].policies);
}

/// `policy()` plus a permit for loopback port `port` (the session's own
/// servers), and for UDP to loopback port `udp_port`.
fn policy_with_loopback(port: u16) -> String {
    format!(
        "{}\n@id(\"loopback\") permit (principal, action == Action::\"NetworkConnect\", resource) \
         when {{ context.ip.isInRange(ip(\"127.0.0.0/8\")) && context.port == {port} }};",
        policy()
    )
}

fn session(
    id: u32,
    cg: &Cgroup,
    redirect: Option<Redirect>,
    text: &str,
) -> (KernelSession, tokio::sync::mpsc::Receiver<Event>) {
    let mut cfg: SessionConfig = common::net_only(id, cg.path());
    cfg.redirect = redirect;
    KernelSession::start(cfg, &plan(text)).unwrap()
}

fn drain(
    rt: &tokio::runtime::Runtime,
    s: &mut KernelSession,
    rx: &mut tokio::sync::mpsc::Receiver<Event>,
) -> Vec<Event> {
    rt.block_on(s.flush());
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

fn connect_events(evs: &[Event], port: u16) -> Vec<&Event> {
    evs.iter()
        .filter(|e| matches!(e.what, What::Connect { port: p, .. } if p == port))
        .collect()
}

/// One redirected connect through `action` (`tcpw` or `uring`) to `dst`:
/// the proxy gets the bytes, `take` gives the original destination, pid
/// and comm once, and the child's getpeername() shows `shown`.
fn assert_redirected(
    cg: &Cgroup,
    session: &KernelSession,
    l: &TcpListener,
    action: &str,
    dst: &str,
    shown: SocketAddr,
    origin_dst: SocketAddr,
) {
    let (code, out) = kt(Some(cg), &format!("{action} {dst}"));
    assert_eq!(code, 0, "{action} {dst}: {out}");
    let (peer, pid) = peer_and_pid(&out);
    assert_eq!(peer, shown, "getpeername() of the redirected socket");
    let acc = accept(l, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{action} {dst}: the proxy accepted nothing"));
    assert_eq!(acc.bytes, b"corral");
    let origins = session.origins().expect("origins with a redirect");
    assert_eq!(
        origins.take(acc.peer),
        Some(Origin {
            dst: origin_dst,
            pid,
            comm: "corral-kt".into()
        }),
        "{action} {dst}: origin of {}",
        acc.peer
    );
    assert_eq!(origins.take(acc.peer), None, "a second take finds nothing");
}

#[test]
fn permitted_and_default_denied_tcp_goes_to_the_proxy() {
    if !require_root("permitted_and_default_denied_tcp_goes_to_the_proxy") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let proxy = Proxy::new();
    let cg = Cgroup::create(&cgroup_name("redir-basic")).unwrap();
    let (mut s, mut rx) = session(20, &cg, Some(proxy.redirect()), &policy());
    assert!(
        s.layers().iter().any(|(k, _)| *k == "tcp egress"),
        "{:?}",
        s.layers()
    );
    assert!(s.redirect_missing().is_empty(), "{:?}", s.redirect_missing());
    // Permitted by `web`.
    let web: SocketAddr = "192.0.2.1:443".parse().unwrap();
    assert_redirected(&cg, &s, &proxy.v4, "tcpw", "192.0.2.1 443", web, web);
    // Permitted by nothing (default deny): the proxy decides it by name.
    let other: SocketAddr = "203.0.113.7:80".parse().unwrap();
    assert_redirected(&cg, &s, &proxy.v4, "tcpw", "203.0.113.7 80", other, other);
    // A clone of `Origins` sees the same map; unknown peers find nothing.
    let o = s.origins().unwrap().clone();
    assert_eq!(o.take("127.0.0.1:1".parse().unwrap()), None);
    // Redirected connects leave no ring-buffer event (the proxy records them).
    let evs = drain(&rt, &mut s, &mut rx);
    assert!(connect_events(&evs, 443).is_empty(), "{evs:#?}");
    assert!(connect_events(&evs, 80).is_empty(), "{evs:#?}");
}

#[test]
fn a_forbid_refuses_in_the_kernel_and_shadow_mode_redirects() {
    if !require_root("a_forbid_refuses_in_the_kernel_and_shadow_mode_redirects") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let proxy = Proxy::new();
    let cg = Cgroup::create(&cgroup_name("redir-forbid")).unwrap();
    let (mut s, mut rx) = session(21, &cg, Some(proxy.redirect()), &policy());
    let (code, out) = kt(Some(&cg), "tcpw 198.51.100.7 443");
    assert_eq!(code, EPERM, "{out}");
    assert!(
        nothing_accepted(&proxy.v4),
        "a forbidden connect reached the proxy"
    );
    let evs = drain(&rt, &mut s, &mut rx);
    let deny = connect_events(&evs, 443);
    assert_eq!(deny.len(), 1, "{evs:#?}");
    assert_eq!(deny[0].decision, Some(Decision::Deny));
    assert_eq!(deny[0].policies, vec!["no-evil".to_string()]);
    assert!(matches!(&deny[0].what, What::Connect { ip, .. } if ip.to_string() == "198.51.100.7"));

    // Shadow: reported as would-deny, then sent to the proxy like the rest.
    let cg2 = Cgroup::create(&cgroup_name("redir-forbid-shadow")).unwrap();
    let mut cfg = common::net_only(22, cg2.path());
    cfg.redirect = Some(proxy.redirect());
    cfg.mode = Mode::Shadow;
    let (mut s2, mut rx2) = KernelSession::start(cfg, &plan(&policy())).unwrap();
    let evil: SocketAddr = "198.51.100.7:443".parse().unwrap();
    assert_redirected(&cg2, &s2, &proxy.v4, "tcpw", "198.51.100.7 443", evil, evil);
    let evs = drain(&rt, &mut s2, &mut rx2);
    let would = connect_events(&evs, 443);
    assert_eq!(would.len(), 1, "{evs:#?}");
    assert_eq!(would[0].decision, Some(Decision::WouldDeny));
    assert_eq!(would[0].policies, vec!["no-evil".to_string()]);
}

#[test]
fn loopback_and_udp_are_decided_by_the_table_not_redirected() {
    if !require_root("loopback_and_udp_are_decided_by_the_table_not_redirected") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let proxy = Proxy::new();
    // The session's own server on loopback, and a UDP socket on the
    // proxy's port (a UDP send rewritten to the proxy would land here).
    let own = TcpListener::bind("127.0.0.1:0").unwrap();
    own.set_nonblocking(true).unwrap();
    let own_port = own.local_addr().unwrap().port();
    let proxy_port = proxy.v4.local_addr().unwrap().port();
    let udp_trap = UdpSocket::bind(("127.0.0.1", proxy_port)).unwrap();
    udp_trap.set_nonblocking(true).unwrap();
    let cg = Cgroup::create(&cgroup_name("redir-loopback")).unwrap();
    let (mut s, mut rx) = session(23, &cg, Some(proxy.redirect()), &policy_with_loopback(own_port));

    // Loopback permitted: reached directly.
    let (code, out) = kt(Some(&cg), &format!("tcpw 127.0.0.1 {own_port}"));
    assert_eq!(code, 0, "{out}");
    let (peer, _) = peer_and_pid(&out);
    assert_eq!(peer, format!("127.0.0.1:{own_port}").parse().unwrap());
    let acc = accept(&own, Duration::from_secs(2)).expect("the session's own server accepted");
    assert_eq!(acc.bytes, b"corral");
    assert!(
        nothing_accepted(&proxy.v4),
        "a loopback connect went to the proxy"
    );
    assert_eq!(
        s.origins().unwrap().take(acc.peer),
        None,
        "no origin for a direct connect"
    );
    // Loopback not permitted: EPERM, as without a redirect.
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let free_port = free.local_addr().unwrap().port();
    assert_eq!(kt(Some(&cg), &format!("tcp 127.0.0.1 {free_port}")).0, EPERM);
    assert_eq!(kt(Some(&cg), &format!("tcp ::1 {free_port}")).0, EPERM);
    assert!(nothing_accepted(&proxy.v4));

    // UDP: permitted, forbidden, default-denied; none rewritten.
    assert_eq!(kt(Some(&cg), "udp 203.0.113.9 9").1, "ok");
    assert_eq!(kt(Some(&cg), "udp 198.51.100.7 9").0, EPERM);
    assert_eq!(kt(Some(&cg), "udp 203.0.113.9 53").0, EPERM);
    assert_eq!(kt(Some(&cg), "udpc 203.0.113.9 53").0, EPERM);
    let mut buf = [0u8; 64];
    assert!(
        udp_trap.recv_from(&mut buf).is_err(),
        "a UDP datagram reached the proxy's port"
    );

    let evs = drain(&rt, &mut s, &mut rx);
    let direct = connect_events(&evs, own_port);
    assert_eq!(direct.len(), 1, "{evs:#?}");
    assert_eq!(direct[0].decision, Some(Decision::Allow));
    assert_eq!(direct[0].policies, vec!["loopback".to_string()]);
    let udp9: Vec<_> = connect_events(&evs, 9)
        .into_iter()
        .filter(|e| {
            matches!(
                e.what,
                What::Connect {
                    transport: Transport::Udp,
                    ..
                }
            )
        })
        .map(|e| (e.decision, e.policies.clone()))
        .collect();
    assert_eq!(
        udp9,
        vec![
            (Some(Decision::Allow), vec!["udp-out".to_string()]),
            (Some(Decision::Deny), vec!["no-evil".to_string()]),
        ]
    );
    assert_eq!(connect_events(&evs, 53).len(), 2, "{evs:#?}");
}

#[test]
fn v6_destinations_go_to_the_v6_proxy_and_v4_mapped_to_the_v4_one() {
    if !require_root("v6_destinations_go_to_the_v6_proxy_and_v4_mapped_to_the_v4_one") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let proxy = Proxy::new();
    let Some(v6) = proxy.v6.as_ref() else {
        common::skip(
            "v6_destinations_go_to_the_v6_proxy_and_v4_mapped_to_the_v4_one",
            "no ::1 on this host",
        );
        return;
    };
    let cg = Cgroup::create(&cgroup_name("redir-v6")).unwrap();
    let (mut s, mut rx) = session(24, &cg, Some(proxy.redirect()), &policy());
    let doc: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    assert_redirected(&cg, &s, v6, "tcpw", "2001:db8::1 443", doc, doc);
    assert!(nothing_accepted(&proxy.v4));
    // v4-mapped on a v6 socket: to the v4 proxy as ::ffff:127.0.0.1; the
    // origin is shown as v4, getpeername() as the mapped address.
    assert_redirected(
        &cg,
        &s,
        &proxy.v4,
        "tcpw",
        "::ffff:192.0.2.1 443",
        "[::ffff:192.0.2.1]:443".parse().unwrap(),
        "192.0.2.1:443".parse().unwrap(),
    );
    assert!(nothing_accepted(v6));
    // A v6 forbid still refuses.
    assert_eq!(kt(Some(&cg), "tcpw 2001:db8:bad::1 443").0, EPERM);
    assert!(nothing_accepted(v6));
    let evs = drain(&rt, &mut s, &mut rx);
    let denied: Vec<_> = connect_events(&evs, 443).iter().map(|e| e.decision).collect();
    assert_eq!(denied, vec![Some(Decision::Deny)], "{evs:#?}");
}

#[test]
fn without_a_v6_proxy_native_v6_is_refused() {
    if !require_root("without_a_v6_proxy_native_v6_is_refused") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let proxy = Proxy::new();
    let mut r = proxy.redirect();
    r.v6 = None;
    let cg = Cgroup::create(&cgroup_name("redir-nov6")).unwrap();
    let (mut s, mut rx) = session(25, &cg, Some(r), &policy());
    let (code, out) = kt(Some(&cg), "tcpw 2001:db8::1 443");
    assert_eq!(code, EPERM, "{out}");
    if let Some(v6) = &proxy.v6 {
        assert!(nothing_accepted(v6));
    }
    // v4 and v4-mapped still go through.
    let web: SocketAddr = "192.0.2.1:443".parse().unwrap();
    assert_redirected(&cg, &s, &proxy.v4, "tcpw", "192.0.2.1 443", web, web);
    let evs = drain(&rt, &mut s, &mut rx);
    let e = connect_events(&evs, 443);
    assert_eq!(e.len(), 1, "{evs:#?}");
    assert_eq!(e[0].decision, Some(Decision::Deny));
    assert_eq!(e[0].policies, vec!["corral:no-redirect".to_string()]);
}

#[test]
fn fast_open_and_io_uring_connects_are_redirected_too() {
    if !require_root("fast_open_and_io_uring_connects_are_redirected_too") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let proxy = Proxy::new();
    let cg = Cgroup::create(&cgroup_name("redir-tfo")).unwrap();
    let (s, _rx) = session(26, &cg, Some(proxy.redirect()), &policy());
    let web: SocketAddr = "192.0.2.1:443".parse().unwrap();
    // TCP Fast Open: sendto(MSG_FASTOPEN) connects and sends in one call.
    let (code, out) = kt(Some(&cg), "tfo 192.0.2.1 443");
    assert_eq!(code, 0, "{out}");
    let acc = accept(&proxy.v4, Duration::from_secs(2)).expect("the proxy accepted the fast-open connect");
    assert_eq!(acc.bytes, b"corral");
    let o = s
        .origins()
        .unwrap()
        .take(acc.peer)
        .expect("origin of the fast-open connect");
    assert_eq!((o.dst, o.comm.as_str()), (web, "corral-kt"));
    // A forbidden fast-open destination is refused.
    assert_eq!(kt(Some(&cg), "tfo 198.51.100.7 443").0, EPERM);
    assert!(nothing_accepted(&proxy.v4));
    // io_uring's IORING_OP_CONNECT.
    assert_redirected(&cg, &s, &proxy.v4, "uring", "192.0.2.1 443", web, web);
    assert_eq!(kt(Some(&cg), "uring 198.51.100.7 443").0, EPERM);
    assert!(nothing_accepted(&proxy.v4));
}

#[test]
fn redirect_survives_policy_swaps_and_mode_switches() {
    if !require_root("redirect_survives_policy_swaps_and_mode_switches") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let proxy = Proxy::new();
    let cg = Cgroup::create(&cgroup_name("redir-swap")).unwrap();
    let (mut s, _rx) = session(27, &cg, Some(proxy.redirect()), &policy());
    let mut agent = common::Served::start(&cg);
    let web: SocketAddr = "192.0.2.1:443".parse().unwrap();
    let through = |agent: &mut common::Served, s: &KernelSession, what: &str| {
        let out = agent.ask("tcpw 192.0.2.1 443");
        let (peer, _) = peer_and_pid(&out);
        assert_eq!(peer, web, "{what}");
        let acc =
            accept(&proxy.v4, Duration::from_secs(2)).unwrap_or_else(|| panic!("{what}: nothing accepted"));
        assert_eq!(acc.bytes, b"corral", "{what}");
        assert_eq!(
            s.origins().unwrap().take(acc.peer).map(|o| o.dst),
            Some(web),
            "{what}"
        );
    };
    through(&mut agent, &s, "at start");
    let forbid = format!(
        "{}\n@id(\"no-web\") forbid (principal, action == Action::\"NetworkConnect\", resource) \
         when {{ context.ip.isInRange(ip(\"192.0.2.0/24\")) }};",
        policy()
    );
    s.swap(&plan(&forbid), None).unwrap();
    assert_eq!(
        agent.ask("tcpw 192.0.2.1 443"),
        "err 1 EPERM",
        "the swapped-in forbid refuses"
    );
    s.swap(&plan(&policy()), None).unwrap();
    through(&mut agent, &s, "after swapping back");
    s.set_mode(Mode::Shadow).unwrap();
    through(&mut agent, &s, "in shadow mode");
    s.swap(&plan(&forbid), None).unwrap();
    through(&mut agent, &s, "forbidden, in shadow mode");
    s.set_mode(Mode::Enforce).unwrap();
    assert_eq!(
        agent.ask("tcpw 192.0.2.1 443"),
        "err 1 EPERM",
        "enforce refuses it again"
    );
    s.swap(&plan(&policy()), None).unwrap();
    through(&mut agent, &s, "back in enforce mode");
    assert!(s.layers().iter().any(|(k, _)| *k == "tcp egress"));
}

#[test]
fn without_redirect_there_is_no_proxy_path() {
    if !require_root("without_redirect_there_is_no_proxy_path") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let proxy = Proxy::new();
    let cg = Cgroup::create(&cgroup_name("redir-none")).unwrap();
    let (mut s, mut rx) = session(28, &cg, None, &policy());
    assert!(s.origins().is_none());
    assert!(!s.layers().iter().any(|(k, _)| *k == "tcp egress"));
    // Default deny and forbid are refused in the kernel, with events.
    assert_eq!(kt(Some(&cg), "tcp 203.0.113.7 80").0, EPERM);
    assert_eq!(kt(Some(&cg), "tcp 198.51.100.7 443").0, EPERM);
    assert!(nothing_accepted(&proxy.v4));
    let evs = drain(&rt, &mut s, &mut rx);
    let d80 = connect_events(&evs, 80);
    assert_eq!(d80.len(), 1, "{evs:#?}");
    assert_eq!(d80[0].decision, Some(Decision::Deny));
    assert!(d80[0].policies.is_empty(), "default deny names no policy");
    assert_eq!(connect_events(&evs, 443)[0].policies, vec!["no-evil".to_string()]);
}

#[test]
fn a_proxy_on_port_0_is_refused_at_start() {
    if !require_root("a_proxy_on_port_0_is_refused_at_start") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let cg = Cgroup::create(&cgroup_name("redir-port0")).unwrap();
    let mut cfg = common::net_only(29, cg.path());
    cfg.redirect = Some(Redirect {
        v4: "127.0.0.1:0".parse().unwrap(),
        v6: None,
    });
    let err = KernelSession::start(cfg, &plan(&policy()))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("port 0"), "{err}");
}
