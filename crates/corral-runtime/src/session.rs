//! One governed run: cgroup, enforcement, container (or bare process),
//! go, wait, cleanup.
//!
//! Order, and why:
//!
//! 1. The session cgroup `<v2>/corral/<id>` is created. The container's
//!    cgroup is made beneath it (`--cgroup-parent`), so the kernel programs,
//!    which match by ancestry, govern it and everything it forks.
//! 2. The container starts with `corral-init` as its entrypoint. Before
//!    anything else corral-init connects to the session's go socket and
//!    blocks: nothing the agent chose has run yet.
//! 3. The supervisor takes the peer's pid from `SO_PEERCRED`, checks that it
//!    is inside the session cgroup, reads its mount table (the fanotify
//!    fallback marks the container's own mounts), and attaches every layer.
//!    Only then does it send `go`. If attaching fails it sends `abort`; if
//!    the supervisor dies first, corral-init sees EOF and never starts the
//!    agent.
//! 4. corral-init forks the agent and reports its exit (`exit code N` /
//!    `exit signal N`) on the same socket. The supervisor passes it on.
//! 5. Cleanup (also on errors and signals): kill what is left in the
//!    cgroup, remove the container, detach programs, remove the cgroups
//!    (v2 and the v1 directories runc made) and the run directory.

use crate::engine::Engine;
use corral_core::{Decision, Event, Layer, Mode, Proc, SessionId, What};
use corral_kernel::cgroup::{self, Cgroup};
use corral_kernel::session::{FileLayer, JudgeRef, KernelSession, SessionConfig};

/// Proxy reports waiting for the recorder; beyond it they are dropped and
/// counted (the proxy never waits for the audit trail).
const PROXY_QUEUE: usize = 8192;

