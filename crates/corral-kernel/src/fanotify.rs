//! fanotify permission events: the file-open and exec fallback where BPF
//! LSM cannot be loaded (DESIGN.md §3).
//!
//! One fanotify group per session (`FAN_CLASS_CONTENT`, `FAN_REPORT_TID`
//! when the kernel accepts it with that class, unlimited queue and marks)
//! marks each configured mount (`FAN_MARK_MOUNT`) for `FAN_OPEN_PERM |
//! FAN_OPEN_EXEC_PERM` (directories included, `FAN_ONDIR`). A dedicated
//! thread reads the events and answers every one of them; decisions never
//! wait on anything but the kernel and `/proc`.
//!
//! # One decision
//! 1. The thread that opens is identified by the event's pid (its tid with
//!    `FAN_REPORT_TID`). Its cgroup (`/proc/<tid>/cgroup`) is compared with
//!    the session's: a process outside the session cgroup and its
//!    descendants (created before or after [`Fanotify::start`]) is answered
//!    `FAN_ALLOW` at once and produces no event.
//! 2. A thread that has vanished (no `/proc/<tid>`) is allowed. This is
//!    safe: a thread waiting on a permission event cannot return from its
//!    `open`/`execve` until it is answered; the wait is killable, and a
//!    killed thread abandons the syscall, so the answer reaches no code.
//!    A reused tid is harmless too: a newcomer outside the session is
//!    allowed, one inside is decided by the policy. An event pid of 0 (the
//!    thread is not visible in our pid namespace) is allowed for the same
//!    reason a foreign process is: session processes are always in our pid
//!    namespace or beneath it, so they are visible.
//! 3. The object is the one actually opened: the event carries an fd for
//!    it, and the path is `readlink /proc/self/fd/<fd>` (symlinks, `..`,
//!    `/proc/self/root/...`, `/proc/self/fd/N` and `openat` on directory
//!    fds all resolve to the same canonical path); `fstat` on that fd gives
//!    type, dev, ino, nlink and size. A file unlinked since it was opened
//!    (nlink 0, `" (deleted)"` suffix) is decided on the path it had.
//! 4. `FAN_OPEN_EXEC_PERM`: decided by the exec table alone, plus the exec
//!    identity (below). A `userspace` exec verdict (the answer depends on
//!    argv) is answered ALLOW here; its event carries `decision: None` and
//!    the possibly-determining policies: the userspace layer, which sees
//!    argv, makes and records the real decision.
//! 5. The kernel follows an allowed `FAN_OPEN_EXEC_PERM` with a
//!    `FAN_OPEN_PERM` for the same file from the same thread (two events
//!    per exec on 6.x). That second event is part of the exec: it is
//!    allowed without a separate event (paired by tid, dev and ino; an
//!    unmatched pairing is dropped by the thread's next event, by
//!    [`Fanotify::swap`], or after 5 s).
//! 6. Any other `FAN_OPEN_PERM` is a regular open, decided by
//!    [`OpenFlags::access_of`]: `Read` by the read table, `Write` by the
//!    write table; unknown (`None`, also `Some(Exec)`) by the stricter
//!    rule: allowed only if both tables allow, denied naming every denying
//!    policy, and reported as `Write`. A directory can only be opened for
//!    reading (a writable open of one fails with `EISDIR` before fanotify
//!    is asked), so directory opens are always `Read`. A file table never
//!    yields `userspace`; if it did, it would deny (fail closed).
//! 7. Loader processes: when `/proc/<pid>/exe` is a dynamic loader
//!    (`ld-linux*.so*`, `ld-musl*`, `ld.so`, `ld64.so*`), the process is
//!    running the loader directly (`ld.so /path/bin`), and every open of a
//!    non-directory it makes is decided by the file table *and* the exec
//!    table with the exec identity; a `userspace` exec verdict denies there
//!    (argv is not known). Cost: such a process can only load (or read) files that
//!    `ProcessExec` permits — including its libraries, when the library
//!    directories are on a marked mount.
//!
//! # Exec identity
//! [`FileTables::from_plan`] records, for every exact `File` entry of the
//! exec table whose verdict is deny and which exists on disk (symlinks
//! followed), its (dev, ino), size and SHA-256. An exec (or loader open)
//! that the path allows is denied, naming the same policies, when the file
//! is that inode with that size (a hardlink or rename) or has the same
//! size and SHA-256 (a copy). The hash is read from the event's fd with
//! `pread`, never by path, and only when the size matches a denied binary;
//! a file whose content cannot be read then is denied (fail closed). The
//! check at exec time is race-free: after the permission event the kernel
//! refuses the exec (`ETXTBSY`) if the file is open for writing.
//!
//! # Caches, why they are sound, what they cost
//! * Userspace cache: (dev, ino, size, canonical path, kind) → outcome,
//!   where kind is exec / read / write / unknown, each with or without
//!   loader. The verdict is a function of the tables, the path, the
//!   object's type (fixed per inode) and the kind; the identity part is a
//!   function of (dev, ino, size) except when the size equals a denied
//!   binary's, and those outcomes are never cached (their content may
//!   change without a change of key). [`Fanotify::swap`] clears it under
//!   the same lock the decisions take. It saves the table lookups and the
//!   hashing, not the `/proc` reads (cgroup, status, exe, readlink, fstat
//!   are done for every event: they can change between two opens of the
//!   same file). Bounded to 16384 entries (cleared when full).
//! * Kernel ignore marks: an inode mark with `FAN_MARK_IGNORED_MASK`
//!   (`FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM`) so the kernel stops asking about
//!   that inode, for every process. It is placed only when the answer for
//!   that inode is ALLOW for every question any process could ask: regular
//!   file, nlink 1, read allowed, write allowed (`FAN_OPEN_PERM` does not
//!   carry the access mode), exec allowed by the path (not `userspace`),
//!   not a denied identity and no denied binary has its size (a loader
//!   process decides plain opens with the exec table, so a file-only mark
//!   would let `ld.so FILE` through). Processes outside the session are
//!   always allowed, so an allow-for-everything mark never changes their
//!   answer. The mark is the legacy ignored mask without
//!   `FAN_MARK_IGNORED_SURV_MODIFY`: any write or truncate to the file
//!   removes it, and the next open is asked again (so the size condition
//!   cannot be defeated: a size change is a modification). Residual: a
//!   rename or a new hardlink of a marked inode into a denied path is not
//!   an open and is not seen; opens through the new name stay unasked. That
//!   grants nothing beyond what the session already had: at the time of
//!   the mark the session could open that inode read-write and keep the fd
//!   (fanotify never revokes fds), and the rename itself is ungoverned.
//!   [`Fanotify::swap`] removes every inode mark (`FAN_MARK_FLUSH`) before
//!   the new tables decide, under the decision lock, so no mark from the
//!   old tables survives. Cost: opens of a marked inode produce no events
//!   (the audit trail shows its first open after each swap or write, not
//!   every one). With typical policies (system binaries executable but not
//!   writable, workspaces writable but not executable) few files qualify.
//!   There is no exec-only mark: the exec's own `FAN_OPEN_PERM` (item 5)
//!   would then arrive unpaired and be judged as a plain open.
//!
//! # No self-deadlock
//! fanotify reports opens by the listener's own process as well (only the
//! fds it receives from events are exempt). The event thread opens nothing
//! on a marked mount: it reads `/proc` (a mount that [`Fanotify::start`]
//! refuses to mark), uses `readlink` and `fstat` (no open), hashes through
//! the event fd with `pread`, and never blocks on the event channel
//! (`try_send`; a full channel counts [`Fanotify::lost`]). Other threads of
//! this process may open files on marked mounts: the event thread answers
//! them (they are outside the session), provided they do not hold the
//! lock that [`Fanotify::swap`] takes — `swap` opens nothing while holding
//! it. Call [`FileTables::from_plan`] (which reads denied binaries by path)
//! from any thread but the event thread, which is private to this module.
//!
//! # Known limits
//! * `FAN_MARK_MOUNT` sees opens through the marked mounts only: a mount
//!   made later is a different mount and is not asked about. Measured on
//!   6.18: a session process that runs `unshare -m` (the copies of the
//!   marked mounts in its new namespace) or bind-mounts a marked directory
//!   elsewhere reads a denied file. Sessions must not be able to create
//!   mount namespaces or mounts (no `CAP_SYS_ADMIN`, and no user
//!   namespaces: `unshare -Urm` needs neither). `FAN_MARK_FILESYSTEM`
//!   would see those opens, but under the alias path of a bind mount.
//! * The listener's fd for a device node is a real open of the device.
//!   Mounts with device nodes should not be marked.
//! * With the ELF interpreter on a marked mount, the kernel's open of it
//!   during an exec is a `FAN_OPEN_EXEC_PERM` too: `ProcessExec` must
//!   permit the loader (BPF LSM's `bprm_check_security` does not see it).

