//! parse → validate → lint → compile on arbitrary policy text.
//!
//! The input bytes are a policy file (lossy UTF-8). `corral_policy::check`
//! must never panic: it returns diagnostics for anything it rejects. Every
//! diagnostic is rendered (rendering slices the source by byte spans), and
//! when a plan comes out its kernel tables are queried: each listed path and
//! a child of it, a few fixed paths, and each listed prefix at each port class.
#![no_main]

use corral_policy::plan::{NetTable, PathTable};
use corral_policy::{check, Source};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Paths asked of every path table, whatever the policy mentions.
const PATHS: &[&str] = &[
    "/",
    "/etc/passwd",
    "/usr/bin/git",
    "/tmp/x",
    "/home/agent/.ssh/id_ed25519",
    "/work/project/src/main.rs",
    "/dev/null",
];

/// Addresses asked of every network table.
const ADDRS: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)),
    IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    // v4-mapped: looked up as 10.0.0.7.
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0007)),
];

const PORTS: &[u16] = &[0, 22, 53, 80, 443, 8080, 65535];

fn query_paths(t: &PathTable) {
    for p in PATHS {
        let _ = t.lookup(p, false);
        let _ = t.lookup(p, true);
    }
    for key in t.entries.keys().take(64) {
        let _ = t.lookup(key, false);
        let _ = t.lookup(key, true);
        let child = if key == "/" {
            "/x".to_string()
        } else {
            format!("{key}/x")
        };
        let _ = t.lookup(&child, false);
        let _ = t.lookup(&child, true);
    }
    let _ = t.rows();
}

fn query_net(t: &NetTable) {
    for ip in ADDRS {
        for port in PORTS {
            let _ = t.lookup(*ip, *port);
        }
    }
    for e in t.entries.iter().take(64) {
        for r in &t.ports {
            let _ = t.lookup(e.prefix.network(), r.lo);
            let _ = t.lookup(e.prefix.broadcast(), r.hi);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let checked = check(vec![Source::new("fuzz.cedar", text.as_ref())]);
    let _ = checked.ok();
    for d in &checked.diagnostics {
        let _ = d.render();
        let _ = d.location();
    }
    if let Some(plan) = &checked.plan {
        for pp in &plan.principals {
            query_paths(&pp.file_read);
            query_paths(&pp.file_write);
            query_paths(&pp.exec);
            for t in &pp.net {
                query_net(t);
                if let Some(v) = t.entries.first().and_then(|e| e.verdicts.first()).and_then(Option::as_ref) {
                    let _ = plan.describe(v);
                }
            }
        }
        let _ = plan.for_principal("claude");
        let _ = serde_json::to_string(plan);
    }
});
