//! `corral-pbench`: HTTPS through corral's egress proxy, against the same
//! requests sent directly and through peer interception proxies (mitmproxy,
//! squid with ssl-bump), all in one run (docs/BENCHMARKS.md, "Egress proxy").
//!
//! Paths: `direct` (client → upstream), `corral` (client → CONNECT →
//! corral's proxy, TLS intercepted, every request decided by Cedar, one
//! header injected → upstream) and each peer given on the command line,
//! set up to do the same (intercept, verify the upstream, inject the
//! header). With `--corral-connect-only`, also `corral-nc`: corral with a
//! policy of `NetworkConnect` permits only (no `HttpRequest` decision, no
//! injection), to show what the per-request decisions cost. Everything
//! listens on 127.0.0.1. Measured on every path, phase
//! by phase (each phase runs all paths before the next starts):
//!
//! * keep-alive latency: N sequential small requests on one connection,
//!   after a warm-up; p50, p99;
//! * throughput: C connections sending small requests back to back for a
//!   fixed time; requests/s, and the latency under that load;
//! * large bodies: the same with a large response; MiB/s;
//! * a new connection and its first request (TCP, CONNECT, TLS, request),
//!   warm (a host seen before: the leaf is cached) and cold (a new host
//!   each time: a leaf is issued).
//!
//! Every request's status and body length are checked; the upstream counts
//! the requests of each path (each proxy injects its own header value) and
//! corral's event sink counts its events: both must equal what the client
//! sent, so nothing is skipped silently.
//!
//! Run with `cargo bench -p corral-proxy --bench corral-pbench -- [ARGS]`;
//! `--help` lists the arguments.

mod client;
mod corral;
mod peers;
mod upstream;

use anyhow::{bail, Context as _};
use client::{first_request, latency, load, First, FirstRaw, Load, LoadRaw, Route, Stats};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "corral-pbench [--requests N] [--warmup N] [--conns C] [--seconds S] \
[--large-conns C] [--new-conns N] [--small BYTES] [--large BYTES] [--proxy-threads N] [--rounds R] \
[--peer-mitmdump PATH] [--peer-squid PATH] [--corral-connect-only] [--only PATH,...] [--json] [--quick]";

#[derive(Debug, Clone, Serialize)]
struct Args {
    requests: usize,
    warmup: usize,
    conns: usize,
    seconds: f64,
    large_conns: usize,
    new_conns: usize,
    small: usize,
    large: usize,
    proxy_threads: usize,
    rounds: usize,
    #[serde(skip)]
    mitmdump: Option<PathBuf>,
    #[serde(skip)]
    squid: Option<PathBuf>,
    #[serde(skip)]
    json: bool,
    /// Paths to run (empty: all).
    only: Vec<String>,
    /// Also run `corral-nc`: corral with a policy of `NetworkConnect`
    /// permits only (no `HttpRequest`, no injection).
    connect_only: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        requests: 2000,
        warmup: 200,
        conns: 16,
        seconds: 5.0,
        large_conns: 4,
        new_conns: 50,
        small: 1024,
        large: 1 << 20,
        proxy_threads: 2,
        rounds: 5,
        mitmdump: None,
        squid: None,
        json: false,
        only: vec![],
        connect_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("`{name}` needs a value"));
        match x.as_str() {
            "--requests" => a.requests = val("--requests")?.parse()?,
            "--warmup" => a.warmup = val("--warmup")?.parse()?,
            "--conns" => a.conns = val("--conns")?.parse()?,
            "--seconds" => a.seconds = val("--seconds")?.parse()?,
            "--large-conns" => a.large_conns = val("--large-conns")?.parse()?,
            "--new-conns" => a.new_conns = val("--new-conns")?.parse()?,
            "--small" => a.small = val("--small")?.parse()?,
            "--large" => a.large = val("--large")?.parse()?,
            "--proxy-threads" => a.proxy_threads = val("--proxy-threads")?.parse()?,
            "--rounds" => a.rounds = val("--rounds")?.parse()?,
            "--peer-mitmdump" => a.mitmdump = Some(val("--peer-mitmdump")?.into()),
            "--peer-squid" => a.squid = Some(val("--peer-squid")?.into()),
            "--json" => a.json = true,
            "--corral-connect-only" => a.connect_only = true,
            "--only" => a.only = val("--only")?.split(',').map(str::to_string).collect(),
            "--quick" => {
                a.requests = 200;
                a.warmup = 20;
                a.seconds = 1.0;
                a.new_conns = 10;
                a.rounds = 2;
            }
            // Passed by `cargo bench`.
            "--bench" => {}
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument `{x}`\nusage: {USAGE}"),
        }
    }
    if a.conns == 0 || a.large_conns == 0 || a.proxy_threads == 0 || a.rounds == 0 {
        bail!("counts must be at least 1");
    }
    if a.requests < a.rounds || a.new_conns < a.rounds {
        bail!("--requests and --new-conns must be at least --rounds");
    }
    Ok(a)
}

