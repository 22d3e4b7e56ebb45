//! `corral-kbench`: what kernel enforcement costs a governed process, and
//! how many events a session delivers before it starts losing them.
//!
//! ```text
//! corral-kbench [--quick] [--json] [--layer net|fanotify|lsm|trace|events|all]
//!               [--rounds N] [--no-pin] [--idle-poll]
//! corral-kbench --work OP N TARGET...      the workload (run by the bench itself)
//! ```
//!
//! Run as root. Each layer measures loops of one operation in a child
//! process (`--work`, which times its own N iterations, so process start-up
//! is excluded) placed in a fresh cgroup, on three sides: no session
//! (baseline); a [`KernelSession`] compiled from a generated 1,000-policy
//! plan whose events a task reads as they come (enforced); the same with
//! the runtime's threads blocked during the loop, so the events wait in the
//! ring buffers (readers paused: enforcement without event delivery; the
//! fanotify thread still decides). The sides take turns, in an order that
//! rotates every round; a session exists only during its own block, since
//! the fanotify mark and the telemetry tracepoints would otherwise touch
//! the baseline too. Reported per operation: the median ns/op of each side,
//! the ratio of medians, the range of the per-round ratios and the ratio of
//! the fastest rounds, as a Markdown table on stdout (with `--json`, a JSON
//! document on stdout and the table on stderr). On a host with several
//! CPUs the loop workloads are pinned to the last CPU (`taskset`;
//! `--no-pin` to let them roam); `--idle-poll` holds `/dev/cpu_dma_latency`
//! at 0.
//!
//! Layers: `net` (cgroup-bpf; file layer off), `fanotify` (the fallback on
//! a tmpfs), `trace` (exec under the always-on telemetry tracepoints),
//! `events` (event throughput and loss onset), `lsm` (BPF LSM: this host's
//! kernel refuses it, so the same loops run inside the QEMU VM of
//! `corral-vmtest`, booted by `benches/kbench_vm.rs` through cargo; inside
//! the VM this binary runs with `--in-vm`). `all` is every layer.
//!
//! Everything it creates (cgroups, the tmpfs, listeners, sessions, the VM)
//! is removed on the way out, error or not (not on SIGKILL; a session's
//! watchdog still kills its processes then). Exits non-zero when a
//! measurement fails: a workload error, a decision that is not the
//! policy's, a session that does not enforce.

use anyhow::{anyhow, bail, Context, Result};
use corral_core::{Decision, What};
use corral_kernel::cgroup::Cgroup;
use corral_kernel::session::{FileLayer, KernelSession, SessionConfig};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The principal of every benchmark session.
const PRINCIPAL: &str = "claude";
/// Prefix of the line that carries the report out of the VM.
const JSON_MARK: &str = "KBENCH-JSON ";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = if args.first().map(String::as_str) == Some("--work") {
        match work(args.get(1..).unwrap_or_default()) {
            Ok(line) => {
                println!("{line}");
                0
            }
            Err(e) => {
                eprintln!("corral-kbench --work: {e:#}");
                1
            }
        }
    } else {
        match Opts::parse(&args).and_then(|o| bench(&o)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("corral-kbench: {e:#}");
                1
            }
        }
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------
// The workload: one operation, N times, timed from inside.

/// `--work OP N TARGET...`; returns the line to print (`ns/op <x>` ...).
/// Ops: `open FILE`, `open-each DIR` (DIR/0 .. DIR/N-1), `stat FILE`,
/// `exec BIN` (spawn, exec, wait; must exit 0), `connect ADDR[,ADDR...]`
/// (connect and close, cycling over the addresses), `flood ADDRS DENIED`
/// (as `connect`, with every tenth attempt to DENIED, which must fail with
/// EPERM), `flood-udp ADDRS DENIED` (the same with UDP `sendto` from one
/// unconnected socket: one decision per datagram), `deny-open FILE` and
/// `deny-connect ADDR` (must fail with EPERM).
fn work(args: &[String]) -> Result<String> {
    let [op, n, rest @ ..] = args else {
        bail!("usage: --work OP N TARGET...")
    };
    let n: u64 = n.parse().with_context(|| format!("iteration count `{n}`"))?;
    let target = rest.first().ok_or_else(|| anyhow!("`{op}` needs a target"))?;
    let addrs = || -> Result<Vec<SocketAddr>> {
        target
            .split(',')
            .map(|a| a.parse().with_context(|| format!("address `{a}`")))
            .collect()
    };
    let warm = (n / 10).min(100);
    let ns = match op.as_str() {
        "open" => timed(n, warm, |_| std::fs::File::open(target).map(drop))?,
        "open-each" => {
            let dir = Path::new(target);
            timed(n, 0, |i| std::fs::File::open(dir.join(i.to_string())).map(drop))?
        }
        "stat" => timed(n, warm, |_| std::fs::metadata(target).map(drop))?,
        "exec" => timed(n, warm.min(3), |_| {
            let st = Command::new(target).status()?;
            if st.success() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!("{target} exited with {st}")))
            }
        })?,
        "connect" => {
            let a = addrs()?;
            timed(n, warm, |i| TcpStream::connect(pick(&a, i)?).map(drop))?
        }
        "flood" | "flood-udp" => {
            let a = addrs()?;
            let denied: SocketAddr = rest
                .get(1)
                .ok_or_else(|| anyhow!("flood needs a denied address"))?
                .parse()?;
            let udp = if op == "flood-udp" {
                Some(std::net::UdpSocket::bind("0.0.0.0:0")?)
            } else {
                None
            };
            let (mut ok, mut eperm) = (0u64, 0u64);
            let ns = timed(n, 0, |i| {
                let to = if i % 10 == 9 { &denied } else { pick(&a, i)? };
                let r = match &udp {
                    Some(u) => u.send_to(b"corral", to).map(drop),
                    None if i % 10 == 9 => TcpStream::connect_timeout(to, Duration::from_secs(2)).map(drop),
                    None => TcpStream::connect(to).map(drop),
                };
                if i % 10 == 9 {
                    expect_eperm(r)?;
                    eperm += 1;
                } else {
                    r?;
                    ok += 1;
                }
                Ok(())
            })?;
            return Ok(format!("allowed {ok} denied {eperm} ns/op {ns:.1}"));
        }
        "deny-open" => {
            expect_eperm(std::fs::File::open(target).map(drop))?;
            return Ok("denied".into());
        }
        "deny-connect" => {
            let a = addrs()?;
            expect_eperm(TcpStream::connect_timeout(pick(&a, 0)?, Duration::from_secs(2)).map(drop))?;
            return Ok("denied".into());
        }
        _ => bail!("unknown workload `{op}`"),
    };
    Ok(format!("ns/op {ns:.1}"))
}