/// The stdio MCP relays' socket, in the run directory
/// (`/run/corral/mcp.sock` in a container).
pub const MCP_SOCKET: &str = "mcp.sock";
use corral_policy::Plan;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Why a session could not run.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A file or directory operation.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Enforcement could not be attached (nothing was started).
    #[error("enforcement could not be attached: {0}")]
    Kernel(#[from] corral_kernel::Error),
    /// The container or process did not come up.
    #[error("{0}")]
    Start(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SessionError {
    let what = what.into();
    move |source| SessionError::Io { what, source }
}

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Host path.
    pub src: PathBuf,
    /// Path in the container.
    pub dst: PathBuf,
    /// Read-only.
    pub read_only: bool,
}

/// Where the command runs.
#[derive(Debug, Clone)]
pub enum Target {
    /// In a container.
    Container {
        /// The engine.
        engine: Engine,
        /// An image; `None` is the default mode (host filesystem read-only).
        image: Option<String>,
    },
    /// A process in the session cgroup on the host (`--no-container`).
    Bare,
}

/// Everything a session needs.
#[derive(Clone)]
pub struct Spec {
    /// The session id.
    pub id: SessionId,
    /// `Agent::"<principal>"`.
    pub principal: String,
    /// Command and arguments.
    pub command: Vec<String>,
    /// Enforce or shadow.
    pub mode: Mode,
    /// The compiled policy.
    pub plan: Plan,
    /// The Cedar judge for exec arguments.
    pub judge: Option<JudgeRef>,
    /// SHA-256 of the policy text (reported by the control socket).
    pub policy_sha256: String,
    /// Compiles a policy offered at runtime (label, text) into a plan and
    /// exec judge, with the same checks as at start; `None` refuses
    /// reloads.
    pub reload: Option<Reloader>,
    /// What the banner calls the policy (its file, or "default policy").
    pub policy_label: String,
    /// The project directory (read-write, same path).
    pub workspace: PathBuf,
    /// Working directory of the command.
    pub cwd: PathBuf,
    /// HOME in the session (a private, writable directory in default mode).
    pub home: PathBuf,
    /// Environment of the command (beyond what the mode sets).
    pub env: Vec<(String, String)>,
    /// Extra bind mounts.
    pub mounts: Vec<Mount>,
    /// Container or bare.
    pub target: Target,
    /// Give the command a TTY (stdin is one).
    pub tty: bool,
    /// The file/exec layer.
    pub file_layer: FileLayer,
    /// corral's API port on loopback (refused to the session).
    pub ctl_port: Option<u16>,
    /// The egress proxy every TCP connection is redirected to; `None`
    /// leaves connections to the kernel's address rules alone.
    pub egress: Option<crate::egress::Egress>,
    /// The MCP layer's policy: MCP over HTTP through the egress proxy and
    /// stdio servers behind `corral mcp wrap` are governed by it.
    pub mcp: corral_mcp::McpPolicy,
    /// The MCP layer's size limits (`[mcp]` in the configuration).
    pub mcp_limits: corral_mcp::Limits,
    /// Where the session's events go (JSON lines).
    pub events_path: Option<PathBuf>,
    /// The audit pipeline every event is sent to (never waited on).
    pub audit: Option<corral_audit::PipelineSender>,
    /// Where events are recorded, for the banner.
    pub record_label: String,
    /// Run directory root (`/run/corral`): sessions' sockets.
    pub run_root: PathBuf,
    /// The installed corral-init binary.
    pub init_bin: PathBuf,
    /// Print the banner and the summary on stderr.
    pub banner: bool,
    /// The control UI's URL (with its token), for the banner.
    pub ui_url: Option<String>,
}

/// Compiles a policy offered at runtime: `(label, text)` to what each
/// layer needs, or the diagnostics that refuse it.
pub type Reloader = std::sync::Arc<dyn Fn(&str, &str) -> Result<Compiled, String> + Send + Sync>;

/// A compiled policy, for every layer.
pub struct Compiled {
    /// The kernel tables.
    pub plan: Plan,
    /// The exec-argument judge.
    pub judge: JudgeRef,
    /// The egress proxy's view.
    pub proxy: corral_proxy::ProxyPolicy,
    /// The MCP layer's view.
    pub mcp: corral_mcp::McpPolicy,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with a code.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

/// What a finished session reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The session id.
    pub id: SessionId,
    /// How the command ended.
    pub exit: Exit,
    /// Events recorded.
    pub events: u64,
    /// Denials (or would-denials in shadow mode) recorded.
    pub denied: u64,
    /// Events lost before they reached the recorder.
    pub lost: u64,
    /// Proxy reports the recorder's queue had no room for.
    pub proxy_dropped: u64,
    /// MCP reports the recorder's queue had no room for.
    pub mcp_dropped: u64,
    /// The layer per decision kind, as the banner showed it.
    pub layers: Vec<(String, String)>,
}

/// A fresh session id, unused on this host: the run directory is created
/// exclusively, so two supervisors never share one.
pub fn new_id(run_root: &Path) -> Result<(SessionId, PathBuf), SessionError> {
    let sessions = run_root.join("sessions");
    std::fs::create_dir_all(&sessions).map_err(io(format!("create {}", sessions.display())))?;
    for _ in 0..64 {
        let id = SessionId(rand::random::<u32>() % 1_000_000_000);
        let dir = sessions.join(id.to_string());
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((id, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(format!("create {}", dir.display()))(e)),
        }
    }
    Err(SessionError::Start("no free session id".into()))
}

/// Releases everything a session set up, in reverse order, also when the
/// session failed half-way. Idempotent.
struct Cleanup {
    engine: Option<Engine>,
    container: Option<String>,
    cgroup: Option<Cgroup>,
    /// `corral/<id>`, relative to each v1 hierarchy (runc makes these).
    cgroup_rel: String,
    run_dir: PathBuf,
}

impl Cleanup {
    fn run(&mut self) {
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill();
        }
        if let (Some(e), Some(name)) = (&self.engine, self.container.take()) {
            if e.exists(&name) {
                e.remove(&name);
            }
        }
        if let Some(cg) = self.cgroup.take() {
            let parent = cg.path().parent().map(Path::to_path_buf);
            let _ = cg.destroy();
            // The shared `corral` parent, when this was the last session in
            // it (rmdir fails harmlessly while another session lives).
            if let Some(p) = parent {
                let _ = std::fs::remove_dir(p);
            }
        }
        remove_v1_dirs(&self.cgroup_rel);
        let _ = std::fs::remove_dir_all(&self.run_dir);
        let _ = std::fs::remove_dir_all(rootfs_dir(&self.run_dir));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

/// Removes `<v1 hierarchy>/<rel>` trees that runc created for the
/// container (and conmon) under each cgroup-v1 controller, then the
/// `corral` parent where empty.
fn remove_v1_dirs(rel: &str) {
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    // Directories that could not go yet: conmon's (`<rel>/conmon`) stays
    // busy until conmon has run podman's cleanup, shortly after the
    // container's end.
    let mut busy: Vec<PathBuf> = Vec::new();
    for h in rd.flatten() {
        let base = h.path();
        if base.ends_with("unified") {
            continue;
        }
        let top = base.join(rel);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            if std::fs::remove_dir(&d).is_err() && d.is_dir() {
                busy.push(d);
            }
        }
        if let Some(parent) = top.parent() {
            if parent != base
                && std::fs::remove_dir(parent).is_err()
                && busy.iter().any(|b| b.starts_with(parent))
            {
                busy.push(parent.to_path_buf());
            }
        }
    }
    if !busy.is_empty() {
        remove_later(&busy);
    }
}

/// Removes `dirs` (deepest first) from a detached process that retries
/// for up to 10 s, so the user does not wait for conmon to leave them.
fn remove_later(dirs: &[PathBuf]) {
    let list = dirs
        .iter()
        .map(|d| format!("'{}'", d.display().to_string().replace('\'', "")))
        .collect::<Vec<_>>()
        .join(" ");
    let script = format!(
        "for i in $(seq 50); do left=0; for d in {list}; do [ -d \"$d\" ] && ! rmdir \"$d\" 2>/dev/null && left=1; done; \
         [ $left = 0 ] && exit 0; sleep 0.2; done"
    );
    let mut c = std::process::Command::new("/bin/sh");
    c.args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let _ = c.spawn();
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    out.push(d.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Filesystems whose opens are never file-policy questions (pseudo
/// filesystems, or ones the fanotify thread itself reads).
const UNMARKED_FS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "bpf",
    "securityfs",
    "debugfs",
    "tracefs",
    "hugetlbfs",
    "fusectl",
    "configfs",
    "pstore",
    "binfmt_misc",
    "autofs",
    "nsfs",
];

/// One line of a mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount point.
    pub point: String,
    /// Filesystem type.
    pub fstype: String,
}

/// Parses `/proc/<pid>/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            let fstype = right.split_whitespace().next()?;
            Some(MountEntry {
                point: cgroup::unescape_mountinfo(point),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

/// The mounts of a container whose file opens the fanotify fallback must
/// decide: every mount but pseudo filesystems, `/dev` (device nodes) and
/// corral's own run directory. Paths are reached through
/// `/proc/<pid>/root`, so the marks land on the container's mounts.
pub fn container_file_mounts(pid: u32, table: &[MountEntry]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for m in table {
        if UNMARKED_FS.contains(&m.fstype.as_str())
            || m.point == "/dev"
            || m.point.starts_with("/run/corral")
            || m.point.starts_with("/sys/")
            || m.point.starts_with("/proc/")
        {
            continue;
        }
        let p = PathBuf::from(format!(
            "/proc/{pid}/root{}",
            if m.point == "/" { "" } else { &m.point }
        ));
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// For a bare session: the host mounts holding the given paths (the
/// deepest mount containing each).
pub fn host_file_mounts(table: &[MountEntry], paths: &[&Path]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        let best = table
            .iter()
            .filter(|m| !UNMARKED_FS.contains(&m.fstype.as_str()))
            .filter(|m| p.starts_with(&m.point))
            .max_by_key(|m| m.point.len());
        if let Some(m) = best {
            let mp = PathBuf::from(&m.point);
            if !out.contains(&mp) {
                out.push(mp);
            }
        }
    }
    out
}

/// Host top-level directories not exposed in default mode (the private
/// HOME, /tmp and the engine's own mounts replace them).
const HIDDEN_TOP: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "home",
    "root",
    "mnt",
    "media",
    "lost+found",
    "boot",
];

/// Builds the rootfs directory for default mode (public so the benchmark's
/// baseline uses the same binds): symlinks recreated, and
/// the list of read-only binds for the host's top-level directories.
pub fn host_root(rootfs: &Path) -> Result<Vec<Mount>, SessionError> {
    std::fs::create_dir_all(rootfs).map_err(io(format!("create {}", rootfs.display())))?;
    let mut binds = Vec::new();
    let rd = std::fs::read_dir("/").map_err(io("read /"))?;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        if HIDDEN_TOP.contains(&n) {
            continue;
        }
        let ft = match e.file_type() {
            Ok(t) => t,
            Err(_) => continue,
        };
        let host = Path::new("/").join(n);
        if ft.is_symlink() {
            if let Ok(t) = std::fs::read_link(&host) {
                let _ = std::os::unix::fs::symlink(t, rootfs.join(n));
            }
        } else if ft.is_dir() {
            binds.push(Mount {
                src: host.clone(),
                dst: host,
                read_only: true,
            });
        }
    }
    binds.sort_by(|a, b| a.dst.cmp(&b.dst));
    Ok(binds)
}

fn volume_arg(m: &Mount) -> String {
    format!(
        "{}:{}:{}",
        m.src.display(),
        m.dst.display(),
        if m.read_only { "ro" } else { "rw" }
    )
}

/// The `<engine> run` arguments for a spec (everything after the program).
pub fn run_args(spec: &Spec, run_dir: &Path, image: Option<&str>) -> Result<Vec<String>, SessionError> {
    let name = container_name(spec.id);
    let podman = matches!(&spec.target, Target::Container { engine, .. } if engine.kind == crate::engine::Kind::Podman);
    let nonrec = if podman { ",bind" } else { "" };
    let mut a: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--name".into(),
        name,
        format!("--cgroup-parent=/corral/{}", spec.id),
        // corral forwards signals itself (to corral-init, by host pid), so
        // a terminal's signal is never delivered twice.
        "--sig-proxy=false".into(),
        "--log-driver=none".into(),
        "--security-opt=no-new-privileges".into(),
        // Raw sockets would bypass the connect hooks; the rest are not
        // needed by coding agents.
        "--cap-drop=NET_RAW,MKNOD,AUDIT_WRITE,SYS_CHROOT,SETFCAP".into(),
        "--entrypoint=/run/corral/init".into(),
        "-v".into(),
        // Not recursive: nothing mounted beneath the run directory on the
        // host shows up again inside.
        format!("{}:/run/corral:ro{nonrec}", run_dir.display()),
        "-e".into(),
        "CORRAL_GO=/run/corral/go.sock".into(),
        "-e".into(),
        format!("CORRAL_SESSION={}", spec.id),
        "-w".into(),
        spec.cwd.display().to_string(),
        "-i".into(),
    ];
    if spec.tty {
        a.push("-t".into());
    }
    let mut mounts = Vec::new();
    let mut host_binds = Vec::new();
    if image.is_none() {
        let rootfs = rootfs_dir(run_dir);
        host_binds = host_root(&rootfs)?;
        mounts.extend(host_binds.iter().cloned());
        a.push("--read-only".into());
        // podman's own read-only tmpfs mounts copy what the image has at
        // /tmp, /var/tmp and /run into them ("tmpcopyup"): here that would
        // be the host's /var/tmp. Fresh, empty ones instead.
        a.push("--read-only-tmpfs=false".into());
        for d in ["/tmp", "/var/tmp", "/run"] {
            a.push("--tmpfs".into());
            a.push(format!(
                "{d}:rw,exec,nosuid,nodev,notmpcopyup{}",
                if d == "/run" { ",mode=0755" } else { ",mode=1777" }
            ));
        }
        a.push("--tmpfs".into());
        a.push(format!("{}:rw,exec,nosuid,nodev,mode=0700", spec.home.display()));
        a.push("-e".into());
        a.push(format!("HOME={}", spec.home.display()));
        if let Ok(p) = std::env::var("PATH") {
            a.push("-e".into());
            a.push(format!("PATH={p}"));
        }
    }
    mounts.push(Mount {
        src: spec.workspace.clone(),
        dst: spec.workspace.clone(),
        read_only: false,
    });
    mounts.extend(spec.mounts.iter().cloned());
    if let Some(e) = &spec.egress {
        // The session trusts corral's interception CA: the system bundle
        // path holds the system roots plus the CA, and the variables the
        // common TLS stacks read point at the same files.
        mounts.push(Mount {
            src: run_dir.join(crate::egress::BUNDLE_FILE),
            dst: PathBuf::from(crate::egress::SYSTEM_BUNDLE),
            read_only: true,
        });
        for (k, v) in crate::egress::trust_env(&crate::egress::session_run_dir(run_dir, true)) {
            a.push("-e".into());
            a.push(format!("{k}={v}"));
        }
        for (name, ip) in &e.add_hosts {
            a.push(format!("--add-host={name}:{ip}"));
        }
    }
    // A later mount at the same destination replaces an earlier one.
    let mut seen = std::collections::BTreeMap::new();
    for m in mounts {
        seen.insert(m.dst.clone(), m);
    }
    // The host's directories are bound without their submounts (podman's
    // `bind`, not the default `rbind`): other containers' overlay roots
    // under /var/lib/containers, and anything mounted later, stay out.
    for m in seen.values() {
        a.push("-v".into());
        let mut v = volume_arg(m);
        if podman && host_binds.contains(m) {
            v.push_str(",bind");
        }
        a.push(v);
    }
    for (k, v) in &spec.env {
        a.push("-e".into());
        a.push(format!("{k}={v}"));
    }
    match image {
        Some(img) => a.push(img.to_string()),
        None => {
            a.push("--rootfs".into());
            a.push(rootfs_dir(run_dir).display().to_string());
        }
    }
    a.push("--".into());
    a.extend(spec.command.iter().cloned());
    Ok(a)
}

/// The empty root directory of a default-mode container: beside the run
/// directory (`<run>/sessions/<id>` → `<run>/rootfs/<id>`), never inside
/// it, so the container's own mounts are not reachable again through the
/// run directory's mount.
pub fn rootfs_dir(run_dir: &Path) -> PathBuf {
    let id = run_dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    match run_dir.parent().and_then(Path::parent) {
        Some(root) => root.join("rootfs").join(id),
        None => run_dir.join("rootfs"),
    }
}

/// The container's name for a session.
pub fn container_name(id: SessionId) -> String {
    format!("corral-{id}")
}

async fn accept_hello(
    listener: &UnixListener,
    child: &mut tokio::process::Child,
) -> Result<(UnixStream, u32), SessionError> {
    let accept = async {
        let (s, _) = listener.accept().await.map_err(io("accept on the go socket"))?;
        let pid = s
            .peer_cred()
            .map_err(io("SO_PEERCRED on the go socket"))?
            .pid()
            .ok_or_else(|| SessionError::Start("the go socket's peer has no pid".into()))?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
            .await
            .map_err(|_| SessionError::Start("corral-init did not say hello".into()))?
            .map_err(io("read corral-init's hello"))?;
        if !line.starts_with("hello ") {
            return Err(SessionError::Start(format!(
                "unexpected greeting on the go socket: {line:?}"
            )));
        }
        Ok((r.into_inner(), pid as u32))
    };
    tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(60), accept) => match r {
            Ok(r) => r,
            Err(_) => Err(SessionError::Start("the container did not start within 60 s".into())),
        },
        st = child.wait() => Err(SessionError::Start(match st {
            Ok(s) => format!("the container engine exited ({s}) before the session started"),
            Err(e) => format!("waiting for the container engine: {e}"),
        })),
    }
}

