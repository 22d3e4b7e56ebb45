//! A governed session: one cgroup, one principal, one plan, every layer.

use crate::argv::{ExecJudge, Gate};
use crate::cgroup::Cgroup;
use crate::events::{self, Rows, Sink};
use crate::fanotify::{self, Fanotify, FileTables};
use crate::lsm::{self, LsmEnforcer};
use crate::net::{self, NetEnforcer};
use crate::redirect::{Origins, Redirect};
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
    /// Send the session's TCP connections to non-loopback destinations to
    /// corral's egress proxy (see [`Redirect`]); `None`: the network table
    /// alone decides them.
    pub redirect: Option<Redirect>,
    /// Capacity of the event channel.
    pub channel: usize,
    /// Which layer decides file opens and execs.
    pub file_layer: FileLayer,
    /// Decides execs whose verdict depends on their arguments (required
    /// when the plan has such execs).
    pub exec_judge: Option<JudgeRef>,
    /// For the fanotify fallback: paths on the mounts whose file opens and
    /// execs are governed (the session's root and bind mounts).
    pub file_mounts: Vec<PathBuf>,
    /// The fanotify fallback's mounts come later, through
    /// [`KernelSession::attach_file_mounts`] (a container's mounts exist
    /// only once it runs; the other layers attach to the session cgroup
    /// meanwhile). The session's processes must not run before then.
    pub defer_file_mounts: bool,
}

/// A shared exec judge.
#[derive(Clone)]
pub struct JudgeRef(pub Arc<dyn ExecJudge>);

impl std::fmt::Debug for JudgeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecJudge")
    }
}

/// The file-open and exec layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileLayer {
    /// BPF LSM when the kernel allows it, else fanotify on `file_mounts`;
    /// with neither, the session does not start.
    #[default]
    Auto,
    /// BPF LSM or nothing (the session does not start without it).
    Lsm,
    /// The fanotify fallback on `file_mounts`.
    Fanotify,
    /// Not enforced (network and telemetry only). Reported by
    /// [`KernelSession::layers`].
    Off,
}

enum Files {
    Lsm(Box<LsmEnforcer>),
    Fanotify(Fanotify),
    /// fanotify, waiting for its mounts.
    Pending(Box<PendingFanotify>),
    Off,
}

/// What the fanotify fallback needs once its mounts are known.
struct PendingFanotify {
    cfg: fanotify::Config,
    tables: FileTables,
    flags: Arc<crate::trace::MapFlags>,
    tx: mpsc::Sender<Event>,
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
            redirect: None,
            channel: 65536,
            file_layer: FileLayer::Auto,
            exec_judge: None,
            file_mounts: Vec::new(),
            defer_file_mounts: false,
        }
    }
}

