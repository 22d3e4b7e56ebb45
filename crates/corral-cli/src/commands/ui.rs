//! `corral ui`: the control UI and API server, one per user and store.
//!
//! `corral run` starts it (or joins the one already running for this user
//! and store) before the session starts, so the banner can print its URL
//! and the kernel can refuse the session's connections to its port. The
//! server is its own process (`corral ui serve`, started detached in a
//! process group of its own): it outlives the `corral run` that started it,
//! serves every session that records to the same store, and exits once no
//! session has run for `--linger` (default 30 minutes), or on
//! `corral ui stop`.
//!
//! Discovery: `<state>/ui/<store key>.json` (mode 0600: it holds the
//! token) says `{pid, addr, url, token, store}`. A server is joined only if
//! its process is alive and `GET /api/health` with the token answers 200
//! naming the same store; otherwise a new one is started. Checking and
//! starting happen under an exclusive lock on `<state>/ui/lock`, so two
//! `corral run` started together end up on one server.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use corral_runtime::config::{self, Flags};
use serde::{Deserialize, Serialize};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// How long a starter waits for a new server to announce itself.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the health check waits for an answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the server looks for running sessions.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// `corral ui`'s arguments.
#[derive(Args)]
pub struct UiArgs {
    #[command(subcommand)]
    cmd: Option<UiCmd>,
    #[command(flatten)]
    opts: UiOpts,
}

/// Options shared by the subcommands.
#[derive(Args, Clone)]
pub struct UiOpts {
    /// Address and port (default: config's `ui.listen`, 127.0.0.1:18080;
    /// the next free port if taken).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// The audit store (default: config's `audit.store`).
    #[arg(long, global = true)]
    store: Option<PathBuf>,
}

#[derive(Subcommand)]
enum UiCmd {
    /// Start the server in the background unless one runs, and print its
    /// URL (the default).
    Open,
    /// Print the running server's URL; exit 1 when none runs.
    Url,
    /// Stop the running server.
    Stop,
    /// Serve in the foreground until interrupted (what the background
    /// server runs).
    Serve {
        /// Exit once no session has run for this long (`30m`, `2h`, `0` =
        /// never).
        #[arg(long, default_value = "30m")]
        linger: String,
    },
}

/// What a running server announces in its discovery file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UiInfo {
    /// The server's process.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The URL with the token (the banner's).
    pub url: String,
    /// The access token.
    pub token: String,
    /// The store it serves.
    pub store: PathBuf,
}

/// Runs `corral ui`.
pub fn run(args: UiArgs) -> Result<ExitCode> {
    let (listen, allow_non_loopback, store) = resolve(&args.opts)?;
    let state = super::run::state_dir();
    match args.cmd.unwrap_or(UiCmd::Open) {
        UiCmd::Open => {
            let info = ensure(&state, &store, listen)?;
            println!("{}", info.url);
            Ok(ExitCode::SUCCESS)
        }
        UiCmd::Url => match find(&state, &store) {
            Some(info) => {
                println!("{}", info.url);
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("corral: no control UI server runs for {}", store.display());
                Ok(ExitCode::from(1))
            }
        },
        UiCmd::Stop => match find(&state, &store) {
            Some(info) => {
                stop(&info)?;
                eprintln!("corral: stopped the control UI server (pid {})", info.pid);
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("corral: no control UI server runs for {}", store.display());
                Ok(ExitCode::SUCCESS)
            }
        },
        UiCmd::Serve { linger } => {
            let linger = parse_linger(&linger)?;
            serve(&state, &store, listen, allow_non_loopback, linger)
        }
    }
}

/// The address, whether a non-loopback one was configured explicitly, and
/// the store, from the flags and the configuration files.
fn resolve(opts: &UiOpts) -> Result<(SocketAddr, bool, PathBuf)> {
    let flags = Flags {
        ui_listen: opts.listen.clone(),
        store: opts.store.clone(),
        ..Flags::default()
    };
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let project = config::find_project(&cwd).map(|d| d.join("corral.toml"));
    let global = config::global_path();
    let s = config::load(global.as_deref(), project.as_deref(), &flags)?;
    let store = s
        .audit
        .store
        .as_ref()
        .map(|v| v.value.clone())
        .unwrap_or_else(corral_audit::default_path);
    let explicit = s.ui_listen.origin != config::Origin::Default;
    Ok((s.ui_listen.value, explicit, store))
}

fn parse_linger(s: &str) -> Result<Option<Duration>> {
    let s = s.trim();
    if s == "0" {
        return Ok(None);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("--linger {s:?}: expected e.g. 30m, 2h, 90s or 0"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("--linger {s:?}: unit must be s, m or h"),
    };
    Ok(Some(Duration::from_secs(secs)))
}

/// A stable key for a store path (FNV-1a, 64 bits): one discovery file per
/// store. Not a security boundary, only a file name.
fn store_key(store: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in store.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn ui_dir(state: &Path) -> PathBuf {
    state.join("ui")
}

fn info_path(state: &Path, store: &Path) -> PathBuf {
    ui_dir(state).join(format!("{}.json", store_key(store)))
}

/// The server for `store`, if one runs and answers with its token.
pub fn find(state: &Path, store: &Path) -> Option<UiInfo> {
    let text = std::fs::read_to_string(info_path(state, store)).ok()?;
    let info: UiInfo = serde_json::from_str(&text).ok()?;
    if info.store != store || !Path::new(&format!("/proc/{}", info.pid)).exists() {
        return None;
    }
    healthy(&info).then_some(info)
}

/// `GET /api/health` with the token answers 200 and names the same store.
/// A few lines of HTTP/1.1 over a socket rather than an HTTP client crate:
/// one fixed request to our own server on loopback.
fn healthy(info: &UiInfo) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&info.addr, HEALTH_TIMEOUT) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(HEALTH_TIMEOUT));
    let _ = s.set_write_timeout(Some(HEALTH_TIMEOUT));
    let req = format!(
        "GET /api/health HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        info.addr, info.token
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    if s.take(1 << 16).read_to_end(&mut buf).is_err() {
        return false;
    }
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    if !head.starts_with("HTTP/1.1 200") {
        return false;
    }
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("store").and_then(|s| s.as_str()).map(PathBuf::from))
        .is_some_and(|s| s == info.store)
}