fn timing(what: &str) {
    if std::env::var_os("CORRAL_TIMING").is_some() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        eprintln!("corral-timing {t} {what}");
    }
}

/// Runs a session to the end, in `run_dir` (created by [`new_id`]; `None`
/// makes it). The banner line (when `spec.banner`) goes to stderr once
/// every layer is attached, before the command's first instruction.
pub async fn run_in(spec: Spec, run_dir: Option<PathBuf>) -> Result<Outcome, SessionError> {
    let run_dir = match run_dir {
        Some(d) => d,
        None => {
            let d = spec.run_root.join("sessions").join(spec.id.to_string());
            std::fs::create_dir_all(&d).map_err(io(format!("create {}", d.display())))?;
            d
        }
    };
    let rel = format!("corral/{}", spec.id);
    let mut cleanup = Cleanup {
        engine: None,
        container: None,
        cgroup: None,
        cgroup_rel: rel.clone(),
        run_dir: run_dir.clone(),
    };
    timing("cgroup");
    let cg = Cgroup::create(&rel)?;
    let cg_path = cg.path().to_path_buf();
    let cg_rel = cg.rel();
    cleanup.cgroup = Some(cg);
    set_mode(&run_dir, 0o755)?;

    let sock = run_dir.join("go.sock");
    let listener = UnixListener::bind(&sock).map_err(io(format!("bind {}", sock.display())))?;
    set_mode(&sock, 0o777)?;

    // The MCP layer: one authority for the egress proxy's MCP
    // conversations and the stdio relays (`corral mcp wrap`, which reach
    // it on mcp.sock); its reports share the proxy's queue. Kernel events
    // of a relay's processes are linked to its calls in flight (`calls`).
    let (proxy_tx, proxy_rx) = tokio::sync::mpsc::channel(PROXY_QUEUE);
    let (mcp, mcp_dropped) = crate::mcp_layer::authority(
        spec.id,
        &spec.principal,
        spec.mcp.clone(),
        spec.mode,
        spec.mcp_limits,
        proxy_tx.clone(),
    );
    let calls = Arc::new(crate::mcp::CallLog::new());
    let mcp_sock = run_dir.join(MCP_SOCKET);
    let mcp_host = crate::mcp::McpHost::listen(&mcp_sock, mcp.clone(), calls.clone())
        .map_err(|e| SessionError::Start(format!("the MCP relay socket: {e}")))?;

    // The egress proxy's trust files, and, for a session on the host, its
    // listeners (a container's are made in its network namespace once it
    // exists, before the agent starts).
    let container = matches!(spec.target, Target::Container { .. });
    let mut host_listeners = None;
    let mut redirect = None;
    if let Some(e) = &spec.egress {
        crate::egress::write_trust(&run_dir, &e.ca).map_err(io("write the session's CA files"))?;
        if container {
            let port = crate::egress::pick_port();
            redirect = Some(corral_kernel::Redirect {
                v4: std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port),
                v6: Some(std::net::SocketAddrV6::new(
                    std::net::Ipv6Addr::LOCALHOST,
                    port,
                    0,
                    0,
                )),
            });
        } else {
            if !e.add_hosts.is_empty() {
                return Err(SessionError::Start(
                    "--add-host needs a container (a session on the host uses the host's resolver)".into(),
                ));
            }
            let l = crate::egress::listen_on_host().map_err(io("listen for the egress proxy"))?;
            redirect = Some(l.redirect().map_err(io("read the egress proxy's address"))?);
            host_listeners = Some(l);
        }
    }

    let mut child = match &spec.target {
        Target::Container { engine, image } => {
            // corral-init, and beside it the relay `corral mcp wrap` runs
            // (`/run/corral/bin/corral`, on the command's PATH).
            crate::init::install_into_run_dir(&spec.init_bin, &run_dir)
                .map_err(io(format!("install corral-init into {}", run_dir.display())))?;
            let args = run_args(&spec, &run_dir, image.as_deref())?;
            let mut c = engine.tokio_command();
            c.args(&args);
            if !spec.tty {
                // A terminal's Ctrl-C reaches corral, which forwards it once.
                c.process_group(0);
            }
            cleanup.engine = Some(engine.clone());
            cleanup.container = Some(container_name(spec.id));
            c.spawn()
                .map_err(io(format!("start {}", engine.program.display())))?
        }
        Target::Bare => {
            let mut c = std::process::Command::new(&spec.init_bin);
            c.arg("--").args(&spec.command);
            c.current_dir(&spec.cwd);
            c.env("CORRAL_GO", &sock);
            c.env("CORRAL_SESSION", spec.id.to_string());
            // `corral mcp wrap` on the host runs the relay (corral-init)
            // against this session's socket.
            c.env("CORRAL_MCP_SOCK", &mcp_sock);
            c.env("CORRAL_MCP_WRAPPER", &spec.init_bin);
            c.env("HOME", &spec.home);
            for (k, v) in &spec.env {
                c.env(k, v);
            }
            if spec.egress.is_some() {
                for (k, v) in crate::egress::trust_env(&run_dir) {
                    c.env(k, v);
                }
            }
            if let Some(cg) = &cleanup.cgroup {
                cg.place(&mut c)?;
            }
            let mut c = tokio::process::Command::from(c);
            if !spec.tty {
                c.process_group(0);
            }
            c.spawn()
                .map_err(io(format!("start {}", spec.init_bin.display())))?
        }
    };

    timing("spawned");
    // Every layer but the fanotify fallback's marks attaches to the session
    // cgroup while the engine starts the container (the programs match by
    // ancestry, so the container's cgroup, made later, is covered). The
    // marks need the container's mounts: they follow corral-init's hello.
    let mut cfg = SessionConfig::new(spec.id.0, &spec.principal, &cg_path);
    cfg.mode = spec.mode;
    cfg.ctl_port = spec.ctl_port;
    cfg.redirect = redirect;
    cfg.file_layer = spec.file_layer;
    cfg.exec_judge = spec.judge.clone();
    match &spec.target {
        Target::Container { .. } => cfg.defer_file_mounts = true,
        Target::Bare => {
            let t =
                std::fs::read_to_string("/proc/self/mountinfo").map_err(io("read /proc/self/mountinfo"))?;
            let tmp = std::env::temp_dir();
            cfg.file_mounts = host_file_mounts(
                &parse_mountinfo(&t),
                &[Path::new("/"), &spec.workspace, &spec.home, &tmp, &spec.cwd],
            );
        }
    }
    let plan = spec.plan.clone();
    let attach = tokio::task::spawn_blocking(move || KernelSession::start(cfg, &plan));
    let (hello, attached) = tokio::join!(accept_hello(&listener, &mut child), attach);
    let attached = attached
        .map_err(|e| SessionError::Start(format!("attaching enforcement: {e}")))
        .and_then(|r| r.map_err(SessionError::from));
    let (mut stream, pid) = match hello {
        Ok(x) => x,
        Err(e) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(e);
        }
    };
    drop(listener);
    let _ = std::fs::remove_file(&sock);
    let (mut ks, rx) = match attached {
        Ok(x) => x,
        Err(e) => {
            let _ = stream.write_all(format!("abort {e}\n").as_bytes()).await;
            let _ = child.wait().await;
            return Err(e);
        }
    };

    // The peer must be inside this session's cgroup.
    let peer_cg = cgroup::of_pid(pid).unwrap_or_default();
    if !cgroup::is_within(&peer_cg, &cg_rel) {
        let _ = stream
            .write_all(b"abort the go socket's peer is not in the session cgroup\n")
            .await;
        return Err(SessionError::Start(format!(
            "the go socket's peer (pid {pid}, cgroup {peer_cg}) is not in the session cgroup {cg_rel}"
        )));
    }

    timing("hello");
    if let Target::Container { .. } = &spec.target {
        let marked = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .map_err(io(format!("read /proc/{pid}/mountinfo")))
            .and_then(|t| {
                ks.attach_file_mounts(container_file_mounts(pid, &parse_mountinfo(&t)))
                    .map_err(SessionError::from)
            });
        if let Err(e) = marked {
            let _ = stream.write_all(format!("abort {e}\n").as_bytes()).await;
            let _ = child.wait().await;
            return Err(e);
        }
    }
    // The egress proxy serves before the agent's first connection.
    let egress = match &spec.egress {
        None => None,
        Some(e) => {
            let listeners = match host_listeners.take() {
                Some(l) => Ok(l),
                None => {
                    let port = redirect.map(|r| r.v4.port()).unwrap_or(0);
                    tokio::task::spawn_blocking(move || crate::egress::listen_in_netns(pid, port))
                        .await
                        .map_err(|e| std::io::Error::other(e.to_string()))
                        .and_then(|r| r)
                        .map_err(|e| {
                            format!(
                                "the egress proxy cannot listen in the container's network namespace: {e}"
                            )
                        })
                }
            };
            let started = listeners.and_then(|l| {
                crate::egress::start(
                    e,
                    &spec.principal,
                    spec.mode,
                    spec.id,
                    l,
                    ks.origins(),
                    proxy_tx,
                    Some(mcp.clone()),
                )
            });
            match started {
                Ok(r) => Some(r),
                Err(e) => {
                    let _ = stream.write_all(format!("abort {e}\n").as_bytes()).await;
                    let _ = child.wait().await;
                    return Err(SessionError::Start(e));
                }
            }
        }
    };
    timing("attached");
    let layers = banner_layers(&ks, &spec.plan, egress.is_some());
    let (plan_tx, plan_rx) = tokio::sync::watch::channel(spec.plan.clone());
    let recorder = tokio::spawn(record(
        rx,
        proxy_rx,
        calls.clone(),
        spec.events_path.clone(),
        spec.audit.clone(),
        plan_rx,
    ));
    // The control socket (mode switch, reload, status) lives as long as
    // the command runs.
    let control = crate::control::Server::bind(&spec.run_root, spec.id, &cg_rel)
        .map_err(io("bind the control socket"))?;
    let (ctl_tx, mut ctl_rx) = tokio::sync::mpsc::channel(8);
    let control = tokio::spawn(control.serve(ctl_tx));

    if spec.banner {
        let l = layers
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("  ");
        let mode = if spec.mode == Mode::Shadow {
            " · SHADOW (nothing blocked)"
        } else {
            ""
        };
        // With a TTY the engine may already have put the terminal in raw
        // mode: end the line with CR LF so the agent's first line starts
        // at column 0.
        eprint!(
            "corral: session {} · principal {} · policy {} · {l}{mode} · events {}\r\n",
            spec.id, spec.principal, spec.policy_label, spec.record_label
        );
        if let Some(url) = &spec.ui_url {
            eprint!("corral: control UI {url}\r\n");
        }
    }
    if let Err(e) = stream.write_all(b"go\n").await {
        return Err(SessionError::Start(format!("send go to corral-init: {e}")));
    }

    timing("go");
    let mut state = crate::control::State {
        mode: spec.mode,
        policy_label: spec.policy_label.clone(),
        policy_sha256: spec.policy_sha256.clone(),
        events: 0,
    };
    // A control Stop: supervise() terminates the command.
    let stop = tokio::sync::Notify::new();
    let exit = {
        let sup = supervise(stream, &mut child, pid, cleanup.cgroup.as_ref(), &stop);
        tokio::pin!(sup);
        loop {
            tokio::select! {
                e = &mut sup => break e,
                Some(inc) = ctl_rx.recv() => {
                    let rep = if inc.req == crate::control::Request::Stop {
                        stop.notify_one();
                        state.reply(&spec, None)
                    } else {
                        let proxy = egress.as_ref().map(|r| &r.proxy);
                        state.apply(&spec, &mut ks, proxy, &mcp, &plan_tx, inc.req).await
                    };
                    let _ = inc.reply.send(rep);
                }
            }
        }
    };
    control.abort();
    let _ = control.await;
    // The relays' servers go with the session (each relay kills its server
    // when the socket closes).
    drop(mcp_host);

    timing("exited");
    // The command is done; stop what is left, then account for events.
    if let Some(cg) = &cleanup.cgroup {
        let _ = cg.kill();
    }
    let proxy_dropped = egress.as_ref().map(|r| r.dropped.clone());
    if let Some(r) = egress {
        r.stop();
    }
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        // `<engine> run --rm` removed the container before it exited
        // normally: no need to ask the engine again (a CLI call, ~25 ms).
        Ok(Ok(st)) if st.code().is_some() && exit.is_some() => cleanup.container = None,
        Ok(_) => {}
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
    timing("waited");
    let mut ks = ks;
    ks.flush().await;
    timing("flushed");
    let lost = ks.lost();
    // The cgroup is killed (above) and its processes reaped: the kernel's
    // teardown of the programs need not hold the user up.
    ks.close_in_background();
    timing("dropped");
    let (events, denied) = recorder.await.unwrap_or((0, 0));
    let events = events + state.events;
    let proxy_dropped = proxy_dropped
        .map(|d| d.load(std::sync::atomic::Ordering::Relaxed))
        .unwrap_or(0);
    let mcp_dropped = mcp_dropped.load(std::sync::atomic::Ordering::Relaxed);
    cleanup.run();
    timing("cleaned");
    if spec.tty {
        reclaim_terminal();
    }
    let exit = exit.unwrap_or(Exit::Code(125));
    Ok(Outcome {
        id: spec.id,
        exit,
        events,
        denied,
        lost,
        proxy_dropped,
        mcp_dropped,
        layers,
    })
}

