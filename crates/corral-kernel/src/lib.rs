//! corral's kernel enforcement.
//!
//! A [`session::KernelSession`] takes a session — a cgroup-v2 directory, a
//! principal and a compiled [`corral_policy::plan::Plan`] — and enforces the
//! plan's file, exec and network tables on every process in that cgroup and
//! in any cgroup created beneath it later, streaming one typed
//! [`corral_core::Event`] per decision.
//!
//! Layers, chosen per decision kind by probing the running kernel
//! ([`probe`]):
//! * network: cgroup socket-address BPF programs (`bpf/net.bpf.c`) on every
//!   kernel with cgroup v2, optionally redirecting TCP connections to
//!   corral's egress proxy ([`Redirect`], [`Origins`]);
//! * file open and exec: BPF LSM (`bpf/lsm.bpf.c`) where the kernel allows
//!   it, otherwise fanotify permission events ([`fanotify`]) — the fallback;
//! * telemetry: tracepoints (`bpf/trace.bpf.c`) for exec with argv,
//!   fork and exit, and the open flags the fanotify fallback needs.
//!
//! BPF objects are compiled by clang from build.rs and embedded ([`obj`]).

mod abi;
pub mod argv;
pub mod cgroup;
pub mod events;
pub mod fanotify;
pub use lsm::bpf_lsm_active;
mod loader;
mod lsm;
mod net;
pub mod obj;
pub mod probe;
mod redirect;
pub mod session;
pub use redirect::{Origin, Origins, Redirect};
mod sys;
mod trace;

/// Errors of the kernel layer. Each says which object, program or hook
/// failed and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A BPF object, program or map could not be loaded or attached.
    #[error("{what}: {detail}")]
    Bpf {
        /// Which program, map or hook.
        what: String,
        /// The loader's error, with the verifier log when there is one.
        detail: String,
    },
    /// The host lacks something the plan needs.
    #[error("{0}")]
    Unsupported(String),
    /// A plan cannot be expressed in the kernel tables.
    #[error("plan: {0}")]
    Plan(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
