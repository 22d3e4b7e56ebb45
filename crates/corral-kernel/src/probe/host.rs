//! The non-BPF probes: LSM list, fanotify round trip, seccomp user
//! notification, Landlock, container engines, kernel release.

use super::bpf::{errno_text, unique};
use super::{sys, Outcome};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response,
};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SECURITYFS: &str = "/sys/kernel/security";
const LSM_FILE: &str = "/sys/kernel/security/lsm";

/// `uname -r`.
pub(super) fn kernel_release() -> String {
    match nix::sys::utsname::uname() {
        Ok(u) => u.release().to_string_lossy().into_owned(),
        Err(e) => format!("unknown ({e})"),
    }
}

/// The probe's view of `/sys/kernel/security/lsm`.
pub(crate) struct LsmList {
    pub(crate) lsms: Option<Vec<String>>,
    pub(super) mounted_by_probe: bool,
    pub(super) error: Option<String>,
}

fn parse_lsms(s: &str) -> Vec<String> {
    s.trim()
        .split(',')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn securityfs_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines().any(|l| {
                let Some((left, right)) = l.split_once(" - ") else {
                    return false;
                };
                right.split_whitespace().next() == Some("securityfs")
                    && left.split_whitespace().nth(4) == Some(SECURITYFS)
            })
        })
        .unwrap_or(false)
}

/// Unmounts securityfs again when dropped.
struct SecurityfsMount;

