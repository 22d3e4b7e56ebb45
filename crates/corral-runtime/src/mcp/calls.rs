//! Which tool call a kernel event belongs to.
//!
//! For each relay (the process of `corral mcp wrap`, by its pid as the
//! supervisor sees it) the log keeps the intervals during which each tool
//! call was in flight, in `CLOCK_MONOTONIC` nanoseconds: the clock of the
//! kernel events' `ts_ns`. An event of the relay or of one of its
//! descendants (the server and what it starts) stamped inside an interval
//! belongs to that call.
//!
//! Descendants are known from the fork and exit events the supervisor
//! passes on ([`CallLog::note_fork`], [`CallLog::note_exit`]): a process
//! stays attributed to the relay it descends from even after its parent
//! exits and it is reparented. For a process seen before its fork event,
//! `/proc/<pid>/stat` parent links are followed upwards as a fallback.
//!
//! Memory is bounded: at most [`MAX_INTERVALS`] finished intervals per
//! relay, at most [`MAX_TRACKED`] descendants in all, and a relay is
//! forgotten [`RETAIN`] after it disconnects (kernel events are processed
//! slightly late, so its last calls must stay answerable for a while).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Finished intervals kept per relay (the oldest go first).
pub const MAX_INTERVALS: usize = 1024;
/// Descendants of relays tracked at once; beyond it new forks are not
/// recorded (the /proc fallback still answers for live processes).
pub const MAX_TRACKED: usize = 65_536;
/// How long a disconnected relay's calls stay answerable.
pub const RETAIN: Duration = Duration::from_secs(5);
/// Most parent links followed through /proc.
const MAX_DEPTH: usize = 64;

/// `CLOCK_MONOTONIC` now, nanoseconds (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec() as u64),
        Err(_) => 0,
    }
}

/// Tool calls in flight per relay, and the relays' descendants.
#[derive(Debug, Default)]
pub struct CallLog {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    relays: HashMap<u32, Relay>,
    /// Descendant pid → the relay it descends from.
    owner: HashMap<u32, u32>,
}

#[derive(Debug, Default)]
struct Relay {
    /// Call id → start, with the order calls started in.
    open: Vec<(String, u64)>,
    /// Finished calls: id, start, end (oldest first).
    done: VecDeque<(String, u64, u64)>,
    /// When the relay disconnected.
    gone: Option<Instant>,
}

