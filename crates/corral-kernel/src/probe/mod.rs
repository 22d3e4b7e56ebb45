//! Capability probe: which enforcement layer corral can use on this host,
//! found by actually loading and attaching tiny programs (`bpf/probe.bpf.c`),
//! marking a file with fanotify and answering the event, and asking the
//! kernel — never by reading configuration files alone.
//!
//! [`probe`] leaves nothing behind: every program is detached and unloaded,
//! the temporary cgroup removed, the fanotify mark and group gone and the
//! temporary file deleted before it returns, on success and on error alike
//! (each resource is held by an RAII guard). If it had to mount securityfs
//! to read the LSM list it unmounts it again.
//!
//! [`Capabilities::layers`] maps each decision kind to the layer a session
//! will use here; a kind without a layer makes sessions that need it refuse
//! to start.

mod bpf;
mod host;
pub(crate) use host::read_lsm_list;
mod sys;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Outcome of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Loaded, attached (and seen running where that can be checked).
    Ok,
    /// Present but refused: the detail says why (errno, loader message).
    Fail,
    /// Not present on this host at all (no such file, syscall or binary).
    Absent,
}

impl Status {
    /// `ok`, `fail` or `absent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "fail",
            Status::Absent => "absent",
        }
    }
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Outcome.
    pub status: Status,
    /// What was done and, unless ok, why it failed.
    pub detail: String,
    /// Wall time the probe took, in milliseconds.
    pub ms: f64,
}

impl Check {
    /// Whether the probe succeeded.
    pub fn ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// The outcome of a probe before it is timed.
pub(crate) struct Outcome {
    status: Status,
    detail: String,
}

impl Outcome {
    pub(crate) fn ok(detail: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Ok,
            detail: detail.into(),
        }
    }
    pub(crate) fn fail(detail: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Fail,
            detail: detail.into(),
        }
    }
    pub(crate) fn absent(detail: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Absent,
            detail: detail.into(),
        }
    }
}

fn timed(f: impl FnOnce() -> Outcome) -> Check {
    let t = Instant::now();
    let o = f();
    Check {
        status: o.status,
        detail: o.detail,
        ms: (t.elapsed().as_secs_f64() * 100_000.0).round() / 100.0,
    }
}

/// Every probe, one field each (also the rows of `corral doctor`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    /// `lsm/file_open` loaded, attached and seen running on an open.
    pub bpf_lsm: Check,
    /// `/sys/kernel/btf/vmlinux` present and parseable.
    pub btf: Check,
    /// `cgroup/connect4` attached to a temporary child cgroup.
    pub cgroup_v2: Check,
    /// A BPF ring buffer map created.
    pub ringbuf: Check,
    /// `tracepoint/sched/sched_process_exec` attached and seen firing.
    pub tracepoint: Check,
    /// `raw_tp/sched_process_exec` attached and seen firing.
    pub raw_tracepoint: Check,
    /// `tp_btf/sched_process_exec` attached and seen firing.
    pub tp_btf: Check,
    /// A tracepoint program calling `bpf_send_signal` passed the verifier.
    pub send_signal: Check,
    /// fanotify `FAN_OPEN_PERM` round trip on a temporary file.
    pub fanotify: Check,
    /// seccomp user notification.
    pub seccomp_notify: Check,
    /// Landlock.
    pub landlock: Check,
    /// `podman --version` (and `runc`).
    pub podman: Check,
    /// `docker --version`.
    pub docker: Check,
}

