//! Container engines through their CLIs: podman and docker have the same
//! `run` surface for what corral needs, so one command builder serves both.
//!
//! podman on hosts like this one needs settings the system file may lack
//! (runc rather than crun on hybrid cgroups, no default ulimits where the
//! host forbids raising them, the cgroupfs manager and a file events logger
//! without systemd). corral never asks the user to edit system files: it
//! writes its own `containers.conf` and points podman at it with
//! `CONTAINERS_CONF`, for its own invocations only.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Which engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// podman (rootful here).
    Podman,
    /// docker (needs a reachable engine).
    Docker,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Podman => "podman",
            Kind::Docker => "docker",
        })
    }
}

/// Why no engine can be used.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Neither engine works; each reason says what is missing.
    #[error("no container engine works here:\n{}\n(or use --no-container for a cgroup-only session)", .0.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n"))]
    None(Vec<String>),
    /// The chosen engine does not work.
    #[error("{0}")]
    Unusable(String),
    /// A file corral writes for the engine.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The settings corral gives podman (see the module docs).
pub const PODMAN_CONF: &str = "\
# Written by corral for its own podman invocations (CONTAINERS_CONF).
[containers]
# The host may forbid raising RLIMIT_NOFILE; inherit the limits instead.
default_ulimits = []

[engine]
# crun refuses hybrid cgroup layouts; runc handles them.
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
";

/// A usable engine.
#[derive(Debug, Clone)]
pub struct Engine {
    /// podman or docker.
    pub kind: Kind,
    /// The CLI.
    pub program: PathBuf,
    /// corral's containers.conf (podman only).
    pub conf: Option<PathBuf>,
}

impl Engine {
    /// A command for the engine's CLI with corral's settings.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        if let Some(conf) = &self.conf {
            c.env("CONTAINERS_CONF", conf);
        }
        c
    }

    /// The same, for tokio.
    pub fn tokio_command(&self) -> tokio::process::Command {
        tokio::process::Command::from(self.command())
    }

    /// Removes a container (forcefully, no wait); true when it was there.
    pub fn remove(&self, name: &str) -> bool {
        self.command()
            .args(["rm", "-f", "-t", "0", name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Whether a container with this name exists.
    pub fn exists(&self, name: &str) -> bool {
        self.command()
            .args(["container", "exists", name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn output(mut c: Command) -> Result<String, String> {
    match c.output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes corral's containers.conf under `state` (idempotent).
pub fn write_podman_conf(state: &Path) -> Result<PathBuf, EngineError> {
    let io = |what: String| move |source| EngineError::Io { what, source };
    std::fs::create_dir_all(state).map_err(io(format!("create {}", state.display())))?;
    let p = state.join("containers.conf");
    if std::fs::read_to_string(&p).ok().as_deref() != Some(PODMAN_CONF) {
        let tmp = state.join(format!("containers.conf.{}", std::process::id()));
        std::fs::write(&tmp, PODMAN_CONF).map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &p).map_err(io(format!("rename to {}", p.display())))?;
    }
    Ok(p)
}

fn try_podman(state: &Path) -> Result<Engine, String> {
    let program = which("podman").ok_or("podman is not installed (apt-get install podman runc)")?;
    if which("runc").is_none() {
        return Err(
            "podman needs runc on this host (crun refuses hybrid cgroups): apt-get install runc".into(),
        );
    }
    let conf = write_podman_conf(state).map_err(|e| e.to_string())?;
    // Nothing is run to check podman (`podman info` costs a quarter second
    // on every session start, `podman --version` 20 ms): a broken engine
    // fails at `podman run`, whose error the session reports.
    Ok(Engine {
        kind: Kind::Podman,
        program,
        conf: Some(conf),
    })
}

fn try_docker() -> Result<Engine, String> {
    let program = which("docker").ok_or("docker is not installed")?;
    let e = Engine {
        kind: Kind::Docker,
        program,
        conf: None,
    };
    let mut c = e.command();
    c.args(["version", "--format", "{{.Server.Version}}"]);
    output(c).map_err(|err| {
        format!(
            "the docker CLI is installed but its engine is not reachable ({})",
            err.lines().next().unwrap_or("no answer")
        )
    })?;
    Ok(e)
}

/// The engine to use: `prefer` if given (an error says why it does not
/// work), else podman, else docker.
pub fn detect(prefer: Option<Kind>, state: &Path) -> Result<Engine, EngineError> {
    match prefer {
        Some(Kind::Podman) => try_podman(state).map_err(EngineError::Unusable),
        Some(Kind::Docker) => try_docker().map_err(EngineError::Unusable),
        None => {
            let mut why = Vec::new();
            match try_podman(state) {
                Ok(e) => return Ok(e),
                Err(w) => why.push(w),
            }
            match try_docker() {
                Ok(e) => return Ok(e),
                Err(w) => why.push(w),
            }
            Err(EngineError::None(why))
        }
    }
}