/// What one path measured.
#[derive(Debug, Clone, Default, Serialize)]
struct Measured {
    name: String,
    latency: Stats,
    small: Load,
    large: Load,
    first_warm: First,
    first_cold: First,
    /// Requests and connections the client completed on this path.
    requests: u64,
    conns: u64,
    /// Set when a phase failed (the path's later phases are skipped).
    error: Option<String>,
}

/// The samples of one path, merged over rounds.
#[derive(Debug, Default)]
struct Raw {
    latency: Vec<Duration>,
    small: LoadRaw,
    large: LoadRaw,
    warm: FirstRaw,
    cold: FirstRaw,
    error: Option<String>,
}

type Round<T> = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<T>>>>;

/// The paths and their samples.
struct Phases<'a> {
    rt: &'a tokio::runtime::Runtime,
    routes: &'a [Arc<Route>],
    raw: Vec<Raw>,
    rounds: usize,
    quiet: bool,
}

impl Phases<'_> {
    /// Runs one phase in `rounds` rounds; each round runs every path still
    /// without an error, in turn, so a change in the machine's load during
    /// the phase falls on every path.
    fn run<T>(&mut self, what: &str, f: impl Fn(Arc<Route>, usize) -> Round<T>, put: impl Fn(&mut Raw, T)) {
        let start = Instant::now();
        for round in 0..self.rounds {
            for (r, m) in self.routes.iter().zip(self.raw.iter_mut()) {
                if m.error.is_some() {
                    continue;
                }
                match self.rt.block_on(f(r.clone(), round)) {
                    Ok(v) => put(m, v),
                    Err(e) => m.error = Some(format!("{what}: {e:#}")),
                }
            }
        }
        if !self.quiet {
            eprintln!("  {what:<28} {:>6.1} s", start.elapsed().as_secs_f64());
        }
    }
}

fn runtime(name: &str, threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()?)
}

