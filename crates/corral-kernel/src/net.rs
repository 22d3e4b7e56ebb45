//! The network layer: `bpf/net.bpf.c` on the session cgroup, and the
//! encoding of a plan's network tables into its maps.
//!
//! Table swap is atomic per request: the programs read the active
//! generation once and use only that generation's cells. A swap writes the
//! inactive generation completely, then flips `cfg.gen` with one array
//! update. Before the next swap overwrites the now-inactive generation it
//! waits for an RCU grace period ([`crate::sys::RcuBarrier`]), so no program
//! that read the old generation can still be looking at it.
//!
//! With a [`Redirect`], TCP connects to destinations that are not loopback
//! go to corral's egress proxy instead of being decided here alone: a cell
//! marked `VF_FORBID` still refuses the connect with EPERM — a forbid
//! decided it, or nothing permits the address and no host-name permit
//! mentions the port ([`corral_policy::plan::NetTable::by_name`]); any
//! other (permitted, or denied only because nothing permits the address
//! while a name rule might) has its destination rewritten to the proxy, with the original recorded
//! for the proxy ([`Origins`]) and shown to the process by getpeername().
//! The redirect lives in its own map, written once before the programs
//! attach: swaps and mode switches never touch it. The sock_ops program
//! that tells the proxy which connection is which is required (the session
//! does not start without it); the getpeername programs are best-effort and
//! their absence is reported ([`NetEnforcer::missing`]).

use crate::abi::{self, Cfg, NetKey, RawEvent, RedirectCfg, VerdictCell, NET_KEY_FIXED_BITS};
use crate::events::{Rows, Sink};
use crate::loader::{bpf_err, chain, map_mut, take_events, take_map, write_cfg, Events};
use crate::redirect::{Origins, Redirect};
use crate::{obj, sys, Error, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, SockOps};
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
                // `forbid` (refused here, never redirected): a policy decided
                // the deny, so a redirect to the proxy must not undo it; or
                // nothing permits the address and no host-name permit
                // mentions the port, so the proxy could not permit it
                // either. A deny with no forbid on a port a name rule
                // mentions is left to the proxy, which sees the name.
                let by_name = t.by_name.get(class).copied().unwrap_or(false);
                let (code, pols, forbid) = match v {
                    Verdict::Allow { by } => (abi::V_ALLOW, by, false),
                    Verdict::Deny { by } => (abi::V_DENY, by, !by.is_empty() || !by_name),
                    // The network table has no context the kernel lacks;
                    // should the compiler ever say otherwise, fail closed.
                    Verdict::Userspace { policies } => (abi::V_DENY, policies, true),
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
                        pad: [if forbid { abi::VF_FORBID } else { 0 }, 0, 0],
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
    /// The redirect to the egress proxy, and the original destinations of
    /// redirected connections.
    pub redirect: Option<(Redirect, Origins)>,
    /// Optional programs this kernel refused, each with the loader's reason
    /// (getpeername of redirected sockets).
    pub missing: Vec<String>,
}

/// The LRU maps of the redirect: shrunk to one entry without a redirect.
const ORIGIN_MAPS: [&str; 2] = ["origin_by_cookie", "origin_by_peer"];

impl NetEnforcer {
    /// Loads the programs, writes generation 0 and marks the tables ready,
    /// then attaches to `cgroup` (so no connect is ever decided without
    /// tables). Returns the ring buffer and loss counter for the reader.
    ///
    /// With `redirect`, the sock_ops and getpeername programs are attached
    /// before the connect programs, so no connect is redirected before the
    /// proxy can learn its original destination.
    pub(crate) fn start(
        btf: &aya::Btf,
        cgroup: &std::path::Path,
        img: &NetImage,
        mode: Mode,
        ctl_port: u16,
        redirect: Option<Redirect>,
        rows: Arc<std::sync::RwLock<Rows>>,
    ) -> Result<(NetEnforcer, Events)> {
        let mut loader = EbpfLoader::new();
        loader.btf(Some(btf));
        if redirect.is_none() {
            for m in ORIGIN_MAPS {
                loader.map_max_entries(m, 1);
            }
        }
        let mut ebpf = loader
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
            redirect: None,
            missing: Vec::new(),
        };
        // First tables go to generation 0 (`swap` flips 1 -> 0).
        me.swap(img)?;
        let dir = std::fs::File::open(cgroup)
            .map_err(|e| Error::io(format!("open cgroup {}", cgroup.display()), e))?;
        if let Some(r) = redirect {
            me.start_redirect(r, &dir, cgroup)?;
        }
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

