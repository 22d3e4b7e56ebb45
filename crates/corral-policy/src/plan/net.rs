//! Network tables for direct connections: per port class, a longest-prefix
//! match over every address range the policy set mentions.

use super::Verdict;
use crate::analyze::Facts;
use crate::eval::Evaluator;
use crate::request::{Protocol, Request};
use crate::schema::Action;
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An inclusive port interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

/// One prefix and its verdict per port class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetEntry {
    /// Address prefix.
    pub prefix: IpNet,
    /// Verdict for each of the table's port classes; `None` where the
    /// prefix decides as its nearest listed ancestor does for that class
    /// (the lookup falls through to it). The kernel form is an LPM trie
    /// keyed by (port class, prefix) holding the `Some` cells. Serialised
    /// sparsely, as `{"<class>": verdict}`.
    #[serde(serialize_with = "sparse")]
    pub verdicts: Vec<Option<Verdict>>,
}

fn sparse<S: serde::Serializer>(v: &[Option<Verdict>], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(None)?;
    for (i, x) in v.iter().enumerate() {
        if let Some(x) = x {
            m.serialize_entry(&i.to_string(), x)?;
        }
    }
    m.end()
}

/// The network table for one protocol.
#[derive(Debug, Clone, Serialize)]
pub struct NetTable {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Port classes, sorted, covering 0..=65535.
    pub ports: Vec<PortRange>,
    /// Entries, most specific last within a family.
    pub entries: Vec<NetEntry>,
    /// Per port class: whether a `NetworkConnect` permit names a host by
    /// name (or tests `context.hostname`) for a port in it. Only such
    /// connections can be allowed by the egress proxy, which sees the name;
    /// elsewhere a connection no address rule allows is refused in the
    /// kernel. Always false for UDP (the proxy carries TCP only).
    pub by_name: Vec<bool>,
    #[serde(skip)]
    index: std::collections::HashMap<IpNet, usize>,
    /// Prefix lengths present, longest first, per family (v4, v6).
    #[serde(skip)]
    lengths: [Vec<u8>; 2],
    #[serde(skip)]
    fallback: Verdict,
}

impl NetTable {
    /// Index of the port class holding `port`.
    pub fn port_class(&self, port: u16) -> usize {
        self.ports.partition_point(|r| r.hi < port)
    }

    /// Whether a host-name permit may allow a connection to `port` (see
    /// [`NetTable::by_name`]).
    pub fn by_name_at(&self, port: u16) -> bool {
        self.by_name.get(self.port_class(port)).copied().unwrap_or(false)
    }

    /// Decides a direct connection. v4-mapped v6 addresses are looked up as v4.
    pub fn lookup(&self, ip: IpAddr, port: u16) -> &Verdict {
        let ip = ip.to_canonical();
        let class = self.port_class(port);
        let lengths = &self.lengths[usize::from(ip.is_ipv6())];
        for len in lengths {
            let Ok(net) = IpNet::new(ip, *len) else { continue };
            let cell = self
                .index
                .get(&net.trunc())
                .and_then(|i| self.entries.get(*i))
                .and_then(|e| e.verdicts.get(class))
                .and_then(Option::as_ref);
            if let Some(v) = cell {
                return v;
            }
        }
        &self.fallback
    }
}

/// Ranges Cedar's `isLoopback`/`isMulticast` test, and the two roots.
fn builtin_prefixes() -> [IpNet; 6] {
    [
        IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        IpNet::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        IpNet::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        IpNet::new(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), 4),
        IpNet::new(IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)), 8),
    ]
    .map(|r| r.unwrap_or_default())
}

/// Parses a `Host` literal that names an address: `10.0.0.1`, `10.0.0.1:22`,
/// `2001:db8::1`, `[2001:db8::1]:22`, and `*`/`*:22`. Returns the address
/// (if any) and port (if any).
pub fn host_literal(id: &str) -> Option<(Option<IpAddr>, Option<u16>)> {
    if id == "*" {
        return Some((None, None));
    }
    if let Some(p) = id.strip_prefix("*:") {
        return p.parse().ok().map(|p| (None, Some(p)));
    }
    if let Ok(ip) = id.parse::<IpAddr>() {
        return Some((Some(ip), None));
    }
    if let Some(rest) = id.strip_prefix('[') {
        let (a, p) = rest.split_once("]:")?;
        return Some((Some(a.parse().ok()?), Some(p.parse().ok()?)));
    }
    let (a, p) = id.rsplit_once(':')?;
    Some((Some(IpAddr::V4(a.parse().ok()?)), Some(p.parse().ok()?)))
}

fn span(n: &IpNet) -> (u128, u128) {
    match n {
        IpNet::V4(v) => (
            u128::from(u32::from(v.network())),
            u128::from(u32::from(v.broadcast())),
        ),
        IpNet::V6(v) => (u128::from(v.network()), u128::from(v.broadcast())),
    }
}

