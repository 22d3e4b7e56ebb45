//! A session's egress: every TCP connection it opens to an address beyond
//! its own loopback is redirected by the kernel (cgroup `connect4/6`, see
//! corral-kernel's `net.rs`) to corral's proxy, which listens inside the
//! session's network namespace on its loopback. The proxy learns where the
//! client meant to go (and which process asked) from the kernel's
//! original-destination map, and decides, intercepts and forwards with
//! corral-proxy.
//!
//! Also here: the trust the session needs for the interception CA (a CA
//! bundle with corral's certificate, and the environment variables the
//! common TLS stacks read), and the conversion of the proxy's reports
//! into audit events.
//!
//! The CA's private key never enters the session: only `ca.pem` and the
//! bundle are copied into the session's run directory.

use corral_core::{Event, Layer, Proc, SessionId, What};
use corral_kernel::{Origin, Origins};
use corral_proxy::{Ca, HttpEvent, Proxy, ProxyConfig, ProxyPolicy, Secret};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The CA certificate in the session's run directory.
pub const CA_FILE: &str = "ca.pem";
/// The system roots plus corral's CA, in the session's run directory.
pub const BUNDLE_FILE: &str = "ca-bundle.pem";
/// Where the run directory is mounted in a container.
const RUN_IN_CONTAINER: &str = "/run/corral";
/// The bundle path Debian-like systems (and OpenSSL's default build) read.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// System bundles, by distribution family; the first that exists is used.
const SYSTEM_BUNDLES: &[&str] = &[
    SYSTEM_BUNDLE,
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// How a session's egress is set up.
#[derive(Clone)]
pub struct Egress {
    /// The interception CA.
    pub ca: Arc<Ca>,
    /// Extra roots for verifying upstream servers (PEM files).
    pub upstream_ca: Vec<PathBuf>,
    /// Placeholder secrets: the session sees the placeholders, the proxy
    /// holds the values.
    pub secrets: Vec<Secret>,
    /// Names the session resolves to fixed addresses (`--add-host`).
    pub add_hosts: Vec<(String, IpAddr)>,
    /// The policy, as the proxy asks it.
    pub policy: ProxyPolicy,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("upstream_ca", &self.upstream_ca)
            .field(
                "secrets",
                &self.secrets.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field("add_hosts", &self.add_hosts)
            .finish_non_exhaustive()
    }
}

/// Writes `ca.pem` and `ca-bundle.pem` (the first system bundle found,
/// then corral's CA) into `run_dir`, world-readable (they are public).
pub fn write_trust(run_dir: &Path, ca: &Ca) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut bundle = SYSTEM_BUNDLES
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str("# corral interception CA\n");
    bundle.push_str(ca.cert_pem());
    for (name, text) in [(CA_FILE, ca.cert_pem().to_string()), (BUNDLE_FILE, bundle)] {
        let p = run_dir.join(name);
        std::fs::write(&p, text)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// The variables that point TLS stacks at the bundle (OpenSSL and Python's
/// ssl, requests, curl, git) and at the CA (Node adds it to its own roots).
/// `dir` is the run directory as the session sees it.
pub fn trust_env(dir: &Path) -> Vec<(String, String)> {
    let bundle = dir.join(BUNDLE_FILE).display().to_string();
    let ca = dir.join(CA_FILE).display().to_string();
    vec![
        ("SSL_CERT_FILE".into(), bundle.clone()),
        ("REQUESTS_CA_BUNDLE".into(), bundle.clone()),
        ("CURL_CA_BUNDLE".into(), bundle.clone()),
        ("GIT_SSL_CAINFO".into(), bundle),
        ("NODE_EXTRA_CA_CERTS".into(), ca),
    ]
}

/// The run directory as a session of this kind sees it.
pub fn session_run_dir(run_dir: &Path, container: bool) -> PathBuf {
    if container {
        PathBuf::from(RUN_IN_CONTAINER)
    } else {
        run_dir.to_path_buf()
    }
}

/// Refuses a setup that would show the CA's directory (and so its key)
/// inside the session through one of its bind mounts.
pub fn check_ca_hidden(ca_dir: &Path, mounts: &[crate::session::Mount]) -> Result<(), String> {
    for m in mounts {
        if ca_dir.starts_with(&m.src) {
            return Err(format!(
                "the mount {} -> {} would show corral's CA directory {} (and its private key) inside the session",
                m.src.display(),
                m.dst.display(),
                ca_dir.display()
            ));
        }
    }
    Ok(())
}

/// A port for the proxy inside a container's fresh network namespace
/// (nothing listens there before the agent starts).
pub fn pick_port() -> u16 {
    20000 + (rand::random::<u16>() % 40000)
}

/// The proxy's listening sockets.
#[derive(Debug)]
pub struct Listeners {
    /// `127.0.0.1:port`.
    pub v4: std::net::TcpListener,
    /// `[::1]:port`, where the namespace has IPv6 loopback.
    pub v6: Option<std::net::TcpListener>,
}

impl Listeners {
    /// The addresses the kernel redirects to.
    pub fn redirect(&self) -> io::Result<corral_kernel::Redirect> {
        let v4 = match self.v4.local_addr()? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => return Err(io::Error::other("the v4 listener has a v6 address")),
        };
        let v6 = match self
            .v6
            .as_ref()
            .map(std::net::TcpListener::local_addr)
            .transpose()?
        {
            Some(SocketAddr::V6(a)) => Some(a),
            _ => None,
        };
        Ok(corral_kernel::Redirect { v4, v6 })
    }
}

fn listen(port: u16) -> io::Result<Listeners> {
    let v4 = std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))?;
    let port = v4.local_addr()?.port();
    let v6 = std::net::TcpListener::bind(SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0)).ok();
    v4.set_nonblocking(true)?;
    if let Some(l) = &v6 {
        l.set_nonblocking(true)?;
    }
    Ok(Listeners { v4, v6 })
}

