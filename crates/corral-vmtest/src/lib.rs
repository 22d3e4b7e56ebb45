//! Runs test payloads inside a throw-away QEMU virtual machine booted with Debian's own
//! kernel, so that corral's BPF LSM programs can be tested on a host whose kernel refuses
//! them (this project's hosts block the BPF trampolines that `lsm/*` programs need).
//!
//! # Mechanism
//!
//! [`run`] builds a fresh initramfs (an uncompressed newc cpio written by [`cpio`]) in a
//! private temporary directory. It holds:
//!
//! * busybox-static as `/bin/busybox` (its applets are linked into `/bin` at boot);
//! * every file of [`Guest::files`] at its guest path; ELF executables and shared objects
//!   bring the shared libraries `ldd` resolves for them (and the dynamic loader, at the path
//!   the binary names as its interpreter) plus `/etc/ld.so.cache`, so binaries built on the
//!   host against its glibc run unchanged;
//! * the kernel's `/boot/config-<version>` (libbpf resolves `__kconfig` externs from it);
//! * the payload script, and an `/init` shell script.
//!
//! QEMU (TCG: KVM is unusable on these hosts) boots the newest `/boot/vmlinuz-*-amd64`
//! (package `linux-image-amd64`) with that initramfs *instead of* Debian's own initrd. When
//! it can, it boots the kernel's ELF image through its PVH entry point instead of the
//! bzImage, which saves the emulated firmware and decompressor (see [`kernel`](mod@crate::kernel)).
//! Everything the tests need is built into Debian's kernel: BPF, the BPF LSM (in the default
//! `CONFIG_LSM` list, so no `lsm=` argument), cgroup v2, tmpfs, securityfs, the 8250 UART.
//! No module is loaded.
//!
//! `/init` mounts proc, sysfs, devtmpfs (+ devpts, /dev/shm), securityfs
//! (`/sys/kernel/security`), bpffs (`/sys/fs/bpf`), cgroup2 (`/sys/fs/cgroup`), tracefs and
//! debugfs, tmpfs on `/tmp` and `/run` (keeping files the initramfs put there), brings `lo`
//! up, and runs the payload with `/bin/sh` from `/`, stdin `/dev/null`.
//!
//! The guest has two serial ports. `ttyS0` is the kernel console, which QEMU writes to its
//! stdout; [`Outcome::console`] is that text. The payload's stdout and stderr go, in raw mode
//! so nothing is rewritten, to `ttyS1`, which QEMU writes to a file; the kernel never prints
//! there, so [`Outcome::output`] is exactly what the script wrote, between the lines
//! `CORRAL-VM-BEGIN <nonce>` and `CORRAL-VM-END <nonce> rc=<n>` (the nonce is fresh per run,
//! so a payload cannot forge them). The markers are also echoed on the console. Then `/init`
//! powers the machine off (`poweroff -f`) and QEMU exits. A kernel panic also ends QEMU
//! (`panic=-1` with `-no-reboot`); a hang is ended by [`Guest::timeout`], after which QEMU is
//! killed and the error carries the console's tail.
//!
//! Environment: `CORRAL_VM_KERNEL` overrides the kernel image; `CORRAL_VM_NO_PVH=1` boots the
//! bzImage even when PVH boot is possible.