/// Waits for the command's end, forwarding SIGINT/SIGTERM/SIGHUP/SIGQUIT
/// to corral-init. A second interrupt, or 10 s without an exit after the
/// first, kills the session's cgroup. `stop` (a control Stop) sends
/// SIGTERM to corral-init (which passes it to the command) and kills the
/// cgroup after [`crate::control::STOP_GRACE`].
async fn supervise(
    stream: UnixStream,
    child: &mut tokio::process::Child,
    pid: u32,
    cg: Option<&Cgroup>,
    stop: &tokio::sync::Notify,
) -> Option<Exit> {
    use tokio::signal::unix::{signal, SignalKind};
    let mk = |k: SignalKind| signal(k).ok();
    let (mut int, mut term, mut hup, mut quit) = (
        mk(SignalKind::interrupt()),
        mk(SignalKind::terminate()),
        mk(SignalKind::hangup()),
        mk(SignalKind::quit()),
    );
    let mut lines = BufReader::new(stream).lines();
    let mut exit = None;
    let mut interrupted = 0u32;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut child_done = false;
    let mut stopping = false;
    loop {
        let next_sig = async {
            tokio::select! {
                _ = recv(&mut int) => libc::SIGINT,
                _ = recv(&mut term) => libc::SIGTERM,
                _ = recv(&mut hup) => libc::SIGHUP,
                _ = recv(&mut quit) => libc::SIGQUIT,
            }
        };
        let grace = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(l)) => { if let Some(e) = parse_exit(&l) { exit = Some(e); } }
                // corral-init closed the socket: it has exited.
                _ => break,
            },
            st = child.wait(), if !child_done => {
                child_done = true;
                // The engine's client ended; corral-init's report (or EOF)
                // follows. Without a socket report, take the engine's code.
                if let Ok(s) = st {
                    if exit.is_none() {
                        if let Some(c) = s.code() { exit = Some(Exit::Code(c)); }
                    }
                }
                if deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                }
            },
            n = next_sig => {
                interrupted += 1;
                if interrupted > 1 {
                    if let Some(cg) = cg { let _ = cg.kill(); }
                } else {
                    forward(pid, n);
                    deadline = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                }
            },
            _ = stop.notified(), if !stopping => {
                stopping = true;
                forward(pid, libc::SIGTERM);
                let d = tokio::time::Instant::now() + crate::control::STOP_GRACE;
                deadline = Some(deadline.map_or(d, |old| old.min(d)));
            },
            _ = grace => {
                match cg {
                    Some(cg) => { let _ = cg.kill(); }
                    None => forward(pid, libc::SIGKILL),
                }
                deadline = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                if child_done && interrupted == 0 && !stopping { break; }
            },
        }
    }
    exit
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

