//! The few libc functions std does not wrap, declared by hand so that
//! corral-init keeps no dependencies (corral-runtime's build script compiles
//! this crate alone with rustc). Every `unsafe` block passes arguments that
//! stay valid for the duration of the call (owned buffers, live file
//! descriptors, NUL-terminated strings); no pointer outlives the call.
//!
//! Declarations follow glibc on Linux x86_64: `pid_t` is `i32`, `sigset_t`
//! is 1024 bits.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_ulong, c_void, CStr};
use std::io;

pub const SIGHUP: c_int = 1;
pub const SIGINT: c_int = 2;
pub const SIGKILL: c_int = 9;
pub const SIGPIPE: c_int = 13;
pub const SIGTERM: c_int = 15;
pub const SIGCHLD: c_int = 17;
const SIGSTOP: c_int = 19;
/// Signals are numbered 1 to 64 on Linux.
const LAST_SIGNAL: c_int = 64;

const SIG_SETMASK: c_int = 2;
const SIG_DFL: usize = 0;
const SIG_ERR: usize = usize::MAX;
const WNOHANG: c_int = 1;
const MSG_NOSIGNAL: c_int = 0x4000;
const PR_SET_CHILD_SUBREAPER: c_int = 36;
const PR_SET_NO_NEW_PRIVS: c_int = 38;
const PR_SET_PDEATHSIG: c_int = 1;
const ECHILD: i32 = 10;
const ESRCH: i32 = 3;

/// glibc's `sigset_t`.
#[repr(C)]
pub struct SigSet([c_ulong; 16]);

extern "C" {
    fn prctl(option: c_int, ...) -> c_int;
    fn setpgid(pid: i32, pgid: i32) -> c_int;
    fn tcsetpgrp(fd: c_int, pgrp: i32) -> c_int;
    fn getpid() -> i32;
    fn getppid() -> i32;
    fn waitpid(pid: i32, status: *mut c_int, options: c_int) -> i32;
    fn kill(pid: i32, sig: c_int) -> c_int;
    fn pthread_sigmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigfillset(set: *mut SigSet) -> c_int;
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, sig: c_int) -> c_int;
    fn sigwaitinfo(set: *const SigSet, info: *mut c_void) -> c_int;
    fn signal(sig: c_int, handler: usize) -> usize;
    fn fork() -> i32;
    fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int;
    fn isatty(fd: c_int) -> c_int;
    fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize;
    fn _exit(status: c_int) -> !;
}

fn check(ret: c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl SigSet {
    /// Every signal (glibc leaves out the two it reserves for itself).
    pub fn full() -> SigSet {
        let mut set = SigSet([0; 16]);
        // SAFETY: `set` is a live, correctly sized sigset_t.
        unsafe { sigfillset(&mut set) };
        set
    }

    /// No signal.
    pub fn empty() -> SigSet {
        let mut set = SigSet([0; 16]);
        // SAFETY: `set` is a live, correctly sized sigset_t.
        unsafe { sigemptyset(&mut set) };
        set
    }

    /// Just these signals (invalid numbers are left out).
    pub fn of(sigs: &[c_int]) -> SigSet {
        let mut set = SigSet::empty();
        for &sig in sigs {
            // SAFETY: `set` is a live, correctly sized sigset_t; an invalid
            // number fails with EINVAL and changes nothing.
            unsafe { sigaddset(&mut set, sig) };
        }
        set
    }
}

/// Replaces the calling thread's signal mask; threads spawned afterwards
/// inherit it.
pub fn set_signal_mask(set: &SigSet) -> io::Result<()> {
    // SAFETY: `set` is a live sigset_t; the old mask is not requested.
    let ret = unsafe { pthread_sigmask(SIG_SETMASK, set, std::ptr::null_mut()) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// Waits for one of the (blocked) signals in `set` and returns its number.
pub fn wait_signal(set: &SigSet) -> io::Result<c_int> {
    // SAFETY: `set` is a live sigset_t; a null `info` is allowed.
    let sig = unsafe { sigwaitinfo(set, std::ptr::null_mut()) };
    if sig == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sig)
    }
}

/// Sets the disposition of `sig` back to the default action.
pub fn default_disposition(sig: c_int) -> io::Result<()> {
    // SAFETY: SIG_DFL installs no handler code; any signal number is
    // accepted (invalid ones fail with EINVAL).
    if unsafe { signal(sig, SIG_DFL) } == SIG_ERR {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: exec can never grant privileges again.
pub fn set_no_new_privs() -> io::Result<()> {
    let one: c_ulong = 1;
    let zero: c_ulong = 0;
    // SAFETY: this option reads only its integer arguments.
    check(unsafe { prctl(PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) })
}

/// `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const crate::seccomp::Insn,
}

const PR_SET_SECCOMP: c_int = 22;
const SECCOMP_MODE_FILTER: c_ulong = 2;

/// `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog)`: installs a classic
/// BPF seccomp filter on this thread and what it forks (no_new_privs must
/// be set). The kernel copies the program, so `prog` need not outlive it.
pub fn install_seccomp_filter(prog: &[crate::seccomp::Insn]) -> io::Result<()> {
    let len = u16::try_from(prog.len()).map_err(|_| io::Error::other("seccomp program too long"))?;
    let fprog = SockFprog {
        len,
        filter: prog.as_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, a live slice of `len` instructions
    // laid out as `struct sock_filter` (repr(C)); both outlive the call,
    // and the kernel copies the program before returning.
    check(unsafe { prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog as *const SockFprog) })
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: orphaned descendants are reparented
/// to us rather than to the system's init.
pub fn set_child_subreaper() -> io::Result<()> {
    let one: c_ulong = 1;
    // SAFETY: this option reads only its integer argument.
    check(unsafe { prctl(PR_SET_CHILD_SUBREAPER, one) })
}

/// Our own pid, as seen in our pid namespace.
pub fn own_pid() -> i32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { getpid() }
}

/// `setpgid(pid, pgid)`.
pub fn set_process_group(pid: i32, pgid: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { setpgid(pid, pgid) })
}

/// `kill(pid, sig)`; a negative pid names a process group, -1 everyone.
pub fn send_signal(pid: i32, sig: c_int) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { kill(pid, sig) })
}