pub mod browser;
pub mod cpio;
pub mod deps;
pub mod kernel;

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::{self, BufWriter, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Where busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// The QEMU binary looked up on `PATH`.
pub const QEMU: &str = "qemu-system-x86_64";

/// What to put in the VM and run.
#[derive(Debug, Clone)]
pub struct Guest {
    /// Host files (or directories, copied recursively) and the guest paths to put them at.
    /// ELF executables and shared objects are copied with their shared-library dependencies.
    /// Guest paths must be absolute and may not lie under `/proc`, `/sys` or `/dev`, nor be
    /// `/init` or under `/.corral-vm`.
    pub files: Vec<(PathBuf, String)>,
    /// A `/bin/sh` (busybox ash) script run as the test payload after setup.
    pub script: String,
    /// Wall-clock limit for the whole boot and run.
    pub timeout: Duration,
    /// Guest memory. The initramfs lives in it (twice, briefly, while it is unpacked).
    pub memory_mb: u32,
}

impl Default for Guest {
    fn default() -> Self {
        Guest {
            files: Vec::new(),
            script: String::new(),
            timeout: Duration::from_secs(120),
            memory_mb: 1024,
        }
    }
}

impl Guest {
    /// A guest that runs `script`, with the default timeout (120 s) and memory (1024 MiB).
    pub fn new(script: impl Into<String>) -> Self {
        Guest {
            script: script.into(),
            ..Guest::default()
        }
    }

    /// Adds `host` at `guest_path`.
    pub fn file(mut self, host: impl Into<PathBuf>, guest_path: impl Into<String>) -> Self {
        self.files.push((host.into(), guest_path.into()));
        self
    }
}

/// What came back from a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Everything the kernel console (ttyS0) printed, with `\r\n` turned into `\n`.
    pub console: String,
    /// Exactly what the script wrote to its stdout and stderr (interleaved as written).
    pub output: String,
    /// The script's exit status (128 + n if a signal n ended it).
    pub exit_code: i32,
    /// From starting QEMU until the payload started.
    pub boot_ms: u64,
    /// The whole call: building the initramfs, booting, running, powering off.
    pub total_ms: u64,
}