/// Kernel enforcement for one running session. Dropping it detaches every
/// program; the caller must kill the session's processes first (see
/// [`crate::cgroup::Cgroup::kill`]) — enforcement never lapses while they run.
pub struct KernelSession {
    cfg: SessionConfig,
    net: NetEnforcer,
    tracer: Tracer,
    gate: Option<Arc<Gate>>,
    files: Files,
    /// Why BPF LSM was not used (Auto fell back to fanotify).
    lsm_refused: Option<String>,
    lost: Arc<AtomicU64>,
    _reaper: crate::sys::Reaper,
    _reaper_fds: (std::fs::File, std::fs::File),
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
        let cg = Cgroup::open(&cfg.cgroup)?;
        let (tx, rx) = mpsc::channel(cfg.channel.max(1));
        let rows = Arc::new(RwLock::new(Rows::default()));
        let lost = Arc::new(AtomicU64::new(0));
        let mut sink = Sink {
            session: cfg.id,
            principal: cfg.principal.clone(),
            rows: rows.clone(),
            tx,
            lost: lost.clone(),
            gate: None,
            procs: Default::default(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let use_lsm = match cfg.file_layer {
            FileLayer::Lsm => true,
            FileLayer::Auto => true,
            FileLayer::Fanotify | FileLayer::Off => false,
        };
        let argv_mode = argv_mode(pp, &cfg)?;
        let mut tasks = Vec::new();
        let btf = crate::loader::kernel_btf()?;
        let mut lsm_refused = None;
        let files = if use_lsm {
            let path_img = lsm::encode(plan, pp)?;
            let lsm_sink = Sink {
                rows: Arc::new(RwLock::new(Rows::default())),
                ..sink.clone()
            };
            match LsmEnforcer::start(
                &btf,
                cg.id()?,
                cg.level(),
                &path_img,
                cfg.mode,
                lsm_sink.rows.clone(),
            ) {
                Ok((l, (ring, lost_map))) => {
                    tasks.push(tokio::spawn(events::pump(
                        ring,
                        lost_map,
                        lsm_sink,
                        lsm::decode,
                        stop_rx.clone(),
                    )));
                    Files::Lsm(Box::new(l))
                }
                // Auto: BPF LSM is not listed, or listed but cannot attach; fall back
                // only where the caller gave mounts for fanotify.
                Err(e)
                    if cfg.file_layer == FileLayer::Auto
                        && (!cfg.file_mounts.is_empty() || cfg.defer_file_mounts) =>
                {
                    lsm_refused = Some(e.to_string());
                    Files::Off
                }
                Err(e) if cfg.file_layer == FileLayer::Auto => {
                    return Err(Error::Unsupported(format!(
                        "file and exec enforcement: BPF LSM is unavailable ({e}), and no mounts were \
                         given for the fanotify fallback"
                    )))
                }
                Err(e) => return Err(e),
            }
        } else {
            Files::Off
        };
        // Telemetry (the file fallback reads its open flags; the argv gate
        // reads its exec events; with BPF LSM, task_kill guards stopped
        // execs), then the fallback, then the network programs; any
        // failure drops what was attached so far.
        let fanotify_next =
            matches!(files, Files::Off) && matches!(cfg.file_layer, FileLayer::Auto | FileLayer::Fanotify);
        let (mut tracer, (tring, tlost)) = Tracer::start(
            &btf,
            cg.id()?,
            cg.level(),
            matches!(files, Files::Lsm(_)),
            fanotify_next,
        )?;
        let gate = match (&cfg.exec_judge, tracer.pending.take()) {
            (Some(judge), Some(pending)) => Some(Arc::new(Gate {
                judge: RwLock::new(judge.0.clone()),
                pending: std::sync::Mutex::new(pending),
                shadow: std::sync::atomic::AtomicBool::new(cfg.mode == Mode::Shadow),
                active: std::sync::atomic::AtomicU32::new(argv_mode),
            })),
            _ => None,
        };
        sink.gate = gate.clone();
        tracer.set_argv_mode(argv_mode)?;
        let files = match (files, cfg.file_layer) {
            (Files::Off, FileLayer::Auto | FileLayer::Fanotify) if cfg.defer_file_mounts => {
                Files::Pending(Box::new(PendingFanotify {
                    cfg: fanotify::Config {
                        session: cfg.id,
                        principal: cfg.principal.clone(),
                        cgroup_rel: cg.rel(),
                        mounts: Vec::new(),
                        mode: cfg.mode,
                    },
                    tables: FileTables::from_plan(plan, &cfg.principal)?,
                    flags: tracer.open_flags(),
                    tx: sink.tx.clone(),
                }))
            }
            (Files::Off, FileLayer::Auto | FileLayer::Fanotify) => {
                if cfg.file_mounts.is_empty() {
                    return Err(Error::Unsupported(
                        "file and exec enforcement: BPF LSM is unavailable on this kernel and no mounts were \
                         given for the fanotify fallback"
                            .into(),
                    ));
                }
                Files::Fanotify(Fanotify::start(
                    fanotify::Config {
                        session: cfg.id,
                        principal: cfg.principal.clone(),
                        cgroup_rel: cg.rel(),
                        mounts: cfg.file_mounts.clone(),
                        mode: cfg.mode,
                    },
                    FileTables::from_plan(plan, &cfg.principal)?,
                    tracer.open_flags(),
                    sink.tx.clone(),
                )?)
            }
            (f, _) => f,
        };
        let (net, (ring, lost_map)) = NetEnforcer::start(
            &btf,
            &cfg.cgroup,
            &img,
            cfg.mode,
            cfg.ctl_port.unwrap_or(0),
            cfg.redirect,
            rows,
        )?;
        tasks.push(tokio::spawn(events::pump(
            ring,
            lost_map,
            sink.clone(),
            net::decode,
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(events::pump(
            tring,
            tlost,
            sink,
            trace::decode,
            stop_rx,
        )));
        // Last: the watchdog that kills the session if this process dies,
        // holding every link (inherited at fork) until the cgroup is empty.
        let kill_path = cfg.cgroup.join("cgroup.kill");
        let kill_f = std::fs::OpenOptions::new()
            .write(true)
            .open(&kill_path)
            .map_err(|e| {
                Error::io(
                    format!(
                        "open {} (kernels before 5.14 lack it; corral needs it)",
                        kill_path.display()
                    ),
                    e,
                )
            })?;
        let events_path = cfg.cgroup.join("cgroup.events");
        let events_f = std::fs::File::open(&events_path)
            .map_err(|e| Error::io(format!("open {}", events_path.display()), e))?;
        let reaper = {
            use std::os::fd::AsRawFd;
            crate::sys::Reaper::spawn(kill_f.as_raw_fd(), events_f.as_raw_fd())
                .map_err(|e| Error::io("start the session watchdog", e))?
        };
        Ok((
            KernelSession {
                cfg,
                net,
                tracer,
                gate,
                files,
                lsm_refused,
                lost,
                _reaper: reaper,
                _reaper_fds: (kill_f, events_f),
                stop,
                tasks,
            },
            rx,
        ))
    }

    /// Replaces the policy: all new tables are computed first, then each
    /// layer's are written aside and activated with one flip (a request of
    /// any one kind sees the old policy or the new, never a mix). On error the old policy stays in force,
    /// unchanged.
    ///
    /// `judge` replaces the exec judge (it must come from the same policy
    /// document as `plan`); `None` keeps the current one.
    pub fn swap(&mut self, plan: &Plan, judge: Option<JudgeRef>) -> Result<()> {
        if let Some(j) = judge {
            self.cfg.exec_judge = Some(j);
        }
        let pp = plan.for_principal(&self.cfg.principal).ok_or_else(|| {
            Error::Plan(format!(
                "the plan has no tables for Agent::{:?}",
                self.cfg.principal
            ))
        })?;
        let img = net::encode(plan, pp)?;
        let path_img = match &self.files {
            Files::Lsm(_) => Some(lsm::encode(plan, pp)?),
            _ => None,
        };
        let tables = match &self.files {
            Files::Fanotify(_) | Files::Pending(_) => Some(FileTables::from_plan(plan, &self.cfg.principal)?),
            _ => None,
        };
        let argv_mode = argv_mode(pp, &self.cfg)?;
        // Everything is computed; now each layer flips atomically.
        self.net.swap(&img)?;
        // The LSM tables are the only other swap that can fail (map
        // writes); if it does, the network layer goes back too.
        if let (Files::Lsm(l), Some(img)) = (&mut self.files, &path_img) {
            if let Err(e) = l.swap(img) {
                self.net.revert()?;
                return Err(e);
            }
        }
        if let (Some(g), Some(j)) = (&self.gate, &self.cfg.exec_judge) {
            if let Ok(mut cur) = g.judge.write() {
                *cur = j.0.clone();
            }
            g.active.store(argv_mode, std::sync::atomic::Ordering::Relaxed);
        }
        self.tracer.set_argv_mode(argv_mode)?;
        match (&mut self.files, tables) {
            (Files::Fanotify(f), Some(t)) => f.swap(t),
            (Files::Pending(p), Some(t)) => p.tables = t,
            _ => {}
        }
        Ok(())
    }

    /// Switches every layer between enforce and shadow while the session
    /// runs. Each layer flips with one write; requests decided after this
    /// returns follow `mode`. On error the layers already switched are put
    /// back, so the session is never half in one mode.
    pub fn set_mode(&mut self, mode: Mode) -> Result<()> {
        let old = self.cfg.mode;
        if old == mode {
            return Ok(());
        }
        self.net.set_mode(mode)?;
        if let Files::Lsm(l) = &mut self.files {
            if let Err(e) = l.set_mode(mode) {
                let _ = self.net.set_mode(old);
                return Err(e);
            }
        }
        // Exec arguments: 1 = stop and decide, 2 = report only.
        let argv = if mode == Mode::Shadow { 2 } else { 1 };
        if let Some(g) = &self.gate {
            if g.active.load(std::sync::atomic::Ordering::Relaxed) != 0 {
                if let Err(e) = self.tracer.set_argv_mode(argv) {
                    let _ = self.net.set_mode(old);
                    if let Files::Lsm(l) = &mut self.files {
                        let _ = l.set_mode(old);
                    }
                    return Err(e);
                }
                g.active.store(argv, std::sync::atomic::Ordering::Relaxed);
            }
            g.shadow
                .store(mode == Mode::Shadow, std::sync::atomic::Ordering::Relaxed);
        }
        match &mut self.files {
            Files::Fanotify(f) => f.set_mode(mode),
            Files::Pending(p) => p.cfg.mode = mode,
            _ => {}
        }
        self.cfg.mode = mode;
        Ok(())
    }

    /// The session's current mode.
    pub fn mode(&self) -> Mode {
        self.cfg.mode
    }

    /// Marks the fanotify fallback's mounts (a session started with
    /// `defer_file_mounts`); a no-op for the other file layers. Fails
    /// closed: on error nothing is marked and the session's processes
    /// must not be let go.
    pub fn attach_file_mounts(&mut self, mounts: Vec<PathBuf>) -> Result<()> {
        if !matches!(self.files, Files::Pending(_)) {
            return Ok(());
        }
        if mounts.is_empty() {
            return Err(Error::Unsupported("fanotify: no mount to mark".into()));
        }
        let Files::Pending(p) = std::mem::replace(&mut self.files, Files::Off) else {
            return Ok(());
        };
        let PendingFanotify {
            mut cfg,
            tables,
            flags,
            tx,
        } = *p;
        cfg.mounts = mounts.clone();
        let f = Fanotify::start(cfg, tables, flags, tx)?;
        self.files = Files::Fanotify(f);
        self.cfg.file_mounts = mounts;
        Ok(())
    }

    /// Events lost so far (ring buffer full or channel full), all layers.
    pub fn lost(&self) -> u64 {
        let files = if let Files::Fanotify(f) = &self.files {
            f.lost()
        } else {
            0
        };
        self.lost.load(Ordering::Relaxed) + files
    }

    /// Which layer decides each kind in this session.
    pub fn layers(&self) -> Vec<(&'static str, &'static str)> {
        let files = match &self.files {
            Files::Lsm(_) => "bpf-lsm",
            Files::Fanotify(_) => "fanotify (fallback)",
            Files::Pending(_) => "fanotify (fallback, mounts not yet marked)",
            Files::Off => "not enforced (file layer off)",
        };
        let mut layers = vec![
            ("network connect/send", "cgroup-bpf"),
            ("file open", files),
            ("exec", files),
            ("telemetry", "tracepoints"),
        ];
        if self.net.redirect.is_some() {
            layers.push((
                "tcp egress",
                "redirected to the egress proxy (cgroup-bpf, sock_ops)",
            ));
            let peer = if self.net.missing.is_empty() {
                "original destination (cgroup-bpf getpeername)"
            } else {
                "the proxy's address (getpeername hooks refused; see redirect_missing)"
            };
            layers.push(("getpeername of redirected sockets", peer));
        }
        layers
    }

    /// The original destinations of the session's redirected connections,
    /// for the egress proxy; `None` without a redirect.
    pub fn origins(&self) -> Option<Origins> {
        self.net.redirect.as_ref().map(|(_, o)| o.clone())
    }

    /// Optional parts of the redirect this kernel refused (the getpeername
    /// programs), each with the loader's reason.
    pub fn redirect_missing(&self) -> &[String] {
        &self.net.missing
    }

    /// Why BPF LSM was not used (not listed, or listed but refused) when
    /// the file layer fell back to fanotify.
    pub fn lsm_refused(&self) -> Option<&str> {
        self.lsm_refused.as_deref()
    }

    /// Optional BPF LSM hardening this kernel refused (e.g. content
    /// identity without IMA), each with the loader's reason.
    pub fn lsm_missing(&self) -> &[String] {
        match &self.files {
            Files::Lsm(l) => &l.missing,
            _ => &[],
        }
    }

    /// The session's configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Detaches everything without waiting for the kernel's teardown of
    /// the programs (most of a second of RCU grace periods): for callers
    /// whose session's processes are already gone (`cgroup.kill` done).
    /// Enforcement stays attached, on an empty cgroup, until the kernel
    /// has released it.
    pub fn close_in_background(self) {
        let mut this = self;
        let mut reaper = std::mem::replace(&mut this._reaper, crate::sys::Reaper::none());
        // Our copies of every BPF and perf descriptor close first, while
        // the watchdog still holds its own: cheap. The watchdog's exit then
        // does the kernel's slow part, and nobody waits for it.
        drop(this);
        reaper.dismiss_in_background();
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

/// `argv_mode` for a principal's tables: 0 when no exec verdict depends on
/// arguments; else 1 (stop-and-decide) or 2 (shadow: report only). Errors
/// when arguments must be decided and no judge was given.
fn argv_mode(pp: &corral_policy::plan::PrincipalPlan, cfg: &SessionConfig) -> Result<u32> {
    let needs = cfg.file_layer != FileLayer::Off
        && pp
            .exec
            .entries
            .values()
            .flat_map(|e| e.verdicts())
            .any(|v| v.allowed().is_none());
    if !needs {
        return Ok(0);
    }
    if cfg.exec_judge.is_none() {
        return Err(Error::Plan(
            "the policy decides some execs by their arguments, and no exec judge was given".into(),
        ));
    }
    Ok(if cfg.mode == Mode::Shadow { 2 } else { 1 })
}
