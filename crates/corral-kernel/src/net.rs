//! The network layer: `bpf/net.bpf.c` on the session cgroup, and the
//! encoding of a plan's network tables into its maps.
//!
//! Table swap is atomic per request: the programs read the active
//! generation once and use only that generation's cells. A swap writes the
//! inactive generation completely, then flips `cfg.gen` with one array
//! update. Before the next swap overwrites the now-inactive generation it
//! waits for an RCU grace period ([`crate::sys::RcuBarrier`]), so no program
//! that read the old generation can still be looking at it.

use crate::abi::{self, Cfg, NetKey, RawEvent, VerdictCell, NET_KEY_FIXED_BITS};
use crate::events::{Rows, Sink};
use crate::loader::{bpf_err, chain, map_mut, take_events, write_cfg, Events};
use crate::{obj, sys, Error, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::Array;
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};
use corral_core::{Layer, Mode, What};
use corral_policy::plan::{PrincipalPlan, Verdict};
use corral_policy::{Plan, Protocol};
use ipnet::IpNet;
use std::sync::Arc;

/// Port classes per (generation, protocol); mirrors `MAX_CLASSES`.
const MAX_CLASSES: usize = 4096;
/// Capacity of the LPM trie; mirrors `net_table`'s `max_entries`.
const MAX_CELLS: usize = 65536;

/// One generation's encoded network tables.
#[derive(Debug, Default, Clone)]
pub(crate) struct NetImage {
    /// (gen-free key, prefix length incl. the fixed bits, cell).
    pub cells: Vec<(NetKey, u32, VerdictCell)>,
    /// Lower bounds of the port classes, per protocol (TCP, UDP).
    pub bounds: [Vec<u16>; 2],
    /// Policy ids per rule index.
    pub rows: Vec<Vec<String>>,
}

/// Encodes the network tables of a principal's plan.
pub(crate) fn encode(plan: &Plan, pp: &PrincipalPlan) -> Result<NetImage> {
    let mut img = NetImage::default();
    let mut row_of = std::collections::HashMap::<Vec<usize>, u32>::new();
    for t in &pp.net {
        let proto = match t.protocol {
            Protocol::Tcp => abi::PROTO_TCP,
            Protocol::Udp => abi::PROTO_UDP,
        };
        if t.ports.first().map(|r| r.lo) != Some(0) {
            return Err(Error::Plan(format!(
                "{} port classes do not start at port 0",
                t.protocol.as_str()
            )));
        }
        if t.ports.len() > MAX_CLASSES {
            return Err(Error::Plan(format!(
                "{} distinct port ranges in the {} table; the kernel table holds {MAX_CLASSES}",
                t.ports.len(),
                t.protocol.as_str()
            )));
        }
        img.bounds[usize::from(proto)] = t.ports.iter().map(|r| r.lo).collect();
        for e in &t.entries {
            let (family, addr, plen) = match e.prefix {
                IpNet::V4(n) => {
                    let mut a = [0u8; 16];
                    a[..4].copy_from_slice(&n.network().octets());
                    (4u8, a, u32::from(n.prefix_len()))
                }
                IpNet::V6(n) => (6u8, n.network().octets(), u32::from(n.prefix_len())),
            };
            for (class, cell) in e.verdicts.iter().enumerate() {
                let Some(v) = cell else { continue };
                let (code, pols) = match v {
                    Verdict::Allow { by } => (abi::V_ALLOW, by),
                    Verdict::Deny { by } => (abi::V_DENY, by),
                    // The network table has no context the kernel lacks;
                    // should the compiler ever say otherwise, fail closed.
                    Verdict::Userspace { policies } => (abi::V_DENY, policies),
                };
                let rule = *row_of.entry(pols.clone()).or_insert_with(|| {
                    img.rows.push(
                        pols.iter()
                            .filter_map(|i| plan.policies.get(*i))
                            .map(|p| p.id.clone())
                            .collect(),
                    );
                    (img.rows.len() - 1) as u32
                });
                let key = NetKey {
                    gen: 0,
                    proto,
                    family,
                    pad: 0,
                    class: class as u16,
                    addr,
                    tail: 0,
                };
                img.cells.push((
                    key,
                    NET_KEY_FIXED_BITS + plen,
                    VerdictCell {
                        v: code,
                        pad: [0; 3],
                        rule,
                    },
                ));
            }
        }
    }
    if img.cells.len() > MAX_CELLS {
        return Err(Error::Plan(format!(
            "{} network table cells; the kernel table holds {MAX_CELLS}",
            img.cells.len()
        )));
    }
    Ok(img)
}

/// The loaded and attached network programs of one session.
pub(crate) struct NetEnforcer {
    ebpf: Ebpf,
    gen: u32,
    mode: Mode,
    ctl_port: u16,
    /// Keys written per generation, to remove before that generation is reused.
    written: [Vec<Key<NetKey>>; 2],
    barrier: sys::RcuBarrier,
    /// Whether the programs are attached: before that no program can be
    /// reading a generation, and a swap need not wait for a grace period.
    attached: bool,
    rows: Arc<std::sync::RwLock<Rows>>,
}

