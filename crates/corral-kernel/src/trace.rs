//! Telemetry tracepoints for one session (`bpf/trace.bpf.c`): exec with
//! argv, fork and exit, and the open flags the fanotify fallback needs.

use crate::abi::{self, RawEvent};
use crate::events::Sink;
use crate::fanotify::OpenFlags;
use crate::loader::{bpf_err, chain, map_mut, take_events, take_map, Events};
use crate::{obj, Error, Result};
use aya::maps::{Array, HashMap, MapData};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use corral_core::{Access, Layer, What};
use std::sync::{Arc, Mutex};

/// Mounts tracefs at /sys/kernel/tracing when nothing is there (tracepoint
/// ids are read from it).
fn ensure_tracefs() -> Result<()> {
    if std::path::Path::new("/sys/kernel/tracing/events").exists()
        || std::path::Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return Ok(());
    }
    let st = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()
        .map_err(|e| Error::io("mount tracefs", e))?;
    if st.success() {
        Ok(())
    } else {
        Err(Error::Unsupported(
            "tracefs is not mounted and `mount -t tracefs` failed".into(),
        ))
    }
}

/// `open_flags` value while an execve is in flight (`OPEN_FLAGS_EXEC`).
const OPEN_FLAGS_EXEC: u32 = u32::MAX;

/// The loaded telemetry programs of one session.
pub(crate) struct Tracer {
    _ebpf: Ebpf,
    flags: Arc<MapFlags>,
    /// The `pending` map, until a gate takes it.
    pub pending: Option<HashMap<MapData, u32, u32>>,
}

/// Open flags from the `open_flags` map.
pub(crate) struct MapFlags {
    map: Mutex<HashMap<MapData, u32, u32>>,
}

impl OpenFlags for MapFlags {
    fn access_of(&self, _tgid: u32, tid: u32) -> Option<Access> {
        let m = self.map.lock().ok()?;
        let f = m.get(&tid, 0).ok()?;
        if f == OPEN_FLAGS_EXEC {
            return Some(Access::Exec);
        }
        let acc = f & libc::O_ACCMODE as u32;
        // O_TRUNC empties the file even when opened read-only.
        if acc == libc::O_RDONLY as u32 && f & libc::O_TRUNC as u32 == 0 {
            Some(Access::Read)
        } else {
            Some(Access::Write)
        }
    }
}

