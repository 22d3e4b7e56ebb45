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

/// Waits until every BPF program that may have started before this call
/// has finished (an RCU grace period).
///
/// How: updating an element of an `ARRAY_OF_MAPS` makes the kernel call
/// `synchronize_rcu()` before the syscall returns (`maybe_wait_bpf_programs`
/// in kernel/bpf/syscall.c), precisely so that userspace knows no program
/// still uses the old value. Non-sleepable programs (all of corral's) run
/// inside RCU read-side sections, so after this returns none of them can
/// still hold a table generation it read before the call.
pub(crate) struct RcuBarrier {
    outer: std::os::fd::OwnedFd,
    inner: std::os::fd::OwnedFd,
}

#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapElem {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised repr(C) struct whose
    // layout is a prefix of `union bpf_attr` for `cmd`; the kernel reads at
    // most size_of::<T>() bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(last_err())
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_long) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: `fd` was just returned by the kernel for this process and is
    // owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

impl RcuBarrier {
    /// Creates the two tiny maps the barrier updates.
    pub(crate) fn new() -> io::Result<RcuBarrier> {
        use std::os::fd::AsRawFd;
        let mut a = MapCreate {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            ..Default::default()
        };
        let inner = owned(bpf(BPF_MAP_CREATE, &mut a)?)?;
        let mut o = MapCreate {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd: inner.as_raw_fd() as u32,
            ..Default::default()
        };
        let outer = owned(bpf(BPF_MAP_CREATE, &mut o)?)?;
        Ok(RcuBarrier { outer, inner })
    }

    /// Returns after an RCU grace period.
    pub(crate) fn wait(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let key: u32 = 0;
        let val: u32 = self.inner.as_raw_fd() as u32;
        let mut e = MapElem {
            map_fd: self.outer.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: &val as *const u32 as u64,
            ..Default::default()
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut e).map(|_| ())
    }
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live timespec the kernel fills.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Registers `inner`'s fd with the tokio reactor for readability.
pub(crate) fn async_fd<T: std::os::fd::AsRawFd>(inner: T) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: the fd belongs to `inner`, which the AsyncFd owns and drops
    // only after deregistering; no one else closes it meanwhile.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Sends `sig` to process `pid` (errors ignored: the process may be gone).
pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) with integer arguments; pid > 0 names one process.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A forked watchdog that kills the session's cgroup when the supervisor
/// dies, while still holding every BPF link the supervisor held (it
/// inherits them at fork), so enforcement never lapses before the session's
/// processes are dead.
pub(crate) struct Reaper {
    pid: libc::pid_t,
    /// Write end of the pipe: closed by the supervisor's death (kill the
    /// session) or written by [`Reaper::dismiss`] (exit quietly).
    pipe_w: libc::c_int,
}

impl Reaper {
    /// Forks the watchdog. `kill_fd`: `cgroup.kill` (or `cgroup.procs` of a
    /// kernel without it: then the watchdog cannot kill and says so by
    /// returning an error here) opened for writing; `events_fd`:
    /// `cgroup.events` opened for reading, polled until the cgroup is empty.
    pub(crate) fn spawn(kill_fd: libc::c_int, events_fd: libc::c_int) -> io::Result<Reaper> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills the two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(last_err());
        }
        let (r, w) = (fds[0], fds[1]);
        // SAFETY: after fork the child only makes async-signal-safe calls
        // (close, poll, read, write, pread, _exit) on descriptors it owns,
        // and never returns into Rust code: it ends with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            // SAFETY: closing our own fresh descriptors.
            unsafe {
                libc::close(r);
                libc::close(w);
            }
            return Err(last_err());
        }
        if pid == 0 {
            // SAFETY: see above; child side.
            unsafe { reaper_main(r, w, kill_fd, events_fd) }
        }
        // SAFETY: the parent keeps only the write end.
        unsafe {
            libc::close(r);
        }
        Ok(Reaper { pid, pipe_w: w })
    }

    /// Normal shutdown: the watchdog exits without killing anything.
    pub(crate) fn dismiss(&mut self) {
        if let Some(pid) = self.tell_to_exit() {
            reap(pid);
        }
    }

    /// Writes the "exit quietly" byte and closes the pipe; the watchdog's
    /// pid, unless it was already dismissed.
    fn tell_to_exit(&mut self) -> Option<libc::pid_t> {
        if self.pipe_w < 0 {
            return None;
        }
        let b = [1u8];
        // SAFETY: writing one byte to our own pipe and closing it.
        unsafe {
            libc::write(self.pipe_w, b.as_ptr().cast(), 1);
            libc::close(self.pipe_w);
        }
        self.pipe_w = -1;
        Some(self.pid)
    }
}