/// Why a run could not produce an [`Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable guest kernel.
    #[error("no guest kernel: {detail}; install the Debian package `linux-image-amd64`")]
    NoKernel {
        /// What was looked for.
        detail: String,
    },
    /// QEMU is not installed.
    #[error("`{QEMU}` not found on PATH; install the Debian package `qemu-system-x86`")]
    NoQemu,
    /// busybox-static is not installed.
    #[error("{BUSYBOX} not found; install the Debian package `busybox-static`")]
    NoBusybox,
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A guest path in [`Guest::files`] is not acceptable.
    #[error("guest path {path:?}: {reason}")]
    GuestPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The shared libraries of a host binary could not be resolved.
    #[error("shared libraries of {}: {detail}", path.display())]
    Libraries {
        /// The binary.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The VM did not finish in time; QEMU was killed.
    #[error("the VM did not finish within {limit:?} (QEMU killed); console tail:\n{tail}")]
    Timeout {
        /// [`Guest::timeout`].
        limit: Duration,
        /// The last lines of the console, and QEMU's stderr.
        tail: String,
    },
    /// QEMU exited before the payload reported its exit status (a kernel panic, a failed
    /// `/init`, or QEMU refusing its arguments).
    #[error("the VM stopped ({status}) before the payload finished; console tail:\n{tail}")]
    Incomplete {
        /// QEMU's exit status.
        status: String,
        /// The last lines of the console, and QEMU's stderr.
        tail: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The newest Debian kernel image, `/boot/vmlinuz-*-amd64` (never the host's running
/// kernel), or `$CORRAL_VM_KERNEL` when set.
pub fn kernel() -> Result<PathBuf, Error> {
    kernel::find_kernel()
}

/// Records a test that cannot run for lack of a host capability: prints
/// `CORRAL-SKIP <test>: <reason>` on stderr and appends it to
/// `$CORRAL_SKIP_LOG` when set (scripts/test.sh counts those lines as
/// skips). Shared by every crate's tests, so a skip is never silent.
pub fn skip(test: &str, reason: &str) {
    use std::io::Write as _;
    let line = format!("CORRAL-SKIP {test}: {reason}");
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("CORRAL_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Whether this process runs as root (effective uid 0, read from
/// `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        .as_deref()
        == Some("0")
}

/// `Err(reason)` when QEMU, the guest kernel or busybox is missing; callers report a skip.
pub fn available() -> Result<(), String> {
    qemu_binary().map_err(|e| e.to_string())?;
    kernel().map_err(|e| e.to_string())?;
    busybox().map_err(|e| e.to_string())?;
    Ok(())
}

/// Boots a VM, runs `guest.script` in it, and returns what it printed and its exit status.
pub fn run(guest: &Guest) -> Result<Outcome, Error> {
    run_on(guest, &Machine::default())
}

/// The emulated machine: the defaults are the fastest reliable settings measured on this
/// project's 2-core hosts. Exposed for measurements, not a stable interface.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Machine {
    /// Virtual CPUs (`-smp`).
    pub smp: u32,
    /// `-cpu` model; `None` is QEMU's default (qemu64).
    pub cpu: Option<String>,
    /// Boot the unpacked ELF kernel through its PVH entry point when possible.
    pub pvh: bool,
    /// Extra kernel command-line arguments.
    pub append: String,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            smp: 1,
            cpu: Some("max".to_string()),
            pvh: std::env::var_os("CORRAL_VM_NO_PVH").is_none(),
            append: String::new(),
        }
    }
}

/// The kernel command line (before [`Machine::append`]).
pub const CMDLINE: &str = "console=ttyS0 panic=-1 rdinit=/init quiet";

/// [`run`] on a chosen [`Machine`].
#[doc(hidden)]
pub fn run_on(guest: &Guest, machine: &Machine) -> Result<Outcome, Error> {
    let started = Instant::now();
    let qemu = qemu_binary()?;
    let bzimage = kernel()?;
    let busybox = busybox()?;
    let dir = TempDir::new()?;
    let nonce = nonce();

    let initramfs = dir.path.join("initramfs.cpio");
    // The guest powers itself off a little after the host would have killed it, in case the
    // host process died without killing QEMU (e.g. a test runner's SIGKILL).
    let watchdog = guest.timeout.as_secs().saturating_add(10);
    build_initramfs(
        guest,
        &busybox,
        &bzimage,
        &init_script(&nonce, watchdog),
        &initramfs,
    )?;

    let image = if machine.pvh {
        kernel::pvh_image(&bzimage).unwrap_or_else(|why| {
            eprintln!("corral-vmtest: booting the bzImage (PVH boot unavailable: {why})");
            bzimage.clone()
        })
    } else {
        bzimage
    };
    let serial1 = dir.path.join("serial1");
    let mut append = CMDLINE.to_string();
    if !machine.append.is_empty() {
        append.push(' ');
        append.push_str(&machine.append);
    }
    let mut cmd = Command::new(&qemu);
    cmd.args([
        "-accel",
        "tcg",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-monitor",
        "none",
    ])
    .args([
        "-smp",
        &machine.smp.max(1).to_string(),
        "-m",
        &guest.memory_mb.max(128).to_string(),
    ])
    .args(["-serial", "stdio", "-serial"])
    .arg(format!("file:{}", serial1.display()))
    .arg("-no-reboot")
    .arg("-kernel")
    .arg(&image)
    .arg("-initrd")
    .arg(&initramfs)
    .args(["-append", &append]);
    if let Some(cpu) = &machine.cpu {
        cmd.args(["-cpu", cpu]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let spawned = Instant::now();
    let mut child = ChildGuard(Some(
        cmd.spawn()
            .map_err(|e| Error::io(format!("starting {QEMU}"), e))?,
    ));
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let stdout = child.0.as_mut().and_then(|c| c.stdout.take());
    let stderr = child.0.as_mut().and_then(|c| c.stderr.take());
    let out_reader = thread::spawn(move || {
        if let Some(mut out) = stdout {
            let mut buf = [0u8; 8192];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        }
    });
    let err_reader = thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut err) = stderr {
            let _ = err.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    });

    let begin_marker = format!("CORRAL-VM-BEGIN {nonce}");
    let deadline = started + guest.timeout;
    let mut console = Vec::new();
    let mut boot_ms = None;
    let mut eof = false;
    let status = loop {
        if !eof {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            match rx.recv_timeout(wait) {
                Ok(chunk) => {
                    let from = console.len().saturating_sub(begin_marker.len());
                    console.extend_from_slice(&chunk);
                    if boot_ms.is_none() && find(&console[from..], begin_marker.as_bytes()).is_some() {
                        boot_ms = Some(millis(spawned.elapsed()));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => eof = true,
            }
        } else {
            thread::sleep(Duration::from_millis(10));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill();
            let _ = out_reader.join();
            console.extend(rx.try_iter().flatten());
            let stderr = err_reader.join().unwrap_or_default();
            return Err(Error::Timeout {
                limit: guest.timeout,
                tail: tail(&console_text(&console), &stderr),
            });
        }
    };
    // QEMU has exited: its stdout is at EOF, so the reader finishes.
    let _ = out_reader.join();
    console.extend(rx.try_iter().flatten());
    let stderr = err_reader.join().unwrap_or_default();
    let console = console_text(&console);

    let serial = fs::read(&serial1).unwrap_or_default();
    let serial = String::from_utf8_lossy(&serial);
    // The payload's channel is ttyS1; /init falls back to the console if ttyS1 is missing.
    let (output, code) = match parse_channel(&serial, &nonce) {
        Some((output, Some(code))) => (output, Some(code)),
        from_serial => match parse_channel(&console, &nonce) {
            Some((output, Some(code))) => (output, Some(code)),
            _ => from_serial.unwrap_or_default(),
        },
    };
    let Some(exit_code) = code else {
        return Err(Error::Incomplete {
            status: status.to_string(),
            tail: tail(&console, &stderr),
        });
    };
    Ok(Outcome {
        console,
        output,
        exit_code,
        boot_ms: boot_ms.unwrap_or_default(),
        total_ms: millis(started.elapsed()),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn console_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace("\r\n", "\n")
        .replace('\r', "")
}

/// The output between the markers and, if the end marker arrived, the exit code.
fn parse_channel(text: &str, nonce: &str) -> Option<(String, Option<i32>)> {
    let begin = format!("CORRAL-VM-BEGIN {nonce}\n");
    let end = format!("\nCORRAL-VM-END {nonce} rc=");
    let start = text.find(&begin)? + begin.len();
    let rest = &text[start..];
    let Some(at) = rest.find(&end) else {
        return Some((rest.to_string(), None));
    };
    let code = rest[at + end.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|d| d.parse().ok());
    Some((rest[..at].to_string(), code))
}

/// The last lines of the console, then QEMU's stderr if it said anything.
fn tail(console: &str, stderr: &str) -> String {
    const LINES: usize = 40;
    let lines: Vec<&str> = console.lines().collect();
    let mut out = lines[lines.len().saturating_sub(LINES)..].join("\n");
    if !stderr.trim().is_empty() {
        out.push_str("\n--- qemu stderr ---\n");
        out.push_str(stderr.trim());
    }
    out
}

fn qemu_binary() -> Result<PathBuf, Error> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(QEMU))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or(Error::NoQemu)
}

fn busybox() -> Result<PathBuf, Error> {
    let path = PathBuf::from(BUSYBOX);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::NoBusybox)
    }
}

/// A fresh random-enough token: it only has to be unguessable by the payload and distinct
/// between concurrent runs.
pub(crate) fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    SystemTime::now().hash(&mut h);
    std::process::id().hash(&mut h);
    COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A private directory removed (with its contents) on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Result<Self, Error> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("corral-vm-{}-{}", std::process::id(), nonce()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Kills QEMU (by its PID) if it is still running when dropped.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        let Some(child) = self.0.as_mut() else {
            return Ok(None);
        };
        let status = child
            .try_wait()
            .map_err(|e| Error::io(format!("waiting for {QEMU}"), e))?;
        if status.is_some() {
            self.0 = None;
        }
        Ok(status)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One thing in the initramfs.
enum Entry {
    Dir,
    File { host: PathBuf, perm: u32 },
    Data { bytes: Vec<u8>, perm: u32 },
    Symlink(String),
    CharDev(u32, u32),
}

/// The initramfs contents, by guest path; a `BTreeMap` lists every directory before what
/// is inside it, as the kernel's unpacker needs.
#[derive(Default)]
struct Tree {
    entries: BTreeMap<String, Entry>,
}

/// Directories every guest has.
const BASE_DIRS: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/etc",
    "/dev",
    "/proc",
    "/sys",
    "/tmp",
    "/run",
    "/root",
    "/mnt",
    "/.corral-vm",
];

impl Tree {
    /// Inserts `entry` at `path` (normalised, absolute), creating parent directories.
    /// `replace` decides whether an existing entry is overwritten.
    fn insert(&mut self, path: &str, entry: Entry, replace: bool) -> Result<(), Error> {
        let mut parent = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, dirs)) = parts.split_last() else {
            return Err(Error::GuestPath {
                path: path.to_string(),
                reason: "is the root".to_string(),
            });
        };
        for dir in dirs {
            parent.push('/');
            parent.push_str(dir);
            match self.entries.get(&parent) {
                None => {
                    self.entries.insert(parent.clone(), Entry::Dir);
                }
                Some(Entry::Dir) => {}
                Some(_) => {
                    return Err(Error::GuestPath {
                        path: path.to_string(),
                        reason: format!("{parent} is already a file or link"),
                    })
                }
            }
        }
        let full = format!("{parent}/{last}");
        if replace || !self.entries.contains_key(&full) {
            self.entries.insert(full, entry);
        }
        Ok(())
    }

    /// Adds a host file (with its shared libraries) or directory (recursively).
    fn add_host(&mut self, host: &Path, guest: &str, deps: &mut Vec<PathBuf>) -> Result<(), Error> {
        // A symbolic link given directly is followed; links inside a directory are kept.
        let meta = fs::metadata(host).map_err(|e| Error::io(format!("reading {}", host.display()), e))?;
        if meta.is_dir() {
            self.insert(guest, Entry::Dir, true)?;
            let entries =
                fs::read_dir(host).map_err(|e| Error::io(format!("listing {}", host.display()), e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(format!("listing {}", host.display()), e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    return Err(Error::GuestPath {
                        path: entry.path().display().to_string(),
                        reason: "is not UTF-8".to_string(),
                    });
                };
                let child = format!("{}/{name}", guest.trim_end_matches('/'));
                let ft = entry
                    .file_type()
                    .map_err(|e| Error::io(format!("reading {name}"), e))?;
                if ft.is_symlink() {
                    let target = fs::read_link(entry.path())
                        .map_err(|e| Error::io(format!("reading {}", entry.path().display()), e))?;
                    self.insert(
                        &child,
                        Entry::Symlink(target.to_string_lossy().into_owned()),
                        true,
                    )?;
                } else {
                    self.add_host(&entry.path(), &child, deps)?;
                }
            }
            return Ok(());
        }
        if deps::is_loadable_elf(host) {
            for dep in deps::shared_deps(host)? {
                if !deps.contains(&dep) {
                    deps.push(dep);
                }
            }
        }
        self.insert(
            guest,
            Entry::File {
                host: host.to_path_buf(),
                perm: meta.permissions().mode() & 0o7777,
            },
            true,
        )
    }

    fn write(&self, out: &Path) -> Result<(), Error> {
        let ctx = |what: &str| format!("writing the initramfs {} ({what})", out.display());
        let file = File::create(out).map_err(|e| Error::io(ctx("create"), e))?;
        let mut w = cpio::Writer::new(BufWriter::with_capacity(1 << 20, file));
        for (path, entry) in &self.entries {
            let res = match entry {
                Entry::Dir => w.dir(path, if path == "/tmp" { 0o1777 } else { 0o755 }),
                Entry::Symlink(target) => w.symlink(path, target),
                Entry::CharDev(major, minor) => w.char_dev(path, 0o600, *major, *minor),
                Entry::Data { bytes, perm } => w.file(path, *perm, bytes.len() as u64, &mut bytes.as_slice()),
                Entry::File { host, perm } => {
                    let mut f =
                        File::open(host).map_err(|e| Error::io(format!("reading {}", host.display()), e))?;
                    let size = f
                        .metadata()
                        .map_err(|e| Error::io(format!("reading {}", host.display()), e))?
                        .len();
                    w.file(path, *perm, size, &mut f)
                }
            };
            res.map_err(|e| Error::io(ctx(path), e))?;
        }
        w.finish().map_err(|e| Error::io(ctx("finish"), e))?;
        Ok(())
    }
}

