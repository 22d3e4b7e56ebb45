//! From BPF ring buffers to an async stream of typed events.
//!
//! Each loaded object has its own ring buffer and `lost` counter (records
//! the program could not reserve). A reader task per ring buffer decodes
//! records, resolves rule indices to policy ids through the table
//! generation the record names, and `try_send`s into the session's channel.
//! Neither path ever waits: a full ring buffer or a full channel increments
//! a counter, surfaced as a `What::Lost` event and by
//! [`crate::session::KernelSession::lost`]; decisions are never affected.

use crate::abi::{self, RawEvent};
use corral_core::{Decision, Event, Layer, Proc, SessionId, What};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// Policy ids per table row, per generation: `rows[gen][rule]`.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub gens: [Vec<Vec<String>>; 2],
}

/// Everything a reader needs to turn records into events.
#[derive(Clone)]
pub(crate) struct Sink {
    pub session: SessionId,
    pub principal: String,
    pub rows: Arc<RwLock<Rows>>,
    pub tx: mpsc::Sender<Event>,
    /// Events dropped: ring buffer full (kernel) plus channel full.
    pub lost: Arc<AtomicU64>,
    /// Exec argument decisions (when the plan has any).
    pub gate: Option<Arc<crate::argv::Gate>>,
    /// pid -> (ppid, exe), so each event does not read /proc twice.
    pub procs: Arc<ProcCache>,
}

/// What `/proc` says about a process, cached per pid. An exec or an exit
/// event of the pid drops its entry (the exe changes, the pid may be
/// reused); the cache is bounded and cleared when full.
#[derive(Debug, Default)]
pub(crate) struct ProcCache {
    map: std::sync::Mutex<std::collections::HashMap<u32, (u32, Option<String>)>>,
}

const PROC_CACHE_MAX: usize = 8192;

impl ProcCache {
    /// (ppid, exe) of `pid`; `ppid_hint` when the kernel supplied it.
    pub fn get(&self, pid: u32, ppid_hint: u32) -> (u32, Option<String>) {
        if let Ok(m) = self.map.lock() {
            if let Some(v) = m.get(&pid) {
                return v.clone();
            }
        }
        let ppid = if ppid_hint != 0 { ppid_hint } else { ppid_of(pid) };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        if let Ok(mut m) = self.map.lock() {
            if m.len() >= PROC_CACHE_MAX {
                m.clear();
            }
            // A process that is already gone is not cached.
            if exe.is_some() {
                m.insert(pid, (ppid, exe.clone()));
            }
        }
        (ppid, exe)
    }

    /// Forgets `pid` (it exec'd or exited).
    pub fn forget(&self, pid: u32) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&pid);
        }
    }
}

impl Sink {
    /// Policy ids for (gen, rule).
    pub fn policies(&self, gen: u32, rule: u32) -> Vec<String> {
        if rule == abi::RULE_CONTROL_PORT {
            return vec!["corral:control-plane".into()];
        }
        if rule == abi::RULE_NO_REDIRECT {
            return vec!["corral:no-redirect".into()];
        }
        let Ok(rows) = self.rows.read() else {
            return Vec::new();
        };
        rows.gens
            .get(gen as usize & 1)
            .and_then(|g| g.get(rule as usize))
            .cloned()
            .unwrap_or_default()
    }