use crate::cgroup;
use crate::{Error, Result};
use corral_core::{Access, Decision, Event, Layer, Mode, Proc, SessionId, What};
use corral_policy::plan::{PathTable, Plan, Verdict};
use nix::errno::Errno;
use nix::sys::fanotify::{
    EventFFlags, Fanotify as Group, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags, MaskFlags,
    Response,
};
use nix::sys::stat::{fstat, FileStat, SFlag};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

/// A binary the exec table denies by exact path, identified beyond it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    path: String,
    dev: u64,
    ino: u64,
    size: u64,
    sha256: [u8; 32],
    /// The determining policies of the path's deny verdict.
    by: Vec<usize>,
}

/// The file-open and exec tables of one principal, with the policy ids
/// their verdicts refer to and the identities of the binaries the exec
/// table denies by exact path.
#[derive(Debug, Clone)]
pub struct FileTables {
    read: PathTable,
    write: PathTable,
    exec: PathTable,
    ids: Vec<String>,
    denied: Vec<Identity>,
    denied_sizes: HashSet<u64>,
}

impl FileTables {
    /// Takes `principal`'s tables from `plan` and records the identity
    /// (dev, ino, size, SHA-256) of every existing file the exec table
    /// denies by exact path. Reads those files by path: do not call it on a
    /// thread that answers fanotify events for a mount they are on.
    pub fn from_plan(plan: &Plan, principal: &str) -> Result<FileTables> {
        let p = plan
            .for_principal(principal)
            .ok_or_else(|| Error::Plan(format!("no file tables for principal {principal:?}")))?;
        let mut denied = Vec::new();
        let mut paths: Vec<(&String, &Vec<usize>)> = p
            .exec
            .entries
            .iter()
            .filter_map(|(path, e)| match &e.file {
                Some(Verdict::Deny { by }) => Some((path, by)),
                _ => None,
            })
            .collect();
        paths.sort();
        for (path, by) in paths {
            if let Some(id) = identity_of(path, by)? {
                denied.push(id);
            }
        }
        let denied_sizes = denied.iter().map(|d| d.size).collect();
        Ok(FileTables {
            read: p.file_read.clone(),
            write: p.file_write.clone(),
            exec: p.exec.clone(),
            ids: plan.policies.iter().map(|r| r.id.clone()).collect(),
            denied,
            denied_sizes,
        })
    }