impl NetEnforcer {
    /// Loads the programs, writes generation 0 and marks the tables ready,
    /// then attaches to `cgroup` (so no connect is ever decided without
    /// tables). Returns the ring buffer and loss counter for the reader.
    pub(crate) fn start(
        btf: &aya::Btf,
        cgroup: &std::path::Path,
        img: &NetImage,
        mode: Mode,
        ctl_port: u16,
        rows: Arc<std::sync::RwLock<Rows>>,
    ) -> Result<(NetEnforcer, Events)> {
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .load(&obj::NET.bytes)
            .map_err(|e| bpf_err("load bpf/net.bpf.c", chain(&e)))?;
        let (ring, lost) = take_events(&mut ebpf)?;
        let barrier = sys::RcuBarrier::new().map_err(|e| Error::io("create the RCU barrier maps", e))?;
        let mut me = NetEnforcer {
            ebpf,
            gen: 1,
            mode,
            ctl_port,
            written: Default::default(),
            barrier,
            attached: false,
            rows,
        };
        // First tables go to generation 0 (`swap` flips 1 -> 0).
        me.swap(img)?;
        let dir = std::fs::File::open(cgroup)
            .map_err(|e| Error::io(format!("open cgroup {}", cgroup.display()), e))?;
        for name in ["connect4", "connect6", "sendmsg4", "sendmsg6"] {
            let prog: &mut CgroupSockAddr = me
                .ebpf
                .program_mut(name)
                .ok_or_else(|| bpf_err(name, "program missing from net.bpf.o"))?
                .try_into()
                .map_err(|e| bpf_err(name, e))?;
            prog.load()
                .map_err(|e| bpf_err(&format!("load cgroup/{name}"), chain(&e)))?;
            // On kernels >= 5.7 aya attaches with a BPF link, which the
            // kernel always treats as BPF_F_ALLOW_MULTI (and rejects any
            // flag with EINVAL): descendants can add programs, never
            // override this one. `Single` is how aya asks for flags = 0.
            prog.attach(&dir, CgroupAttachMode::Single).map_err(|e| {
                bpf_err(
                    &format!("attach cgroup/{name} to {}", cgroup.display()),
                    chain(&e),
                )
            })?;
        }
        me.attached = true;
        Ok((me, (ring, lost)))
    }

    /// Switches between enforce and shadow: one write of the config
    /// (the active generation stays).
    pub(crate) fn set_mode(&mut self, mode: Mode) -> Result<()> {
        self.mode = mode;
        self.write_cfg(self.gen)
    }

    /// Writes `img` into the inactive generation, then activates it.
    pub(crate) fn swap(&mut self, img: &NetImage) -> Result<()> {
        let next = self.gen ^ 1;
        // No program may still be reading generation `next` (it was the
        // active one before the previous flip). Nothing reads before the
        // programs are attached (the first tables, at start).
        if self.attached {
            self.barrier
                .wait()
                .map_err(|e| Error::io("wait for an RCU grace period", e))?;
        }
        {
            let mut trie: LpmTrie<_, NetKey, VerdictCell> = map_mut(&mut self.ebpf, "net_table")?;
            for k in self.written[next as usize].drain(..) {
                let _ = trie.remove(&k);
            }
            for (key, plen, cell) in &img.cells {
                let k = Key::new(
                    *plen,
                    NetKey {
                        gen: next as u8,
                        ..*key
                    },
                );
                if let Err(e) = trie.insert(&k, cell, 0) {
                    // Leave the active generation untouched: the swap failed.
                    for k in self.written[next as usize].drain(..) {
                        let _ = trie.remove(&k);
                    }
                    return Err(bpf_err("write the network table", e));
                }
                self.written[next as usize].push(k);
            }
        }
        {
            let mut bounds: Array<_, u16> = map_mut(&mut self.ebpf, "port_bounds")?;
            for (proto, b) in img.bounds.iter().enumerate() {
                let g = (next as usize * 2 + proto) * MAX_CLASSES;
                for (i, lo) in b.iter().enumerate() {
                    bounds
                        .set((g + i) as u32, lo, 0)
                        .map_err(|e| bpf_err("write port classes", e))?;
                }
            }
        }
        {
            let mut n: Array<_, u32> = map_mut(&mut self.ebpf, "port_nclass")?;
            for (proto, b) in img.bounds.iter().enumerate() {
                n.set((next as usize * 2 + proto) as u32, b.len() as u32, 0)
                    .map_err(|e| bpf_err("write port classes", e))?;
            }
        }
        if let Ok(mut rows) = self.rows.write() {
            rows.gens[next as usize] = img.rows.clone();
        }
        self.write_cfg(next)?;
        self.gen = next;
        Ok(())
    }

    /// Re-activates the previous generation (still intact: a generation is
    /// only rewritten by the swap after next). Used when a later layer of
    /// the same policy swap fails, so no layer is left on the new policy.
    pub(crate) fn revert(&mut self) -> Result<()> {
        let prev = self.gen ^ 1;
        self.write_cfg(prev)?;
        self.gen = prev;
        Ok(())
    }

    fn write_cfg(&mut self, gen: u32) -> Result<()> {
        write_cfg(
            &mut self.ebpf,
            Cfg {
                gen,
                mode: u32::from(self.mode == Mode::Shadow),
                ctl_port: u32::from(self.ctl_port),
                ready: 1,
            },
        )
    }
}

/// Ring-buffer record -> event, for the network programs.
pub(crate) fn decode(sink: &Sink, r: &RawEvent) -> Option<corral_core::Event> {
    match r.kind {
        abi::EV_CONNECT | abi::EV_SENDMSG => {
            let what = What::Connect {
                ip: r.ip(),
                port: r.aux as u16,
                transport: r.transport(),
            };
            Some(sink.event(r, what, r.decision(), Layer::CgroupBpf))
        }
        _ => None,
    }
}