/// One `waitpid(-1, WNOHANG)`: `Some((pid, status))` for a reaped child,
/// `None` when no child has changed state (or none is left).
pub fn reap_any() -> io::Result<Option<(i32, c_int)>> {
    let mut status: c_int = 0;
    // SAFETY: `status` is a live c_int the call writes to.
    let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
    match pid {
        0 => Ok(None),
        -1 => {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(ECHILD) {
                Ok(None)
            } else {
                Err(err)
            }
        }
        pid => Ok(Some((pid, status))),
    }
}

/// Sends all of `buf` on the socket `fd` without raising SIGPIPE if the
/// peer is gone (a blocked SIGPIPE would otherwise be taken for a signal to
/// forward).
pub fn send_all(fd: c_int, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a live slice of `buf.len()` bytes; `fd` is owned
        // by the caller for the duration of the call.
        let n = unsafe { send(fd, buf.as_ptr().cast(), buf.len(), MSG_NOSIGNAL) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        buf = buf.get(n.unsigned_abs()..).unwrap_or_default();
    }
    Ok(())
}

/// Prepares the child that `cmd` will start: an empty signal mask (std
/// keeps the parent's, and the relay blocks the signals it forwards), and
/// SIGKILL when the calling thread (which must live as long as the child
/// should) ends; the child fails to start if that already happened.
pub fn prepare_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = own_pid();
    let empty = SigSet::empty();
    let hook = move || {
        // SAFETY: `empty` is a live sigset_t owned by the closure; the old
        // mask is not requested.
        let ret = unsafe { pthread_sigmask(SIG_SETMASK, &empty, std::ptr::null_mut()) };
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        let sig = SIGKILL as c_ulong;
        // SAFETY: this option reads only its integer argument.
        check(unsafe { prctl(PR_SET_PDEATHSIG, sig) })?;
        // SAFETY: getppid has no arguments and cannot fail.
        if unsafe { getppid() } != parent {
            // The relay is gone already: ESRCH (no allocation after fork).
            return Err(io::Error::from_raw_os_error(ESRCH));
        }
        Ok(())
    };
    // SAFETY: between fork and exec the hook makes only async-signal-safe
    // calls (pthread_sigmask, prctl, getppid) and allocates nothing.
    unsafe { cmd.pre_exec(hook) };
}

/// Ends the process at once, without running exit handlers.
pub fn exit_now(code: c_int) -> ! {
    // SAFETY: _exit takes an integer and does not return.
    unsafe { _exit(code) }
}

/// Forks; the child puts itself in a new process group, takes the
/// terminal's foreground if stdin is one, restores default signal
/// dispositions and an empty mask, and runs `argv` (searched in PATH).
/// If exec fails the child calls `on_exec_error` and `_exit`s with the code
/// it returns. Returns the child's pid in the parent.
///
/// Must be called while the process has a single thread (checked through
/// /proc when it is mounted): the child then owns a consistent copy of the
/// heap and may allocate before exec.
pub fn spawn(argv: &[&CStr], on_exec_error: impl FnOnce(io::Error) -> i32) -> io::Result<i32> {
    let file = argv
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        if tasks.count() > 1 {
            return Err(io::Error::other("fork with more than one thread"));
        }
    }
    let mut ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());

    // SAFETY: the process is single-threaded (checked above and arranged by
    // main.rs, which spawns its only other thread after this call), so the
    // child may run ordinary Rust code until exec.
    let pid = unsafe { fork() };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        // Also from the parent, so that the group exists before we could
        // signal it; fails harmlessly if the child already did it or exec'd.
        let _ = set_process_group(pid, pid);
        return Ok(pid);
    }

    // Child.
    let _ = set_process_group(0, 0);
    // SAFETY: integer argument only.
    if unsafe { isatty(0) } == 1 {
        // SIGTTOU is still blocked, so a background group may do this.
        // SAFETY: integer arguments only.
        unsafe { tcsetpgrp(0, getpid()) };
    }
    for sig in 1..=LAST_SIGNAL {
        if sig != SIGKILL && sig != SIGSTOP {
            // Fails (EINVAL) for the signals glibc reserves; nothing to undo.
            let _ = default_disposition(sig);
        }
    }
    let _ = set_signal_mask(&SigSet::empty());
    // SAFETY: `file` and every pointer in `ptrs` point into the `argv`
    // CStrs, alive until exec; `ptrs` ends with a null pointer.
    unsafe { execvp(file.as_ptr(), ptrs.as_ptr()) };
    let code = on_exec_error(io::Error::last_os_error());
    exit_now(code)
}