    /// Paths of the denied binaries whose identity was recorded.
    pub fn denied_identities(&self) -> Vec<&str> {
        self.denied.iter().map(|d| d.path.as_str()).collect()
    }

    fn ids(&self, idx: &[usize]) -> Vec<String> {
        idx.iter().filter_map(|i| self.ids.get(*i).cloned()).collect()
    }

    /// Exec decision for an object: path verdict, then identity.
    fn exec_decision(&self, obj: &Obj, content: &mut Content<'_>) -> Outcome {
        match self.exec.lookup(&obj.path, obj.is_dir) {
            Verdict::Deny { by } => Outcome::deny(by.clone()),
            v => match self.identity_match(obj, content) {
                Some(by) => Outcome::deny(by),
                None => match v {
                    Verdict::Allow { by } => Outcome::allow(by.clone()),
                    Verdict::Userspace { policies } => Outcome::deferred(policies.clone()),
                    Verdict::Deny { by } => Outcome::deny(by.clone()),
                },
            },
        }
    }

    /// Whether `obj` is a denied binary under another name or a copy of
    /// one: the determining policies of that binary's deny.
    fn identity_match(&self, obj: &Obj, content: &mut Content<'_>) -> Option<Vec<usize>> {
        if !obj.is_reg || !self.denied_sizes.contains(&obj.size) {
            return None;
        }
        if let Some(d) = self
            .denied
            .iter()
            .find(|d| d.dev == obj.dev && d.ino == obj.ino && d.size == obj.size)
        {
            return Some(d.by.clone());
        }
        match content.sha256() {
            Some(h) => self
                .denied
                .iter()
                .find(|d| d.size == obj.size && d.sha256 == h)
                .map(|d| d.by.clone()),
            // Unreadable with a denied binary's size: fail closed.
            None => self
                .denied
                .iter()
                .find(|d| d.size == obj.size)
                .map(|d| d.by.clone()),
        }
    }

