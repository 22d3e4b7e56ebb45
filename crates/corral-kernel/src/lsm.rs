//! The BPF LSM file and exec layer (`bpf/lsm.bpf.c`), where the kernel
//! allows BPF LSM programs, and the encoding of a plan's path tables into
//! its hash map.
//!
//! Keys are (generation, table, path); the programs look up the exact path
//! and then each ancestor directory, deepest first, as
//! [`corral_policy::plan::PathTable::lookup`] does. Swap is the network
//! layer's: write the inactive generation, flip `cfg.gen`, and wait an RCU
//! grace period before the next swap reuses the old one.

use crate::abi::{self, Cfg, RawEvent, VerdictCell};
use crate::events::{Rows, Sink};
use crate::loader::{bpf_err, chain, map_mut, take_events, write_cfg, Events};
use crate::{obj, sys, Error, Result};
use aya::maps::HashMap;
use aya::programs::Lsm;
use aya::{Btf, Ebpf, EbpfLoader};
use corral_core::{Access, Layer, Mode, What};
use corral_policy::plan::{PathTable, PrincipalPlan, Verdict};
use corral_policy::Plan;
use std::sync::{Arc, RwLock};

const PKEY_MAX: usize = 256;
/// Longest listed path the kernel table holds.
pub(crate) const PATH_MAX_LISTED: usize = PKEY_MAX - 2;
use abi::VF_FORBID;
const T_READ: u8 = 0;
const T_WRITE: u8 = 1;
const T_EXEC: u8 = 2;

/// `struct path_key`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct PathKey {
    gen: u8,
    table: u8,
    len: u16,
    path: [u8; PKEY_MAX],
}

/// `struct path_val`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct PathVal {
    has_file: u8,
    has_dir: u8,
    pad: [u8; 2],
    file: VerdictCell,
    itself: VerdictCell,
    files: VerdictCell,
    dirs: VerdictCell,
}

/// `struct ino_key`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct InoKey {
    ino: u64,
    dev: u32,
    gen: u32,
}

/// `struct size_key`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct SizeKey {
    size: u64,
    gen: u32,
    pad: u32,
}

/// `struct hash_key`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct HashKey {
    sha256: [u8; 32],
    gen: u32,
    pad: u32,
}

#[allow(unsafe_code)]
mod pod {
    // SAFETY: repr(C), integers only, 16 bytes, no padding.
    unsafe impl aya::Pod for super::SizeKey {}
    // SAFETY: repr(C), bytes and integers, 40 bytes, no padding.
    unsafe impl aya::Pod for super::HashKey {}
    // SAFETY: repr(C), 8+4+4 bytes of integers, no padding.
    unsafe impl aya::Pod for super::InoKey {}
    // SAFETY: repr(C), integers and byte arrays only, no implicit padding
    // (1+1+2+256 and 4+4*8 bytes), so every bit pattern is valid.
    unsafe impl aya::Pod for super::PathKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PathVal {}
}

/// One generation's encoded path tables.
#[derive(Clone, Default)]
pub(crate) struct PathImage {
    entries: Vec<(PathKey, PathVal)>,
    inodes: Vec<(InoKey, VerdictCell)>,
    contents: Vec<(SizeKey, HashKey, VerdictCell)>,
    rows: Vec<Vec<String>>,
}

/// Encodes the read, write and exec tables of a principal's plan.
pub(crate) fn encode(plan: &Plan, pp: &PrincipalPlan) -> Result<PathImage> {
    let mut img = PathImage::default();
    let mut row_of = std::collections::HashMap::<Vec<usize>, u32>::new();
    let mut cell = |v: &Verdict, img: &mut PathImage| -> VerdictCell {
        let (code, pols, forbid) = match v {
            Verdict::Allow { by } => (abi::V_ALLOW, by, false),
            Verdict::Deny { by } => (abi::V_DENY, by, !by.is_empty()),
            Verdict::Userspace { policies } => (abi::V_USERSPACE, policies, false),
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
        VerdictCell {
            v: code,
            pad: [if forbid { VF_FORBID } else { 0 }, 0, 0],
            rule,
        }
    };
    let tables: [(u8, &PathTable); 3] = [
        (T_READ, &pp.file_read),
        (T_WRITE, &pp.file_write),
        (T_EXEC, &pp.exec),
    ];
    for (t, table) in tables {
        let mut paths: Vec<&String> = table.entries.keys().collect();
        paths.sort();
        for p in paths {
            let Some(e) = table.entries.get(p) else { continue };
            if p.len() > PATH_MAX_LISTED {
                return Err(Error::Plan(format!(
                    "path {p:?} is {} bytes; the kernel path table holds paths up to {PATH_MAX_LISTED} bytes",
                    p.len()
                )));
            }
            let mut key = PathKey {
                gen: 0,
                table: t,
                len: p.len() as u16,
                path: [0; PKEY_MAX],
            };
            key.path[..p.len()].copy_from_slice(p.as_bytes());
            let mut val = PathVal::default();
            if let Some(f) = &e.file {
                val.has_file = 1;
                val.file = cell(f, &mut img);
                if t == T_EXEC && val.file.pad[0] & VF_FORBID != 0 {
                    if let Some(k) = inode_of(p) {
                        img.inodes.push((k, val.file));
                    }
                    if let Some((sk, hk)) = content_of(p) {
                        img.contents.push((sk, hk, val.file));
                    }
                }
            }
            if let Some(d) = &e.dir {
                val.has_dir = 1;
                val.itself = cell(&d.itself, &mut img);
                val.files = cell(&d.files, &mut img);
                val.dirs = cell(&d.dirs, &mut img);
            }
            img.entries.push((key, val));
        }
    }
    Ok(img)
}

/// (inode, kernel dev_t) of a file, when it exists.
fn inode_of(path: &str) -> Option<InoKey> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let dev = m.dev();
    // The kernel's internal dev_t is major << 20 | minor.
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    Some(InoKey {
        ino: m.ino(),
        dev: (major << 20) | minor,
        gen: 0,
    })
}

