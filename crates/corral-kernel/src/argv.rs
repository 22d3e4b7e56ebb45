//! Exec argument conditions: stop-and-decide.
//!
//! Where a plan's exec table says `userspace` (the verdict depends on argv,
//! which no kernel table holds), the `sched_process_exec` tracepoint sends
//! the new image SIGSTOP — delivered on the way back to user mode, so the
//! image has not run one instruction — and reports the path and argv read
//! from the new image's memory. The supervisor asks the Cedar authorizer
//! with the real path (`/proc/<pid>/exe`, the object executed) and the
//! argv, then sends SIGCONT (allow) or SIGKILL (deny).
//!
//! Limits (docs/SECURITY.md): without BPF LSM, another process of the
//! session could send the stopped process SIGCONT before the decision (with
//! BPF LSM, `lsm/task_kill` refuses it); a ptrace-capable process in the
//! session could resume it too; a parent waiting with `WUNTRACED` sees the
//! stop. Arguments beyond 4 KiB are not carried: such an exec is denied
//! when a policy needs its arguments.

use crate::abi::RawEvent;
use crate::events::Sink;
use aya::maps::{HashMap, MapData};
use corral_core::{Decision, Layer, What};
use corral_policy::{Evaluator, PolicyDoc, Request};
use std::sync::{Arc, Mutex};

/// Decides one exec with its arguments.
pub trait ExecJudge: Send + Sync {
    /// `(allowed, determining policy ids)`.
    fn decide(&self, principal: &str, path: &str, argv: &[String]) -> (bool, Vec<String>);
}

/// The Cedar authorizer over a loaded policy document.
pub struct CedarJudge {
    ev: Evaluator,
    ids: Vec<String>,
}

impl CedarJudge {
    /// A judge for `doc` (the same document the plan was compiled from).
    pub fn new(doc: &PolicyDoc) -> CedarJudge {
        CedarJudge {
            ev: Evaluator::new(doc),
            ids: doc.policies.iter().map(|p| p.id.clone()).collect(),
        }
    }
}

impl ExecJudge for CedarJudge {
    fn decide(&self, principal: &str, path: &str, argv: &[String]) -> (bool, Vec<String>) {
        let req = Request::Exec {
            principal: principal.to_string(),
            path: path.to_string(),
            argv: argv.to_vec(),
        };
        match self.ev.decide(&req) {
            Ok(d) => (
                d.allowed,
                d.determining
                    .iter()
                    .filter_map(|i| self.ids.get(*i).cloned())
                    .collect(),
            ),
            // A request Cedar cannot even form (e.g. a non-canonical path)
            // is denied.
            Err(e) => (false, vec![format!("corral:invalid-request: {e}")]),
        }
    }
}

/// The userspace half: decides stopped execs and resumes or kills them.
pub(crate) struct Gate {
    /// Replaced on policy swap.
    pub judge: std::sync::RwLock<Arc<dyn ExecJudge>>,
    pub pending: Mutex<HashMap<MapData, u32, u32>>,
    /// Shadow mode (switchable while the session runs).
    pub shadow: std::sync::atomic::AtomicBool,
    /// The `argv_mode` the kernel has: 0 = nothing to decide.
    pub active: std::sync::atomic::AtomicU32,
}

/// Bit in `event.flags`: the process is stopped awaiting this decision.
const EXEC_STOPPED: u32 = 2;
/// Bit in `event.flags`: argv was longer than the event carries.
const ARGV_TRUNCATED: u32 = 1;

impl Gate {
    /// Decides the exec in `r` (path + argv), resumes or kills the process,
    /// and sends the decision event.
    pub(crate) fn handle(&self, sink: &Sink, r: &RawEvent, argv: &[String]) {
        let stopped_bit = r.flags & EXEC_STOPPED != 0;
        if !stopped_bit && self.active.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return;
        }
        let stopped = r.flags & EXEC_STOPPED != 0;
        let path = std::fs::read_link(format!("/proc/{}/exe", r.pid))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (allowed, policies) = if path.is_empty() {
            (false, vec!["corral:process-vanished".to_string()])
        } else if r.flags & ARGV_TRUNCATED != 0 {
            (false, vec!["corral:argv-too-long".to_string()])
        } else {
            match self.judge.read() {
                Ok(j) => j.decide(&sink.principal, &path, argv),
                Err(_) => (false, vec!["corral:judge-unavailable".to_string()]),
            }
        };
        let shadow = self.shadow.load(std::sync::atomic::Ordering::Relaxed);
        let decision = match (allowed, shadow) {
            (true, _) => Decision::Allow,
            (false, true) => Decision::WouldDeny,
            (false, false) => Decision::Deny,
        };
        if stopped {
            if let Ok(mut p) = self.pending.lock() {
                let _ = p.remove(&r.pid);
            }
            let sig = if decision == Decision::Deny {
                libc::SIGKILL
            } else {
                libc::SIGCONT
            };
            crate::sys::signal(r.pid, sig);
        }
        let mut ev = sink.event(
            r,
            What::Exec {
                path,
                argv: Some(argv.to_vec()),
            },
            Some(decision),
            Layer::Userspace,
        );
        ev.policies = policies;
        sink.send(ev);
    }
}
