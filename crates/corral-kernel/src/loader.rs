//! What every BPF object's loader does the same way: typed map access with
//! errors that name the map, the event ring and its loss counter, the
//! `cfg` element, and errors with the loader's whole cause chain.

use crate::abi::Cfg;
use crate::{Error, Result};
use aya::maps::{Array, Map, MapData, RingBuf};
use aya::Ebpf;

/// The running kernel's BTF, parsed once per session and handed to every
/// object's loader (aya would otherwise parse the 5 MiB blob per object).
pub(crate) fn kernel_btf() -> Result<aya::Btf> {
    aya::Btf::from_sys_fs().map_err(|e| bpf_err("read kernel BTF (/sys/kernel/btf/vmlinux)", chain(&e)))
}

/// An error about a program, map or hook, with a detail.
pub(crate) fn bpf_err(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Bpf {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

/// An error with its whole source chain (aya puts the errno, and the
/// verifier log, in sources).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The map `name` as the typed view `M` (`Array`, `HashMap`, `LpmTrie`…).
pub(crate) fn map_mut<'a, M>(ebpf: &'a mut Ebpf, name: &str) -> Result<M>
where
    M: TryFrom<&'a mut Map>,
    M::Error: std::error::Error,
{
    let m = ebpf
        .map_mut(name)
        .ok_or_else(|| bpf_err(&format!("map {name}"), "missing from the object"))?;
    M::try_from(m).map_err(|e| bpf_err(&format!("map {name}"), chain(&e)))
}

/// Takes the map `name` out of the object as the owned typed view `M`.
pub(crate) fn take_map<M>(ebpf: &mut Ebpf, name: &str) -> Result<M>
where
    M: TryFrom<Map>,
    M::Error: std::error::Error,
{
    let m = ebpf
        .take_map(name)
        .ok_or_else(|| bpf_err(&format!("map {name}"), "missing from the object"))?;
    M::try_from(m).map_err(|e| bpf_err(&format!("map {name}"), chain(&e)))
}

/// An object's event ring buffer and its kernel-side loss counter.
pub(crate) type Events = (RingBuf<MapData>, Option<Array<MapData, u64>>);

/// The object's event ring buffer and its kernel-side loss counter.
pub(crate) fn take_events(ebpf: &mut Ebpf) -> Result<Events> {
    let ring = take_map::<RingBuf<MapData>>(ebpf, "events")?;
    let lost = take_map::<Array<MapData, u64>>(ebpf, "lost").ok();
    Ok((ring, lost))
}

/// Writes the object's `cfg` element (one array update: atomic for readers).
pub(crate) fn write_cfg(ebpf: &mut Ebpf, c: Cfg) -> Result<()> {
    let mut cfg: Array<_, Cfg> = map_mut(ebpf, "cfg")?;
    cfg.set(0, c, 0)
        .map_err(|e| bpf_err("activate the tables (map cfg)", chain(&e)))
}