/// (size, SHA-256) of a file's contents, when it can be read.
fn content_of(path: &str) -> Option<(SizeKey, HashKey)> {
    use sha2::Digest;
    let bytes = std::fs::read(path).ok()?;
    let mut hk = HashKey::default();
    hk.sha256.copy_from_slice(&sha2::Sha256::digest(&bytes));
    Some((
        SizeKey {
            size: bytes.len() as u64,
            gen: 0,
            pad: 0,
        },
        hk,
    ))
}

/// The loaded and attached LSM programs of one session.
pub(crate) struct LsmEnforcer {
    ebpf: Ebpf,
    gen: u32,
    mode: Mode,
    written: [Vec<PathKey>; 2],
    written_ino: [Vec<InoKey>; 2],
    written_content: [Vec<(SizeKey, HashKey)>; 2],
    barrier: sys::RcuBarrier,
    /// Whether the programs are attached: before that no program can be
    /// reading a generation, and a swap need not wait for a grace period.
    attached: bool,
    rows: Arc<RwLock<Rows>>,
    /// Optional hardening programs this kernel refused, and why.
    pub missing: Vec<String>,
}

/// Whether `bpf` is in the active LSM list (securityfs is mounted for
/// the read if needed, as `corral doctor` does). Listed is not the same as
/// attachable: `LsmEnforcer::start` finds that out by attaching.
pub fn bpf_lsm_active() -> bool {
    crate::probe::read_lsm_list()
        .lsms
        .is_some_and(|l| l.iter().any(|x| x == "bpf"))
}

