//! A governed session: one cgroup, one principal, one plan, every layer.

use crate::cgroup::Cgroup;
use crate::events::{self, Rows, Sink};
use crate::fanotify::{self, Fanotify, FileTables};
use crate::net::{self, NetEnforcer};
use crate::trace::{self, Tracer};
use crate::{Error, Result};
use corral_core::{Event, Mode, SessionId};
use corral_policy::Plan;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, watch};

/// What a session is.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The session id (distinct among running sessions).
    pub id: SessionId,
    /// The principal: the session's processes are `Agent::"<principal>"`.
    pub principal: String,
    /// The session's cgroup-v2 directory; everything beneath it is governed.
    pub cgroup: PathBuf,
    /// Enforce or shadow.
    pub mode: Mode,
    /// corral's own API/UI port on loopback: never reachable from the session.
    pub ctl_port: Option<u16>,
    /// Capacity of the event channel.
    pub channel: usize,
    /// Paths on the mounts whose file opens and execs are governed (the
    /// session's root and bind mounts). Empty: the file and exec tables are
    /// not enforced (network and telemetry still are) — say so to the user.
    pub file_mounts: Vec<PathBuf>,
}

impl SessionConfig {
    /// A config with defaults (enforce, no control port, 65,536 events).
    pub fn new(id: u32, principal: &str, cgroup: impl Into<PathBuf>) -> SessionConfig {
        SessionConfig {
            id: SessionId(id),
            principal: principal.to_string(),
            cgroup: cgroup.into(),
            mode: Mode::Enforce,
            ctl_port: None,
            channel: 65536,
            file_mounts: Vec::new(),
        }
    }
}

/// Kernel enforcement for one running session. Dropping it detaches every
/// program; the caller must kill the session's processes first (see
/// [`crate::cgroup::Cgroup::kill`]) — enforcement never lapses while they run.
pub struct KernelSession {
    cfg: SessionConfig,
    net: NetEnforcer,
    _tracer: Tracer,
    files: Option<Fanotify>,
    lost: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KernelSession {
    /// Attaches enforcement for `plan` to the session cgroup. Fails closed:
    /// if any program or table the plan needs cannot be put in place, no
    /// program stays attached and the error names the hook and the reason.
    /// Must be called inside a tokio runtime (the event readers are tasks).
    pub fn start(cfg: SessionConfig, plan: &Plan) -> Result<(KernelSession, mpsc::Receiver<Event>)> {
        let pp = plan
            .for_principal(&cfg.principal)
            .ok_or_else(|| Error::Plan(format!("the plan has no tables for Agent::{:?}", cfg.principal)))?;
        let img = net::encode(plan, pp)?;
        let file_tables = if cfg.file_mounts.is_empty() {
            None
        } else {
            Some(FileTables::from_plan(plan, &cfg.principal)?)
        };
        let cg = Cgroup::open(&cfg.cgroup)?;
        let (tx, rx) = mpsc::channel(cfg.channel.max(1));
        let rows = Arc::new(RwLock::new(Rows::default()));
        let lost = Arc::new(AtomicU64::new(0));
        let sink = Sink { session: cfg.id, principal: cfg.principal.clone(), rows: rows.clone(), tx, lost: lost.clone() };
        let (stop, stop_rx) = watch::channel(false);
        // Telemetry first (the file fallback reads its open flags), then
        // the file layer, then the network programs; any failure drops
        // what was attached so far.
        let (tracer, tring, tlost) = Tracer::start(cg.id()?, cg.level())?;
        let files = match file_tables {
            None => None,
            Some(t) => Some(Fanotify::start(
                fanotify::Config {
                    session: cfg.id,
                    principal: cfg.principal.clone(),
                    cgroup_rel: cg.rel(),
                    mounts: cfg.file_mounts.clone(),
                    mode: cfg.mode,
                },
                t,
                tracer.open_flags(),
                sink.tx.clone(),
            )?),
        };
        let (net, ring, lost_map) =
            NetEnforcer::start(&cfg.cgroup, cfg.id.0, &img, cfg.mode, cfg.ctl_port.unwrap_or(0), rows)?;
        let tasks = vec![
            tokio::spawn(events::pump(ring, lost_map, sink.clone(), net::decode, stop_rx.clone())),
            tokio::spawn(events::pump(tring, tlost, sink, trace::decode, stop_rx)),
        ];
        Ok((KernelSession { cfg, net, _tracer: tracer, files, lost, stop, tasks }, rx))
    }

    /// Replaces the policy: all new tables are computed first, then each
    /// layer's are written aside and activated with one flip (a request of
    /// any one kind sees the old policy or the new, never a mix). On error the old policy stays in force,
    /// unchanged.
    pub fn swap(&mut self, plan: &Plan) -> Result<()> {
        let pp = plan
            .for_principal(&self.cfg.principal)
            .ok_or_else(|| Error::Plan(format!("the plan has no tables for Agent::{:?}", self.cfg.principal)))?;
        let img = net::encode(plan, pp)?;
        let files = match &self.files {
            Some(_) => Some(FileTables::from_plan(plan, &self.cfg.principal)?),
            None => None,
        };
        // Everything is computed; now each layer flips atomically.
        self.net.swap(&img)?;
        if let (Some(f), Some(t)) = (&self.files, files) {
            f.swap(t);
        }
        Ok(())
    }

    /// Events lost so far (ring buffer full or channel full), all layers.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed) + self.files.as_ref().map_or(0, Fanotify::lost)
    }

    /// Which layer decides each kind in this session.
    pub fn layers(&self) -> Vec<(&'static str, &'static str)> {
        let files = if self.files.is_some() { "fanotify (fallback)" } else { "not enforced: no mounts given" };
        vec![
            ("network connect/send", "cgroup-bpf"),
            ("file open", files),
            ("exec", files),
            ("telemetry", "tracepoints"),
        ]
    }

    /// The session's configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Stops the event readers after draining what the kernel has queued.
    /// Programs stay attached until the session is dropped.
    pub async fn flush(&mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}
