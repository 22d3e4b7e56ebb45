//! `corral-mbench`: the latency corral adds to an MCP `tools/call`, through
//! the stdio relay (`corral mcp wrap`) and through the egress proxy,
//! against the same calls made directly, all in one run
//! (docs/BENCHMARKS.md, "MCP").
//!
//! The server is the real `@modelcontextprotocol/server-everything`
//! (scripts/deps.sh installs it); every call is its `echo` tool with a
//! short message, made sequentially on one conversation. Configurations:
//!
//! * `stdio-direct`: the server spawned by the bench, which writes
//!   newline-delimited JSON-RPC on its stdin and reads its stdout;
//! * `stdio-wrapped`: the same server behind the real relay (the static
//!   corral-init this crate embeds, started as `corral mcp wrap`) and an
//!   in-process [`McpHost`](corral_runtime::mcp::McpHost) deciding every
//!   message with a real Cedar policy (the default policy plus three tool
//!   forbids);
//! * `http-direct`: the server's streamable HTTP transport on 127.0.0.1,
//!   one keep-alive HTTP/1.1 connection (hyper), answers read whole (SSE);
//! * `http-proxy`: the same client through an in-process egress proxy
//!   (plain HTTP, every request decided, MCP governed by the same policy);
//! * `governor`: `Governor::from_client` + `from_server` of one call and
//!   its answer, in-process: the decision work alone.
//!
//! Each configuration is warmed up, then the calls run in rounds that
//! alternate the configurations, so a change in the machine's load falls
//! on all of them. Every answer is checked (its id and the echoed text),
//! a forbidden tool is refused through both governed paths before the
//! timing starts, and the governed paths must have recorded one allowed
//! `tools/call` decision per call made: otherwise the run fails.
//!
//! Run with `cargo bench -p corral-runtime --bench corral-mbench -- [ARGS]`;
//! `--help` lists the arguments.

mod governor;
mod http;
mod report;
mod setup;
mod stdio;

use anyhow::{bail, Context as _};
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const USAGE: &str = "corral-mbench [--calls N] [--warmup N] [--rounds R] [--only NAME,...] \
[--server PATH] [--json] [--quick]";

/// Where scripts/deps.sh (`corral_mcp_deps`) installs server-everything.
const SERVER: &str = "/var/cache/corral/mcp-test/node_modules/.bin/mcp-server-everything";

/// The echo tool's argument in every call.
pub const MESSAGE: &str = "hello from corral-mbench";

/// How long a step that should be quick may take before the run fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The command line.
#[derive(Debug, Clone)]
pub struct Args {
    /// Timed calls per configuration.
    pub calls: usize,
    /// Untimed calls per configuration before the first round.
    pub warmup: usize,
    /// Rounds the timed calls are split into.
    pub rounds: usize,
    /// Configurations to run (empty: all).
    pub only: Vec<String>,
    /// server-everything's executable.
    pub server: PathBuf,
    /// Print JSON instead of the table.
    pub json: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        calls: 2000,
        warmup: 200,
        rounds: 10,
        only: vec![],
        server: PathBuf::from(SERVER),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("`{name}` needs a value"));
        match x.as_str() {
            "--calls" => a.calls = val("--calls")?.parse().context("--calls")?,
            "--warmup" => a.warmup = val("--warmup")?.parse().context("--warmup")?,
            "--rounds" => a.rounds = val("--rounds")?.parse().context("--rounds")?,
            "--only" => a.only = val("--only")?.split(',').map(str::to_string).collect(),
            "--server" => a.server = val("--server")?.into(),
            "--json" => a.json = true,
            "--quick" => {
                a.calls = 200;
                a.warmup = 20;
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
    if a.rounds == 0 || a.calls < a.rounds {
        bail!("--rounds must be at least 1 and --calls at least --rounds");
    }
    for name in &a.only {
        if !NAMES.contains(&name.as_str()) {
            bail!(
                "--only: unknown configuration `{name}` (known: {})",
                NAMES.join(", ")
            );
        }
    }
    Ok(a)
}

/// The configurations, in the order they run and are printed.
pub const NAMES: [&str; 5] = [
    "stdio-direct",
    "stdio-wrapped",
    "http-direct",
    "http-proxy",
    "governor",
];

/// One way of making calls.
pub trait Target {
    /// Makes the calls with these JSON-RPC ids, one after the other, and
    /// returns the round-trip time of each: from before the request is
    /// written to when its answer has been read whole.
    fn calls(&mut self, ids: Range<u64>) -> anyhow::Result<Vec<Duration>>;
}

/// A `tools/call` of `echo` with id `id`, as one line of JSON (no newline).
pub fn echo_call(id: u64) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": MESSAGE}},
    })
    .to_string()
}