impl CallLog {
    /// An empty log.
    pub fn new() -> CallLog {
        CallLog::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A relay connected (its pid from SO_PEERCRED). A pid seen before is
    /// a new relay: the old one's history is dropped.
    pub fn register(&self, relay: u32) {
        let mut inner = self.lock();
        inner.expire(Instant::now());
        inner.relays.insert(relay, Relay::default());
        inner.owner.remove(&relay);
    }

    /// A relay disconnected: its open calls end now, and it is forgotten
    /// after [`RETAIN`].
    pub fn disconnect(&self, relay: u32, ts_ns: u64) {
        let mut inner = self.lock();
        if let Some(r) = inner.relays.get_mut(&relay) {
            for (id, start) in std::mem::take(&mut r.open) {
                r.push_done(id, start, ts_ns);
            }
            r.gone = Some(Instant::now());
        }
    }

    /// A call of `relay` was forwarded to its server at `ts_ns`.
    pub fn started(&self, relay: u32, call: &str, ts_ns: u64) {
        let mut inner = self.lock();
        if let Some(r) = inner.relays.get_mut(&relay) {
            if !r.open.iter().any(|(id, _)| id == call) {
                r.open.push((call.to_string(), ts_ns));
            }
        }
    }

    /// A call of `relay` was answered (or cancelled) at `ts_ns`.
    pub fn finished(&self, relay: u32, call: &str, ts_ns: u64) {
        let mut inner = self.lock();
        if let Some(r) = inner.relays.get_mut(&relay) {
            if let Some(at) = r.open.iter().position(|(id, _)| id == call) {
                let (id, start) = r.open.remove(at);
                r.push_done(id, start, ts_ns);
            }
        }
    }

    /// A kernel fork event: `child` descends from whatever `parent` does.
    pub fn note_fork(&self, parent: u32, child: u32) {
        let mut inner = self.lock();
        let owner = if inner.relays.contains_key(&parent) {
            Some(parent)
        } else {
            inner.owner.get(&parent).copied()
        };
        match owner {
            Some(relay) if inner.owner.len() < MAX_TRACKED || inner.owner.contains_key(&child) => {
                inner.owner.insert(child, relay);
            }
            _ => {
                // A reused pid must not keep a previous owner.
                inner.owner.remove(&child);
            }
        }
    }

    /// A kernel exit event: `pid` is gone (its pid may be reused).
    pub fn note_exit(&self, pid: u32) {
        self.lock().owner.remove(&pid);
    }

    /// The tool call(s) an event of process `pid` (parent `ppid`) at
    /// `ts_ns` belongs to: the ids of the calls of its relay in flight at
    /// that time, joined with `,` in the order they started. `None` if
    /// the process descends from no relay or no call was in flight.
    pub fn link(&self, pid: u32, ppid: u32, ts_ns: u64) -> Option<String> {
        let relay = {
            let mut inner = self.lock();
            inner.expire(Instant::now());
            if inner.relays.is_empty() {
                return None; // the common case: no stdio server, no /proc walk
            }
            inner.relay_of(pid).or_else(|| inner.relay_of(ppid))
        };
        let relay = match relay {
            Some(r) => r,
            None => {
                // Not known from fork events: walk /proc without the lock.
                let chain = ancestors(pid).or_else(|| ancestors(ppid))?;
                let inner = self.lock();
                chain.iter().find_map(|p| inner.relay_of(*p))?
            }
        };
        let inner = self.lock();
        let r = inner.relays.get(&relay)?;
        let mut hits: Vec<(u64, &str)> = r
            .done
            .iter()
            .filter(|(_, start, end)| *start <= ts_ns && ts_ns <= *end)
            .map(|(id, start, _)| (*start, id.as_str()))
            .chain(
                r.open
                    .iter()
                    .filter(|(_, start)| *start <= ts_ns)
                    .map(|(id, start)| (*start, id.as_str())),
            )
            .collect();
        if hits.is_empty() {
            return None;
        }
        hits.sort();
        hits.dedup_by(|a, b| a.1 == b.1);
        Some(hits.iter().map(|(_, id)| *id).collect::<Vec<_>>().join(","))
    }
}

impl Relay {
    fn push_done(&mut self, id: String, start: u64, end: u64) {
        if self.done.len() >= MAX_INTERVALS {
            self.done.pop_front();
        }
        self.done.push_back((id, start, end));
    }
}

impl Inner {
    fn relay_of(&self, pid: u32) -> Option<u32> {
        if pid == 0 {
            return None;
        }
        if self.relays.contains_key(&pid) {
            return Some(pid);
        }
        self.owner.get(&pid).copied()
    }

    /// Forgets relays gone for longer than [`RETAIN`], and their
    /// descendants.
    fn expire(&mut self, now: Instant) {
        let before = self.relays.len();
        self.relays
            .retain(|_, r| r.gone.is_none_or(|at| now.duration_since(at) < RETAIN));
        if self.relays.len() != before {
            let relays = &self.relays;
            self.owner.retain(|_, relay| relays.contains_key(relay));
        }
    }
}

/// `pid` and its ancestors, from `/proc/<pid>/stat` (at most [`MAX_DEPTH`]
/// links, stopping at pid 1); `None` if `pid` is not in /proc.
fn ancestors(pid: u32) -> Option<Vec<u32>> {
    if pid == 0 {
        return None;
    }
    let mut chain = vec![pid];
    let mut at = pid;
    for _ in 0..MAX_DEPTH {
        let Some(parent) = parent_of(at) else {
            break;
        };
        if parent <= 1 || chain.contains(&parent) {
            break;
        }
        chain.push(parent);
        at = parent;
    }
    // A pid gone from /proc told us nothing.
    (chain.len() > 1 || parent_of(pid).is_some()).then_some(chain)
}

/// The parent pid in `/proc/<pid>/stat` ("pid (comm) state ppid ...";
/// comm may hold anything, so the fields after the last `)` are read).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod tests;
