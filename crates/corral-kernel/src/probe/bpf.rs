//! The BPF probes: each loads `bpf/probe.bpf.c` afresh, loads and attaches
//! one program, checks it runs where that can be seen, detaches it and drops
//! the object (which unloads programs and maps) before returning.

use super::host::LsmList;
use super::Outcome;
use crate::cgroup::{self, Cgroup};
use crate::obj;
use aya::maps::{Array, MapType};
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSockAddr, Lsm, ProgramError, RawTracePoint, TracePoint,
};
use aya::{Btf, Ebpf, EbpfLoader};
use nix::errno::Errno;
use std::path::Path;

const HIT_LSM: u32 = 0;
const HIT_TRACEPOINT: u32 = 1;
const HIT_RAW_TP: u32 = 2;
const HIT_TP_BTF: u32 = 3;

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Every error in a chain, `: `-separated.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(e) = src {
        let m = e.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = e.source();
    }
    s
}

/// `EPERM (Operation not permitted)`.
pub(super) fn errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let errno = Errno::from_raw(n);
            format!("{errno:?} ({})", errno.desc())
        }
        None => e.to_string(),
    }
}

/// A loader error: the failing call, errno, and the verifier's last line.
fn describe(e: &ProgramError) -> (Option<i32>, String) {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let last = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            let mut s = format!("BPF_PROG_LOAD: {}", errno_text(io_error));
            if !last.is_empty() {
                s.push_str(&format!(", verifier: {last}"));
            }
            (io_error.raw_os_error(), s)
        }
        ProgramError::SyscallError(se) => (
            se.io_error.raw_os_error(),
            format!("{}: {}", se.call, errno_text(&se.io_error)),
        ),
        other => (None, chain(other)),
    }
}

/// Loads the probe object (maps only; programs are loaded one by one),
/// relocating against `btf` (parsed once by [`probe_btf`]).
fn load_object(btf: Option<&Btf>) -> Result<Ebpf, String> {
    let pid = std::process::id();
    EbpfLoader::new()
        .btf(btf)
        .override_global("target_tgid", &pid, true)
        .load(&obj::PROBE.bytes)
        .map_err(|e| format!("loading the probe object failed: {}", chain(&e)))
}

fn hits(ebpf: &Ebpf, idx: u32) -> Result<u64, String> {
    let map = ebpf.map("hits").ok_or("the probe object has no `hits` map")?;
    let arr: Array<_, u64> = Array::try_from(map).map_err(|e| format!("hits map: {}", chain(&e)))?;
    arr.get(&idx, 0)
        .map_err(|e| format!("read hits map: {}", chain(&e)))
}

/// Runs a short-lived program so exec tracepoints fire.
fn exec_something() -> Result<(), String> {
    let mut last = String::new();
    for bin in ["/bin/true", "/usr/bin/true", "true"] {
        match std::process::Command::new(bin).status() {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{bin}: {e}"),
        }
    }
    Err(format!("could not exec a test program ({last})"))
}

/// Parses the kernel's BTF; the other probes reuse it.
pub(super) fn probe_btf() -> (Outcome, Option<Btf>) {
    let size = match std::fs::metadata(BTF_PATH) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let o = Outcome::absent(format!(
                "{BTF_PATH} does not exist (kernel built without CONFIG_DEBUG_INFO_BTF): \
                 no CO-RE, no BPF LSM, no tp_btf"
            ));
            return (o, None);
        }
        Err(e) => return (Outcome::fail(format!("{BTF_PATH}: {}", errno_text(&e))), None),
    };
    match Btf::from_sys_fs() {
        Ok(b) => (
            Outcome::ok(format!("{BTF_PATH} parsed ({} KiB)", size / 1024)),
            Some(b),
        ),
        Err(e) => (
            Outcome::fail(format!("{BTF_PATH} present but does not parse: {}", chain(&e))),
            None,
        ),
    }
}

pub(super) fn probe_lsm(list: &LsmList, btf: Option<&Btf>) -> Outcome {
    let mut notes = Vec::new();
    if list.mounted_by_probe {
        notes.push(
            "securityfs was not mounted: mounted it at /sys/kernel/security to read the LSM list, \
             then unmounted it"
                .to_string(),
        );
    }
    let listed = list.lsms.as_ref().map(|l| l.iter().any(|s| s == "bpf"));
    match (&list.lsms, &list.error) {
        (Some(l), _) => notes.push(format!("active LSMs: {}", l.join(","))),
        (None, Some(e)) => notes.push(format!("LSM list unreadable: {e}")),
        (None, None) => {}
    }
    let with_notes = |mut s: String| {
        for n in &notes {
            s.push_str("; ");
            s.push_str(n);
        }
        s
    };
    match attach_lsm(btf) {
        Err((errno, msg)) => {
            let text = if errno == Some(libc::EPERM) {
                let stage = if msg.starts_with("attach") {
                    "attach"
                } else {
                    "BPF_PROG_LOAD"
                };
                format!(
                    "EPERM from {stage}: trampolines unavailable (lsm/fentry programs need BPF \
                     trampolines, which this kernel refuses)"
                )
            } else if listed == Some(false) {
                format!("{msg}: `bpf` is not an active LSM")
            } else {
                msg
            };
            Outcome::fail(with_notes(text))
        }
        Ok(n) if listed == Some(false) => Outcome::fail(with_notes(format!(
            "loads and attaches, but `bpf` is not an active LSM so the hook never runs \
             (hit count {n} on an open); boot with lsm=...,bpf"
        ))),
        Ok(0) => Outcome::fail(with_notes(
            "loaded and attached, but the hook did not run on an open (hit count 0)".to_string(),
        )),
        Ok(n) => Outcome::ok(with_notes(format!(
            "loaded, attached, ran on an open (hit count {n}), detached"
        ))),
    }
}

