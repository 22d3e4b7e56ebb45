//! What the configurations share: a temporary directory, the policy, the
//! supervisor's side of the relay (an `McpHost` on its own runtime), the
//! egress proxy (on its own runtime), server-everything over HTTP, and the
//! counters of decisions each governed path recorded. Everything started
//! here is stopped by PID and the directory removed when [`Env`] drops,
//! also on error.

use crate::governor::GovernorTarget;
use crate::http::{HttpServer, HttpTarget};
use crate::stdio::StdioTarget;
use crate::{Args, PATIENCE};
use anyhow::{anyhow, Context as _};
use corral_core::Mode;
use corral_mcp::{Authority, Limits, McpEvent, McpPolicy, McpSink, Stage};
use corral_policy::{PolicyDoc, Source};
use corral_proxy::{Ca, Dest, Proxy, ProxyConfig, ProxyPolicy};
use corral_runtime::mcp::{CallLog, McpHost};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The tools the policy forbids on top of the default policy (the first
/// is the one the bench checks is refused).
pub const FORBIDDEN: [&str; 3] = ["get-env", "trigger-sampling-request", "gzip-file-as-resource"];

/// The session's principal.
const PRINCIPAL: &str = "claude";

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        // Under /tmp: the socket's path must fit in sockaddr_un.
        let path = std::env::temp_dir().join(format!("corral-mbench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("create `{}`", path.display()))?;
        Ok(TempDir(path))
    }

    /// `name` inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How many `tools/call` decisions one authority recorded.
#[derive(Debug, Default)]
pub struct Counts {
    /// Allowed calls of `echo`.
    pub allowed: AtomicU64,
    /// Denied calls (of anything).
    pub denied: AtomicU64,
}

/// The default policy (for a workspace and home under the temporary
/// directory), with its `mcp-any` permit, plus a forbid per tool in
/// [`FORBIDDEN`].
fn policy(dir: &Path) -> anyhow::Result<PolicyDoc> {
    let ws = dir.join("ws");
    let home = dir.join("home");
    let mut text = corral_policy::default_policy::render(&ws.to_string_lossy(), &home.to_string_lossy())?;
    for tool in FORBIDDEN {
        text.push_str(&format!(
            "\n@id(\"no-{tool}\")\nforbid (principal, action == Action::\"McpCall\", resource == MCP::Tool::\"{tool}\");\n"
        ));
    }
    corral_policy::load(vec![Source::new("mbench.cedar", text)]).map_err(|diags| {
        let text: Vec<String> = diags.iter().map(|d| format!("{d:?}")).collect();
        anyhow!("the bench's policy does not load: {}", text.join("; "))
    })
}

/// An authority deciding with `doc`, counting its `tools/call` decisions.
fn authority(doc: &PolicyDoc) -> anyhow::Result<(Arc<Authority>, Arc<Counts>)> {
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let sink: McpSink = Arc::new(move |e: McpEvent| {
        if e.stage == Stage::Request && e.method == "tools/call" {
            match e.decision {
                Some(corral_core::Decision::Allow) if e.tool.as_deref() == Some("echo") => {
                    c.allowed.fetch_add(1, Ordering::Relaxed);
                }
                Some(corral_core::Decision::Deny) => {
                    c.denied.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    });
    let policy = McpPolicy::new(doc.clone());
    let auth = Authority::new(PRINCIPAL, policy, Mode::Enforce, Limits::default(), sink);
    Ok((auth, counts))
}

fn runtime(name: &str, threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// One accounting check: what, and whether it held.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was compared, with the numbers.
    pub what: String,
    /// It held.
    pub ok: bool,
}

/// Everything the configurations share. Field order is drop order: the
/// HTTP server and the host go before the runtimes, the directory last.
pub struct Env {
    server: PathBuf,
    doc: PolicyDoc,
    http: Option<HttpServer>,
    host: Option<McpHost>,
    socket: PathBuf,
    relay_bin: PathBuf,
    stdio_counts: Option<Arc<Counts>>,
    proxy_counts: Option<Arc<Counts>>,
    governor_counts: Option<Arc<Counts>>,
    host_rt: Option<tokio::runtime::Runtime>,
    proxy_rt: Option<tokio::runtime::Runtime>,
    dir: TempDir,
}

impl Env {
    /// The directory, the policy and the relay binary; servers start when
    /// a configuration needs them.
    pub fn new(a: &Args) -> anyhow::Result<Env> {
        let dir = TempDir::new()?;
        let doc = policy(&dir.0)?;
        // Installed as the runtime does for a session: the static
        // corral-init, run as `corral` it is the relay.
        let relay_bin = corral_runtime::init::install(&dir.join("bin")).context("install corral-init")?;
        Ok(Env {
            server: a.server.clone(),
            doc,
            http: None,
            host: None,
            socket: dir.join("mcp.sock"),
            relay_bin,
            stdio_counts: None,
            proxy_counts: None,
            governor_counts: None,
            host_rt: None,
            proxy_rt: None,
            dir,
        })
    }

    /// server-everything on stdio, spawned by the bench.
    pub fn stdio_direct(&mut self) -> anyhow::Result<StdioTarget> {
        let mut cmd = Command::new(&self.server);
        cmd.arg("stdio");
        StdioTarget::start("stdio-direct", cmd, false)
    }

    /// The same behind `corral mcp wrap` and the `McpHost`.
    pub fn stdio_wrapped(&mut self) -> anyhow::Result<StdioTarget> {
        if self.host.is_none() {
            let (auth, counts) = authority(&self.doc)?;
            // The supervisor's runtime (two workers, as a session's).
            let rt = runtime("mcp-host", 2)?;
            let host = {
                let _g = rt.enter();
                McpHost::listen(&self.socket, auth, Arc::new(CallLog::new()))?
            };
            self.host = Some(host);
            self.host_rt = Some(rt);
            self.stdio_counts = Some(counts);
        }
        let mut cmd = Command::new(&self.relay_bin);
        std::os::unix::process::CommandExt::arg0(&mut cmd, "corral");
        cmd.args(["mcp", "wrap", "--name", "everything", "--"])
            .arg(&self.server)
            .arg("stdio")
            .env("CORRAL_MCP_SOCK", &self.socket);
        StdioTarget::start("stdio-wrapped", cmd, true)
    }

    /// server-everything's streamable HTTP transport on 127.0.0.1 (started
    /// once, for both HTTP configurations).
    fn http_server(&mut self) -> anyhow::Result<u16> {
        if let Some(s) = &self.http {
            return Ok(s.port);
        }
        let s = HttpServer::start(&self.server)?;
        let port = s.port;
        self.http = Some(s);
        Ok(port)
    }

    /// A client of the HTTP server, connected to it.
    pub fn http_direct(&mut self) -> anyhow::Result<HttpTarget> {
        let port = self.http_server()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        HttpTarget::start("http-direct", addr, port, false)
    }

    /// A client of the HTTP server, connected to the egress proxy.
    pub fn http_proxy(&mut self) -> anyhow::Result<HttpTarget> {
        let port = self.http_server()?;
        let (auth, counts) = authority(&self.doc)?;
        let rt = runtime("corral-proxy", 2)?;
        let ca = Arc::new(Ca::load_or_create(&self.dir.join("ca"))?);
        let mut cfg = ProxyConfig::new(
            PRINCIPAL,
            ProxyPolicy::new(self.doc.clone())?,
            ca,
            Arc::new(|_| {}),
        );
        cfg.system_roots = false;
        cfg.loopback_upstream = true;
        cfg.mcp = Some(auth);
        let proxy = {
            let _g = rt.enter();
            Arc::new(Proxy::new(cfg)?)
        };
        // As a session's connection arrives through the kernel's redirect:
        // the destination's address and port, no host name.
        let dest = Dest {
            host: None,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
        };
        let listener = rt.block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = listener.local_addr()?;
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(corral_proxy::serve_connection(tcp, dest.clone(), proxy.clone()));
            }
        });
        self.proxy_rt = Some(rt);
        self.proxy_counts = Some(counts);
        HttpTarget::start("http-proxy", addr, port, true)
    }

    /// The governor alone, in-process.
    pub fn governor(&mut self) -> anyhow::Result<GovernorTarget> {
        let (auth, counts) = authority(&self.doc)?;
        self.governor_counts = Some(counts);
        GovernorTarget::start(&auth)
    }

    /// Checks that each governed configuration recorded one allowed
    /// decision per call it made (`made`: calls per configuration,
    /// warm-up included) and the one denial made before timing.
    pub fn account(&self, made: &[(String, u64)]) -> Vec<Check> {
        let mut out = Vec::new();
        for (name, n) in made {
            let counts = match name.as_str() {
                "stdio-wrapped" => &self.stdio_counts,
                "http-proxy" => &self.proxy_counts,
                "governor" => &self.governor_counts,
                _ => continue,
            };
            let Some(c) = counts else { continue };
            // The decisions are recorded before the answer returns, but
            // the sink runs on the host's or proxy's threads: give it a
            // moment.
            let deadline = std::time::Instant::now() + PATIENCE;
            while c.allowed.load(Ordering::Relaxed) < *n && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let allowed = c.allowed.load(Ordering::Relaxed);
            let denied = c.denied.load(Ordering::Relaxed);
            out.push(Check {
                what: format!("{name}: {allowed} allowed `echo` decisions for {n} calls made"),
                ok: allowed == *n,
            });
            out.push(Check {
                what: format!(
                    "{name}: {denied} denied call(s) (one `{}` call made)",
                    FORBIDDEN[0]
                ),
                ok: denied == 1,
            });
        }
        out
    }

    /// Stops the servers and runtimes and removes the directory (what
    /// dropping does; by name for the reader).
    pub fn close(self) {}
}

impl Drop for Env {
    fn drop(&mut self) {
        self.http = None;
        // Closes every relay connection and removes the socket.
        self.host = None;
        if let Some(rt) = self.proxy_rt.take() {
            rt.shutdown_background();
        }
        if let Some(rt) = self.host_rt.take() {
            rt.shutdown_background();
        }
        let _ = &self.dir;
    }
}