fn forward(pid: u32, sig: i32) {
    if let (Ok(p), Ok(s)) = (i32::try_from(pid), nix::sys::signal::Signal::try_from(sig)) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), s);
    }
}

/// `exit code N` / `exit signal N`.
pub fn parse_exit(line: &str) -> Option<Exit> {
    let mut w = line.split_whitespace();
    if w.next()? != "exit" {
        return None;
    }
    let kind = w.next()?;
    let n: i32 = w.next()?.parse().ok()?;
    match kind {
        "code" => Some(Exit::Code(n)),
        "signal" => Some(Exit::Signal(n)),
        _ => None,
    }
}

/// After a TTY session, the terminal's foreground group is corral's again
/// (corral-init gave it to the agent's group in a bare session).
fn reclaim_terminal() {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    if nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
        // SIGTTOU would stop a caller outside the foreground group;
        // blocking it (no unsafe handler change) lets tcsetpgrp proceed.
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGTTOU);
        let _ = nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&set), None);
        let _ = nix::unistd::tcsetpgrp(stdin.as_fd(), nix::unistd::getpgrp());
    }
}

fn banner_layers(ks: &KernelSession, plan: &Plan, proxy: bool) -> Vec<(String, String)> {
    let mut file = String::new();
    let mut net = String::new();
    for (k, v) in ks.layers() {
        match k {
            "file open" => file = v.to_string(),
            "network connect/send" => net = v.to_string(),
            _ => {}
        }
    }
    let http = if proxy {
        "egress proxy (every TCP connection redirected)"
    } else if plan.asks.http_request || !plan.proxy.host_rules.is_empty() || !plan.proxy.rewrites.is_empty() {
        "none (no egress proxy: hostname permits match nothing, default deny)"
    } else {
        "-"
    };
    vec![
        ("file".into(), file.clone()),
        ("exec".into(), file),
        ("net".into(), net),
        ("http".into(), http.into()),
        (
            "mcp".into(),
            match (plan.asks.mcp_call, proxy) {
                (true, true) => "decided (stdio: corral mcp wrap; HTTP: egress proxy)",
                (true, false) => "decided (stdio: corral mcp wrap)",
                (false, _) => "observed (no McpCall policy)",
            }
            .into(),
        ),
    ]
}