    /// Regular-open decision by access mode (`None`: unknown, stricter).
    fn open_decision(&self, obj: &Obj, access: Option<Access>) -> Outcome {
        let one = |t: &PathTable| match t.lookup(&obj.path, obj.is_dir) {
            Verdict::Allow { by } => Outcome::allow(by.clone()),
            // A file table never defers; if it did, fail closed.
            Verdict::Deny { by } | Verdict::Userspace { policies: by } => Outcome::deny(by.clone()),
        };
        match access {
            Some(Access::Read) => one(&self.read),
            Some(Access::Write) => one(&self.write),
            None | Some(Access::Exec) => both(one(&self.read), one(&self.write)),
        }
    }

    /// Whether an inode-wide ignore mark is sound for `obj` (module docs).
    fn ignorable(&self, obj: &Obj) -> bool {
        obj.is_reg
            && obj.nlink == 1
            && !self.denied_sizes.contains(&obj.size)
            && matches!(self.read.lookup(&obj.path, false), Verdict::Allow { .. })
            && matches!(self.write.lookup(&obj.path, false), Verdict::Allow { .. })
            && matches!(self.exec.lookup(&obj.path, false), Verdict::Allow { .. })
    }
}

fn identity_of(path: &str, by: &[usize]) -> Result<Option<Identity>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Ok(None),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
        Err(e) => return Err(Error::io(format!("exec identity: stat {path}"), e)),
    };
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(format!("exec identity: open {path}"), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(format!("exec identity: read {path}"), e))?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
    Ok(Some(Identity {
        path: path.to_string(),
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        sha256: h.finalize().into(),
        by: by.to_vec(),
    }))
}

/// How a thread's in-flight open was requested (`O_RDONLY` → `Read`;
/// `O_WRONLY`, `O_RDWR`, `O_CREAT`, `O_TRUNC`, `O_APPEND` → `Write`).
/// fanotify does not say; the session supplies it (e.g. from a tracepoint
/// on the open syscalls). Called on the event thread while the opener
/// waits: it must not block and must not open files on marked mounts.
pub trait OpenFlags: Send + Sync {
    /// The access mode of thread `tid` (of process `tgid`)'s open in
    /// progress; `None` when unknown (decided by the stricter rule).
    fn access_of(&self, tgid: u32, tid: u32) -> Option<Access>;
}

/// Knows nothing: every regular open is decided by the stricter rule (read
/// and write must both be allowed).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoOpenFlags;

impl OpenFlags for NoOpenFlags {
    fn access_of(&self, _tgid: u32, _tid: u32) -> Option<Access> {
        None
    }
}

/// What a fanotify fallback governs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Session id, copied into every event.
    pub session: SessionId,
    /// The session's principal (agent name), copied into every event.
    pub principal: String,
    /// The session cgroup as `/proc/<pid>/cgroup` shows it
    /// ([`cgroup::Cgroup::rel`]); its descendants are governed too.
    pub cgroup_rel: String,
    /// Paths on the mounts to mark (`FAN_MARK_MOUNT`: the whole mount that
    /// contains each path).
    pub mounts: Vec<PathBuf>,
    /// Enforce, or shadow (allow everything, report `WouldDeny`).
    pub mode: Mode,
}

/// A running fanotify fallback: one group, one event thread.
pub struct Fanotify {
    shared: Arc<Shared>,
    stop_w: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Fanotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanotify")
            .field("cgroup", &self.shared.cfg.cgroup_rel)
            .field("mounts", &self.shared.cfg.mounts)
            .field("report_tid", &self.shared.report_tid)
            .finish()
    }
}

struct Shared {
    group: Group,
    cfg: Config,
    report_tid: bool,
    flags: Arc<dyn OpenFlags>,
    events: Sender<Event>,
    state: Mutex<State>,
    lost: AtomicU64,
    decisions: AtomicU64,
    /// Shadow mode, switchable while running (starts as `cfg.mode`).
    shadow: std::sync::atomic::AtomicBool,
}

struct State {
    tables: FileTables,
    cache: HashMap<CacheKey, Outcome>,
    /// tid → (dev, ino, when) of an allowed exec whose `FAN_OPEN_PERM` is due.
    pending_exec: HashMap<u32, (u64, u64, Instant)>,
}

const CACHE_MAX: usize = 16384;
const PENDING_MAX_AGE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    dev: u64,
    ino: u64,
    size: u64,
    path: String,
    kind: u8,
}

/// The verdict of one decision, with the policies that determine it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    /// `Some(true)` allow, `Some(false)` deny, `None` deferred (argv).
    allow: Option<bool>,
    by: Vec<usize>,
}