fn addr(n: &IpNet, a: u128) -> IpAddr {
    match n {
        // `a` lies inside a v4 prefix, so it fits in 32 bits.
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(a as u32)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(a)),
    }
}

/// An address in `n` that lies in none of the other prefixes strictly inside it.
fn representative(n: &IpNet, all: &BTreeSet<IpNet>) -> Option<IpAddr> {
    let (lo, hi) = span(n);
    let mut inner: Vec<(u128, u128)> = all
        .iter()
        .filter(|m| *m != n && n.contains(*m))
        .map(span)
        .collect();
    inner.sort_unstable();
    let mut cur = lo;
    for (s, e) in inner {
        if s > cur {
            break;
        }
        if e >= cur {
            if e == hi {
                return None;
            }
            cur = e + 1;
        }
    }
    (cur <= hi).then(|| addr(n, cur))
}

pub(super) fn compile(
    ev: &Evaluator,
    facts: &[Facts],
    permits: &[bool],
    principal: &str,
    protocol: Protocol,
) -> NetTable {
    let mut prefixes: BTreeSet<IpNet> = builtin_prefixes().into_iter().collect();
    let mut cuts: BTreeSet<u32> = BTreeSet::from([0]);
    let mut cut_at = |n: i64| {
        for c in [n, n.saturating_add(1)] {
            if (0..=65535).contains(&c) {
                cuts.insert(c as u32);
            }
        }
    };
    // Ports host-name permits may allow (`None` in the set: any port).
    let mut name_ports: BTreeSet<Option<u16>> = BTreeSet::new();
    for (i, f) in facts
        .iter()
        .enumerate()
        .filter(|(_, f)| f.actions.contains(&Action::NetworkConnect))
    {
        let permit = permits.get(i).copied().unwrap_or(true) && protocol == Protocol::Tcp;
        if permit && f.context_attrs.contains("hostname") {
            name_ports.insert(None);
        }
        for s in &f.ips {
            if let Ok(n) = s.parse::<IpNet>() {
                prefixes.insert(n.trunc());
            } else if let Ok(a) = s.parse::<IpAddr>() {
                prefixes.insert(IpNet::from(a));
            }
        }
        for id in f.entities_of("Host") {
            if let Some((a, p)) = host_literal(id) {
                if let Some(a) = a {
                    prefixes.insert(IpNet::from(a.to_canonical()));
                }
                if let Some(p) = p {
                    cut_at(i64::from(p));
                }
            } else if permit {
                // A name, `name:port` or `*.zone[:port]`.
                match id.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()) {
                    Some(p) => {
                        cut_at(i64::from(p));
                        name_ports.insert(Some(p));
                    }
                    None => {
                        name_ports.insert(None);
                    }
                }
            }
        }
        for n in &f.longs {
            cut_at(*n);
        }
    }
    let cuts: Vec<u32> = cuts.into_iter().collect();
    let mut ports: Vec<PortRange> = cuts
        .iter()
        .enumerate()
        .map(|(i, lo)| PortRange {
            lo: *lo as u16,
            hi: cuts.get(i + 1).map(|n| n - 1).unwrap_or(65535) as u16,
        })
        .collect();

    let mut entries: Vec<NetEntry> = Vec::new();
    for n in &prefixes {
        let Some(rep) = representative(n, &prefixes) else {
            continue;
        };
        let verdicts = ports
            .iter()
            .map(|r| {
                let req = Request::Net {
                    principal: principal.to_string(),
                    hostname: None,
                    ip: rep,
                    port: r.lo,
                    protocol,
                };
                Some(match ev.decide(&req) {
                    Ok(d) => Verdict::from_decision(d),
                    Err(_) => Verdict::Deny { by: vec![] },
                })
            })
            .collect();
        entries.push(NetEntry { prefix: *n, verdicts });
    }

    let by_name_of = |r: &PortRange| {
        name_ports.contains(&None) || name_ports.iter().flatten().any(|p| (r.lo..=r.hi).contains(p))
    };
    let by_name: Vec<bool> = ports.iter().map(by_name_of).collect();
    // Merge adjacent port classes that decide alike everywhere.
    let keep: Vec<bool> = (0..ports.len())
        .map(|c| {
            c == 0
                || by_name.get(c) != by_name.get(c - 1)
                || !entries.iter().all(|e| e.verdicts.get(c) == e.verdicts.get(c - 1))
        })
        .collect();
    let by_name: Vec<bool> = by_name
        .iter()
        .enumerate()
        .filter(|(c, _)| keep[*c])
        .map(|(_, b)| *b)
        .collect();
    let mut merged: Vec<PortRange> = Vec::new();
    for (c, r) in ports.iter().enumerate() {
        if keep[c] {
            merged.push(*r);
        } else if let Some(last) = merged.last_mut() {
            last.hi = r.hi;
        }
    }
    for e in &mut entries {
        e.verdicts = e
            .verdicts
            .iter()
            .enumerate()
            .filter(|(c, _)| keep[*c])
            .map(|(_, v)| v.clone())
            .collect();
    }
    ports = merged;

    // Per port class, drop cells that decide as the nearest ancestor prefix
    // a lookup would fall back to; then prefixes with no cell left.
    entries.sort_by_key(|e| (e.prefix.prefix_len(), e.prefix));
    let mut kept: Vec<NetEntry> = Vec::new();
    for e in entries {
        let mut ancestors: Vec<&NetEntry> = kept
            .iter()
            .filter(|k| k.prefix != e.prefix && k.prefix.contains(&e.prefix))
            .collect();
        ancestors.sort_by_key(|k| std::cmp::Reverse(k.prefix.prefix_len()));
        let verdicts: Vec<Option<Verdict>> = e
            .verdicts
            .into_iter()
            .enumerate()
            .map(|(c, v)| {
                let inherited = ancestors
                    .iter()
                    .find_map(|a| a.verdicts.get(c).and_then(Option::as_ref));
                match (v, inherited) {
                    (Some(v), Some(i)) if v == *i => None,
                    (v, _) => v,
                }
            })
            .collect();
        if verdicts.iter().any(Option::is_some) {
            kept.push(NetEntry {
                prefix: e.prefix,
                verdicts,
            });
        }
    }
    kept.sort_by_key(|e| (e.prefix.addr().is_ipv6(), e.prefix.prefix_len(), e.prefix));
    let index = kept.iter().enumerate().map(|(i, e)| (e.prefix, i)).collect();
    let mut lengths: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for e in &kept {
        lengths[usize::from(e.prefix.addr().is_ipv6())].push(e.prefix.prefix_len());
    }
    for l in &mut lengths {
        l.sort_unstable_by(|a, b| b.cmp(a));
        l.dedup();
    }
    NetTable {
        protocol,
        ports,
        by_name,
        entries: kept,
        index,
        lengths,
        fallback: Verdict::Deny { by: vec![] },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(text: &str) -> NetTable {
        let doc = crate::load::load(vec![crate::Source::new("t.cedar", text)]).unwrap();
        let plan = crate::compile(&doc, &crate::CompileOptions::default()).unwrap();
        plan.principals[0]
            .net
            .iter()
            .find(|t| t.protocol == Protocol::Tcp)
            .unwrap()
            .clone()
    }

    #[test]
    fn ports_host_name_permits_may_allow() {
        let t = tcp(
            r#"permit (principal, action == Action::"NetworkConnect", resource)
            when { resource in [Host::"api.example.com:443", Host::"*.example.org:8443"] };
            forbid (principal, action == Action::"NetworkConnect", resource)
            when { resource in Host::"evil.example.com:22" };
            permit (principal, action == Action::"NetworkConnect", resource == Host::"10.0.0.1:5432");"#,
        );
        assert!(t.by_name_at(443));
        assert!(t.by_name_at(8443));
        // A forbid by name, and an address rule, allow nothing by name.
        assert!(!t.by_name_at(22));
        assert!(!t.by_name_at(5432));
        assert!(!t.by_name_at(444));
        assert!(!t.by_name_at(80));
        // A name without a port, or a test of the name: every port.
        let t = tcp(
            r#"permit (principal, action == Action::"NetworkConnect", resource == Host::"example.com");"#,
        );
        assert!(t.by_name_at(1) && t.by_name_at(65535));
        let t = tcp(
            r#"permit (principal, action == Action::"NetworkConnect", resource)
            when { context.hostname like "*.corp" };"#,
        );
        assert!(t.by_name_at(22));
        let t =
            tcp(r#"permit (principal, action == Action::"NetworkConnect", resource == Host::"10.0.0.1");"#);
        assert!(!t.by_name_at(443));
    }

    #[test]
    fn host_literals_that_name_addresses() {
        assert_eq!(
            host_literal("10.0.0.1:22"),
            Some((Some("10.0.0.1".parse().unwrap()), Some(22)))
        );
        assert_eq!(
            host_literal("[::1]:53"),
            Some((Some("::1".parse().unwrap()), Some(53)))
        );
        assert_eq!(host_literal("::1"), Some((Some("::1".parse().unwrap()), None)));
        assert_eq!(host_literal("*:443"), Some((None, Some(443))));
        assert_eq!(host_literal("example.com:443"), None);
    }

    #[test]
    fn representative_avoids_inner_prefixes() {
        let all: BTreeSet<IpNet> = ["10.0.0.0/30", "10.0.0.0/32", "10.0.0.1/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let n: IpNet = "10.0.0.0/30".parse().unwrap();
        assert_eq!(representative(&n, &all), Some("10.0.0.2".parse().unwrap()));
        let full: BTreeSet<IpNet> = ["10.0.0.0/31", "10.0.0.0/32", "10.0.0.1/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(representative(&"10.0.0.0/31".parse().unwrap(), &full), None);
    }
}