/// Writes every event as a JSON line (with the policies' file:line) and
/// counts denials. Returns (events, denials). `plan` follows reloads, for
/// the policies' file:line.
async fn record(
    mut rx: tokio::sync::mpsc::Receiver<Event>,
    mut proxy_rx: tokio::sync::mpsc::Receiver<Event>,
    calls: Arc<crate::mcp::CallLog>,
    jsonl: Option<PathBuf>,
    audit: Option<corral_audit::PipelineSender>,
    mut plan: tokio::sync::watch::Receiver<Plan>,
) -> (u64, u64) {
    let mut w = match &jsonl {
        None => None,
        Some(path) => {
            let file = path
                .parent()
                .map(std::fs::create_dir_all)
                .transpose()
                .and_then(|_| std::fs::OpenOptions::new().create(true).append(true).open(path));
            match file {
                Ok(f) => Some(std::io::BufWriter::new(f)),
                Err(e) => {
                    eprintln!("corral: cannot write events to {}: {e}", path.display());
                    None
                }
            }
        }
    };
    let index = |p: &Plan| -> std::collections::HashMap<String, String> {
        p.policies.iter().map(|p| (p.id.clone(), p.at.clone())).collect()
    };
    let mut at = index(&plan.borrow_and_update());
    let (mut n, mut denied) = (0u64, 0u64);
    // The kernel's channel closes when the session's programs are closed;
    // then what the proxy reported until then is taken, and no more.
    let mut kernel_open = true;
    loop {
        let ev = if kernel_open {
            tokio::select! {
                biased;
                e = rx.recv() => match e {
                    Some(e) => e,
                    None => { kernel_open = false; continue; }
                },
                Some(e) = proxy_rx.recv() => e,
            }
        } else {
            match proxy_rx.try_recv() {
                Ok(e) => e,
                Err(_) => break,
            }
        };
        if plan.has_changed().unwrap_or(false) {
            at = index(&plan.borrow_and_update());
        }
        let mut ev = ev;
        link_mcp_call(&calls, &mut ev);
        n += 1;
        if matches!(ev.decision, Some(Decision::Deny | Decision::WouldDeny)) {
            denied += 1;
        }
        let policy_at: Vec<String> = ev
            .policies
            .iter()
            .map(|id| at.get(id).cloned().unwrap_or_default())
            .collect();
        if let Some(w) = w.as_mut() {
            let mut v = serde_json::to_value(&ev).unwrap_or(serde_json::Value::Null);
            if let serde_json::Value::Object(m) = &mut v {
                if !policy_at.is_empty() {
                    m.insert("policy_at".into(), serde_json::json!(policy_at));
                }
            }
            let _ = serde_json::to_writer(&mut *w, &v);
            let _ = w.write_all(b"\n");
            if rx.is_empty() && proxy_rx.is_empty() {
                let _ = w.flush();
            }
        }
        if let Some(a) = &audit {
            // Never waits: a full pipeline drops the event and counts it.
            a.send(corral_audit::Stored {
                id: None,
                wall_ns: wall_ns(),
                policy_at,
                event: ev,
            });
        }
    }
    if let Some(mut w) = w {
        let _ = w.flush();
    }
    (n, denied)
}