impl Outcome {
    fn allow(by: Vec<usize>) -> Outcome {
        Outcome {
            allow: Some(true),
            by,
        }
    }
    fn deny(by: Vec<usize>) -> Outcome {
        Outcome {
            allow: Some(false),
            by,
        }
    }
    fn deferred(by: Vec<usize>) -> Outcome {
        Outcome { allow: None, by }
    }
    fn denied(&self) -> bool {
        self.allow == Some(false)
    }
}

/// Both must allow; a deny names every denying policy, an allow every permit.
fn both(a: Outcome, b: Outcome) -> Outcome {
    let merge = |x: Vec<usize>, y: Vec<usize>| {
        let mut v: Vec<usize> = x.into_iter().chain(y).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    match (a.denied(), b.denied()) {
        (false, false) => Outcome {
            allow: if a.allow.is_none() || b.allow.is_none() {
                None
            } else {
                Some(true)
            },
            by: merge(a.by, b.by),
        },
        (true, false) => a,
        (false, true) => b,
        (true, true) => Outcome::deny(merge(a.by, b.by)),
    }
}

/// The object an event is about.
#[derive(Debug, Clone)]
struct Obj {
    path: String,
    is_dir: bool,
    is_reg: bool,
    dev: u64,
    ino: u64,
    nlink: u64,
    size: u64,
}

/// Lazily hashed content of the event's fd.
struct Content<'a> {
    fd: BorrowedFd<'a>,
    size: u64,
    hash: Option<Option<[u8; 32]>>,
    read: bool,
}

impl<'a> Content<'a> {
    fn new(fd: BorrowedFd<'a>, size: u64) -> Content<'a> {
        Content {
            fd,
            size,
            hash: None,
            read: false,
        }
    }

    fn sha256(&mut self) -> Option<[u8; 32]> {
        if let Some(h) = self.hash {
            return h;
        }
        self.read = true;
        let h = pread_sha256(self.fd, self.size);
        self.hash = Some(h);
        h
    }
}

/// SHA-256 of exactly `size` bytes read with `pread` (no open, no seek).
fn pread_sha256(fd: BorrowedFd<'_>, size: u64) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut off: u64 = 0;
    while off < size {
        let want = usize::try_from((size - off).min(buf.len() as u64)).ok()?;
        let chunk = buf.get_mut(..want)?;
        let n = loop {
            match nix::sys::uio::pread(fd, chunk, i64::try_from(off).ok()?) {
                Err(Errno::EINTR) => continue,
                r => break r.ok()?,
            }
        };
        if n == 0 {
            // Shorter than fstat said: not the same bytes.
            return None;
        }
        h.update(chunk.get(..n)?);
        off += n as u64;
    }
    Some(h.finalize().into())
}

/// What `/proc` says about the thread that opens.
#[derive(Debug, Clone, Default)]
struct Who {
    tgid: u32,
    ppid: u32,
    comm: String,
    exe: Option<String>,
}

fn who(tid: u32) -> Who {
    let mut w = Who {
        tgid: tid,
        ..Who::default()
    };
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{tid}/status")) {
        for l in s.lines() {
            if let Some(v) = l.strip_prefix("Name:") {
                w.comm = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("Tgid:") {
                w.tgid = v.trim().parse().unwrap_or(tid);
            } else if let Some(v) = l.strip_prefix("PPid:") {
                w.ppid = v.trim().parse().unwrap_or(0);
            }
        }
    }
    w.exe = std::fs::read_link(format!("/proc/{}/exe", w.tgid))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    w
}

/// Whether an executable path is a dynamic loader run directly.
fn is_loader(exe: &str) -> bool {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    let name = name.strip_suffix(" (deleted)").unwrap_or(name);
    (name.starts_with("ld-linux") && name.contains(".so"))
        || name.starts_with("ld-musl")
        || name == "ld.so"
        || name.starts_with("ld64.so")
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            (t.tv_sec() as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(t.tv_nsec() as u64)
        })
        .unwrap_or(0)
}