    /// Writes the proxy's addresses, attaches sock_ops (required) and
    /// getpeername4/6 (best-effort, refusals go to `missing`), and takes
    /// the map the proxy reads. Called before the connect programs attach.
    fn start_redirect(&mut self, r: Redirect, dir: &std::fs::File, cgroup: &std::path::Path) -> Result<()> {
        if r.v4.port() == 0 || r.v6.is_some_and(|a| a.port() == 0) {
            return Err(Error::Plan(format!(
                "redirect: the egress proxy's address `{r:?}` has port 0, which no connection can reach"
            )));
        }
        {
            let mut m: Array<_, RedirectCfg> = map_mut(&mut self.ebpf, "redirect")?;
            m.set(0, r.to_cfg(), 0)
                .map_err(|e| bpf_err("write the proxy address (map redirect)", chain(&e)))?;
        }
        let sockops = (|| -> std::result::Result<(), String> {
            let prog: &mut SockOps = self
                .ebpf
                .program_mut("origin_sockops")
                .ok_or("program missing from net.bpf.o")?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| chain(&e))?;
            prog.load().map_err(|e| format!("load: {}", chain(&e)))?;
            prog.attach(dir, CgroupAttachMode::Single)
                .map_err(|e| format!("attach to {}: {}", cgroup.display(), chain(&e)))?;
            Ok(())
        })();
        if let Err(e) = sockops {
            return Err(Error::Unsupported(format!(
                "transparent redirect to the egress proxy: the kernel refused the sock_ops program that \
                 tells the proxy each connection's original destination ({e}); the session cannot route \
                 its TCP connections through the proxy"
            )));
        }
        for name in ["getpeername4", "getpeername6"] {
            let res = (|| -> std::result::Result<(), String> {
                let prog: &mut CgroupSockAddr = self
                    .ebpf
                    .program_mut(name)
                    .ok_or("program missing from net.bpf.o")?
                    .try_into()
                    .map_err(|e: aya::programs::ProgramError| chain(&e))?;
                prog.load().map_err(|e| format!("load: {}", chain(&e)))?;
                prog.attach(dir, CgroupAttachMode::Single)
                    .map_err(|e| format!("attach to {}: {}", cgroup.display(), chain(&e)))?;
                Ok(())
            })();
            if let Err(e) = res {
                self.missing.push(format!(
                    "cgroup/{name} (getpeername() of a redirected socket shows the proxy, not the \
                     original destination): {e}"
                ));
            }
        }
        let peers: HashMap<MapData, abi::PeerKey, abi::OriginVal> =
            take_map(&mut self.ebpf, "origin_by_peer")?;
        self.redirect = Some((r, Origins::new(peers)));
        Ok(())
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The cells of `text`'s TCP table for `claude` whose prefix starts
    /// with `addr` (v4), as (prefix length, verdict code, forbid flag).
    fn cells(text: &str, addr: [u8; 4]) -> Vec<(u32, u8, bool)> {
        let checked = corral_policy::check(vec![corral_policy::Source::new("t.cedar", text.to_string())]);
        let plan = checked.plan.expect("plan");
        let pp = plan.for_principal("claude").expect("principal");
        let img = encode(&plan, pp).unwrap();
        img.cells
            .iter()
            .filter(|(k, _, _)| k.proto == abi::PROTO_TCP && k.family == 4 && k.addr[..4] == addr)
            .map(|(_, plen, c)| (plen - NET_KEY_FIXED_BITS, c.v, c.pad[0] & abi::VF_FORBID != 0))
            .collect()
    }

    #[test]
    fn a_forbid_or_a_port_no_name_rule_mentions_is_marked_forbid() {
        let text = r#"
permit (principal, action == Action::"NetworkConnect", resource)
when { context.ip.isInRange(ip("192.0.2.0/24")) };
permit (principal, action == Action::"NetworkConnect", resource == Host::"api.example.com:443");
forbid (principal, action == Action::"NetworkConnect", resource)
when { context.ip.isInRange(ip("198.51.100.0/24")) };
"#;
        let web = cells(text, [192, 0, 2, 0]);
        assert!(
            !web.is_empty() && web.iter().all(|c| *c == (24, abi::V_ALLOW, false)),
            "{web:?}"
        );
        let evil = cells(text, [198, 51, 100, 0]);
        assert!(
            !evil.is_empty() && evil.iter().all(|c| *c == (24, abi::V_DENY, true)),
            "{evil:?}"
        );
        // The /0 root: nothing permits, nothing forbids (default deny).
        // Left to the proxy on 443 (a name rule may permit it there),
        // refused here on every other port.
        let root: Vec<_> = cells(text, [0; 4]).into_iter().filter(|c| c.0 == 0).collect();
        let to_proxy = root.iter().filter(|c| **c == (0, abi::V_DENY, false)).count();
        let refused = root.iter().filter(|c| **c == (0, abi::V_DENY, true)).count();
        assert_eq!((to_proxy, refused, root.len()), (1, 2, 3), "{root:?}");
    }
}