impl Tracer {
    /// Loads and attaches every program. `cgid`/`level` name the session
    /// cgroup (id and depth).
    /// `lsm`: also load `lsm/task_kill` (no SIGCONT to a process stopped
    /// for an argv decision from inside the session).
    /// `open_flags`: attach the `sys_enter/exit_open*` and `execve*`
    /// tracepoints the fanotify fallback reads (about 1 µs per open in the
    /// session, so only when that fallback is in use).
    pub(crate) fn start(
        btf: &Btf,
        cgid: u64,
        level: u32,
        lsm: bool,
        open_flags: bool,
    ) -> Result<(Tracer, Events)> {
        ensure_tracefs()?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .override_global("session_cgid", &cgid, true)
            .override_global("session_level", &level, true)
            .load(&obj::TRACE.bytes)
            .map_err(|e| bpf_err("load bpf/trace.bpf.c", chain(&e)))?;
        for (prog, tp) in [
            ("on_exec", "sched_process_exec"),
            ("on_fork", "sched_process_fork"),
            ("on_exit", "sched_process_exit"),
        ] {
            let p: &mut BtfTracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| bpf_err(prog, "missing from trace.bpf.o"))?
                .try_into()
                .map_err(|e| bpf_err(prog, chain(&e)))?;
            p.load(tp, btf)
                .map_err(|e| bpf_err(&format!("load tp_btf/{tp}"), chain(&e)))?;
            p.attach()
                .map_err(|e| bpf_err(&format!("attach tp_btf/{tp}"), chain(&e)))?;
        }
        // openat is required; open (absent on some architectures), creat
        // and openat2 are attached where the kernel has them.
        let syscall_tps: &[(&str, &str, bool)] = if !open_flags {
            &[]
        } else {
            &[
                ("enter_openat", "sys_enter_openat", true),
                ("exit_openat", "sys_exit_openat", true),
                ("enter_openat2", "sys_enter_openat2", false),
                ("exit_openat2", "sys_exit_openat2", false),
                ("enter_creat", "sys_enter_creat", false),
                ("exit_creat", "sys_exit_creat", false),
                ("enter_execve", "sys_enter_execve", true),
                ("exit_execve", "sys_exit_execve", true),
                ("enter_execveat", "sys_enter_execveat", false),
                ("exit_execveat", "sys_exit_execveat", false),
                ("enter_open", "sys_enter_open", false),
                ("exit_open", "sys_exit_open", false),
            ]
        };
        for &(prog, tp, required) in syscall_tps {
            let p: &mut TracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| bpf_err(prog, "missing from trace.bpf.o"))?
                .try_into()
                .map_err(|e| bpf_err(prog, chain(&e)))?;
            let r = p.load().and_then(|_| p.attach("syscalls", tp).map(|_| ()));
            if let Err(e) = r {
                if required {
                    return Err(bpf_err(&format!("attach tracepoint/syscalls/{tp}"), chain(&e)));
                }
            }
        }
        if lsm {
            let p: &mut aya::programs::Lsm = ebpf
                .program_mut("task_kill")
                .ok_or_else(|| bpf_err("task_kill", "missing from trace.bpf.o"))?
                .try_into()
                .map_err(|e| bpf_err("task_kill", chain(&e)))?;
            p.load("task_kill", btf)
                .map_err(|e| bpf_err("load lsm/task_kill", chain(&e)))?;
            p.attach()
                .map_err(|e| bpf_err("attach lsm/task_kill", chain(&e)))?;
        }
        let pending = ebpf
            .take_map("pending")
            .and_then(|m| HashMap::<MapData, u32, u32>::try_from(m).ok());
        let (ring, lost) = take_events(&mut ebpf)?;
        let map = take_map::<HashMap<MapData, u32, u32>>(&mut ebpf, "open_flags")?;
        let flags = Arc::new(MapFlags { map: Mutex::new(map) });
        Ok((
            Tracer {
                _ebpf: ebpf,
                flags,
                pending,
            },
            (ring, lost),
        ))
    }

    /// Sets `argv_mode`: 0 off, 1 stop-and-decide, 2 report only.
    pub(crate) fn set_argv_mode(&mut self, mode: u32) -> Result<()> {
        let mut m: Array<_, u32> = map_mut(&mut self._ebpf, "argv_mode")?;
        m.set(0, mode, 0).map_err(|e| bpf_err("set argv_mode", chain(&e)))
    }

    /// The open-flags source for the fanotify fallback.
    pub(crate) fn open_flags(&self) -> Arc<MapFlags> {
        self.flags.clone()
    }
}

/// Ring-buffer record -> event, for the telemetry programs.
pub(crate) fn decode(sink: &Sink, r: &RawEvent) -> Option<corral_core::Event> {
    let what = match r.kind {
        abi::EV_EXEC_TRACE => {
            sink.procs.forget(r.pid);
            let plen = (r.data_aux as usize).min(r.data.len());
            let path = String::from_utf8_lossy(r.data.get(..plen)?)
                .trim_end_matches('\0')
                .to_string();
            let argv = split_argv(r.data.get(plen..)?);
            if let Some(g) = &sink.gate {
                g.handle(sink, r, &argv);
            }
            What::ExecTrace { path, argv }
        }
        abi::EV_FORK => What::Fork { child: r.aux },
        abi::EV_EXIT => {
            let st = r.aux as i32;
            let code = if st & 0x7f != 0 {
                128 + (st & 0x7f)
            } else {
                (st >> 8) & 0xff
            };
            What::Exit { code }
        }
        _ => return None,
    };
    let exited = matches!(what, What::Exit { .. });
    let ev = sink.event(r, what, None, Layer::Tracepoint);
    if exited {
        // After building the event: the pid may be reused from now on.
        sink.procs.forget(r.pid);
    }
    Some(ev)
}

/// NUL-separated arguments; empty arguments are kept, the final NUL is not
/// an argument.
fn split_argv(b: &[u8]) -> Vec<String> {
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    if b.is_empty() {
        return Vec::new();
    }
    b.split(|c| *c == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn argv_keeps_empty_arguments() {
        assert_eq!(super::split_argv(b"a\0\0b\0"), vec!["a", "", "b"]);
        assert!(super::split_argv(b"").is_empty());
    }
}