fn pick(a: &[SocketAddr], i: u64) -> std::io::Result<&SocketAddr> {
    let len = u64::try_from(a.len()).unwrap_or(1).max(1);
    a.get(usize::try_from(i % len).unwrap_or(0))
        .ok_or_else(|| std::io::Error::other("no address"))
}

fn expect_eperm(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        Err(e) => Err(std::io::Error::other(format!("expected EPERM, got {e}"))),
        Ok(()) => Err(std::io::Error::other("expected EPERM, the operation succeeded")),
    }
}

/// Runs `warm` untimed iterations, then times `n`; ns per iteration.
fn timed(n: u64, warm: u64, mut f: impl FnMut(u64) -> std::io::Result<()>) -> Result<f64> {
    for i in 0..warm {
        f(i).with_context(|| format!("warm-up iteration {i}"))?;
    }
    let t = Instant::now();
    for i in 0..n {
        f(i).with_context(|| format!("iteration {i}"))?;
    }
    Ok(t.elapsed().as_nanos() as f64 / n.max(1) as f64)
}

// ---------------------------------------------------------------------------
// Options and sizes.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerKind {
    Net,
    Fanotify,
    Trace,
    Events,
    Lsm,
}

struct Opts {
    quick: bool,
    json: bool,
    layers: Vec<LayerKind>,
    /// Inside the VM: run the `lsm` layer here instead of booting a VM.
    in_vm: bool,
    /// Hold `/dev/cpu_dma_latency` at 0 while measuring: idle CPUs poll
    /// instead of halting, so a wake-up costs the same whatever else runs.
    idle_poll: bool,
    /// Let the loop workloads run on any CPU.
    no_pin: bool,
    /// Rounds per layer instead of the default.
    rounds: Option<usize>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts> {
        let mut o = Opts {
            quick: false,
            json: false,
            layers: Vec::new(),
            in_vm: false,
            idle_poll: false,
            no_pin: false,
            rounds: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--json" => o.json = true,
                "--in-vm" => o.in_vm = true,
                "--idle-poll" => o.idle_poll = true,
                "--no-pin" => o.no_pin = true,
                "--rounds" => {
                    let v = it.next().ok_or_else(|| anyhow!("`--rounds` needs a value"))?;
                    o.rounds = Some(v.parse().with_context(|| format!("`--rounds {v}`"))?);
                }
                "--layer" => {
                    let v = it.next().ok_or_else(|| anyhow!("`--layer` needs a value"))?;
                    o.layers.extend(match v.as_str() {
                        "net" => vec![LayerKind::Net],
                        "fanotify" => vec![LayerKind::Fanotify],
                        "trace" => vec![LayerKind::Trace],
                        "events" => vec![LayerKind::Events],
                        "lsm" => vec![LayerKind::Lsm],
                        "all" => vec![
                            LayerKind::Net,
                            LayerKind::Fanotify,
                            LayerKind::Trace,
                            LayerKind::Events,
                            LayerKind::Lsm,
                        ],
                        _ => bail!("unknown layer `{v}`; expected net, fanotify, lsm, trace, events or all"),
                    });
                }
                "-h" | "--help" => {
                    println!(
                        "usage: corral-kbench [--quick] [--json] [--layer net|fanotify|lsm|trace|events|all] \
                         [--rounds N] [--no-pin] [--idle-poll]"
                    );
                    std::process::exit(0);
                }
                _ => bail!("unknown argument `{a}`"),
            }
        }
        if o.layers.is_empty() {
            o.layers.push(LayerKind::Net);
        }
        if o.in_vm {
            o.layers = vec![LayerKind::Lsm];
        }
        Ok(o)
    }
}

/// Iterations per workload run and rounds per layer.
struct Sizes {
    rounds: usize,
    open: u64,
    open_each: u64,
    stat: u64,
    exec: u64,
    connect: u64,
    /// Per worker, TCP connects and UDP datagrams.
    flood: u64,
    flood_udp: u64,
}

