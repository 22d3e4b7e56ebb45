//! Transparent redirect of a session's TCP connections to corral's egress
//! proxy: the configuration ([`Redirect`]) and the proxy's side of it
//! ([`Origins`]: the original destination of each accepted connection).
//!
//! The kernel side lives in `bpf/net.bpf.c` (connect4/6 rewrite the
//! destination, sock_ops files the original under the socket's local
//! address, getpeername4/6 hide the rewrite) and is loaded by
//! [`crate::net`]. This module never decides anything: it encodes the
//! proxy's addresses for the kernel and reads back what the kernel recorded.

use crate::abi::{OriginVal, PeerKey, RedirectCfg};
use crate::loader::{bpf_err, chain};
use crate::Result;
use aya::maps::{HashMap, MapData, MapError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, Mutex};

/// Where the session's TCP connections go: the egress proxy's listening
/// addresses as reachable from the session's network namespace (in a
/// container `127.0.0.1:P` and `[::1]:P` inside its netns; on the host for
/// a cgroup-only session).
///
/// With a redirect, a TCP connect to a destination that is not loopback
/// either reaches the proxy or fails with EPERM (a forbid decides it, or
/// it is native IPv6 and `v6` is `None`). Loopback destinations and UDP are
/// decided by the network table alone, as without a redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Redirect {
    /// The proxy for IPv4 destinations (and v4-mapped ones on v6 sockets).
    pub v4: SocketAddrV4,
    /// The proxy for native IPv6 destinations; `None` refuses them.
    pub v6: Option<SocketAddrV6>,
}

impl Redirect {
    /// The kernel's `struct redirect_cfg` for this redirect.
    pub(crate) fn to_cfg(self) -> RedirectCfg {
        let (v6_on, v6_addr, v6_port) = match self.v6 {
            Some(a) => (1, a.ip().octets(), u32::from(a.port())),
            None => (0, [0; 16], 0),
        };
        RedirectCfg {
            on: 1,
            v4_addr: self.v4.ip().octets(),
            v4_port: u32::from(self.v4.port()),
            v6_on,
            v6_addr,
            v6_port,
        }
    }
}

/// The original destination of a redirected connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Where the process asked to connect (v4-mapped addresses as v4).
    pub dst: SocketAddr,
    /// The connecting process (tgid).
    pub pid: u32,
    /// Its `comm` at connect time (writable by the process: a label, never
    /// an identity).
    pub comm: String,
}

const MAP: &str = "map origin_by_peer";

/// The original destinations of a session's redirected connections, keyed
/// by the address the proxy sees as the peer of the accepted connection.
/// Cheap to clone; all clones share the kernel map.
#[derive(Clone)]
pub struct Origins {
    map: Arc<Mutex<HashMap<MapData, PeerKey, OriginVal>>>,
}

impl std::fmt::Debug for Origins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Origins")
    }
}

impl Origins {
    pub(crate) fn new(map: HashMap<MapData, PeerKey, OriginVal>) -> Origins {
        Origins {
            map: Arc::new(Mutex::new(map)),
        }
    }

    /// Looks up and deletes the original destination of the connection the
    /// proxy accepted from `peer`. `None` when the connection was not
    /// redirected by this session, was already taken, was evicted (the
    /// proxy must then refuse it), or the map could not be read.
    pub fn take(&self, peer: SocketAddr) -> Option<Origin> {
        self.try_take(peer).ok().flatten()
    }

    /// [`Origins::take`], telling a map error apart from "no entry".
    pub fn try_take(&self, peer: SocketAddr) -> Result<Option<Origin>> {
        let key = peer_key(peer);
        let mut map = self
            .map
            .lock()
            .map_err(|_| bpf_err(MAP, "lock poisoned (a holder panicked)"))?;
        let val = match map.get(&key, 0) {
            Ok(v) => v,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(bpf_err(MAP, chain(&e))),
        };
        match map.remove(&key) {
            Ok(()) => {}
            // Evicted in between by the kernel's LRU: the value read stands.
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(bpf_err(MAP, chain(&e))),
        }
        Ok(Some(origin(&val)))
    }
}

/// The kernel's key for a peer address (v4-mapped v6 as v4: a proxy on a
/// dual-stack socket sees v4 clients that way).
pub(crate) fn peer_key(peer: SocketAddr) -> PeerKey {
    let ip = match peer.ip() {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
        v4 => v4,
    };
    let mut addr = [0u8; 16];
    let family = match ip {
        IpAddr::V4(a) => {
            addr[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            addr = a.octets();
            6
        }
    };
    PeerKey {
        family,
        pad: 0,
        port: peer.port(),
        addr,
    }
}

/// The kernel's record, as an [`Origin`].
pub(crate) fn origin(v: &OriginVal) -> Origin {
    let ip = if v.family == 4 {
        IpAddr::V4(Ipv4Addr::new(v.addr[0], v.addr[1], v.addr[2], v.addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(v.addr))
    };
    let end = v.comm.iter().position(|c| *c == 0).unwrap_or(v.comm.len());
    Origin {
        dst: SocketAddr::new(ip, v.port),
        pid: v.tgid,
        comm: String::from_utf8_lossy(v.comm.get(..end).unwrap_or_default()).into_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn peer_keys_fold_v4_mapped_into_v4() {
        let v4 = peer_key("127.0.0.1:4000".parse().unwrap());
        let mapped = peer_key("[::ffff:127.0.0.1]:4000".parse().unwrap());
        assert_eq!(v4, mapped);
        assert_eq!(v4.family, 4);
        assert_eq!(&v4.addr[..4], &[127, 0, 0, 1]);
        assert_eq!(v4.addr[4..], [0; 12]);
        let v6 = peer_key("[::1]:4000".parse().unwrap());
        assert_eq!(v6.family, 6);
        assert_eq!(v6.addr, Ipv6Addr::LOCALHOST.octets());
        assert_eq!(v6.port, 4000);
    }

    #[test]
    fn origins_decode_family_port_and_comm() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[192, 0, 2, 1]);
        let o = origin(&OriginVal {
            family: 4,
            pad: 0,
            port: 443,
            tgid: 42,
            addr,
            comm,
        });
        assert_eq!(o.dst, "192.0.2.1:443".parse().unwrap());
        assert_eq!((o.pid, o.comm.as_str()), (42, "curl"));
        let o6 = origin(&OriginVal {
            family: 6,
            pad: 0,
            port: 80,
            tgid: 1,
            addr: "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
            comm: [b'x'; 16],
        });
        assert_eq!(o6.dst, "[2001:db8::1]:80".parse().unwrap());
        assert_eq!(o6.comm, "x".repeat(16));
    }

    #[test]
    fn redirect_cfg_carries_both_addresses() {
        let r = Redirect {
            v4: "127.0.0.1:3128".parse().unwrap(),
            v6: None,
        };
        let c = r.to_cfg();
        assert_eq!(
            (c.on, c.v4_addr, c.v4_port, c.v6_on),
            (1, [127, 0, 0, 1], 3128, 0)
        );
        let r6 = Redirect {
            v6: Some("[::1]:3129".parse().unwrap()),
            ..r
        };
        let c6 = r6.to_cfg();
        assert_eq!((c6.v6_on, c6.v6_port), (1, 3129));
        assert_eq!(c6.v6_addr, Ipv6Addr::LOCALHOST.octets());
    }
}