impl Checks {
    /// `(row name, check)` in display order.
    pub fn rows(&self) -> Vec<(&'static str, &Check)> {
        vec![
            ("bpf-lsm (lsm/file_open)", &self.bpf_lsm),
            ("btf (vmlinux)", &self.btf),
            ("cgroup v2 (connect4)", &self.cgroup_v2),
            ("bpf ring buffer", &self.ringbuf),
            ("tracepoint", &self.tracepoint),
            ("raw tracepoint", &self.raw_tracepoint),
            ("tp_btf", &self.tp_btf),
            ("bpf_send_signal", &self.send_signal),
            ("fanotify perm events", &self.fanotify),
            ("seccomp user notif", &self.seccomp_notify),
            ("landlock", &self.landlock),
            ("podman", &self.podman),
            ("docker", &self.docker),
        ]
    }
}

/// What the probe found out, beyond ok/fail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `uname -r`.
    pub kernel: String,
    /// Effective uid was 0 (most probes need root).
    pub root: bool,
    /// The active LSMs from `/sys/kernel/security/lsm`, when readable.
    pub lsms: Option<Vec<String>>,
    /// Whether `bpf` is among them (`None`: the list could not be read).
    pub bpf_lsm_listed: Option<bool>,
    /// securityfs was not mounted: the probe mounted it to read the LSM
    /// list and unmounted it again.
    pub securityfs_mounted_by_probe: bool,
    /// Mount point of the cgroup-v2 hierarchy.
    pub cgroup_v2_root: Option<PathBuf>,
    /// fanotify accepted a `FAN_OPEN_EXEC_PERM` mark too (exec fallback).
    pub fanotify_exec_perm: bool,
    /// Landlock ABI version.
    pub landlock_abi: Option<u32>,
    /// `podman --version`.
    pub podman_version: Option<String>,
    /// `runc --version` (first line), the runtime podman needs on hybrid hosts.
    pub runc_version: Option<String>,
    /// `docker --version`.
    pub docker_version: Option<String>,
    /// Every probe.
    pub checks: Checks,
}

/// A kind of decision a session's policy needs enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Opening a file read-only or read-write.
    FileOpen,
    /// Executing a program.
    Exec,
    /// Deciding on a program's arguments.
    ExecArgs,
    /// `connect` / `sendmsg` to an address.
    Network,
    /// Exec, fork, exit and decision events.
    Telemetry,
}

impl DecisionKind {
    /// Every kind, in display order.
    pub const ALL: [DecisionKind; 5] = [
        DecisionKind::FileOpen,
        DecisionKind::Exec,
        DecisionKind::ExecArgs,
        DecisionKind::Network,
        DecisionKind::Telemetry,
    ];

    /// Human name.
    pub fn label(self) -> &'static str {
        match self {
            DecisionKind::FileOpen => "file open",
            DecisionKind::Exec => "exec",
            DecisionKind::ExecArgs => "exec arguments",
            DecisionKind::Network => "network connect/send",
            DecisionKind::Telemetry => "telemetry",
        }
    }
}

/// The layer chosen for one decision kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerChoice {
    /// The decision kind.
    pub kind: DecisionKind,
    /// The layer (`bpf-lsm`, `fanotify`, `cgroup-bpf`, ...); `None`: nothing
    /// on this host can enforce it, so sessions that need it refuse to start.
    pub layer: Option<String>,
    /// The layer is a fallback for an unavailable preferred one.
    pub fallback: bool,
    /// Why this layer (or why none).
    pub note: String,
}

/// Layer names.
pub mod layer {
    /// BPF LSM programs.
    pub const BPF_LSM: &str = "bpf-lsm";
    /// fanotify permission events.
    pub const FANOTIFY: &str = "fanotify";
    /// cgroup socket-address BPF programs.
    pub const CGROUP_BPF: &str = "cgroup-bpf";
    /// The exec tracepoint stops the task; userspace decides on its argv.
    pub const TRACEPOINT_STOP: &str = "tracepoint + userspace (stop-and-decide)";
    /// Tracepoint programs emitting into a BPF ring buffer.
    pub const TRACEPOINTS_RINGBUF: &str = "tracepoints + ring buffer";
}

impl Capabilities {
    /// BPF LSM programs load, attach and run here.
    pub fn lsm_attachable(&self) -> bool {
        self.checks.bpf_lsm.ok()
    }

