//! System calls without a safe wrapper in std. Every `unsafe` block here
//! calls the kernel with arguments that are valid for the duration of the
//! call (owned buffers, live file descriptors); no pointer outlives it.
#![allow(unsafe_code)]

use std::io;

/// `errno` of the last failed libc call.
pub(crate) fn last_err() -> io::Error {
    io::Error::last_os_error()
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is open
/// as `fd`, by writing "0". Async-signal-safe: used between fork and exec.
pub(crate) fn join_cgroup_fd(fd: libc::c_int) -> io::Result<()> {
    let buf = b"0";
    // SAFETY: `buf` is a live 1-byte buffer; `fd` is owned by the caller.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n == 1 {
        Ok(())
    } else {
        Err(last_err())
    }
}

/// Installs `f` to run in the child between fork and exec.
pub(crate) fn pre_exec(
    cmd: &mut std::process::Command,
    f: impl FnMut() -> io::Result<()> + Send + Sync + 'static,
) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closures passed here only make async-signal-safe calls
    // (write(2), prctl(2)) and do not allocate.
    unsafe {
        cmd.pre_exec(f);
    }
}

/// Asks the kernel to send SIGKILL to this process when its parent dies.
pub(crate) fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(last_err())
    }
}