/// Keeps the relays' process trees current and marks a kernel event of a
/// stdio MCP server's processes with the tool call(s) in flight when it
/// happened.
fn link_mcp_call(calls: &crate::mcp::CallLog, ev: &mut Event) {
    match ev.what {
        What::Fork { child } => calls.note_fork(ev.proc.pid, child),
        What::Exit { .. } => calls.note_exit(ev.proc.pid),
        _ => {}
    }
    let kernel = matches!(
        ev.layer,
        Layer::BpfLsm | Layer::CgroupBpf | Layer::Fanotify | Layer::Userspace | Layer::Tracepoint
    );
    if kernel && ev.mcp_call.is_none() && ev.proc.pid != 0 {
        ev.mcp_call = calls.link(ev.proc.pid, ev.proc.ppid, ev.ts_ns);
    }
}

/// SHA-256 of `bytes`, lowercase hex (the policy's identity in the audit
/// trail).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `CLOCK_MONOTONIC` now, in ns: the clock kernel events carry.
pub fn mono_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000) + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// An event the supervisor records itself (session start and end, mode
/// switches, policy loads): no decision, layer `userspace`, the
/// supervisor's own process.
pub fn supervisor_event(id: SessionId, principal: &str, what: What) -> Event {
    Event {
        session: id,
        principal: principal.to_owned(),
        ts_ns: mono_ns(),
        proc: Proc {
            pid: std::process::id(),
            ppid: std::os::unix::process::parent_id(),
            comm: "corral".into(),
            exe: std::env::current_exe()
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
        },
        what,
        decision: None,
        layer: Layer::Userspace,
        policies: Vec::new(),
        mcp_call: None,
    }
}

/// Wall-clock time in ns.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn set_mode(p: &Path, mode: u32) -> Result<(), SessionError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", p.display())))
}