    /// The layer corral uses here for each decision kind.
    pub fn layers(&self) -> Vec<LayerChoice> {
        DecisionKind::ALL.iter().map(|&k| self.layer_for(k)).collect()
    }

    /// Every decision kind has a layer.
    pub fn complete(&self) -> bool {
        self.layers().iter().all(|l| l.layer.is_some())
    }

    /// The layer for one decision kind.
    pub fn layer_for(&self, kind: DecisionKind) -> LayerChoice {
        let c = &self.checks;
        let pick = |layer: Option<&str>, fallback: bool, note: String| LayerChoice {
            kind,
            layer: layer.map(str::to_string),
            fallback,
            note,
        };
        let lsm_why = || format!("BPF LSM unavailable ({})", first_clause(&c.bpf_lsm.detail));
        match kind {
            DecisionKind::FileOpen => {
                if self.lsm_attachable() {
                    pick(
                        Some(layer::BPF_LSM),
                        false,
                        "lsm/file_open, path via bpf_d_path".into(),
                    )
                } else if c.fanotify.ok() {
                    pick(
                        Some(layer::FANOTIFY),
                        true,
                        format!("{}; FAN_OPEN_PERM on the session's mounts", lsm_why()),
                    )
                } else {
                    pick(
                        None,
                        false,
                        format!("{}; fanotify unavailable ({})", lsm_why(), c.fanotify.detail),
                    )
                }
            }
            DecisionKind::Exec => {
                if self.lsm_attachable() {
                    pick(Some(layer::BPF_LSM), false, "lsm/bprm_check_security".into())
                } else if c.fanotify.ok() && self.fanotify_exec_perm {
                    pick(
                        Some(layer::FANOTIFY),
                        true,
                        format!("{}; FAN_OPEN_EXEC_PERM", lsm_why()),
                    )
                } else if c.fanotify.ok() {
                    pick(
                        None,
                        false,
                        format!("{}; fanotify lacks FAN_OPEN_EXEC_PERM (kernel < 5.0)", lsm_why()),
                    )
                } else {
                    pick(
                        None,
                        false,
                        format!("{}; fanotify unavailable ({})", lsm_why(), c.fanotify.detail),
                    )
                }
            }
            DecisionKind::ExecArgs => {
                if c.tracepoint.ok() && c.send_signal.ok() {
                    pick(
                        Some(layer::TRACEPOINT_STOP),
                        false,
                        "sched_process_exec stops the task (bpf_send_signal SIGSTOP) before its first \
                         instruction; userspace decides on argv, then SIGCONT or SIGKILL"
                            .into(),
                    )
                } else if !c.tracepoint.ok() {
                    pick(
                        None,
                        false,
                        format!("tracepoints unavailable ({})", c.tracepoint.detail),
                    )
                } else {
                    pick(
                        None,
                        false,
                        format!("bpf_send_signal unavailable ({})", c.send_signal.detail),
                    )
                }
            }
            DecisionKind::Network => {
                if c.cgroup_v2.ok() {
                    pick(
                        Some(layer::CGROUP_BPF),
                        false,
                        "cgroup/connect4|6, sendmsg4|6 on the session cgroup".into(),
                    )
                } else {
                    pick(
                        None,
                        false,
                        format!("cgroup BPF unavailable ({})", c.cgroup_v2.detail),
                    )
                }
            }
            DecisionKind::Telemetry => {
                if c.tracepoint.ok() && c.ringbuf.ok() {
                    pick(
                        Some(layer::TRACEPOINTS_RINGBUF),
                        false,
                        "sched_process_exec/fork/exit and decisions through a BPF ring buffer".into(),
                    )
                } else if !c.tracepoint.ok() {
                    pick(
                        None,
                        false,
                        format!("tracepoints unavailable ({})", c.tracepoint.detail),
                    )
                } else {
                    pick(
                        None,
                        false,
                        format!("ring buffer unavailable ({})", c.ringbuf.detail),
                    )
                }
            }
        }
    }
}