impl Drop for SecurityfsMount {
    fn drop(&mut self) {
        if nix::mount::umount(SECURITYFS).is_err() {
            let _ = nix::mount::umount2(SECURITYFS, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Reads the active LSMs, mounting securityfs for the read if needed.
pub(crate) fn read_lsm_list() -> LsmList {
    let mut out = LsmList {
        lsms: None,
        mounted_by_probe: false,
        error: None,
    };
    match std::fs::read_to_string(LSM_FILE) {
        Ok(s) => {
            out.lsms = Some(parse_lsms(&s));
            return out;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !securityfs_mounted() => {}
        Err(e) => {
            out.error = Some(format!("{LSM_FILE}: {}", errno_text(&e)));
            return out;
        }
    }
    use nix::mount::{mount, MsFlags};
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let Err(e) = mount(
        Some("securityfs"),
        SECURITYFS,
        Some("securityfs"),
        flags,
        None::<&str>,
    ) {
        out.error = Some(format!(
            "securityfs is not mounted and mounting it at {SECURITYFS} failed: {e}"
        ));
        return out;
    }
    let _guard = SecurityfsMount;
    out.mounted_by_probe = true;
    match std::fs::read_to_string(LSM_FILE) {
        Ok(s) => out.lsms = Some(parse_lsms(&s)),
        Err(e) => out.error = Some(format!("{LSM_FILE}: {}", errno_text(&e))),
    }
    out
}

/// Removes the file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes the mark when dropped (closing the group would too).
struct Mark<'a> {
    group: &'a Fanotify,
    file: &'a File,
    mask: MaskFlags,
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        let _ = self
            .group
            .mark(MarkFlags::FAN_MARK_REMOVE, self.mask, self.file, None::<&Path>);
    }
}

/// Marks a temporary file `FAN_OPEN_PERM`, opens it from a helper thread
/// and answers `FAN_ALLOW`. Returns the outcome and whether a
/// `FAN_OPEN_EXEC_PERM` mark was accepted too.
pub(super) fn probe_fanotify(timeout: Duration) -> (Outcome, bool) {
    let flags = InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK;
    // Declared before the group: removed after the group is closed.
    let path = std::env::temp_dir().join(format!(
        "corral-probe-fanotify-{}-{}",
        std::process::id(),
        unique()
    ));
    let file = match File::create(&path) {
        Ok(f) => f,
        Err(e) => {
            return (
                Outcome::fail(format!("create {}: {}", path.display(), errno_text(&e))),
                false,
            )
        }
    };
    let _tmp = TempFile(path.clone());
    let group = match Fanotify::init(flags, EventFFlags::O_RDONLY | EventFFlags::O_CLOEXEC) {
        Ok(g) => g,
        Err(e) => {
            let why = match e {
                nix::errno::Errno::ENOSYS => {
                    return (Outcome::absent("fanotify_init: ENOSYS (no fanotify)"), false)
                }
                nix::errno::Errno::EINVAL => {
                    return (
                        Outcome::absent(
                            "fanotify_init(FAN_CLASS_CONTENT): EINVAL (no permission events: \
                             CONFIG_FANOTIFY_ACCESS_PERMISSIONS off)",
                        ),
                        false,
                    )
                }
                nix::errno::Errno::EPERM => " (needs CAP_SYS_ADMIN)",
                _ => "",
            };
            return (
                Outcome::fail(format!(
                    "fanotify_init(FAN_CLASS_CONTENT): {e:?} ({}){why}",
                    e.desc()
                )),
                false,
            );
        }
    };
    let both = MaskFlags::FAN_OPEN_PERM | MaskFlags::FAN_OPEN_EXEC_PERM;
    let (mask, exec_perm) = match group.mark(MarkFlags::FAN_MARK_ADD, both, &file, None::<&Path>) {
        Ok(()) => (both, true),
        Err(nix::errno::Errno::EINVAL) => {
            match group.mark(
                MarkFlags::FAN_MARK_ADD,
                MaskFlags::FAN_OPEN_PERM,
                &file,
                None::<&Path>,
            ) {
                Ok(()) => (MaskFlags::FAN_OPEN_PERM, false),
                Err(e) => {
                    return (
                        Outcome::fail(format!("fanotify_mark(FAN_OPEN_PERM): {e:?} ({})", e.desc())),
                        false,
                    )
                }
            }
        }
        Err(e) => {
            return (
                Outcome::fail(format!("fanotify_mark(FAN_OPEN_PERM): {e:?} ({})", e.desc())),
                false,
            );
        }
    };
    let mark = Mark {
        group: &group,
        file: &file,
        mask,
    };

    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    let start = Instant::now();
    let spawned = std::thread::Builder::new()
        .name("corral-probe-fanotify".into())
        .spawn(move || {
            let r = File::open(&p).map(drop);
            let _ = tx.send((r, Instant::now()));
        });
    if let Err(e) = spawned {
        return (Outcome::fail(format!("spawn helper thread: {e}")), exec_perm);
    }

    let deadline = start + timeout;
    let me = i32::try_from(std::process::id()).unwrap_or(-1);
    let mut answered = None;
    let mut err = None;
    while answered.is_none() && err.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            err = Some(format!(
                "no FAN_OPEN_PERM event within {} ms",
                timeout.as_millis()
            ));
            break;
        }
        let mut fds = [PollFd::new(group.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                err = Some(format!("poll: {e}"));
                break;
            }
        }
        let events = match group.read_events() {
            Ok(ev) => ev,
            Err(nix::errno::Errno::EAGAIN) => continue,
            Err(e) => {
                err = Some(format!("read fanotify events: {e}"));
                break;
            }
        };
        for ev in &events {
            let Some(fd) = ev.fd() else { continue };
            // Every permission event is answered, ours or not.
            if let Err(e) = group.write_response(FanotifyResponse::new(fd, Response::FAN_ALLOW)) {
                err = Some(format!("write FAN_ALLOW: {e}"));
            } else if ev.pid() == me && ev.mask().contains(MaskFlags::FAN_OPEN_PERM) {
                answered = Some(Instant::now());
            }
        }
    }
    // Remove the mark and close the group before waiting for the helper:
    // closing the group releases an open still held.
    drop(mark);
    drop(group);
    let helper = rx.recv_timeout(Duration::from_secs(1));
    drop(file);

    let exec_note = if exec_perm {
        "; FAN_OPEN_EXEC_PERM accepted"
    } else {
        "; FAN_OPEN_EXEC_PERM rejected"
    };
    match (answered, err, helper) {
        (Some(at), None, Ok((Ok(()), done))) => {
            let held = at.saturating_duration_since(start);
            let after = done.saturating_duration_since(at);
            (
                Outcome::ok(format!(
                    "FAN_OPEN_PERM on a temp file: a helper thread's open was held {} µs, then \
                     released by FAN_ALLOW ({} µs later); mark and group removed{exec_note}",
                    held.as_micros(),
                    after.as_micros()
                )),
                exec_perm,
            )
        }
        (_, Some(e), _) => (Outcome::fail(format!("{e}; mark and group removed")), exec_perm),
        (_, None, Ok((Err(e), _))) => (
            Outcome::fail(format!("allowed open failed: {}", errno_text(&e))),
            exec_perm,
        ),
        (_, None, Err(_)) => (
            Outcome::fail("the helper's open did not return after FAN_ALLOW"),
            exec_perm,
        ),
        (None, None, Ok(_)) => (
            Outcome::fail("the open returned without a permission event"),
            exec_perm,
        ),
    }
}

pub(super) fn probe_seccomp() -> Outcome {
    let sizes = match sys::seccomp_notif_sizes() {
        Ok(s) => s,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
            return Outcome::absent(format!(
                "SECCOMP_GET_NOTIF_SIZES: {} (kernel < 5.0)",
                errno_text(&e)
            ))
        }
        Err(e) => return Outcome::fail(format!("SECCOMP_GET_NOTIF_SIZES: {}", errno_text(&e))),
    };
    let sz = format!(
        "notif {} B, resp {} B, data {} B",
        sizes.notif, sizes.resp, sizes.data
    );
    match sys::seccomp_user_notif_action_available() {
        Ok(()) => Outcome::ok(format!(
            "SECCOMP_GET_NOTIF_SIZES ok ({sz}); SECCOMP_RET_USER_NOTIF available"
        )),
        Err(e) => Outcome::fail(format!(
            "SECCOMP_GET_NOTIF_SIZES ok ({sz}) but SECCOMP_RET_USER_NOTIF unavailable: {}",
            errno_text(&e)
        )),
    }
}

