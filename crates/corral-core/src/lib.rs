//! corral's shared vocabulary: the typed events every enforcement layer
//! emits, and the identifiers that tie them to a session.
//!
//! Events are plain data; no layer-specific types leak in here, so the audit
//! store, the UI and the kernel crate agree on one shape.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A session's identifier (unique on this host while it runs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u32);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied; the caller saw an error.
    Deny,
    /// Shadow mode: the policy denies, but the request was let through.
    WouldDeny,
}

/// Where a decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// A BPF LSM program.
    BpfLsm,
    /// A cgroup socket-address BPF program.
    CgroupBpf,
    /// fanotify permission events (the fallback where BPF LSM is unavailable).
    Fanotify,
    /// The Cedar authorizer in userspace (exec arguments).
    Userspace,
    /// A tracepoint (telemetry only, no decision).
    Tracepoint,
}

/// How a file was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Read only.
    Read,
    /// Writable (read-write or write-only).
    Write,
    /// Opened to be executed.
    Exec,
}

/// Transport of a network request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// TCP `connect`.
    Tcp,
    /// UDP `connect` or `sendmsg`.
    Udp,
}

/// The process an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    /// Thread-group id.
    pub pid: u32,
    /// Parent's thread-group id (0 when unknown).
    pub ppid: u32,
    /// `comm` (writable by the process: informative, never trusted).
    pub comm: String,
    /// Executable path, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    /// A file open decision.
    FileOpen {
        /// The canonical path of the object opened.
        path: String,
        /// Access mode.
        access: Access,
    },
    /// An exec decision (the file actually executed).
    Exec {
        /// Path of the executed file.
        path: String,
        /// Arguments, when known at decision time.
        #[serde(skip_serializing_if = "Option::is_none")]
        argv: Option<Vec<String>>,
    },
    /// A direct network connection or datagram.
    Connect {
        /// Destination address (v4-mapped v6 shown as v4).
        ip: IpAddr,
        /// Destination port.
        port: u16,
        /// TCP or UDP.
        transport: Transport,
    },
    /// A process started (telemetry).
    Fork {
        /// The child's pid.
        child: u32,
    },
    /// A process ended (telemetry).
    Exit {
        /// Exit code (or 128 + signal).
        code: i32,
    },
    /// A program was executed (telemetry, with arguments).
    ExecTrace {
        /// Path of the executed file.
        path: String,
        /// Arguments.
        argv: Vec<String>,
    },
    /// Events were lost before reaching userspace.
    Lost {
        /// How many.
        count: u64,
    },
    /// A session started (recorded by the supervisor before the agent runs).
    SessionStart {
        /// Enforce or shadow.
        mode: Mode,
        /// SHA-256 of the policy in force.
        policy_sha256: String,
        /// The command the session runs.
        command: Vec<String>,
    },
    /// A session ended.
    SessionEnd {
        /// How it ended (`exit 0`, `signal 9`, `failed: ...`).
        exit: String,
    },
    /// The session's mode was switched while it ran.
    ModeChange {
        /// The new mode.
        mode: Mode,
    },
    /// A new policy was offered to a running session: in force if `error`
    /// is `None`, else refused (the old one stays in force, unchanged).
    PolicyLoad {
        /// Where the policy came from (a file name, `ui`).
        label: String,
        /// SHA-256 of the policy text.
        sha256: String,
        /// Why it was refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// One event: a decision (with its policy ids) or a telemetry record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The session.
    pub session: SessionId,
    /// The session's principal (`Agent::"<name>"`).
    pub principal: String,
    /// Kernel monotonic timestamp (`CLOCK_MONOTONIC`/`ktime_get_ns`), ns
    /// (the supervisor's own clock reading for session and policy events).
    pub ts_ns: u64,
    /// The process.
    pub proc: Proc,
    /// What happened.
    pub what: What,
    /// The decision (`None` for telemetry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// The layer that produced the event.
    pub layer: Layer,
    /// Ids of the determining policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// How a session applies its policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Denials are enforced.
    #[default]
    Enforce,
    /// Decide and record, never block: denials are reported as `would_deny`.
    Shadow,
}