impl Sizes {
    fn new(quick: bool, in_vm: bool) -> Sizes {
        match (quick, in_vm) {
            (true, _) => Sizes {
                rounds: 2,
                open: 300,
                open_each: 100,
                stat: 300,
                exec: 10,
                connect: 100,
                flood: 500,
                flood_udp: 5000,
            },
            // TCG runs everything some 10-50x slower.
            (false, true) => Sizes {
                rounds: 7,
                open: 5000,
                open_each: 1000,
                stat: 5000,
                exec: 100,
                connect: 1000,
                flood: 0,
                flood_udp: 0,
            },
            (false, false) => Sizes {
                rounds: 7,
                open: 20000,
                open_each: 5000,
                stat: 20000,
                exec: 300,
                connect: 5000,
                flood: 20000,
                flood_udp: 200000,
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Report.

#[derive(Debug, Default, Serialize, Deserialize)]
struct Report {
    machine: Machine,
    plan: Option<PlanInfo>,
    layers: Vec<LayerReport>,
    events: Vec<FloodRow>,
    /// The VM's machine and plan (for the `lsm` layer, when run on a host).
    vm: Option<VmInfo>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct VmInfo {
    machine: Machine,
    plan: Option<PlanInfo>,
    boot_ms: u64,
    total_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Machine {
    kernel: String,
    cpu: String,
    cpus: usize,
    loadavg_start: String,
    loadavg_end: String,
    in_vm: bool,
    /// The CPU the loop workloads ran on (`None`: not pinned).
    pinned_cpu: Option<usize>,
}

impl Machine {
    fn now(in_vm: bool) -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default();
        Machine {
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            cpu,
            cpus: std::thread::available_parallelism().map(usize::from).unwrap_or(0),
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
            in_vm,
            pinned_cpu: None,
        }
    }
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    read_trim("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct PlanInfo {
    policies: usize,
    file_forbids: usize,
    net_forbids: usize,
    permits: usize,
    /// `corral_policy::check`: parse, validate, compile.
    compile_ms: f64,
    read_rows: usize,
    write_rows: usize,
    exec_rows: usize,
    net_prefixes: usize,
    net_port_classes: usize,
    /// (prefix, port class) cells with a verdict: the kernel table's entries.
    net_cells: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LayerReport {
    layer: String,
    what: String,
    rounds: usize,
    rows: Vec<Row>,
    /// Events delivered over every enforced block of the layer, and lost
    /// with the readers running and with them paused.
    events: u64,
    lost: u64,
    lost_paused: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Row {
    op: String,
    iters: u64,
    base_ns: f64,
    enforced_ns: f64,
    ratio: f64,
    round_ratio_min: f64,
    round_ratio_max: f64,
    base_runs: Vec<f64>,
    enforced_runs: Vec<f64>,
    /// Fastest enforced round over fastest baseline round: the least
    /// disturbed pair when other load comes and goes.
    best_ratio: f64,
    /// With the session's event readers paused during the loop.
    paused_ns: f64,
    paused_ratio: f64,
    paused_runs: Vec<f64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FloodRow {
    scenario: String,
    kind: String,
    workers: usize,
    channel: usize,
    reader: String,
    allowed: u64,
    denied: u64,
    decisions_ok: bool,
    connect_events: u64,
    other_events: u64,
    /// `KernelSession::lost`: ring buffers and channel.
    lost_total: u64,
    /// Ring-buffer losses reported by the `Lost` events read (when the
    /// channel is never read: 0, and every loss counts as the channel's).
    lost_ring: u64,
    lost_channel: u64,
    /// Connect attempts per second, all workers (from their start to the last exit).
    produced_per_s: f64,
    /// From the workers' start to the last connect event read.
    secs: f64,
    events_per_s: f64,
}

// ---------------------------------------------------------------------------
// Fixture: tmpfs, listeners, the root cgroup. Dropped in field order.

struct Fixture {
    root: Cgroup,
    tmp: Tmpfs,
    listeners: Vec<Listener>,
    /// Where the UDP floods send (never read: the kernel drops what overflows).
    udp_sink: std::net::UdpSocket,
    seq: AtomicU64,
}

impl Fixture {
    fn new() -> Result<Fixture> {
        let pid = std::process::id();
        let tmp = Tmpfs::mount(&std::env::temp_dir().join(format!("corral-kbench-{pid}")))?;
        for d in ["m", "r"] {
            std::fs::create_dir_all(tmp.path.join(d))?;
            std::fs::write(tmp.path.join(d).join("file"), "corral")?;
            copy_exec(Path::new("/bin/true"), &tmp.path.join(d).join("true"))?;
        }
        std::fs::write(tmp.path.join("forbidden"), "secret")?;
        let listeners = (0..8).map(|_| Listener::start()).collect::<Result<Vec<_>>>()?;
        let root = Cgroup::create(&format!("corral-kbench-{pid}"))?;
        let udp_sink = std::net::UdpSocket::bind("127.0.0.1:0").context("bind a loopback UDP socket")?;
        Ok(Fixture {
            root,
            tmp,
            listeners,
            udp_sink,
            seq: AtomicU64::new(0),
        })
    }

    /// A fresh child cgroup (removed on drop).
    fn cgroup(&self, tag: &str) -> Result<Cgroup> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        Ok(self.root.child(&format!("{tag}-{n}"))?)
    }

    fn listen_all(&self) -> String {
        self.listeners
            .iter()
            .map(|l| l.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `count` empty files `0..count` in a new directory on the tmpfs.
    fn fresh(&self, count: u64) -> Result<PathBuf> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let dir = self.tmp.path.join("m").join(format!("fresh-{n}"));
        std::fs::create_dir(&dir)?;
        for i in 0..count {
            std::fs::File::create(dir.join(i.to_string()))?;
        }
        Ok(dir)
    }
}

/// Copies an executable, following symlinks (`/bin/true` may be busybox).
fn copy_exec(from: &Path, to: &Path) -> Result<()> {
    let real = std::fs::canonicalize(from).with_context(|| format!("resolve {}", from.display()))?;
    std::fs::copy(&real, to).with_context(|| format!("copy {} to {}", real.display(), to.display()))?;
    Ok(())
}

struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path) -> Result<Tmpfs> {
        std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
        nix::mount::mount(
            Some("corral-kbench"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=256m,mode=0755"),
        )
        .with_context(|| format!("mount tmpfs on {}", path.display()))?;
        let path = std::fs::canonicalize(path)?;
        Ok(Tmpfs { path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A loopback listener (outside every session) that accepts and closes.
struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    /// Binds 127.0.0.1:0 with a backlog of 4096 (std's `bind` gives 128,
    /// which a burst of connects overflows while the accept thread waits
    /// for a CPU; an overflowing backlog drops SYNs: one-second retries).
    /// Must be called inside the runtime (tokio makes the socket).
    fn start() -> Result<Listener> {
        let sock = tokio::net::TcpSocket::new_v4().context("make a TCP socket")?;
        sock.bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .context("bind a loopback listener")?;
        let l: TcpListener = sock.listen(4096).context("listen")?.into_std()?;
        l.set_nonblocking(false)?;
        let addr = l.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            for c in l.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                drop(c);
            }
        });
        Ok(Listener {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The 1,000-policy plan.

struct Policy {
    text: String,
    info: PlanInfo,
}

/// 500 file forbids (250 `File`, 250 `Dir`), 400 network forbids (200 on a
/// /24, 200 on a /24 and a port), 100 permits: 89 fillers on directories no
/// benchmark touches, 11 that allow what the benchmarks do.
fn policy_text(fx: &Fixture, bin_dir: &str) -> Policy {
    let t = fx.tmp.path.display().to_string();
    let mut s = String::new();
    let mut info = PlanInfo::default();
    for i in 0..250 {
        // The first one is the file the sessions' enforcement probe opens.
        let file = if i == 0 {
            format!("{t}/forbidden")
        } else {
            format!("/srv/data/f{i}")
        };
        let _ = writeln!(
            s,
            r#"@id("ff{i}") forbid (principal, action in Action::"FileOpen", resource == File::"{file}");"#
        );
        let _ = writeln!(
            s,
            r#"@id("fd{i}") forbid (principal, action in Action::"FileOpen", resource in Dir::"/srv/d{i}/");"#
        );
        info.file_forbids += 2;
    }
    for i in 0..400u32 {
        let (a, b) = (i / 256, i % 256);
        let port = if i % 2 == 1 {
            format!(" && context.port == {}", 2000 + (i / 2) % 16)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            r#"@id("nf{i}") forbid (principal, action == Action::"NetworkConnect", resource) when {{ context.ip.isInRange(ip("10.{a}.{b}.0/24")){port} }};"#
        );
        info.net_forbids += 1;
    }
    let permits = [
        r#"permit (principal, action == Action::"FileOpenReadOnly", resource in Dir::"/");"#.to_string(),
        format!(r#"permit (principal, action == Action::"FileOpenReadWrite", resource in Dir::"{t}/m/");"#),
        r#"permit (principal, action == Action::"FileOpenReadWrite", resource == File::"/dev/null");"#.to_string(),
        r#"permit (principal, action == Action::"ProcessExec", resource in Dir::"/bin/");"#.to_string(),
        r#"permit (principal, action == Action::"ProcessExec", resource in Dir::"/usr/bin/");"#.to_string(),
        format!(r#"permit (principal, action == Action::"ProcessExec", resource in Dir::"{bin_dir}/");"#),
        format!(r#"permit (principal, action == Action::"ProcessExec", resource in Dir::"{t}/m/");"#),
        format!(r#"permit (principal, action == Action::"ProcessExec", resource in Dir::"{t}/r/");"#),
        r#"permit (principal, action == Action::"NetworkConnect", resource) when { context.ip.isInRange(ip("127.0.0.1/32")) };"#.to_string(),
        r#"permit (principal, action == Action::"NetworkConnect", resource) when { context.ip.isInRange(ip("::1/128")) };"#.to_string(),
        r#"permit (principal, action == Action::"NetworkConnect", resource) when { context.ip.isInRange(ip("192.168.0.0/16")) && context.port == 443 };"#.to_string(),
    ];
    for (i, p) in permits.iter().enumerate() {
        let _ = writeln!(s, r#"@id("allow{i}") {p}"#);
        info.permits += 1;
    }
    for i in 0..(100 - permits.len()) {
        let _ = writeln!(
            s,
            r#"@id("pf{i}") permit (principal, action == Action::"FileOpenReadWrite", resource in Dir::"/srv/work{i}/");"#
        );
        info.permits += 1;
    }
    info.policies = info.file_forbids + info.net_forbids + info.permits;
    Policy { text: s, info }
}

fn compile(p: Policy) -> Result<(corral_policy::Plan, PlanInfo)> {
    let mut info = p.info;
    let t = Instant::now();
    let checked = corral_policy::check(vec![corral_policy::Source::new("kbench.cedar", p.text)]);
    info.compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let errors: Vec<String> = checked
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.render())
        .collect();
    if !errors.is_empty() {
        bail!("the generated policy does not compile:\n{}", errors.join("\n"));
    }
    let plan = checked
        .plan
        .ok_or_else(|| anyhow!("the generated policy produced no plan"))?;
    let pp = plan
        .for_principal(PRINCIPAL)
        .ok_or_else(|| anyhow!("the plan has no tables for `{PRINCIPAL}`"))?;
    info.read_rows = pp.file_read.rows();
    info.write_rows = pp.file_write.rows();
    info.exec_rows = pp.exec.rows();
    for t in &pp.net {
        info.net_prefixes += t.entries.len();
        info.net_port_classes += t.ports.len();
        info.net_cells += t
            .entries
            .iter()
            .map(|e| e.verdicts.iter().filter(|v| v.is_some()).count())
            .sum::<usize>();
    }
    Ok((plan, info))
}

// ---------------------------------------------------------------------------
// Sessions.

/// What a session's event channel brought.
struct Counts {
    t0: Instant,
    connect_allow: AtomicU64,
    connect_deny: AtomicU64,
    other: AtomicU64,
    lost_reported: AtomicU64,
    /// When the last connect event was read, ns after `t0`.
    last_connect_ns: AtomicU64,
}

impl Default for Counts {
    fn default() -> Counts {
        Counts {
            t0: Instant::now(),
            connect_allow: AtomicU64::new(0),
            connect_deny: AtomicU64::new(0),
            other: AtomicU64::new(0),
            lost_reported: AtomicU64::new(0),
            last_connect_ns: AtomicU64::new(0),
        }
    }
}

impl Counts {
    fn total(&self) -> u64 {
        self.connect_allow.load(Ordering::Relaxed)
            + self.connect_deny.load(Ordering::Relaxed)
            + self.other.load(Ordering::Relaxed)
    }
}

/// How the event channel is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// A task counts every event as it arrives.
    Drain,
    /// Nobody reads the channel.
    Unread,
    /// Every worker thread of the runtime is blocked while the workload
    /// runs, so the ring-buffer readers cannot run either; a task counts
    /// the events once they are released.
    Stalled,
}

struct Enforced {
    session: KernelSession,
    counts: Arc<Counts>,
    /// The task counting events (awaited at the end).
    counter: tokio::task::JoinHandle<()>,
    /// A task holding an unread receiver (aborted at the end).
    holder: Option<tokio::task::JoinHandle<()>>,
    /// Unblocks a [`Reader::Stalled`] runtime.
    release: Option<tokio::sync::watch::Sender<bool>>,
    cg: Cgroup,
}

struct Bench {
    rt: tokio::runtime::Runtime,
    fx: Fixture,
    plan: corral_policy::Plan,
    exe: PathBuf,
    /// The CPU the loop workloads are pinned to (`taskset`), if any.
    pin: Option<usize>,
    next_id: AtomicU64,
}

impl Bench {
    /// Starts a session on a fresh cgroup; with `probe`, checks that it
    /// denies a connect (and, with a file layer, an open) the policy forbids.
    fn start(&self, layer: FileLayer, channel: usize, reader: Reader, probe: bool) -> Result<Enforced> {
        let _g = self.rt.enter();
        let cg = self.fx.cgroup("enforced")?;
        let id = u32::try_from(self.next_id.fetch_add(1, Ordering::Relaxed) % 1_000_000).unwrap_or(0) + 1;
        let mut cfg = SessionConfig::new(id, PRINCIPAL, cg.path());
        cfg.file_layer = layer;
        cfg.channel = channel;
        if layer == FileLayer::Fanotify {
            cfg.file_mounts = vec![self.fx.tmp.path.clone()];
        }
        let (session, rx) = KernelSession::start(cfg, &self.plan).context("start the session")?;
        let want = match layer {
            FileLayer::Lsm => "bpf-lsm",
            FileLayer::Fanotify => "fanotify (fallback)",
            _ => "not enforced (file layer off)",
        };
        let got = session
            .layers()
            .iter()
            .find(|(k, _)| *k == "file open")
            .map(|(_, v)| *v)
            .unwrap_or("");
        if got != want {
            bail!("the session's file layer is `{got}`, not `{want}`");
        }
        let counts = Arc::new(Counts::default());
        let (mut release, mut holder) = (None, None);
        let counter = match reader {
            Reader::Drain => self.rt.spawn(count(rx, counts.clone())),
            Reader::Unread => {
                // Holds the receiver, never reading it, until aborted.
                holder = Some(self.rt.spawn(async move {
                    let _rx = rx;
                    std::future::pending::<()>().await;
                }));
                self.rt.spawn(async {})
            }
            Reader::Stalled => {
                // Blocks every worker thread of the runtime on purpose.
                let (tx, block) = tokio::sync::watch::channel(false);
                let (started_tx, started) = std::sync::mpsc::channel::<()>();
                for _ in 0..workers() {
                    let (mut block, started_tx) = (block.clone(), started_tx.clone());
                    self.rt.spawn(async move {
                        let _ = started_tx.send(());
                        while !*block.borrow_and_update() {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    });
                }
                for _ in 0..workers() {
                    let _ = started.recv_timeout(Duration::from_secs(5));
                }
                release = Some(tx);
                self.rt.spawn(count(rx, counts.clone()))
            }
        };
        let e = Enforced {
            session,
            counts,
            counter,
            holder,
            release,
            cg,
        };
        if probe {
            self.run(&e.cg, "deny-connect", 1, &["10.0.0.1:2000".to_string()])
                .context("enforcement probe: a connect the policy forbids")?;
            if layer != FileLayer::Off {
                let f = self.fx.tmp.path.join("forbidden").display().to_string();
                self.run(&e.cg, "deny-open", 1, &[f])
                    .context("enforcement probe: an open the policy forbids")?;
            }
        }
        Ok(e)
    }

    /// Ends a session after draining what the kernel queued; returns
    /// (events delivered, events lost, the counts).
    fn stop(&self, mut e: Enforced) -> (u64, u64, Arc<Counts>) {
        if let Some(r) = e.release.take() {
            let _ = r.send(true);
        }
        self.rt.block_on(e.session.flush());
        let lost = e.session.lost();
        drop(e.session);
        if let Some(h) = e.holder.take() {
            h.abort();
        }
        // Every sender is gone with the session: the counter ends once it
        // has read the channel empty.
        let counter = e.counter;
        let _ = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), counter).await });
        drop(e.cg);
        (e.counts.total(), lost, e.counts)
    }

    /// Runs the workload in `cg`; its output line.
    fn run(&self, cg: &Cgroup, op: &str, n: u64, target: &[String]) -> Result<String> {
        let mut cmd = match self.pin {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        cmd.arg("--work").arg(op).arg(n.to_string()).args(target);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cg.place(&mut cmd)?;
        let out = cmd.output().with_context(|| format!("run the `{op}` workload"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            bail!(
                "workload `{op} {n} {}` failed ({}): {}",
                target.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(stdout)
    }

    fn ns_per_op(&self, cg: &Cgroup, c: &Case, fresh: Option<&Path>) -> Result<f64> {
        let target = match (&c.target, fresh) {
            (Target::Fresh, Some(dir)) => dir.display().to_string(),
            (Target::Fresh, None) => bail!("no fresh files for `{}`", c.name),
            (Target::Path(p), _) => p.display().to_string(),
            (Target::Addrs(a), _) => a.clone(),
        };
        let line = self.run(cg, c.op, c.n, &[target])?;
        parse_ns(&line)
    }
}

fn parse_ns(line: &str) -> Result<f64> {
    line.split_whitespace()
        .skip_while(|w| *w != "ns/op")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no `ns/op` in the workload's output `{line}`"))
}

async fn count(mut rx: mpsc::Receiver<corral_core::Event>, c: Arc<Counts>) {
    while let Some(ev) = rx.recv().await {
        let n = match (&ev.what, ev.decision) {
            (What::Connect { .. }, Some(Decision::Allow)) => &c.connect_allow,
            (What::Connect { .. }, Some(_)) => &c.connect_deny,
            (What::Lost { count }, _) => {
                c.lost_reported.fetch_add(*count, Ordering::Relaxed);
                continue;
            }
            _ => &c.other,
        };
        n.fetch_add(1, Ordering::Relaxed);
        if matches!(ev.what, What::Connect { .. }) {
            let t = u64::try_from(c.t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            c.last_connect_ns.store(t, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------
// Loops: baseline vs enforced.

enum Target {
    Path(PathBuf),
    /// A new directory of N files per run.
    Fresh,
    /// Comma-separated addresses.
    Addrs(String),
}

struct Case {
    name: String,
    op: &'static str,
    n: u64,
    target: Target,
}

fn case(name: &str, op: &'static str, n: u64, target: Target) -> Case {
    Case {
        name: name.to_string(),
        op,
        n,
        target,
    }
}

fn cases(b: &Bench, kind: LayerKind, z: &Sizes) -> Vec<Case> {
    let t = &b.fx.tmp.path;
    let m_file = Target::Path(t.join("m/file"));
    // Over eight listeners: 8x the (address, port) pairs, so the ephemeral
    // ports left in TIME_WAIT by one run do not slow the next one's.
    let connect = case(
        "connect+close, 127.0.0.1",
        "connect",
        z.connect,
        Target::Addrs(b.fx.listen_all()),
    );
    let exec_bin = case(
        "spawn+exec+wait `/bin/true`",
        "exec",
        z.exec,
        Target::Path("/bin/true".into()),
    );
    match kind {
        LayerKind::Net => vec![
            connect,
            case("open+close (control: file layer off)", "open", z.open, m_file),
            case("stat (control)", "stat", z.stat, Target::Path(t.join("m/file"))),
        ],
        LayerKind::Trace => vec![exec_bin],
        LayerKind::Fanotify => vec![
            case("open+close, same file (ignore-marked)", "open", z.open, m_file),
            case(
                "open+close, same file (not markable)",
                "open",
                z.open,
                Target::Path(t.join("r/file")),
            ),
            case(
                "open+close, distinct new files",
                "open-each",
                z.open_each,
                Target::Fresh,
            ),
            case(
                "stat (not intercepted)",
                "stat",
                z.stat,
                Target::Path(t.join("m/file")),
            ),
            case(
                "exec, binary on the mount (ignore-marked)",
                "exec",
                z.exec,
                Target::Path(t.join("m/true")),
            ),
            case(
                "exec, binary on the mount (not markable)",
                "exec",
                z.exec,
                Target::Path(t.join("r/true")),
            ),
            case(
                "exec `/bin/true` (not on the mount)",
                "exec",
                z.exec,
                Target::Path("/bin/true".into()),
            ),
        ],
        LayerKind::Lsm => vec![
            case("open+close, same file", "open", z.open, m_file),
            case(
                "open+close, distinct new files",
                "open-each",
                z.open_each,
                Target::Fresh,
            ),
            case(
                "stat (not intercepted)",
                "stat",
                z.stat,
                Target::Path(t.join("m/file")),
            ),
            exec_bin,
            connect,
        ],
        LayerKind::Events => Vec::new(),
    }
}

fn layer_meta(kind: LayerKind) -> (&'static str, &'static str, FileLayer) {
    match kind {
        LayerKind::Net => (
            "net",
            "cgroup-bpf connect/sendmsg programs (file layer off)",
            FileLayer::Off,
        ),
        LayerKind::Trace => ("trace", "telemetry tracepoints (file layer off)", FileLayer::Off),
        LayerKind::Fanotify => ("fanotify", "fanotify fallback on a tmpfs", FileLayer::Fanotify),
        LayerKind::Lsm => ("lsm", "BPF LSM, in the QEMU VM (TCG)", FileLayer::Lsm),
        LayerKind::Events => ("events", "event throughput", FileLayer::Off),
    }
}

/// One side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// No session.
    Baseline,
    /// A session whose events are read as they come.
    Enforced,
    /// A session whose event readers cannot run during the loop (they drain
    /// the ring buffers afterwards): enforcement without event delivery.
    Paused,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Baseline => "baseline",
            Side::Enforced => "enforced",
            Side::Paused => "enforced, event readers paused",
        }
    }
}

fn loops(b: &Bench, kind: LayerKind, z: &Sizes) -> Result<LayerReport> {
    let (name, what, layer) = layer_meta(kind);
    let cases = cases(b, kind, z);
    let sides = [Side::Baseline, Side::Enforced, Side::Paused];
    // runs[side][case][round]
    let mut runs: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); cases.len()]; sides.len()];
    let mut report = LayerReport {
        layer: name.into(),
        what: what.into(),
        rounds: z.rounds,
        ..LayerReport::default()
    };
    for round in 0..z.rounds {
        // The order rotates every round, so drift hits every side alike.
        for k in 0..sides.len() {
            let si = (k + round) % sides.len();
            let side = sides.get(si).copied().unwrap_or(Side::Baseline);
            // Fresh files are made before the session exists.
            let fresh: Vec<Option<PathBuf>> = cases
                .iter()
                .map(|c| {
                    if matches!(c.target, Target::Fresh) {
                        b.fx.fresh(c.n).map(Some)
                    } else {
                        Ok(None)
                    }
                })
                .collect::<Result<_>>()?;
            let session = match side {
                Side::Baseline => None,
                Side::Enforced => Some(b.start(layer, 65536, Reader::Drain, true)?),
                Side::Paused => Some(b.start(layer, 65536, Reader::Stalled, true)?),
            };
            let base_cg = if session.is_none() {
                Some(b.fx.cgroup("baseline")?)
            } else {
                None
            };
            let place = session
                .as_ref()
                .map(|e| &e.cg)
                .or(base_cg.as_ref())
                .ok_or_else(|| anyhow!("no cgroup"))?;
            let mut results = Vec::new();
            for (c, f) in cases.iter().zip(&fresh) {
                let ns = b
                    .ns_per_op(place, c, f.as_deref())
                    .with_context(|| format!("{name} `{}` ({})", c.name, side.name()))?;
                results.push(ns);
            }
            if let Some(e) = session {
                let (ev, l, _) = b.stop(e);
                report.events += ev;
                if side == Side::Paused {
                    report.lost_paused += l;
                } else {
                    report.lost += l;
                }
            }
            drop(base_cg);
            for f in fresh.into_iter().flatten() {
                let _ = std::fs::remove_dir_all(f);
            }
            if let Some(side_runs) = runs.get_mut(si) {
                for (r, ns) in side_runs.iter_mut().zip(results) {
                    r.push(ns);
                }
            }
        }
        eprintln!("corral-kbench: {name}: round {}/{} done", round + 1, z.rounds);
    }
    let mut it = runs.into_iter();
    let (base, enf, paused) = (
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
    );
    report.rows = cases
        .iter()
        .zip(base.into_iter().zip(enf.into_iter().zip(paused)))
        .map(|(c, (b, (e, p)))| {
            let rr: Vec<f64> = b.iter().zip(&e).map(|(b, e)| e / b).collect();
            let (bm, em, pm) = (median(&b), median(&e), median(&p));
            Row {
                op: c.name.clone(),
                iters: c.n,
                base_ns: bm,
                enforced_ns: em,
                ratio: em / bm,
                round_ratio_min: rr.iter().copied().fold(f64::INFINITY, f64::min),
                round_ratio_max: rr.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                best_ratio: min(&e) / min(&b),
                paused_ns: pm,
                paused_ratio: pm / bm,
                base_runs: b,
                enforced_runs: e,
                paused_runs: p,
            }
        })
        .collect();
    Ok(report)
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s.get(n / 2).copied().unwrap_or(f64::NAN),
        n => {
            (s.get(n / 2 - 1).copied().unwrap_or(f64::NAN) + s.get(n / 2).copied().unwrap_or(f64::NAN)) / 2.0
        }
    }
}

// ---------------------------------------------------------------------------
// Event throughput and loss.

fn flood(b: &Bench, z: &Sizes) -> Result<Vec<FloodRow>> {
    use Reader::{Drain, Stalled, Unread};
    // (UDP?, workers, channel, reader): first what a session meets, then
    // less and less room until events are lost.
    let scenarios: [(bool, usize, usize, Reader); 10] = [
        (false, 1, 65536, Drain),
        (false, 2, 65536, Drain),
        (false, 4, 65536, Drain),
        (true, 1, 65536, Drain),
        (true, 2, 65536, Drain),
        (true, 2, 4096, Drain),
        (true, 2, 256, Drain),
        (true, 2, 16, Drain),
        (true, 2, 65536, Unread),
        (true, 2, 65536, Stalled),
    ];
    let mut rows = Vec::new();
    for (udp, workers, channel, reader) in scenarios {
        let (op, per) = if udp {
            ("flood-udp", z.flood_udp)
        } else {
            ("flood", z.flood)
        };
        let targets = if udp {
            b.fx.udp_sink.local_addr()?.to_string()
        } else {
            b.fx.listen_all()
        };
        let e = b.start(FileLayer::Off, channel, reader, false)?;
        let t = Instant::now();
        // On error, dropping the session's cgroup kills the workers started.
        let children = (0..workers)
            .map(|_| {
                let mut cmd = Command::new(&b.exe);
                cmd.args(["--work", op, &per.to_string(), &targets, "10.0.0.1:2000"]);
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                e.cg.place(&mut cmd)?;
                Ok(cmd.spawn()?)
            })
            .collect::<Result<Vec<_>>>()?;
        let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output()).collect();
        let produce_secs = t.elapsed().as_secs_f64();
        let (_, lost_total, counts) = b.stop(e);
        // Delivery: from the workers' start to the last connect event read.
        let start_ns = t.saturating_duration_since(counts.t0).as_nanos() as f64;
        let last_ns = counts.last_connect_ns.load(Ordering::Relaxed) as f64;
        let secs = (last_ns - start_ns).max(1.0) / 1e9;
        let (mut allowed, mut denied) = (0u64, 0u64);
        for o in outs {
            let o = o?;
            let line = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if !o.status.success() {
                bail!(
                    "flood worker failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
            let w: Vec<&str> = line.split_whitespace().collect();
            allowed += w.get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            denied += w.get(3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        let want_denied = per / 10 * u64::try_from(workers).unwrap_or(0);
        let want_allowed = per * u64::try_from(workers).unwrap_or(0) - want_denied;
        let decisions_ok = allowed == want_allowed && denied == want_denied;
        let connect_events =
            counts.connect_allow.load(Ordering::Relaxed) + counts.connect_deny.load(Ordering::Relaxed);
        let lost_ring = counts.lost_reported.load(Ordering::Relaxed);
        let row = FloodRow {
            scenario: format!(
                "{}, {workers} worker(s), channel {channel}, {}",
                if udp { "UDP sendto" } else { "TCP connect" },
                reader_name(reader)
            ),
            kind: if udp { "udp sendto" } else { "tcp connect" }.into(),
            workers,
            channel,
            reader: reader_name(reader).into(),
            allowed,
            denied,
            decisions_ok,
            connect_events,
            other_events: counts.other.load(Ordering::Relaxed),
            lost_total,
            lost_ring,
            lost_channel: lost_total.saturating_sub(lost_ring),
            produced_per_s: (allowed + denied) as f64 / produce_secs,
            secs,
            events_per_s: if connect_events > 0 {
                connect_events as f64 / secs
            } else {
                0.0
            },
        };
        eprintln!(
            "corral-kbench: events: {}: {} connects, {} delivered, {} lost",
            row.scenario,
            allowed + denied,
            connect_events,
            lost_total
        );
        rows.push(row);
        if !decisions_ok {
            bail!(
                "decisions changed under load: {allowed} allowed (want {want_allowed}), {denied} denied (want {want_denied})"
            );
        }
    }
    Ok(rows)
}

fn reader_name(r: Reader) -> &'static str {
    match r {
        Reader::Drain => "drained",
        Reader::Unread => "not read",
        Reader::Stalled => "readers stalled",
    }
}

// ---------------------------------------------------------------------------
// The VM, for the `lsm` layer.

/// Boots the VM through `benches/kbench_vm.rs` (the only target that may use
/// `corral-vmtest`, a dev-dependency) and reads the report it prints.
fn lsm_in_vm(quick: bool) -> Result<(LayerReport, VmInfo)> {
    let out = std::env::temp_dir().join(format!("corral-kbench-vm-{}.out", std::process::id()));
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(out.clone());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    eprintln!("corral-kbench: lsm: booting the VM (cargo test --release --bench kbench_vm)");
    // Cargo's and the VM's progress go to our stderr: stdout is the report.
    let stderr = std::io::stderr();
    let to_err = std::os::fd::AsFd::as_fd(&stderr).try_clone_to_owned()?;
    let st = Command::new(cargo)
        .args([
            "test",
            "--release",
            "--manifest-path",
            manifest,
            "--bench",
            "kbench_vm",
            "--",
        ])
        .args(["--ignored", "--nocapture", "--exact", "lsm_layer_in_vm"])
        .env("CORRAL_KBENCH_VM_OUT", &out)
        .env("CORRAL_KBENCH_VM_ARGS", if quick { "--quick" } else { "" })
        .stdin(Stdio::null())
        .stdout(Stdio::from(to_err))
        .status()
        .context("run cargo to boot the VM")?;
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let json = text.lines().find_map(|l| l.strip_prefix(JSON_MARK));
    let Some(json) = json else {
        bail!("the VM run ({st}) printed no report:\n{text}");
    };
    let mut r: Report = serde_json::from_str(json).context("parse the VM's report")?;
    let layer = r
        .layers
        .pop()
        .ok_or_else(|| anyhow!("the VM's report has no lsm layer"))?;
    let num = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("KBENCH-VM "))
            .and_then(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix(key)))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    if !st.success() {
        bail!("the VM run failed ({st}):\n{text}");
    }
    Ok((
        layer,
        VmInfo {
            machine: r.machine,
            plan: r.plan,
            boot_ms: num("boot_ms="),
            total_ms: num("total_ms="),
        },
    ))
}

// ---------------------------------------------------------------------------
// Driver and output.

/// Asks that no CPU enter an idle state with any exit latency (so idle
/// CPUs poll) for as long as the returned file is open.
fn idle_poll() -> Result<std::fs::File> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/cpu_dma_latency")
        .context("open /dev/cpu_dma_latency (for --idle-poll)")?;
    f.write_all(&0i32.to_ne_bytes())
        .context("write /dev/cpu_dma_latency")?;
    Ok(f)
}

/// Whether `name` is an executable on `PATH`.
fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

fn workers() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn bench(o: &Opts) -> Result<()> {
    if !is_root() {
        bail!("needs root (cgroups, BPF programs, fanotify, mounts)");
    }
    let mut z = Sizes::new(o.quick, o.in_vm);
    if let Some(r) = o.rounds {
        z.rounds = r.max(1);
    }
    // Held open until the end: the PM QoS request lasts as long as the fd.
    let _qos = if o.idle_poll { Some(idle_poll()?) } else { None };
    let mut report = Report {
        machine: Machine::now(o.in_vm),
        ..Report::default()
    };
    let native: Vec<LayerKind> = o
        .layers
        .iter()
        .copied()
        .filter(|k| *k != LayerKind::Lsm || o.in_vm)
        .collect();
    if !native.is_empty() {
        // One worker per CPU, as `#[tokio::main]` would.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers())
            .enable_all()
            .build()?;
        let fx = {
            let _g = rt.enter();
            Fixture::new()?
        };
        let exe = std::env::current_exe()?;
        let bin_dir = exe.parent().map(|p| p.display().to_string()).unwrap_or_default();
        eprintln!("corral-kbench: compiling the 1,000-policy plan");
        let (plan, info) = compile(policy_text(&fx, &bin_dir))?;
        report.plan = Some(info);
        // Pinned, a spawned child starts on its parent's CPU: unpinned, the
        // scheduler sends it to whichever CPU is idle, and on a VM waking an
        // idle vCPU costs more than the exec (so any background activity,
        // such as a session reading its events, would make execs faster).
        let pin = match (o.no_pin, workers()) {
            (false, n) if n > 1 && which("taskset") => Some(n - 1),
            _ => None,
        };
        report.machine.pinned_cpu = pin;
        let b = Bench {
            rt,
            fx,
            plan,
            exe,
            pin,
            next_id: AtomicU64::new(0),
        };
        for k in &native {
            match k {
                LayerKind::Events => report.events = flood(&b, &z)?,
                k => report.layers.push(loops(&b, *k, &z)?),
            }
        }
    }
    if o.layers.contains(&LayerKind::Lsm) && !o.in_vm {
        let (layer, vm) = lsm_in_vm(o.quick)?;
        report.layers.push(layer);
        report.vm = Some(vm);
    }
    report.machine.loadavg_end = loadavg();
    if o.in_vm {
        println!("{}", table(&report));
        println!("{JSON_MARK}{}", serde_json::to_string(&report)?);
    } else if o.json {
        // The table still goes to the terminal; stdout is the document.
        eprintln!("{}", table(&report));
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", table(&report));
    }
    Ok(())
}

/// `12345.6` -> `12,346`; below 100, one decimal.
fn ns(v: f64) -> String {
    if v < 100.0 {
        return format!("{v:.1}");
    }
    thousands(v.round() as u64)
}

fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A loss count by kind; unknown when nobody read the channel (the ring
/// buffer's losses are learnt from `Lost` events, which then never arrive).
fn split(f: &FloodRow, n: u64) -> String {
    if f.reader == reader_name(Reader::Unread) {
        "?".into()
    } else {
        thousands(n)
    }
}

fn table(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let pinned = m
        .pinned_cpu
        .map_or("not pinned".to_string(), |c| format!("pinned to CPU {c}"));
    let _ = writeln!(
        s,
        "machine: {} CPUs ({}), kernel {}, load {} -> {}; loop workloads {pinned}",
        m.cpus, m.cpu, m.kernel, m.loadavg_start, m.loadavg_end
    );
    let plan_line = |s: &mut String, p: &PlanInfo, place: &str| {
        let _ = writeln!(
            s,
            "plan ({place}): {} policies ({} file forbids, {} network forbids, {} permits), compiled in {:.2} s; \
             rows: read {}, write {}, exec {}; network: {} prefixes, {} port classes, {} cells",
            p.policies,
            p.file_forbids,
            p.net_forbids,
            p.permits,
            p.compile_ms / 1e3,
            p.read_rows,
            p.write_rows,
            p.exec_rows,
            p.net_prefixes,
            p.net_port_classes,
            p.net_cells
        );
    };
    if let Some(p) = &r.plan {
        plan_line(&mut s, p, if m.in_vm { "VM" } else { "host" });
    }
    if let Some(vm) = &r.vm {
        let _ = writeln!(
            s,
            "VM: {} CPU(s) ({}), kernel {}, boot {} ms, whole run {} s",
            vm.machine.cpus,
            vm.machine.cpu,
            vm.machine.kernel,
            vm.boot_ms,
            vm.total_ms / 1000
        );
        if let Some(p) = &vm.plan {
            plan_line(&mut s, p, "VM");
        }
    }
    for l in &r.layers {
        let _ = writeln!(
            s,
            "\n### {} — {} ({} rounds, medians)\n",
            l.layer, l.what, l.rounds
        );
        let _ = writeln!(
            s,
            "| operation | iterations | baseline ns/op | enforced ns/op | ratio | per-round ratios | best rounds | readers paused ns/op | ratio |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for row in &l.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.2} | {:.2}–{:.2} | {:.2} | {} | {:.2} |",
                row.op,
                thousands(row.iters),
                ns(row.base_ns),
                ns(row.enforced_ns),
                row.ratio,
                row.round_ratio_min,
                row.round_ratio_max,
                row.best_ratio,
                ns(row.paused_ns),
                row.paused_ratio
            );
        }
        let _ = writeln!(
            s,
            "\nevents delivered during the enforced runs: {}; lost: {} (readers running), {} (readers paused)",
            thousands(l.events),
            l.lost,
            l.lost_paused
        );
    }
    if !r.events.is_empty() {
        let _ = writeln!(
            s,
            "\n### events — decision events (one per connect or datagram) through the session's channel\n"
        );
        let _ = writeln!(
            s,
            "| traffic | workers | channel | reader | attempts (allowed + denied) | decisions as expected | decision events delivered | lost: ring buffer | lost: channel | attempted/s | delivered/s |"
        );
        let _ = writeln!(s, "|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|");
        for f in &r.events {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} + {} | {} | {} | {} | {} | {} | {} |",
                f.kind,
                f.workers,
                thousands(f.channel as u64),
                f.reader,
                thousands(f.allowed),
                thousands(f.denied),
                if f.decisions_ok { "yes" } else { "NO" },
                thousands(f.connect_events),
                split(f, f.lost_ring),
                split(f, f.lost_channel),
                thousands(f.produced_per_s.round() as u64),
                if f.connect_events > 0 {
                    thousands(f.events_per_s.round() as u64)
                } else {
                    "—".into()
                }
            );
        }
        let best = r
            .events
            .iter()
            .filter(|f| f.lost_total == 0)
            .max_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s));
        if let Some(b) = best {
            let _ = writeln!(
                s,
                "\nzero loss up to {} events/s ({})",
                thousands(b.events_per_s.round() as u64),
                b.scenario
            );
        }
        if let Some(f) = r.events.iter().find(|f| f.lost_total > 0) {
            let _ = writeln!(
                s,
                "loss starts at: {} ({} lost)",
                f.scenario,
                thousands(f.lost_total)
            );
        }
    }
    s
}