    /// Sends without waiting; counts a loss when the channel is full.
    pub fn send(&self, ev: Event) {
        if self.tx.try_send(ev).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Builds the common part of an event.
    pub fn event(&self, r: &RawEvent, what: What, decision: Option<Decision>, layer: Layer) -> Event {
        let policies = if decision.is_some() {
            self.policies(r.gen, r.rule)
        } else {
            Vec::new()
        };
        Event {
            session: self.session,
            principal: self.principal.clone(),
            ts_ns: r.ts_ns,
            proc: {
                let (ppid, exe) = self.procs.get(r.pid, r.ppid);
                Proc {
                    pid: r.pid,
                    ppid,
                    comm: r.comm.clone(),
                    exe,
                }
            },
            what,
            decision,
            layer,
            policies,
            mcp_call: None,
        }
    }
}

/// Parent pid from `/proc/<pid>/stat` (0 when the process is gone).
pub(crate) fn ppid_of(pid: u32) -> u32 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // comm may contain spaces and parentheses: fields resume after the last ')'.
    s.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Runs until the ring buffer's map is gone: decodes records with `decode`
/// and polls the kernel-side `lost` counter once a second.
pub(crate) async fn pump(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    lost_map: Option<aya::maps::Array<aya::maps::MapData, u64>>,
    sink: Sink,
    decode: fn(&Sink, &RawEvent) -> Option<Event>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(mut afd) = crate::sys::async_fd(ring) else {
        return;
    };
    let mut seen_lost = 0u64;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    // The programs write without waking us (BPF_RB_NO_WAKEUP, bpf/session.h):
    // drain on this period as well as on wakeups.
    let mut poll = tokio::time::interval(DRAIN_PERIOD);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => {
                // Drain what is already there, then stop.
                while drain_batch(afd.get_mut(), &sink, decode, BATCH) == BATCH {}
                report_lost(&lost_map, &mut seen_lost, &sink);
                return;
            }
            _ = tick.tick() => report_lost(&lost_map, &mut seen_lost, &sink),
            _ = poll.tick() => {
                while drain_batch(afd.get_mut(), &sink, decode, BATCH) == BATCH {
                    tokio::task::yield_now().await;
                }
            }
            guard = afd.readable_mut() => {
                let Ok(mut guard) = guard else { return };
                // A bounded batch, then let the channel's consumer (often on
                // the same runtime) run; readiness stays set while records
                // remain.
                if drain_batch(guard.get_inner_mut(), &sink, decode, BATCH) < BATCH {
                    guard.clear_ready();
                } else {
                    drop(guard);
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// How often the reader drains without a wakeup.
const DRAIN_PERIOD: std::time::Duration = std::time::Duration::from_millis(5);

/// Records decoded per wakeup before the reader yields.
const BATCH: usize = 1024;

/// Decodes up to `max` records; returns how many it took.
fn drain_batch(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    sink: &Sink,
    decode: fn(&Sink, &RawEvent) -> Option<Event>,
    max: usize,
) -> usize {
    let mut n = 0;
    while n < max {
        let Some(item) = ring.next() else { break };
        n += 1;
        match RawEvent::parse(&item) {
            Some(r) => {
                if let Some(ev) = decode(sink, &r) {
                    sink.send(ev);
                }
            }
            None => {
                sink.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    n
}

fn report_lost(map: &Option<aya::maps::Array<aya::maps::MapData, u64>>, seen: &mut u64, sink: &Sink) {
    let Some(m) = map else { return };
    let Ok(n) = m.get(&0, 0) else { return };
    if n > *seen {
        let delta = n - *seen;
        *seen = n;
        sink.lost.fetch_add(delta, Ordering::Relaxed);
        let r = RawEvent {
            ts_ns: now_ns(),
            kind: 0,
            pid: 0,
            ppid: 0,
            verdict: 0,
            rule: 0,
            gen: 0,
            flags: 0,
            aux: 0,
            family: 0,
            addr: [0; 16],
            comm: String::new(),
            data: Vec::new(),
            data_aux: 0,
        };
        let mut ev = sink.event(&r, What::Lost { count: delta }, None, Layer::CgroupBpf);
        ev.proc = Proc::default();
        // A loss report itself may be dropped if the channel is full; the
        // counter still has it.
        let _ = sink.tx.try_send(ev);
    }
}

/// `CLOCK_MONOTONIC` now, ns (the clock `bpf_ktime_get_ns` reads).
pub fn now_ns() -> u64 {
    crate::sys::monotonic_ns()
}