fn run() -> anyhow::Result<bool> {
    let a = args()?;
    let dir = tempfile::Builder::new().prefix("corral-pbench-").tempdir()?;
    // Separate runtimes: the client's, the upstream's and corral's proxy's
    // (its worker threads are the proxy's). All share the machine's cores.
    let client_rt = runtime("pbench-client", 2)?;
    let upstream_rt = runtime("pbench-upstream", 2)?;
    let proxy_rt = runtime("corral-proxy", a.proxy_threads)?;
    let up = upstream_rt.block_on(upstream::start(dir.path(), a.small, a.large))?;
    let mut corrals = vec![(
        "corral",
        corral::start(&proxy_rt, dir.path(), &up, "corral", true)?,
    )];
    if a.connect_only {
        let c = corral::start(&proxy_rt, dir.path(), &up, "corral-nc", false)?;
        corrals.push(("corral-nc", c));
    }
    let mut peers = Vec::new();
    for (name, exe) in [("mitmdump", &a.mitmdump), ("squid", &a.squid)] {
        let Some(exe) = exe else {
            eprintln!(
                "peer {name}: skipped (not given: --peer-{name} PATH; scripts/pbench-peer.sh installs it)"
            );
            continue;
        };
        if !exe.exists() {
            eprintln!("peer {name}: skipped (`{}` not found)", exe.display());
            continue;
        }
        let started = match name {
            "mitmdump" => peers::mitmdump(exe, dir.path(), &up),
            _ => peers::squid(exe, dir.path(), &up),
        };
        match started {
            Ok(p) => peers.push(p),
            Err(e) => eprintln!("peer {name}: skipped, it did not start: {e:#}"),
        }
    }
    let versions: Vec<(String, String)> = peers
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    let mut routes = vec![Arc::new(Route::new("direct", None, up.addr, up.ca_der.clone())?)];
    for (name, c) in &corrals {
        routes.push(Arc::new(Route::new(
            name,
            Some(c.addr),
            up.addr,
            c.ca_der.clone(),
        )?));
    }
    for p in &peers {
        routes.push(Arc::new(Route::new(
            &p.name,
            Some(p.addr),
            up.addr,
            p.ca_der.clone(),
        )?));
    }
    if !a.only.is_empty() {
        routes.retain(|r| a.only.contains(&r.name));
    }
    let mut out: Vec<Measured> = routes
        .iter()
        .map(|r| Measured {
            name: r.name.clone(),
            ..Measured::default()
        })
        .collect();
    let q = a.json;
    let (small, large, n, warm, conns, lconns, secs, k) = (
        a.small,
        a.large,
        a.requests,
        a.warmup,
        a.conns,
        a.large_conns,
        a.seconds,
        a.new_conns,
    );
    let rounds = a.rounds;
    let mut ph = Phases {
        rt: &client_rt,
        routes: &routes,
        raw: routes.iter().map(|_| Raw::default()).collect(),
        rounds,
        quiet: q,
    };
    let started = Instant::now();
    ph.run(
        "keep-alive latency",
        move |r, _| Box::pin(async move { latency(&r, warm / rounds, n / rounds, small).await }),
        |m, v| m.latency.extend(v),
    );
    ph.run(
        "throughput, small",
        move |r, _| Box::pin(async move { load(&r, conns, secs / rounds as f64, "/small", small).await }),
        |m, v| m.small.merge(v),
    );
    ph.run(
        "throughput, large",
        move |r, _| Box::pin(async move { load(&r, lconns, secs / rounds as f64, "/large", large).await }),
        |m, v| m.large.merge(v),
    );
    let per = k / rounds;
    ph.run(
        "new connection, warm host",
        move |r, i| {
            Box::pin(async move {
                first_request(&r, i * per..(i + 1) * per, small, |_| {
                    client::WARM_HOST.to_string()
                })
                .await
            })
        },
        |m, v| m.warm.merge(v),
    );
    ph.run(
        "new connection, cold host",
        move |r, i| {
            Box::pin(async move {
                let name = r.name.clone();
                first_request(&r, i * per..(i + 1) * per, small, move |i| {
                    format!("cold-{i}-{name}.bench.test")
                })
                .await
            })
        },
        |m, v| m.cold.merge(v),
    );
    for (m, r) in out.iter_mut().zip(&ph.raw) {
        m.latency = Stats::of(r.latency.clone());
        m.small = r.small.summary();
        m.large = r.large.summary();
        m.first_warm = r.warm.summary();
        m.first_cold = r.cold.summary();
        m.error = r.error.clone();
    }
    let total = started.elapsed();

    // Accounting: the upstream saw each path's requests, corral's sink an
    // event for each of its requests and tunnels, and nothing else.
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
    for p in &peers {
        if out.iter().any(|m| m.name == p.name && m.error.is_some()) {
            eprintln!("{} logs:\n{}", p.name, p.tail());
        }
    }
    drop(peers);
    let ok = out
        .iter()
        .filter(|m| m.name == "direct" || m.name.starts_with("corral"))
        .all(|m| m.error.is_none())
        && checks.iter().all(|c| c.1);
    if a.json {
        print_json(&a, &versions, &out, &checks, total)?;
    } else {
        print_table(&a, &versions, &out, &checks, total);
    }
    proxy_rt.shutdown_background();
    upstream_rt.shutdown_background();
    client_rt.shutdown_background();
    Ok(ok)
}

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

fn print_table(
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

fn print_json(
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

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("corral-pbench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