/// Listens on the host's loopback (a session without a container shares
/// the host's network namespace), on a free port.
pub fn listen_on_host() -> io::Result<Listeners> {
    listen(0)
}

/// Listens on `port` on the loopback of the network namespace of `pid`
/// (a container's init): a thread enters the namespace, makes the sockets
/// and ends. Sockets stay in the namespace they were made in.
pub fn listen_in_netns(pid: u32, port: u16) -> io::Result<Listeners> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::spawn(move || -> io::Result<Listeners> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        listen(port)
    })
    .join()
    .map_err(|_| io::Error::other("the thread entering the session's network namespace panicked"))?
}

/// The running proxy of a session.
pub struct Running {
    /// The proxy (mode and policy switches go here).
    pub proxy: Arc<Proxy>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Events the proxy reported that the recorder's queue had no room for.
    pub dropped: Arc<AtomicU64>,
}

impl Running {
    /// Stops accepting and serving.
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Builds the proxy and serves the listeners. Events go to `tx` (never
/// waited on: a full queue drops the event and counts it); MCP over HTTP
/// is governed by `mcp`, the session's MCP layer.
// Each argument is a different part of the session the proxy serves; a
// struct holding them would only be built here.
#[allow(clippy::too_many_arguments)]
pub fn start(
    egress: &Egress,
    principal: &str,
    mode: corral_core::Mode,
    session: SessionId,
    listeners: Listeners,
    origins: Option<Origins>,
    tx: tokio::sync::mpsc::Sender<Event>,
    mcp: Option<Arc<corral_mcp::Authority>>,
) -> Result<Running, String> {
    let dropped = Arc::new(AtomicU64::new(0));
    let sink = {
        let dropped = dropped.clone();
        let principal = principal.to_string();
        Arc::new(move |e: HttpEvent| {
            if tx.try_send(to_event(session, &principal, e)).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut cfg = ProxyConfig::new(principal, egress.policy.clone(), egress.ca.clone(), sink);
    cfg.extra_roots = egress.upstream_ca.clone();
    cfg.secrets = egress.secrets.clone();
    cfg.hosts = egress.add_hosts.clone();
    cfg.mode = mode;
    cfg.mcp = mcp;
    let proxy = Arc::new(Proxy::new(cfg).map_err(|e| format!("cannot start the egress proxy: {e}"))?);
    let mut tasks = Vec::new();
    for l in std::iter::once(listeners.v4).chain(listeners.v6) {
        let l = tokio::net::TcpListener::from_std(l)
            .map_err(|e| format!("cannot serve the proxy's socket: {e}"))?;
        tasks.push(tokio::spawn(accept_loop(l, origins.clone(), proxy.clone())));
    }
    Ok(Running {
        proxy,
        tasks,
        dropped,
    })
}

async fn accept_loop(l: tokio::net::TcpListener, origins: Option<Origins>, proxy: Arc<Proxy>) {
    loop {
        let (stream, peer) = match l.accept().await {
            Ok(x) => x,
            Err(_) => {
                // EMFILE and the like: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let origin = origins.as_ref().and_then(|o| o.take(peer));
        let proxy = proxy.clone();
        tokio::spawn(async move {
            match origin {
                Some(Origin { dst, pid, comm }) => {
                    let client = corral_proxy::Client {
                        pid,
                        exe: std::fs::read_link(format!("/proc/{pid}/exe"))
                            .ok()
                            .map(|p| p.display().to_string()),
                        comm,
                    };
                    corral_proxy::serve_redirected(stream, dst, Some(client), proxy).await
                }
                // Not redirected by the kernel: a process connected to the
                // proxy's port itself (the loopback rules allowed it), or
                // its origin record was lost. Its destination is unknown,
                // and anything it asked for would be reached from the
                // host: refused, and recorded.
                None => {
                    let local = stream
                        .local_addr()
                        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
                    corral_proxy::refuse_unredirected(&proxy, local, peer);
                    drop(stream);
                }
            }
        });
    }
}

/// A proxy report as an audit event.
pub fn to_event(session: SessionId, principal: &str, e: HttpEvent) -> Event {
    let (proc_, pid_known) = match &e.client {
        Some(c) => (
            Proc {
                pid: c.pid,
                ppid: 0,
                comm: c.comm.clone(),
                exe: c.exe.clone(),
            },
            true,
        ),
        None => (
            Proc {
                pid: 0,
                ppid: 0,
                comm: String::new(),
                exe: None,
            },
            false,
        ),
    };
    let decision = Some(e.decision);
    Event {
        session,
        principal: principal.to_string(),
        ts_ns: crate::session::mono_ns(),
        proc: proc_,
        what: What::Http {
            stage: e.kind.to_string(),
            method: e.method,
            scheme: e.scheme,
            host: e.host,
            port: e.port,
            path: e.path,
            status: e.status,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            duration_us: u64::try_from(e.duration.as_micros()).unwrap_or(u64::MAX),
            injected: e.injected_headers,
            secrets_used: e.secrets_used,
            secrets_withheld: e.secrets_withheld,
            error: e.error,
            pid_known,
        },
        decision,
        layer: Layer::Proxy,
        policies: e.policies,
        mcp_call: None,
    }
}