impl Reaper {
    /// A placeholder that watches nothing (dismissing it does nothing).
    pub(crate) fn none() -> Reaper {
        Reaper { pid: 0, pipe_w: -1 }
    }

    /// Dismisses the watchdog without waiting for it: its exit releases
    /// the last references to the session's BPF links, and the kernel's
    /// teardown of tracepoint links (an RCU/SRCU grace period each) takes
    /// most of a second. A thread reaps it.
    pub(crate) fn dismiss_in_background(&mut self) {
        if let Some(pid) = self.tell_to_exit() {
            let _ = std::thread::Builder::new()
                .name("corral-reap".into())
                .spawn(move || reap(pid));
        }
    }
}

/// Waits for our own child `pid`.
fn reap(pid: libc::pid_t) {
    let mut st = 0;
    // SAFETY: reaping our own child; `st` is a live local.
    unsafe { libc::waitpid(pid, &mut st, 0) };
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.dismiss();
    }
}

/// The watchdog's body (child of fork; async-signal-safe calls only).
unsafe fn reaper_main(r: libc::c_int, w: libc::c_int, kill_fd: libc::c_int, events_fd: libc::c_int) -> ! {
    // SAFETY (whole body): async-signal-safe libc calls on owned fds.
    unsafe {
        libc::close(w);
        // Keep only what the watchdog needs: its pipe, the two cgroup
        // files, and BPF objects (links keep the programs attached). Every
        // other inherited descriptor is closed, so that closing it in the
        // supervisor still means what its owner expects (e.g. a stop pipe).
        // Only the descriptors that are open, listed by getdents64 on
        // /proc/self/fd into a stack buffer (no allocation after fork):
        // walking every number up to RLIMIT_NOFILE took most of a second.
        let dir = libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir >= 0 {
            let mut buf = [0u8; 4096];
            let mut link = [0u8; 64];
            loop {
                let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
                if n <= 0 {
                    break;
                }
                let mut off = 0usize;
                while off + 19 < n as usize {
                    // struct linux_dirent64: ino u64, off i64, reclen u16,
                    // type u8, name (NUL-terminated).
                    let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                    if reclen == 0 {
                        break;
                    }
                    let name = &buf[off + 19..(off + reclen).min(n as usize)];
                    let mut fd: libc::c_int = 0;
                    let mut ok = false;
                    for &c in name {
                        if c == 0 {
                            break;
                        }
                        if !c.is_ascii_digit() {
                            ok = false;
                            break;
                        }
                        fd = fd.saturating_mul(10).saturating_add((c - b'0') as libc::c_int);
                        ok = true;
                    }
                    off += reclen;
                    if !ok || fd == dir || fd == r || fd == kill_fd || fd == events_fd {
                        continue;
                    }
                    let got =
                        libc::readlinkat(dir, name.as_ptr().cast(), link.as_mut_ptr().cast(), link.len());
                    if got >= 0 && link[..got as usize].starts_with(b"anon_inode:bpf") {
                        continue;
                    }
                    libc::close(fd);
                }
            }
            libc::close(dir);
        }
        let mut pfd = libc::pollfd {
            fd: r,
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            let n = libc::poll(&mut pfd, 1, -1);
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            break;
        }
        let mut b = [0u8; 1];
        let got = libc::read(r, b.as_mut_ptr().cast(), 1);
        if got == 1 {
            // Dismissed: the supervisor shut the session down itself.
            libc::_exit(0);
        }
        // EOF: the supervisor died. Kill the session, then hold the links
        // until the cgroup is empty (at most ~5 s).
        let one = b"1";
        libc::write(kill_fd, one.as_ptr().cast(), 1);
        let mut buf = [0u8; 256];
        for _ in 0..500 {
            let n = libc::pread(events_fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n > 0 {
                let s = &buf[..n as usize];
                if s.windows(11).any(|x| x == b"populated 0") {
                    break;
                }
            }
            let mut p = libc::pollfd {
                fd: events_fd,
                events: libc::POLLPRI,
                revents: 0,
            };
            libc::poll(&mut p, 1, 10);
        }
        libc::_exit(0)
    }
}