impl LsmEnforcer {
    /// Loads, writes generation 0, then attaches.
    pub(crate) fn start(
        btf: &Btf,
        cgid: u64,
        level: u32,
        img: &PathImage,
        mode: Mode,
        rows: Arc<RwLock<Rows>>,
    ) -> Result<(LsmEnforcer, Events)> {
        if !bpf_lsm_active() {
            return Err(Error::Unsupported(
                "BPF LSM is not active (`bpf` is not in /sys/kernel/security/lsm)".into(),
            ));
        }
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .override_global("session_cgid", &cgid, true)
            .override_global("session_level", &level, true)
            .load(&obj::LSM.bytes)
            .map_err(|e| bpf_err("load bpf/lsm.bpf.c", chain(&e)))?;
        let (ring, lost) = take_events(&mut ebpf)?;
        let barrier = sys::RcuBarrier::new().map_err(|e| Error::io("create the RCU barrier maps", e))?;
        let mut me = LsmEnforcer {
            ebpf,
            gen: 1,
            mode,
            written: Default::default(),
            written_ino: Default::default(),
            written_content: Default::default(),
            barrier,
            attached: false,
            rows,
            missing: Vec::new(),
        };
        me.swap(img)?;
        // The decisions the plan states are required. Hardening beyond the
        // plan's paths is attached where the kernel has it, and said
        // otherwise: user-namespace creation (kernel 6.1+; mounts are
        // refused anyway) and content identity (needs IMA).
        for (prog, hook, required) in [
            ("file_open", "file_open", true),
            ("bprm_check", "bprm_check_security", true),
            ("mmap_file", "mmap_file", true),
            ("sb_mount", "sb_mount", true),
            ("move_mount", "move_mount", true),
            ("userns_create", "userns_create", false),
            ("bprm_hash", "bprm_check_security", false),
        ] {
            let p: &mut Lsm = me
                .ebpf
                .program_mut(prog)
                .ok_or_else(|| bpf_err(prog, "missing from lsm.bpf.o"))?
                .try_into()
                .map_err(|e| bpf_err(prog, chain(&e)))?;
            let r = p
                .load(hook, btf)
                .map_err(|e| bpf_err(&format!("load lsm/{hook} ({prog})"), chain(&e)))
                .and_then(|_| {
                    p.attach()
                        .map(|_| ())
                        .map_err(|e| bpf_err(&format!("attach lsm/{hook} ({prog})"), chain(&e)))
                });
            match r {
                Ok(()) => {}
                Err(e) if !required => me.missing.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        me.attached = true;
        Ok((me, (ring, lost)))
    }

    /// Switches between enforce and shadow: one write of the config
    /// (the active generation stays).
    pub(crate) fn set_mode(&mut self, mode: Mode) -> Result<()> {
        self.mode = mode;
        write_cfg(
            &mut self.ebpf,
            Cfg {
                gen: self.gen,
                mode: u32::from(mode == Mode::Shadow),
                ctl_port: 0,
                ready: 1,
            },
        )
    }

    /// Writes `img` into the inactive generation, then activates it.
    pub(crate) fn swap(&mut self, img: &PathImage) -> Result<()> {
        let next = self.gen ^ 1;
        // Nothing reads before the programs are attached (the first
        // tables, at start): no grace period to wait for then.
        if self.attached {
            self.barrier
                .wait()
                .map_err(|e| Error::io("wait for an RCU grace period", e))?;
        }
        {
            let mut map: HashMap<_, PathKey, PathVal> = map_mut(&mut self.ebpf, "paths")?;
            for k in self.written[next as usize].drain(..) {
                let _ = map.remove(&k);
            }
            for (key, val) in &img.entries {
                let k = PathKey {
                    gen: next as u8,
                    ..*key
                };
                if let Err(e) = map.insert(k, val, 0) {
                    for k in self.written[next as usize].drain(..) {
                        let _ = map.remove(&k);
                    }
                    return Err(bpf_err("write the path table", chain(&e)));
                }
                self.written[next as usize].push(k);
            }
        }
        {
            let mut map: HashMap<_, InoKey, VerdictCell> = map_mut(&mut self.ebpf, "denied_ino")?;
            for k in self.written_ino[next as usize].drain(..) {
                let _ = map.remove(&k);
            }
            for (key, val) in &img.inodes {
                let k = InoKey { gen: next, ..*key };
                map.insert(k, val, 0)
                    .map_err(|e| bpf_err("write the inode identities", chain(&e)))?;
                self.written_ino[next as usize].push(k);
            }
        }
        {
            let [sizes, hashes] = self.ebpf.maps_disjoint_mut(["denied_size", "denied_hash"]);
            let mut sizes: HashMap<_, SizeKey, u32> =
                HashMap::try_from(sizes.ok_or_else(|| bpf_err("map denied_size", "missing"))?)
                    .map_err(|e| bpf_err("map denied_size", chain(&e)))?;
            let mut hashes: HashMap<_, HashKey, VerdictCell> =
                HashMap::try_from(hashes.ok_or_else(|| bpf_err("map denied_hash", "missing"))?)
                    .map_err(|e| bpf_err("map denied_hash", chain(&e)))?;
            for (sk, hk) in self.written_content[next as usize].drain(..) {
                let _ = sizes.remove(&sk);
                let _ = hashes.remove(&hk);
            }
            for (sk, hk, val) in &img.contents {
                let sk = SizeKey { gen: next, ..*sk };
                let hk = HashKey { gen: next, ..*hk };
                sizes
                    .insert(sk, 1, 0)
                    .map_err(|e| bpf_err("write the content identities", chain(&e)))?;
                hashes
                    .insert(hk, val, 0)
                    .map_err(|e| bpf_err("write the content identities", chain(&e)))?;
                self.written_content[next as usize].push((sk, hk));
            }
        }
        if let Ok(mut rows) = self.rows.write() {
            rows.gens[next as usize] = img.rows.clone();
        }
        write_cfg(
            &mut self.ebpf,
            Cfg {
                gen: next,
                mode: u32::from(self.mode == Mode::Shadow),
                ctl_port: 0,
                ready: 1,
            },
        )?;
        self.gen = next;
        Ok(())
    }
}

/// Ring-buffer record -> event, for the LSM programs.
pub(crate) fn decode(sink: &Sink, r: &RawEvent) -> Option<corral_core::Event> {
    let path = String::from_utf8_lossy(&r.data)
        .trim_end_matches('\0')
        .to_string();
    let what = match r.kind {
        abi::EV_FILE_OPEN => What::FileOpen {
            path,
            access: if r.flags & 2 != 0 {
                Access::Write
            } else {
                Access::Read
            },
        },
        abi::EV_EXEC => What::Exec { path, argv: None },
        _ => return None,
    };
    // V_USERSPACE: allowed here, argv decided at exec (see `argv`).
    let decision = if r.verdict == 4 {
        Some(corral_core::Decision::Allow)
    } else {
        r.decision()
    };
    Some(sink.event(r, what, decision, Layer::BpfLsm))
}