/// Joins the running server for `store`, or starts one in the background
/// and waits until it answers.
pub fn ensure(state: &Path, store: &Path, listen: SocketAddr) -> Result<UiInfo> {
    let dir = ui_dir(state);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let lock_path = dir.join("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("lock {}", lock_path.display()))?;
    if let Some(info) = find(state, store) {
        return Ok(info);
    }
    let exe = std::env::current_exe().context("cannot find the corral binary")?;
    let log_path = dir.join(format!("{}.log", store_key(store)));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(["ui", "serve", "--listen"])
        .arg(listen.to_string())
        .arg("--store")
        .arg(store)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicate the log file")?)
        .stderr(log);
    // The child takes the address as a flag, which counts as explicitly
    // configured: it was (by this user's config or flag), or it is the
    // loopback default.
    // Not holding the project directory.
    cmd.current_dir("/");
    // A process group of its own: the terminal's Ctrl-C for `corral run`
    // does not reach the server other sessions use.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().context("start the control UI server")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(info) = find(state, store).filter(|i| i.pid == child.id()) {
            return Ok(info);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            bail!(
                "the control UI server exited at start ({status}): {last} (log: {})",
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the control UI server did not answer within {} s (log: {})",
                START_TIMEOUT.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Stops the server `info` names (SIGTERM, then waits for it to go).
pub fn stop(info: &UiInfo) -> Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &info.pid.to_string()])
        .status()
        .context("run kill")?;
    if !status.success() {
        bail!("cannot signal the control UI server (pid {})", info.pid);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{}", info.pid)).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Serves in the foreground: binds, announces itself in the discovery
/// file, serves until SIGINT/SIGTERM or `linger` without sessions.
fn serve(
    state: &Path,
    store: &Path,
    listen: SocketAddr,
    allow_non_loopback: bool,
    linger: Option<Duration>,
) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let run_root = super::run::run_root();
    rt.block_on(async move {
        let mut cfg = corral_server::ServerConfig::new(store.to_path_buf(), run_root.clone());
        cfg.listen = listen;
        // Sessions started from the UI: this binary's `corral run`, their
        // output under <state>/ui/runs.
        cfg.start = std::env::current_exe()
            .ok()
            .map(|exe| corral_server::StartConfig {
                exe,
                log_dir: ui_dir(state).join("runs"),
            });
        cfg.allow_non_loopback = allow_non_loopback;
        let server = corral_server::Server::bind(cfg).await?;
        let info = UiInfo {
            pid: std::process::id(),
            addr: server.local_addr(),
            url: server.url(),
            token: server.token().to_string(),
            store: store.to_path_buf(),
        };
        write_info(&info_path(state, store), &info)?;
        eprintln!("corral: control UI {} (store {})", info.url, store.display());
        let path = info_path(state, store);
        let watch_path = path.clone();
        let shutdown = async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("corral: cannot watch SIGTERM: {e}");
                    return;
                }
            };
            let idle = idle_exit(run_root, linger, watch_path);
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                why = idle => eprintln!("corral: {why}; exiting"),
            }
        };
        let res = server.serve(shutdown).await;
        // Only remove the file if it is still ours.
        if std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<UiInfo>(&t).ok())
            .is_some_and(|i| i.pid == std::process::id())
        {
            let _ = std::fs::remove_file(&path);
        }
        res?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Completes, saying why, once no session has been running under
/// `run_root` for `linger` (never with `None`), or once the discovery file
/// is gone or names another server (its state directory was removed, or
/// another server took over): nobody can find this one any more.
async fn idle_exit(run_root: PathBuf, linger: Option<Duration>, info: PathBuf) -> String {
    let mut last_busy = Instant::now();
    let me = std::process::id();
    loop {
        tokio::time::sleep(linger.map_or(IDLE_CHECK, |l| IDLE_CHECK.min(l))).await;
        let ours = std::fs::read_to_string(&info)
            .ok()
            .and_then(|t| serde_json::from_str::<UiInfo>(&t).ok())
            .is_some_and(|i| i.pid == me);
        if !ours {
            return format!("{} no longer names this server", info.display());
        }
        let Some(linger) = linger else {
            continue;
        };
        let root = run_root.clone();
        let busy = tokio::task::spawn_blocking(move || !corral_runtime::control::running(&root).is_empty())
            .await
            .unwrap_or(true);
        if busy {
            last_busy = Instant::now();
        } else if last_busy.elapsed() >= linger {
            return format!("no session ran for {} s", linger.as_secs());
        }
    }
}

/// Writes the discovery file atomically, readable by the owner only (it
/// holds the token).
fn write_info(path: &Path, info: &UiInfo) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension(format!("json.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("write {}", tmp.display()))?;
    f.write_all(serde_json::to_string(info)?.as_bytes())
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
