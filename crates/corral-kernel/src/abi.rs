//! Rust mirrors of the structs in `bpf/corral.h`, and the event decoder.
//!
//! `unsafe impl Pod` is the one unsafe thing here: aya copies these types
//! byte-for-byte into and out of BPF maps. Each is `#[repr(C)]`, has no
//! implicit padding (explicit `pad` fields) and is valid for every bit
//! pattern (integers and byte arrays only), which is what `Pod` requires.
#![allow(unsafe_code)]

use corral_core::{Decision, Transport};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(crate) const V_ALLOW: u8 = 1;
pub(crate) const V_DENY: u8 = 2;
pub(crate) const V_WOULD_DENY: u32 = 3;
pub(crate) const V_USERSPACE: u8 = 4;

pub(crate) const EV_CONNECT: u32 = 1;
pub(crate) const EV_SENDMSG: u32 = 2;
pub(crate) const EV_FILE_OPEN: u32 = 3;
pub(crate) const EV_EXEC: u32 = 4;
pub(crate) const EV_EXEC_TRACE: u32 = 5;
pub(crate) const EV_FORK: u32 = 6;
pub(crate) const EV_EXIT: u32 = 7;

pub(crate) const PROTO_TCP: u8 = 0;
pub(crate) const PROTO_UDP: u8 = 1;

/// Rule index the programs report for corral's own control port.
pub(crate) const RULE_CONTROL_PORT: u32 = 0xffff_fffe;
/// Rule index of a connection that had to go through the egress proxy and
/// could not (`RULE_NO_REDIRECT`).
pub(crate) const RULE_NO_REDIRECT: u32 = 0xffff_fffd;

/// `verdict.pad[0]` bit: the deny names a forbid (`VF_FORBID`).
pub(crate) const VF_FORBID: u8 = 1;

/// `struct corral_cfg`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cfg {
    pub gen: u32,
    pub mode: u32,
    pub ctl_port: u32,
    pub ready: u32,
}

/// `struct verdict`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct VerdictCell {
    pub v: u8,
    pub pad: [u8; 3],
    pub rule: u32,
}

/// `struct net_key` minus the LPM `prefixlen` (aya's `lpm_trie::Key` adds it).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct NetKey {
    pub gen: u8,
    pub proto: u8,
    pub family: u8,
    pub pad: u8,
    pub class: u16,
    pub addr: [u8; 16],
    pub tail: u16,
}

/// `struct redirect_cfg`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RedirectCfg {
    pub on: u32,
    pub v4_addr: [u8; 4],
    pub v4_port: u32,
    pub v6_on: u32,
    pub v6_addr: [u8; 16],
    pub v6_port: u32,
}

/// `struct origin`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OriginVal {
    pub family: u8,
    pub pad: u8,
    pub port: u16,
    pub tgid: u32,
    pub addr: [u8; 16],
    pub comm: [u8; 16],
}

/// `struct peer_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PeerKey {
    pub family: u8,
    pub pad: u8,
    pub port: u16,
    pub addr: [u8; 16],
}

/// Bits of `NetKey` before the address.
pub(crate) const NET_KEY_FIXED_BITS: u32 = 48;

// SAFETY: see the module comment — repr(C), no padding, any bits valid.
unsafe impl aya::Pod for Cfg {}
// SAFETY: as above.
unsafe impl aya::Pod for VerdictCell {}
// SAFETY: as above (6 + 16 + 2 bytes, u16s at even offsets).
unsafe impl aya::Pod for NetKey {}
// SAFETY: as above (u32s at offsets 0, 4, 8, 12, 32; 36 bytes).
unsafe impl aya::Pod for RedirectCfg {}
// SAFETY: as above (2 u8s, a u16 at 2, a u32 at 4, then bytes; 40 bytes).
unsafe impl aya::Pod for OriginVal {}
// SAFETY: as above (2 u8s, a u16 at 2, then bytes; 20 bytes).
unsafe impl aya::Pod for PeerKey {}

/// `struct event` size (the header).
pub(crate) const EVENT_HDR: usize = 8 + 4 * 10 + 16 + 16 + 4 + 4;

/// A decoded `struct event` header plus its data.
#[derive(Debug, Clone)]
pub(crate) struct RawEvent {
    pub ts_ns: u64,
    pub kind: u32,
    pub pid: u32,
    pub ppid: u32,
    pub verdict: u32,
    pub rule: u32,
    pub gen: u32,
    pub flags: u32,
    pub aux: u32,
    pub family: u32,
    pub addr: [u8; 16],
    pub comm: String,
    pub data: Vec<u8>,
    pub data_aux: u32,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl RawEvent {
    /// Decodes one ring-buffer record; `None` when it is malformed.
    pub fn parse(b: &[u8]) -> Option<RawEvent> {
        if b.len() < EVENT_HDR {
            return None;
        }
        let ts_ns = u64::from_le_bytes(b.get(0..8)?.try_into().ok()?);
        let f = |i: usize| u32_at(b, 8 + 4 * i);
        let mut addr = [0u8; 16];
        addr.copy_from_slice(b.get(48..64)?);
        let comm_raw = b.get(64..80)?;
        let end = comm_raw.iter().position(|c| *c == 0).unwrap_or(comm_raw.len());
        let comm = String::from_utf8_lossy(&comm_raw[..end]).into_owned();
        let data_len = u32_at(b, 80)? as usize;
        let data_aux = u32_at(b, 84)?;
        let data = b
            .get(EVENT_HDR..EVENT_HDR + data_len.min(b.len() - EVENT_HDR))?
            .to_vec();
        Some(RawEvent {
            ts_ns,
            kind: f(0)?,
            pid: f(1)?,
            ppid: f(3)?,
            verdict: f(4)?,
            rule: f(5)?,
            gen: f(6)?,
            flags: f(7)?,
            aux: f(8)?,
            family: f(9)?,
            addr,
            comm,
            data,
            data_aux,
        })
    }

    /// The destination address of a network event.
    pub fn ip(&self) -> IpAddr {
        if self.family == 4 {
            IpAddr::V4(Ipv4Addr::new(
                self.addr[0],
                self.addr[1],
                self.addr[2],
                self.addr[3],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.addr))
        }
    }

    /// The transport of a network event.
    pub fn transport(&self) -> Transport {
        if self.flags == u32::from(PROTO_UDP) {
            Transport::Udp
        } else {
            Transport::Tcp
        }
    }

    /// The decision, for decision events.
    pub fn decision(&self) -> Option<Decision> {
        match self.verdict {
            1 => Some(Decision::Allow),
            2 => Some(Decision::Deny),
            V_WOULD_DENY => Some(Decision::WouldDeny),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes of `bpf/corral.h`'s redirect structs (aya also checks key
    /// and value sizes against the object's maps when a map is opened).
    #[test]
    fn redirect_structs_match_corral_h() {
        assert_eq!(std::mem::size_of::<RedirectCfg>(), 36);
        assert_eq!(std::mem::size_of::<OriginVal>(), 40);
        assert_eq!(std::mem::size_of::<PeerKey>(), 20);
    }
}