pub(super) fn probe_landlock() -> (Outcome, Option<u32>) {
    match sys::landlock_abi() {
        Ok(v) => (Outcome::ok(format!("ABI {v}")), Some(v)),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOSYS) => (
                Outcome::absent("landlock_create_ruleset: ENOSYS (kernel built without Landlock)"),
                None,
            ),
            Some(libc::EOPNOTSUPP) => (
                Outcome::absent(
                    "landlock_create_ruleset: EOPNOTSUPP (Landlock built in but not enabled at boot)",
                ),
                None,
            ),
            _ => (
                Outcome::fail(format!("landlock_create_ruleset: {}", errno_text(&e))),
                None,
            ),
        },
    }
}

enum VersionError {
    NotFound,
    Other(String),
}

/// First line of `bin args` (stdout, else stderr), killed after 5 s.
fn version_of(bin: &str, args: &[&str]) -> Result<String, VersionError> {
    let mut child = match Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(VersionError::NotFound),
        Err(e) => return Err(VersionError::Other(format!("{bin}: {e}"))),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VersionError::Other(format!(
                    "`{bin} {}` did not finish in 5 s",
                    args.join(" ")
                )));
            }
            Err(e) => return Err(VersionError::Other(format!("{bin}: {e}"))),
        }
    };
    let out = child
        .wait_with_output()
        .map_err(|e| VersionError::Other(format!("{bin}: {e}")))?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    let line = String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if status.success() {
        Ok(line)
    } else {
        Err(VersionError::Other(format!(
            "`{bin} {}` exited with {status}: {line}",
            args.join(" ")
        )))
    }
}

fn runc_version() -> Option<String> {
    for bin in [
        "runc",
        "/usr/sbin/runc",
        "/usr/bin/runc",
        "/usr/local/sbin/runc",
        "/usr/local/bin/runc",
    ] {
        if let Ok(v) = version_of(bin, &["--version"]) {
            return Some(v);
        }
    }
    None
}

/// `podman --version` and `runc --version`.
pub(super) fn probe_podman() -> (Outcome, Option<String>, Option<String>) {
    match version_of("podman", &["--version"]) {
        Err(VersionError::NotFound) => (Outcome::absent("podman not installed"), None, runc_version()),
        Err(VersionError::Other(e)) => (Outcome::fail(e), None, runc_version()),
        Ok(v) => {
            let runc = runc_version();
            let note = match &runc {
                Some(r) => format!("runc present ({r})"),
                None => "runc absent: podman needs it on a hybrid cgroup host (crun refuses)".to_string(),
            };
            (Outcome::ok(format!("{v}; {note}")), Some(v), runc)
        }
    }
}

/// `docker --version`, and whether an engine socket exists (not contacted).
pub(super) fn probe_docker() -> (Outcome, Option<String>) {
    const SOCK: &str = "/var/run/docker.sock";
    match version_of("docker", &["--version"]) {
        Err(VersionError::NotFound) => (Outcome::absent("docker not installed"), None),
        Err(VersionError::Other(e)) => (Outcome::fail(e), None),
        Ok(v) => {
            if Path::new(SOCK).exists() {
                (Outcome::ok(format!("{v}; engine socket {SOCK} present")), Some(v))
            } else {
                (
                    Outcome::absent(format!("client only ({v}); no engine socket at {SOCK}")),
                    Some(v),
                )
            }
        }
    }
}