fn first_clause(s: &str) -> &str {
    s.split(['(', ';']).next().unwrap_or(s).trim()
}

/// Knobs for [`probe_with`].
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Where the temporary cgroup for the cgroup-BPF probe is made
    /// (default: the cgroup-v2 root).
    pub cgroup_parent: Option<PathBuf>,
    /// How long the fanotify round trip may take.
    pub fanotify_timeout: Duration,
    /// Also ask `podman`, `runc` and `docker` for their versions.
    pub engines: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            cgroup_parent: None,
            fanotify_timeout: Duration::from_secs(2),
            engines: true,
        }
    }
}

/// Probes this host with the default options.
pub fn probe() -> Capabilities {
    probe_with(&ProbeOptions::default())
}

/// Probes this host. Never fails: each probe's failure is its [`Check`].
pub fn probe_with(opts: &ProbeOptions) -> Capabilities {
    let kernel = host::kernel_release();
    let root = nix::unistd::geteuid().is_root();

    let lsm_list = host::read_lsm_list();
    let mut kernel_btf = None;
    let btf = timed(|| {
        let (o, b) = bpf::probe_btf();
        kernel_btf = b;
        o
    });
    let kbtf = kernel_btf.as_ref();
    let bpf_lsm = timed(|| bpf::probe_lsm(&lsm_list, kbtf));

    let cgroup_v2_root = crate::cgroup::v2_root().ok();
    let cgroup_v2 = timed(|| bpf::probe_cgroup(opts.cgroup_parent.as_deref(), kbtf));
    let ringbuf = timed(bpf::probe_ringbuf);
    let tracepoint = timed(|| bpf::probe_tracepoint(kbtf));
    let raw_tracepoint = timed(|| bpf::probe_raw_tracepoint(kbtf));
    let tp_btf = timed(|| bpf::probe_tp_btf(kbtf));
    let send_signal = timed(|| bpf::probe_send_signal(kbtf));

    let mut fanotify_exec_perm = false;
    let fanotify = timed(|| {
        let (o, exec) = host::probe_fanotify(opts.fanotify_timeout);
        fanotify_exec_perm = exec;
        o
    });
    let seccomp_notify = timed(host::probe_seccomp);
    let mut landlock_abi = None;
    let landlock = timed(|| {
        let (o, abi) = host::probe_landlock();
        landlock_abi = abi;
        o
    });

    let (mut podman_version, mut runc_version, mut docker_version) = (None, None, None);
    let (podman, docker) = if opts.engines {
        let podman = timed(|| {
            let (o, p, r) = host::probe_podman();
            (podman_version, runc_version) = (p, r);
            o
        });
        let docker = timed(|| {
            let (o, d) = host::probe_docker();
            docker_version = d;
            o
        });
        (podman, docker)
    } else {
        let skipped = || Check {
            status: Status::Absent,
            detail: "not probed".into(),
            ms: 0.0,
        };
        (skipped(), skipped())
    };

    Capabilities {
        kernel,
        root,
        bpf_lsm_listed: lsm_list.lsms.as_ref().map(|l| l.iter().any(|s| s == "bpf")),
        lsms: lsm_list.lsms,
        securityfs_mounted_by_probe: lsm_list.mounted_by_probe,
        cgroup_v2_root,
        fanotify_exec_perm,
        landlock_abi,
        podman_version,
        runc_version,
        docker_version,
        checks: Checks {
            bpf_lsm,
            btf,
            cgroup_v2,
            ringbuf,
            tracepoint,
            raw_tracepoint,
            tp_btf,
            send_signal,
            fanotify,
            seccomp_notify,
            landlock,
            podman,
            docker,
        },
    }
}