fn os_err(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

impl Fanotify {
    /// Creates the group, marks every mount in `cfg.mounts`, and starts the
    /// event thread. Fails (and nothing stays marked) if the group cannot
    /// be created or any mount cannot be marked; the error names the mount
    /// and the errno.
    pub fn start(
        cfg: Config,
        tables: FileTables,
        flags: Arc<dyn OpenFlags>,
        events: Sender<Event>,
    ) -> Result<Fanotify> {
        if cfg.mounts.is_empty() {
            return Err(Error::Unsupported("fanotify: no mount to mark".into()));
        }
        let base = InitFlags::FAN_CLASS_CONTENT
            | InitFlags::FAN_CLOEXEC
            | InitFlags::FAN_NONBLOCK
            | InitFlags::FAN_UNLIMITED_QUEUE
            | InitFlags::FAN_UNLIMITED_MARKS;
        // O_NONBLOCK: the listener's fd for a FIFO must not wait for a writer.
        let ev_flags = EventFFlags::O_RDONLY
            | EventFFlags::O_LARGEFILE
            | EventFFlags::O_CLOEXEC
            | EventFFlags::O_NONBLOCK;
        let (group, report_tid) =
            match Group::init(base | InitFlags::FAN_REPORT_TID, ev_flags) {
                Ok(g) => (g, true),
                Err(Errno::EINVAL) => (
                    Group::init(base, ev_flags).map_err(|e| {
                        Error::io(
                            "fanotify_init(FAN_CLASS_CONTENT|FAN_UNLIMITED_QUEUE|FAN_UNLIMITED_MARKS)",
                            os_err(e),
                        )
                    })?,
                    false,
                ),
                Err(e) => return Err(Error::io(
                    "fanotify_init(FAN_CLASS_CONTENT|FAN_REPORT_TID|FAN_UNLIMITED_QUEUE|FAN_UNLIMITED_MARKS)",
                    os_err(e),
                )),
            };
        for m in &cfg.mounts {
            check_mount(m)?;
            group
                .mark(
                    MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_MOUNT,
                    MaskFlags::FAN_OPEN_PERM | MaskFlags::FAN_OPEN_EXEC_PERM | MaskFlags::FAN_ONDIR,
                    nix::fcntl::AT_FDCWD,
                    Some(m.as_path()),
                )
                .map_err(|e| {
                    Error::io(
                        format!(
                            "fanotify_mark(FAN_MARK_MOUNT, FAN_OPEN_PERM|FAN_OPEN_EXEC_PERM) on {}",
                            m.display()
                        ),
                        os_err(e),
                    )
                })?;
        }
        let (stop_r, stop_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::io("fanotify: pipe2 for the stop signal", os_err(e)))?;
        let cfg_shadow = cfg.mode == Mode::Shadow;
        let shared = Arc::new(Shared {
            group,
            cfg,
            report_tid,
            flags,
            events,
            state: Mutex::new(State {
                tables,
                cache: HashMap::new(),
                pending_exec: HashMap::new(),
            }),
            lost: AtomicU64::new(0),
            decisions: AtomicU64::new(0),
            shadow: std::sync::atomic::AtomicBool::new(cfg_shadow),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("corral-fanotify".into())
            .spawn(move || s.run(stop_r))
            .map_err(|e| Error::io("fanotify: spawn the event thread", e))?;
        Ok(Fanotify {
            shared,
            stop_w: Some(stop_w),
            thread: Some(thread),
        })
    }

    /// Switches between enforce and shadow; decisions made from now on
    /// follow the new mode.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.shadow.store(mode == Mode::Shadow, Ordering::SeqCst);
    }

    /// Replaces the tables atomically: every decision made after `swap`
    /// returns uses `tables`. Clears the userspace cache, the pending exec
    /// pairings and every kernel ignore mark (`FAN_MARK_FLUSH` of the
    /// group's inode marks; the mount marks stay) before the new tables can
    /// decide, under the lock every decision holds.
    pub fn swap(&self, tables: FileTables) {
        let mut st = self.shared.lock();
        st.tables = tables;
        st.cache.clear();
        st.pending_exec.clear();
        self.shared.flush_ignore_marks();
    }

    /// Events dropped because the channel was full.
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Decisions made for session processes (each produced one event,
    /// sent or counted in [`Fanotify::lost`]); the `FAN_OPEN_PERM` that
    /// is part of an exec is not counted separately.
    pub fn decisions(&self) -> u64 {
        self.shared.decisions.load(Ordering::Relaxed)
    }

    /// Whether events identify threads (`FAN_REPORT_TID` accepted).
    pub fn reports_tid(&self) -> bool {
        self.shared.report_tid
    }

    /// Stops the event thread and closes the group (the kernel allows any
    /// event still queued, and removes every mark).
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        // Closing the write end wakes the thread (POLLHUP).
        drop(self.stop_w.take());
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| Error::Unsupported("fanotify: the event thread panicked".into()))?;
        }
        Ok(())
    }
}