/// Checks and normalises a guest path from [`Guest::files`].
fn guest_path(path: &str) -> Result<String, Error> {
    let bad = |reason: &str| Error::GuestPath {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    if !path.starts_with('/') {
        return Err(bad("must be absolute"));
    }
    let mut norm = String::new();
    for comp in Path::new(path).components() {
        match comp {
            Component::RootDir => {}
            Component::Normal(part) => {
                norm.push('/');
                norm.push_str(&part.to_string_lossy());
            }
            _ => return Err(bad("may not contain `.` or `..`")),
        }
    }
    if norm.is_empty() {
        return Err(bad("is the root"));
    }
    let under = |dir: &str| norm == dir || norm.starts_with(&format!("{dir}/"));
    if ["/proc", "/sys", "/dev"].iter().any(|d| under(d)) {
        return Err(bad("lies in a file system mounted at boot (/proc, /sys, /dev)"));
    }
    if norm == "/init" || under("/.corral-vm") {
        return Err(bad("is reserved by corral-vmtest"));
    }
    Ok(norm)
}

fn build_initramfs(
    guest: &Guest,
    busybox: &Path,
    kernel: &Path,
    init: &str,
    out: &Path,
) -> Result<(), Error> {
    let mut tree = Tree::default();
    for dir in BASE_DIRS {
        tree.insert(dir, Entry::Dir, true)?;
    }
    tree.insert("/dev/console", Entry::CharDev(5, 1), true)?;
    tree.insert("/bin/sh", Entry::Symlink("busybox".to_string()), true)?;
    tree.insert(
        "/init",
        Entry::Data {
            bytes: init.as_bytes().to_vec(),
            perm: 0o755,
        },
        true,
    )?;
    tree.insert(
        "/.corral-vm/payload.sh",
        Entry::Data {
            bytes: guest.script.clone().into_bytes(),
            perm: 0o755,
        },
        true,
    )?;
    let mut deps = Vec::new();
    tree.add_host(busybox, "/bin/busybox", &mut deps)?;
    for (host, guest_path_str) in &guest.files {
        let path = guest_path(guest_path_str)?;
        tree.add_host(host, &path, &mut deps)?;
    }
    // libbpf reads /boot/config-$(uname -r) to resolve `__kconfig` externs, and bpftool's
    // feature probe reads it too.
    let config = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .map(|version| format!("/boot/config-{version}"));
    if let Some(config) = config.filter(|c| Path::new(c).is_file()) {
        tree.insert(
            &config,
            Entry::File {
                host: PathBuf::from(&config),
                perm: 0o644,
            },
            false,
        )?;
    }
    if !deps.is_empty() {
        // The loader consults the cache first, so libraries found through it on the host
        // (e.g. in /usr/local/lib) are found at the same paths in the guest.
        let cache = Path::new("/etc/ld.so.cache");
        if cache.is_file() {
            tree.insert(
                "/etc/ld.so.cache",
                Entry::File {
                    host: cache.to_path_buf(),
                    perm: 0o644,
                },
                false,
            )?;
        }
    }
    for dep in deps {
        let Some(dep_str) = dep.to_str() else { continue };
        let perm = fs::metadata(&dep).map_or(0o755, |m| m.permissions().mode() & 0o7777);
        // What the caller put at that path wins.
        tree.insert(
            dep_str,
            Entry::File {
                host: dep.clone(),
                perm,
            },
            false,
        )?;
    }
    tree.write(out)
}

/// The guest's `/init`; it powers off after `watchdog_secs` whatever the payload does.
fn init_script(nonce: &str, watchdog_secs: u64) -> String {
    format!(
        r#"#!/bin/sh
# corral-vmtest guest init: mount, run the payload, report, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
[ -d /sys/kernel/tracing ] && mount -t tracefs tracefs /sys/kernel/tracing
[ -d /sys/kernel/debug ] && mount -t debugfs debugfs /sys/kernel/debug
# A tmpfs on $1 that keeps what the initramfs put there.
tmpfs_keep() {{
    mkdir -p /.corral-vm/stage
    mount -t tmpfs -o "mode=$2" tmpfs /.corral-vm/stage
    cp -a "$1/." /.corral-vm/stage/
    mount -o move /.corral-vm/stage "$1"
}}
tmpfs_keep /tmp 1777
tmpfs_keep /run 0755
ip link set lo up
hostname corral-vm
(sleep {watchdog_secs}; echo "CORRAL-VM-WATCHDOG: powering off"; poweroff -f) &
N={nonce}
OUT=/dev/ttyS1
stty -F $OUT raw -echo 2>/dev/null || OUT=/dev/console
echo "CORRAL-VM-BEGIN $N" >$OUT
[ $OUT = /dev/console ] || echo "CORRAL-VM-BEGIN $N"
cd /
/bin/sh /.corral-vm/payload.sh </dev/null >$OUT 2>&1
rc=$?
printf '\nCORRAL-VM-END %s rc=%d\n' "$N" "$rc" >$OUT
# stty sets the attributes with TCSADRAIN: it returns once ttyS1 has sent everything.
stty -F $OUT raw -echo 2>/dev/null
[ $OUT = /dev/console ] || echo "CORRAL-VM-END $N rc=$rc"
poweroff -f
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_are_checked() {
        assert_eq!(guest_path("/usr//bin/x").unwrap(), "/usr/bin/x");
        assert!(guest_path("rel").is_err());
        assert!(guest_path("/a/../b").is_err());
        assert!(guest_path("/proc/x").is_err());
        assert!(guest_path("/init").is_err());
        assert!(guest_path("/.corral-vm/payload.sh").is_err());
        assert!(guest_path("/").is_err());
        assert!(guest_path("/device").is_ok());
    }

    #[test]
    fn channel_parsing() {
        let t = "noise\nCORRAL-VM-BEGIN n1\nhello\nno newline\nCORRAL-VM-END n1 rc=3\n";
        assert_eq!(
            parse_channel(t, "n1"),
            Some(("hello\nno newline".to_string(), Some(3)))
        );
        let t = "CORRAL-VM-BEGIN n1\n\nCORRAL-VM-END n1 rc=0\n";
        assert_eq!(parse_channel(t, "n1"), Some((String::new(), Some(0))));
        assert_eq!(
            parse_channel("CORRAL-VM-BEGIN n1\npartial", "n1"),
            Some(("partial".to_string(), None))
        );
        assert_eq!(parse_channel("CORRAL-VM-BEGIN n2\n", "n1"), None);
    }

    #[test]
    fn tree_lists_parents_first_and_keeps_callers_files() {
        let mut t = Tree::default();
        t.insert("/a/b/c", Entry::Dir, true).unwrap();
        t.insert("/a/x", Entry::Symlink("1".into()), true).unwrap();
        t.insert("/a/x", Entry::Symlink("2".into()), false).unwrap();
        let keys: Vec<_> = t.entries.keys().cloned().collect();
        assert_eq!(keys, ["/a", "/a/b", "/a/b/c", "/a/x"]);
        assert!(matches!(t.entries.get("/a/x"), Some(Entry::Symlink(s)) if s == "1"));
        assert!(t.insert("/a/x/y", Entry::Dir, true).is_err());
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
    }
}
