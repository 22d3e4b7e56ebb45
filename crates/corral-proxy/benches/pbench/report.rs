//! What the bench prints: the table, the ratios of corral to every other
//! path, the accounting checks; or all of it as JSON.

use crate::client::{First, Route};
use crate::corral::Corral;
use crate::upstream::{self, Upstream};
use crate::{Args, Measured};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ratios of `corral` to `direct` and to each peer.
#[derive(Debug, Serialize)]
struct Ratios {
    against: String,
    /// corral's p50 and p99 keep-alive latency minus the other's, ms.
    latency_p50_overhead_ms: f64,
    latency_p99_overhead_ms: f64,
    /// corral's p50 keep-alive latency / the other's.
    latency_p50_ratio: f64,
    /// corral's requests/s (small) / the other's.
    throughput_ratio: f64,
    /// corral's MiB/s (large) / the other's.
    large_ratio: f64,
    /// corral's new-connection p50, warm and cold, / the other's.
    first_warm_ratio: f64,
    first_cold_ratio: f64,
}

fn ratios(out: &[Measured]) -> Vec<Ratios> {
    let Some(c) = out.iter().find(|m| m.name == "corral" && m.error.is_none()) else {
        return vec![];
    };
    out.iter()
        .filter(|m| m.name != "corral" && m.error.is_none())
        .map(|o| Ratios {
            against: o.name.clone(),
            latency_p50_overhead_ms: c.latency.p50_ms - o.latency.p50_ms,
            latency_p99_overhead_ms: c.latency.p99_ms - o.latency.p99_ms,
            latency_p50_ratio: c.latency.p50_ms / o.latency.p50_ms,
            throughput_ratio: c.small.per_sec / o.small.per_sec,
            large_ratio: c.large.mib_per_sec / o.large.mib_per_sec,
            first_warm_ratio: c.first_warm.total.p50_ms / o.first_warm.total.p50_ms,
            first_cold_ratio: c.first_cold.total.p50_ms / o.first_cold.total.p50_ms,
        })
        .collect()
}

pub fn print_table(
    a: &Args,
    versions: &[(String, String)],
    out: &[Measured],
    checks: &[(String, bool)],
    total: Duration,
) {
    println!(
        "corral-pbench: {} keep-alive requests of {} B after {} warm-up; {} conns x {:.0} s of {} B; \
         {} conns x {:.0} s of {} KiB; {} new connections warm and cold; each phase in {} rounds \
         alternating the paths; corral proxy on {} threads; {:.0} s",
        a.requests,
        a.small,
        a.warmup,
        a.conns,
        a.seconds,
        a.small,
        a.large_conns,
        a.seconds,
        a.large / 1024,
        a.new_conns,
        a.rounds,
        a.proxy_threads,
        total.as_secs_f64()
    );
    for (name, v) in versions {
        println!("peer {name}: {v}");
    }
    println!();
    println!(
        "{:<9} | {:>8} {:>8} | {:>9} {:>8} {:>8} | {:>8} | {:>9} {:>8} | {:>9} {:>8}",
        "path",
        "ka p50",
        "ka p99",
        "req/s",
        "load p50",
        "load p99",
        "MiB/s",
        "new warm",
        "p99",
        "new cold",
        "p99"
    );
    for m in out {
        println!(
            "{:<9} | {:>8.3} {:>8.3} | {:>9.0} {:>8.3} {:>8.3} | {:>8.1} | {:>9.3} {:>8.3} | {:>9.3} {:>8.3}",
            m.name,
            m.latency.p50_ms,
            m.latency.p99_ms,
            m.small.per_sec,
            m.small.latency.p50_ms,
            m.small.latency.p99_ms,
            m.large.mib_per_sec,
            m.first_warm.total.p50_ms,
            m.first_warm.total.p99_ms,
            m.first_cold.total.p50_ms,
            m.first_cold.total.p99_ms
        );
    }
    println!("(latencies in ms; ka = keep-alive, sequential; load = under the {} connections; new = connect + CONNECT + TLS + first request)", a.conns);
    for m in out {
        if let Some(e) = &m.error {
            println!("{} failed (its later rounds and phases not run): {e}", m.name);
        }
    }
    println!();
    println!("new connection, p50 of its parts (ms): tunnel = TCP + CONNECT answer, tls = handshake, request = first request");
    for m in out {
        let part = |f: &First| {
            format!(
                "tunnel {:.3}  tls {:.3}  request {:.3}",
                f.tunnel.p50_ms, f.tls.p50_ms, f.request.p50_ms
            )
        };
        println!(
            "{:<9} warm: {}   cold: {}",
            m.name,
            part(&m.first_warm),
            part(&m.first_cold)
        );
    }
    println!();
    for r in ratios(out) {
        println!(
            "corral vs {:<9} keep-alive p50 {:+.3} ms ({:.2}x), p99 {:+.3} ms; throughput {:.2}x; large bodies {:.2}x; new connection warm {:.2}x, cold {:.2}x",
            r.against,
            r.latency_p50_overhead_ms,
            r.latency_p50_ratio,
            r.latency_p99_overhead_ms,
            r.throughput_ratio,
            r.large_ratio,
            r.first_warm_ratio,
            r.first_cold_ratio
        );
    }
    println!();
    for (what, ok) in checks {
        println!("{} {what}", if *ok { "ok  " } else { "FAIL" });
    }
}