impl Drop for Fanotify {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Refuses a mount the event thread itself reads (procfs): marking it would
/// make the thread wait on its own permission events.
fn check_mount(m: &Path) -> Result<()> {
    let st = nix::sys::statfs::statfs(m)
        .map_err(|e| Error::io(format!("fanotify: statfs {}", m.display()), os_err(e)))?;
    if st.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(Error::Unsupported(format!(
            "fanotify: {} is procfs, which the event thread reads; it cannot be marked",
            m.display()
        )));
    }
    Ok(())
}

/// What kind of question an event asks (the cache key's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    Open { access: Option<Access>, loader: bool },
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Exec => 0,
            Kind::Open { access, loader } => {
                let a = match access {
                    Some(Access::Read) => 1,
                    Some(Access::Write) => 2,
                    None | Some(Access::Exec) => 3,
                };
                a | if loader { 4 } else { 0 }
            }
        }
    }
}

impl Shared {
    fn shadow(&self) -> bool {
        self.shadow.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flush_ignore_marks(&self) {
        // FAN_MARK_FLUSH without a mount/filesystem flag: inode marks only.
        // The dirfd is not used by the kernel for a flush.
        let _ = self.group.mark(
            MarkFlags::FAN_MARK_FLUSH,
            MaskFlags::empty(),
            self.group.as_fd(),
            None::<&Path>,
        );
    }

    fn run(&self, stop_r: OwnedFd) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        loop {
            let mut fds = [
                PollFd::new(self.group.as_fd(), PollFlags::POLLIN),
                PollFd::new(stop_r.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
            let stop = fds[1].revents().is_some_and(|r| !r.is_empty());
            // Drain what is queued, then stop if asked.
            loop {
                match self.group.read_events() {
                    Ok(evs) if evs.is_empty() => break,
                    Ok(evs) => {
                        for ev in &evs {
                            self.handle(ev);
                        }
                    }
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => continue,
                    // EMFILE/ENFILE/ENOMEM: the event stays queued; retry
                    // rather than leave openers waiting on a dead reader.
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        break;
                    }
                }
            }
            if stop {
                return;
            }
        }
    }

    fn handle(&self, ev: &FanotifyEvent) {
        let mask = ev.mask();
        let Some(fd) = ev.fd() else {
            if mask.contains(MaskFlags::FAN_Q_OVERFLOW) {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
            return;
        };
        if !mask.intersects(MaskFlags::FAN_OPEN_PERM | MaskFlags::FAN_OPEN_EXEC_PERM) {
            return;
        }
        let allow = if ev.check_version() {
            self.decide(ev.pid(), mask, fd)
        } else {
            true
        };
        let resp = if allow {
            Response::FAN_ALLOW
        } else {
            Response::FAN_DENY
        };
        // ENOENT: the opener was killed and the event withdrawn.
        let _ = self.group.write_response(FanotifyResponse::new(fd, resp));
    }

    /// Decides one permission event; returns whether to allow it.
    fn decide(&self, pid: i32, mask: MaskFlags, fd: BorrowedFd<'_>) -> bool {
        let ts_ns = monotonic_ns();
        let Ok(tid) = u32::try_from(pid) else { return true };
        if tid == 0 {
            return true;
        }
        match cgroup::of_pid(tid) {
            Some(cg) if cgroup::is_within(&cg, &self.cfg.cgroup_rel) => {}
            Some(_) => return true,
            // Vanished (module docs): its syscall cannot complete.
            None if !Path::new(&format!("/proc/{tid}")).exists() => return true,
            // Alive but its cgroup cannot be read: fail closed.
            None => return self.shadow(),
        }
        let who = who(tid);
        let Some(obj) = object(fd) else {
            // The object cannot be named: fail closed.
            return self.shadow();
        };
        let exec = mask.contains(MaskFlags::FAN_OPEN_EXEC_PERM);
        let key_tid = if self.report_tid { tid } else { who.tgid };

        let mut st = self.lock();
        let pending = st.pending_exec.remove(&key_tid);
        if !exec {
            if let Some((dev, ino, at)) = pending {
                if dev == obj.dev && ino == obj.ino && at.elapsed() < PENDING_MAX_AGE {
                    // The exec's own FAN_OPEN_PERM: decided with the exec.
                    return true;
                }
            }
        }
        let kind = if exec {
            Kind::Exec
        } else {
            // Directories cannot be loaded: the exec table does not judge them.
            let loader = !obj.is_dir && who.exe.as_deref().is_some_and(is_loader);
            let access = if obj.is_dir {
                Some(Access::Read)
            } else {
                self.flags.access_of(who.tgid, tid)
            };
            Kind::Open { access, loader }
        };
        let key = CacheKey {
            dev: obj.dev,
            ino: obj.ino,
            size: obj.size,
            path: obj.path.clone(),
            kind: kind.code(),
        };
        let outcome = match st.cache.get(&key) {
            Some(o) => o.clone(),
            None => {
                let mut content = Content::new(fd, obj.size);
                let o = match kind {
                    Kind::Exec => st.tables.exec_decision(&obj, &mut content),
                    Kind::Open { access, loader } => {
                        let o = st.tables.open_decision(&obj, access);
                        if loader {
                            let e = st.tables.exec_decision(&obj, &mut content);
                            // argv is unknown here: a deferred exec verdict denies.
                            let e = if e.allow.is_none() { Outcome::deny(e.by) } else { e };
                            both(o, e)
                        } else {
                            o
                        }
                    }
                };
                let identity_relevant = matches!(kind, Kind::Exec | Kind::Open { loader: true, .. })
                    && st.tables.denied_sizes.contains(&obj.size);
                if !identity_relevant && !content.read {
                    if st.cache.len() >= CACHE_MAX {
                        st.cache.clear();
                    }
                    st.cache.insert(key, o.clone());
                }
                o
            }
        };
        let shadow = self.shadow();
        let allow_now = !outcome.denied() || shadow;
        if exec && allow_now {
            st.pending_exec
                .insert(key_tid, (obj.dev, obj.ino, Instant::now()));
        }
        if outcome.allow == Some(true) && st.tables.ignorable(&obj) {
            // Under the lock: a concurrent swap() flushes after this mark,
            // never between the decision and the mark.
            let _ = self.group.mark(
                MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_IGNORED_MASK,
                MaskFlags::FAN_OPEN_PERM | MaskFlags::FAN_OPEN_EXEC_PERM,
                fd,
                None::<&Path>,
            );
        }
        let policies = st.tables.ids(&outcome.by);
        drop(st);

        let decision = match (outcome.allow, shadow) {
            (Some(true), _) => Some(Decision::Allow),
            (Some(false), false) => Some(Decision::Deny),
            (Some(false), true) => Some(Decision::WouldDeny),
            (None, _) => None,
        };
        let what = match kind {
            Kind::Exec => What::Exec {
                path: obj.path.clone(),
                argv: None,
            },
            Kind::Open { access, .. } => What::FileOpen {
                path: obj.path.clone(),
                access: match access {
                    Some(Access::Read) => Access::Read,
                    _ => Access::Write,
                },
            },
        };
        let event = Event {
            session: self.cfg.session,
            principal: self.cfg.principal.clone(),
            ts_ns,
            proc: Proc {
                pid: who.tgid,
                ppid: who.ppid,
                comm: who.comm,
                exe: who.exe,
            },
            what,
            decision,
            layer: Layer::Fanotify,
            policies,
            mcp_call: None,
        };
        self.decisions.fetch_add(1, Ordering::Relaxed);
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        allow_now
    }
}

/// Names and stats the object behind an event fd.
fn object(fd: BorrowedFd<'_>) -> Option<Obj> {
    let st: FileStat = fstat(fd).ok()?;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let mut path = link.to_string_lossy().into_owned();
    if st.st_nlink == 0 {
        if let Some(p) = path.strip_suffix(" (deleted)") {
            path = p.to_string();
        }
    }
    if !path.starts_with('/') {
        // Not a path (an anonymous inode): nothing a path table can name.
        return None;
    }
    let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    Some(Obj {
        path,
        is_dir: fmt == SFlag::S_IFDIR,
        is_reg: fmt == SFlag::S_IFREG,
        dev: st.st_dev,
        ino: st.st_ino,
        nlink: st.st_nlink,
        size: u64::try_from(st.st_size).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_names() {
        assert!(is_loader("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"));
        assert!(is_loader("/lib/ld-musl-x86_64.so.1"));
        assert!(is_loader("/lib/ld-linux-aarch64.so.1"));
        assert!(!is_loader("/usr/bin/ld"));
        assert!(!is_loader("/usr/bin/ld.bfd"));
        assert!(!is_loader("/usr/bin/cat"));
    }

    #[test]
    fn both_merges() {
        let a = Outcome::allow(vec![1]);
        let d = Outcome::deny(vec![3, 2]);
        assert_eq!(
            both(a.clone(), Outcome::allow(vec![0])),
            Outcome::allow(vec![0, 1])
        );
        assert_eq!(both(a, d.clone()), d);
        assert_eq!(
            both(Outcome::deny(vec![2]), Outcome::deny(vec![4])),
            Outcome::deny(vec![2, 4])
        );
    }
}