/// Checks that `v` answers call `id` with the echoed message.
pub fn check_echo(v: &serde_json::Value, id: u64) -> anyhow::Result<()> {
    if v["id"] != id {
        bail!("answer with id {} to call {id}: {v}", v["id"]);
    }
    let want = format!("Echo: {MESSAGE}");
    if v["result"]["content"][0]["text"] != want.as_str() {
        bail!("call {id} was not answered with `{want}`: {v}");
    }
    Ok(())
}

fn run() -> anyhow::Result<bool> {
    let a = args()?;
    if !a.server.exists() {
        bail!(
            "server-everything is not installed at `{}` (scripts/deps.sh installs it: \
             `corral_mcp_deps`; or give --server PATH)",
            a.server.display()
        );
    }
    let wanted = |n: &str| a.only.is_empty() || a.only.iter().any(|o| o == n);
    let started = Instant::now();
    let mut env = setup::Env::new(&a)?;
    let mut targets: Vec<(&str, Box<dyn Target>)> = Vec::new();
    for name in NAMES.iter().copied().filter(|n| wanted(n)) {
        let t: Box<dyn Target> = match name {
            "stdio-direct" => Box::new(env.stdio_direct()?),
            "stdio-wrapped" => Box::new(env.stdio_wrapped()?),
            "http-direct" => Box::new(env.http_direct()?),
            "http-proxy" => Box::new(env.http_proxy()?),
            _ => Box::new(env.governor()?),
        };
        targets.push((name, t));
    }
    if !a.quiet() {
        eprintln!("set up in {:.1} s", started.elapsed().as_secs_f64());
    }

    // Ids: 1 and 2 were initialize and the denied call; each target then
    // counts from 10.
    let mut next = vec![10u64; targets.len()];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
    for (i, (name, t)) in targets.iter_mut().enumerate() {
        let ids = next[i]..next[i] + a.warmup as u64;
        t.calls(ids).with_context(|| format!("{name}: warm-up"))?;
        next[i] += a.warmup as u64;
    }
    let per = (a.calls / a.rounds) as u64;
    let timed = Instant::now();
    for round in 0..a.rounds {
        for (i, (name, t)) in targets.iter_mut().enumerate() {
            let ids = next[i]..next[i] + per;
            let d = t
                .calls(ids)
                .with_context(|| format!("{name}: round {}", round + 1))?;
            samples[i].extend(d);
            next[i] += per;
        }
    }
    let timed = timed.elapsed();
    drop(targets);

    let made: Vec<(String, u64)> = NAMES
        .iter()
        .filter(|n| wanted(n))
        .zip(&next)
        .map(|(n, last)| (n.to_string(), last - 10))
        .collect();
    let checks = env.account(&made);
    let rows = report::rows(NAMES.iter().filter(|n| wanted(n)).copied(), samples);
    if a.json {
        report::print_json(&a, &rows, &checks, timed)?;
    } else {
        report::print_table(&a, &rows, &checks, timed);
    }
    env.close();
    Ok(checks.iter().all(|c| c.ok))
}

impl Args {
    fn quiet(&self) -> bool {
        self.json
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("corral-mbench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
