//! Peer interception proxies, run side by side with corral's in the same
//! run: mitmproxy's `mitmdump` and squid with `ssl-bump`. Each listens on
//! 127.0.0.1, generates leaves with its own CA, verifies the upstream
//! against the bench's test CA and injects the same header corral does.
//!
//! Each runs as a child process with its files in a temporary directory;
//! it is stopped (SIGTERM, then SIGKILL) when its [`Peer`] is dropped.

use crate::upstream::{make_ca, token, Upstream, TOKEN_HEADER};
use anyhow::{bail, Context as _};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running peer.
pub struct Peer {
    pub name: String,
    pub addr: SocketAddr,
    /// The CA its leaves are signed with.
    pub ca_der: CertificateDer<'static>,
    /// What it says its version is.
    pub version: String,
    /// Its output and log files, for errors.
    pub logs: Vec<PathBuf>,
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first line `exe flag` prints.
fn version(exe: &Path, flag: &str) -> String {
    Command::new(exe)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A port nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

impl Peer {
    /// The last lines of its logs.
    pub fn tail(&self) -> String {
        let mut out = String::new();
        for path in &self.logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(15);
            out.push_str(&format!("--- {}\n", path.display()));
            for l in lines.get(from..).unwrap_or_default() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// Waits until `ready()` holds and the port accepts connections.
fn wait_ready(peer: &mut Peer, ready: impl Fn() -> bool) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if let Some(status) = peer.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", peer.name, peer.tail());
        }
        if ready() && std::net::TcpStream::connect(peer.addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{} did not start within 60 s:\n{}", peer.name, peer.tail())
}

fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> anyhow::Result<(Child, PathBuf)> {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok((child, log))
}

/// `mitmdump` with its CA generated in `dir/mitmproxy` (its confdir),
/// quiet (no per-flow output), upstream verified against the test CA,
/// the header injected with `--modify-headers`. Otherwise its defaults
/// (eager upstream connection, bodies buffered before they are forwarded).
pub fn mitmdump(exe: &Path, dir: &Path, up: &Upstream) -> anyhow::Result<Peer> {
    let conf = dir.join("mitmproxy");
    std::fs::create_dir_all(&conf)?;
    let port = free_port()?;
    let (child, log) = spawn(
        "mitmdump",
        Command::new(exe)
            .args([
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                &port.to_string(),
                "-q",
            ])
            .arg("--set")
            .arg(format!("confdir={}", conf.display()))
            .arg("--set")
            .arg(format!("ssl_verify_upstream_trusted_ca={}", up.ca_file.display()))
            .arg("--modify-headers")
            .arg(format!("/~q/{TOKEN_HEADER}/{}", token("mitmdump"))),
        dir,
    )?;
    let ca_file = conf.join("mitmproxy-ca-cert.pem");
    let mut peer = Peer {
        name: "mitmdump".into(),
        version: version(exe, "--version"),
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        ca_der: CertificateDer::from(Vec::new()),
        logs: vec![log],
        child,
    };
    wait_ready(&mut peer, || ca_file.exists())?;
    peer.ca_der = CertificateDer::from_pem_file(&ca_file)
        .with_context(|| format!("cannot read `{}`", ca_file.display()))?;
    Ok(peer)
}

/// The helper squid generates leaves with (Debian's squid-openssl).
const CERTGEN: &str = "/usr/lib/squid/security_file_certgen";

/// squid in the foreground (`-N`) with `ssl-bump` (peek at the SNI, then
/// bump), leaves signed by a CA made here, generated by its certificate
/// helper and cached in memory, upstream verified against the test CA,
/// the header added with `request_header_add`, no cache and no access log.
/// Run as root, squid drops to the `proxy` user: its directory and the
/// certificate database are made readable and owned accordingly.
pub fn squid(exe: &Path, dir: &Path, up: &Upstream) -> anyhow::Result<Peer> {
    if !Path::new(CERTGEN).exists() {
        bail!("{CERTGEN} is missing (apt-get install squid-openssl)");
    }
    let sq = dir.join("squid");
    std::fs::create_dir_all(&sq)?;
    let (_, ca_der) = make_ca(&sq, "squid-ca", true)?;
    std::fs::copy(&up.ca_file, sq.join("upstream-ca.pem"))?;
    let db = sq.join("ssl_db");
    let status = Command::new(CERTGEN)
        .arg("-c")
        .arg("-s")
        .arg(&db)
        .args(["-M", "16MB"])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("{CERTGEN} -c failed: {status}");
    }
    let port = free_port()?;
    let s = sq.display();
    let value = token("squid");
    let conf = format!(
        "http_port 127.0.0.1:{port} ssl-bump tls-cert={s}/squid-ca.pem tls-key={s}/squid-ca.key \
         generate-host-certificates=on dynamic_cert_mem_cache_size=16MB\n\
         sslcrtd_program {CERTGEN} -s {s}/ssl_db -M 16MB\n\
         sslcrtd_children 4 startup=1 idle=1\n\
         acl step1 at_step SslBump1\n\
         ssl_bump peek step1\n\
         ssl_bump bump all\n\
         tls_outgoing_options cafile={s}/upstream-ca.pem\n\
         http_access allow localhost\n\
         http_access deny all\n\
         request_header_add {TOKEN_HEADER} \"{value}\" all\n\
         cache deny all\n\
         access_log none\n\
         cache_log {s}/cache.log\n\
         pid_filename {s}/squid.pid\n\
         coredump_dir {s}\n\
         shutdown_lifetime 0 seconds\n\
         visible_hostname corral-pbench\n"
    );
    let conf_file = sq.join("squid.conf");
    std::fs::write(&conf_file, conf)?;
    if rustix::process::getuid().is_root() {
        // squid and its helpers run as `proxy`.
        let status = Command::new("chown")
            .args(["-R", "proxy:proxy"])
            .arg(&sq)
            .status()?;
        if !status.success() {
            bail!("chown -R proxy:proxy {s} failed: {status}");
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let (child, log) = spawn(
        "squid",
        Command::new(exe).arg("-N").arg("-f").arg(&conf_file),
        dir,
    )?;
    let mut peer = Peer {
        name: "squid".into(),
        version: version(exe, "-v"),
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        ca_der,
        logs: vec![log, sq.join("cache.log")],
        child,
    };
    wait_ready(&mut peer, || true)?;
    Ok(peer)
}