/// Loads and attaches the no-op `lsm/file_open`, opens a file, returns how
/// often the hook ran for this process. Detached and unloaded on return.
fn attach_lsm(btf: Option<&Btf>) -> Result<u64, (Option<i32>, String)> {
    let btf = btf.ok_or((None, "needs BTF (see the btf row)".to_string()))?;
    let mut ebpf = load_object(Some(btf)).map_err(|e| (None, e))?;
    let prog: &mut Lsm = ebpf
        .program_mut("probe_lsm_file_open")
        .ok_or((None, "no probe_lsm_file_open program".to_string()))?
        .try_into()
        .map_err(|e: ProgramError| describe(&e))?;
    prog.load("file_open", btf).map_err(|e| describe(&e))?;
    let link = prog.attach().map_err(|e| {
        let (n, s) = describe(&e);
        (n, format!("attach: {s}"))
    })?;
    let _ = std::fs::File::open("/proc/self/status");
    let n = hits(&ebpf, HIT_LSM);
    if let Some(p) = ebpf.program_mut("probe_lsm_file_open") {
        let prog: Result<&mut Lsm, _> = p.try_into();
        if let Ok(prog) = prog {
            prog.detach(link).map_err(|e| describe(&e))?;
        }
    }
    n.map_err(|e| (None, e))
}

pub(super) fn probe_cgroup(parent: Option<&Path>, btf: Option<&Btf>) -> Outcome {
    let parent_path = match parent {
        Some(p) => p.to_path_buf(),
        None => match cgroup::v2_root() {
            Ok(r) => r,
            Err(e) => return Outcome::absent(e.to_string()),
        },
    };
    let parent = match Cgroup::open(&parent_path) {
        Ok(p) => p,
        Err(e) => return Outcome::fail(e.to_string()),
    };
    let name = format!("corral-probe-{}-{}", std::process::id(), unique());
    let child = match parent.child(&name) {
        Ok(c) => c,
        Err(e) => return Outcome::fail(e.to_string()),
    };
    // All BPF state lives inside attach_connect4 and is gone when it returns.
    let attached = attach_connect4(child.path(), btf);
    let removed = child.destroy();
    let path = child.path().display().to_string();
    drop(child);
    match (attached, removed) {
        (Ok(()), Ok(())) => Outcome::ok(format!(
            "attached a no-op cgroup/connect4 to {path}, detached, removed the cgroup"
        )),
        (Err(e), _) => Outcome::fail(format!("{e} (cgroup {path})")),
        (Ok(()), Err(e)) => Outcome::fail(format!("attached and detached, but {e}")),
    }
}

fn attach_connect4(dir: &Path, btf: Option<&Btf>) -> Result<(), String> {
    let mut ebpf = load_object(btf)?;
    let prog: &mut CgroupSockAddr = ebpf
        .program_mut("probe_connect4")
        .ok_or("no probe_connect4 program")?
        .try_into()
        .map_err(|e: ProgramError| describe(&e).1)?;
    prog.load().map_err(|e| describe(&e).1)?;
    let fd = std::fs::File::open(dir).map_err(|e| format!("open {}: {}", dir.display(), errno_text(&e)))?;
    let link = prog
        .attach(&fd, CgroupAttachMode::Single)
        .map_err(|e| format!("attach: {}", describe(&e).1))?;
    prog.detach(link)
        .map_err(|e| format!("detach: {}", describe(&e).1))?;
    Ok(())
}

pub(super) fn probe_ringbuf() -> Outcome {
    match aya::sys::is_map_supported(MapType::RingBuf) {
        Ok(true) => Outcome::ok("created (and closed) a BPF_MAP_TYPE_RINGBUF map"),
        Ok(false) => Outcome::absent("BPF_MAP_TYPE_RINGBUF rejected (kernel < 5.8)"),
        Err(e) => Outcome::fail(format!("{}: {}", e.call, errno_text(&e.io_error))),
    }
}