pub fn print_json(
    a: &Args,
    versions: &[(String, String)],
    out: &[Measured],
    checks: &[(String, bool)],
    total: Duration,
) -> anyhow::Result<()> {
    let v = serde_json::json!({
        "args": a,
        "peers": versions.iter().map(|(n, v)| serde_json::json!({"name": n, "version": v})).collect::<Vec<_>>(),
        "seconds": total.as_secs_f64(),
        "paths": out,
        "ratios": ratios(out),
        "checks": checks.iter().map(|(w, ok)| serde_json::json!({"check": w, "ok": ok})).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// The accounting checks: the upstream answered each path's requests, with
/// that path's header value (none direct, or where corral injects
/// nothing), and each corral's sink saw an event for each of its requests
/// and tunnels, and nothing else. Fills in the paths' request and
/// connection counts.
pub fn account(
    routes: &[Arc<Route>],
    out: &mut [Measured],
    corrals: &[(&str, Corral)],
    up: &Upstream,
) -> Vec<(String, bool)> {
    let mut checks = Vec::new();
    for (r, m) in routes.iter().zip(out.iter_mut()) {
        m.requests = r.requests.load(std::sync::atomic::Ordering::Relaxed);
        m.conns = r.conns.load(std::sync::atomic::Ordering::Relaxed);
        let corral = corrals.iter().find(|(n, _)| *n == r.name).map(|(_, c)| c);
        // Which value the upstream should see: each proxy's own, none
        // direct or where corral's policy injects nothing.
        let value = match (r.name.as_str(), corral) {
            ("direct", _) => None,
            (_, Some(c)) if !c.injects => None,
            (name, _) => Some(upstream::token(name)),
        };
        let (all, exact) = up.counts.of(&r.name, value.as_deref());
        checks.push((
            format!(
                "{}: requests answered by the upstream, with {} = requests sent ({all}, {exact} = {})",
                r.name,
                value
                    .as_deref()
                    .map(|_| "the header injected")
                    .unwrap_or("no header injected"),
                m.requests
            ),
            all == m.requests && exact == m.requests,
        ));
        let Some(corral) = corral else {
            continue;
        };
        // An event is emitted when the response body ends, which can be
        // just after the client has read it.
        let until = Instant::now() + Duration::from_secs(3);
        let mut seen = corral.seen.get();
        while (seen.0 != m.requests || seen.1 != m.conns) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
            seen = corral.seen.get();
        }
        let (ev_req, ev_conn, ev_other) = seen;
        checks.push((
            format!(
                "{}: request events (allowed, 200, {} header injected) = requests sent ({ev_req} = {})",
                r.name,
                usize::from(corral.injects),
                m.requests
            ),
            ev_req == m.requests,
        ));
        checks.push((
            format!(
                "{}: CONNECT events = connections opened ({ev_conn} = {})",
                r.name, m.conns
            ),
            ev_conn == m.conns,
        ));
        let sample = corral
            .seen
            .other_sample
            .lock()
            .map(|s| s.join("\n    "))
            .unwrap_or_default();
        let sample = if ev_other > 0 {
            format!(":\n    {sample}")
        } else {
            String::new()
        };
        checks.push((
            format!("{}: other events = 0 ({ev_other}){sample}", r.name),
            ev_other == 0,
        ));
    }
    checks
}
