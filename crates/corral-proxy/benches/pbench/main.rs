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
mod report;
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

    let checks = report::account(&routes, &mut out, &corrals, &up);
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
        report::print_json(&a, &versions, &out, &checks, total)?;
    } else {
        report::print_table(&a, &versions, &out, &checks, total);
    }
    proxy_rt.shutdown_background();
    upstream_rt.shutdown_background();
    client_rt.shutdown_background();
    Ok(ok)
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