/// Shared tail of the exec-hook probes: exec something, read the counter.
fn fired(ebpf: &Ebpf, idx: u32) -> Result<u64, String> {
    exec_something()?;
    hits(ebpf, idx)
}

fn exec_hook_outcome(what: &str, r: Result<u64, String>) -> Outcome {
    match r {
        Ok(0) => Outcome::fail(format!("{what} attached but did not fire on an exec")),
        Ok(n) => Outcome::ok(format!(
            "{what} attached, fired on an exec (hit count {n}), detached"
        )),
        Err(e) => Outcome::fail(e),
    }
}

pub(super) fn probe_tracepoint(btf: Option<&Btf>) -> Outcome {
    let r = (|| {
        let mut ebpf = load_object(btf)?;
        let prog: &mut TracePoint = ebpf
            .program_mut("probe_tracepoint_exec")
            .ok_or("no probe_tracepoint_exec program")?
            .try_into()
            .map_err(|e: ProgramError| describe(&e).1)?;
        prog.load().map_err(|e| describe(&e).1)?;
        let link = prog
            .attach("sched", "sched_process_exec")
            .map_err(|e| format!("attach: {}", describe(&e).1))?;
        let n = fired(&ebpf, HIT_TRACEPOINT);
        let prog: &mut TracePoint = ebpf
            .program_mut("probe_tracepoint_exec")
            .ok_or("no probe_tracepoint_exec program")?
            .try_into()
            .map_err(|e: ProgramError| describe(&e).1)?;
        prog.detach(link)
            .map_err(|e| format!("detach: {}", describe(&e).1))?;
        n
    })();
    exec_hook_outcome("tracepoint/sched/sched_process_exec", r)
}

pub(super) fn probe_raw_tracepoint(btf: Option<&Btf>) -> Outcome {
    let r = (|| {
        let mut ebpf = load_object(btf)?;
        let prog: &mut RawTracePoint = ebpf
            .program_mut("probe_raw_tp_exec")
            .ok_or("no probe_raw_tp_exec program")?
            .try_into()
            .map_err(|e: ProgramError| describe(&e).1)?;
        prog.load().map_err(|e| describe(&e).1)?;
        let link = prog
            .attach("sched_process_exec")
            .map_err(|e| format!("attach: {}", describe(&e).1))?;
        let n = fired(&ebpf, HIT_RAW_TP);
        let prog: &mut RawTracePoint = ebpf
            .program_mut("probe_raw_tp_exec")
            .ok_or("no probe_raw_tp_exec program")?
            .try_into()
            .map_err(|e: ProgramError| describe(&e).1)?;
        prog.detach(link)
            .map_err(|e| format!("detach: {}", describe(&e).1))?;
        n
    })();
    exec_hook_outcome("raw_tp/sched_process_exec", r)
}

pub(super) fn probe_tp_btf(btf: Option<&Btf>) -> Outcome {
    let r = (|| {
        let btf = btf.ok_or("needs BTF (see the btf row)")?;
        let mut ebpf = load_object(Some(btf))?;
        let prog: &mut BtfTracePoint = ebpf
            .program_mut("probe_tp_btf_exec")
            .ok_or("no probe_tp_btf_exec program")?
            .try_into()
            .map_err(|e: ProgramError| describe(&e).1)?;
        prog.load("sched_process_exec", btf).map_err(|e| describe(&e).1)?;
        let link = prog.attach().map_err(|e| format!("attach: {}", describe(&e).1))?;
        let n = fired(&ebpf, HIT_TP_BTF);
        let prog: &mut BtfTracePoint = ebpf
            .program_mut("probe_tp_btf_exec")
            .ok_or("no probe_tp_btf_exec program")?
            .try_into()
            .map_err(|e: ProgramError| describe(&e).1)?;
        prog.detach(link)
            .map_err(|e| format!("detach: {}", describe(&e).1))?;
        n
    })();
    exec_hook_outcome("tp_btf/sched_process_exec", r)
}

pub(super) fn probe_send_signal(btf: Option<&Btf>) -> Outcome {
    let r = (|| {
        let mut ebpf = load_object(btf)?;
        let prog: &mut TracePoint = ebpf
            .program_mut("probe_send_signal")
            .ok_or("no probe_send_signal program")?
            .try_into()
            .map_err(|e: ProgramError| describe(&e).1)?;
        prog.load().map_err(|e| describe(&e).1)
    })();
    match r {
        Ok(()) => {
            Outcome::ok("a tracepoint program calling bpf_send_signal passed the verifier (not attached)")
        }
        Err(e) if e.contains("unknown func") || e.contains("cannot use helper") => {
            Outcome::fail(format!("helper not allowed from tracepoints: {e}"))
        }
        Err(e) => Outcome::fail(e),
    }
}

/// A per-process unique number for temporary names.
pub(super) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (t << 8) | (N.fetch_add(1, Ordering::Relaxed) & 0xff)
}
