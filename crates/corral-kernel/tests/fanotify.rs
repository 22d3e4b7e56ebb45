//! The fanotify fallback against real processes: a private tmpfs is the
//! only marked mount, a session cgroup holds the governed processes, and
//! real commands (`cat`, `sh`, copies of `/bin/true` and `/bin/false` on
//! the tmpfs, the dynamic loader) are run inside it. Root only; each test
//! has its own tmpfs, cgroup and fanotify group, all removed on drop.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use corral_core::{Access, Decision, Event, Layer, Mode, SessionId, What};
use corral_kernel::cgroup::Cgroup;
use corral_kernel::fanotify::{Config, Fanotify, FileTables, NoOpenFlags, OpenFlags};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use tokio::sync::mpsc::{channel, Receiver};

const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
const PRINCIPAL: &str = "agent";

/// Access mode of a thread's open in progress, read from
/// `/proc/<tid>/syscall` (x86_64 numbers): a real `OpenFlags` for tests
/// that need the read/write distinction.
struct SyscallFlags;

impl OpenFlags for SyscallFlags {
    fn access_of(&self, _tgid: u32, tid: u32) -> Option<Access> {
        let s = std::fs::read_to_string(format!("/proc/{tid}/syscall")).ok()?;
        let mut it = s.split_whitespace();
        let nr: i64 = it.next()?.parse().ok()?;
        let args: Vec<u64> = it
            .take(6)
            .map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
            .collect::<Option<_>>()?;
        let flags = match nr {
            2 => *args.get(1)?,               // open
            257 => *args.get(2)?,             // openat
            85 => return Some(Access::Write), // creat
            _ => return None,
        };
        let w = (flags & libc::O_ACCMODE as u64) != 0
            || (flags & (libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) as u64) != 0;
        Some(if w { Access::Write } else { Access::Read })
    }
}

/// A tmpfs mounted on a fresh directory; unmounted and removed on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn new(name: &str) -> Tmpfs {
        let dir = PathBuf::from(format!("/tmp/corral-fan-{name}-{}", std::process::id()));
        let _ = Command::new("umount").arg(&dir).stderr(Stdio::null()).status();
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The standard policy over mount `m`.
fn policy(m: &str) -> String {
    format!(
        r#"
@id("read-all")
permit (principal, action == Action::"FileOpenReadOnly", resource) when {{ resource in Dir::"/" }};
@id("write-mnt")
permit (principal, action == Action::"FileOpenReadWrite", resource) when {{ resource in Dir::"{m}/" }};
@id("ro-dir")
forbid (principal, action == Action::"FileOpenReadWrite", resource) when {{ resource in Dir::"{m}/ro/" }};
@id("no-secret")
forbid (principal, action in Action::"FileOpen", resource) when {{ resource == File::"{m}/secret.txt" }};
@id("no-private")
forbid (principal, action in Action::"FileOpen", resource) when {{ resource in Dir::"{m}/private/" }};
@id("exec-all")
permit (principal, action == Action::"ProcessExec", resource) when {{ resource in Dir::"/" }};
@id("no-denied-bin")
forbid (principal, action == Action::"ProcessExec", resource == File::"{m}/bin/denied");
@id("argv-check")
forbid (principal, action == Action::"ProcessExec", resource == File::"{m}/bin/argv")
when {{ context.argv.contains("--bad") }};
"#
    )
}

fn tables(text: &str) -> FileTables {
    let checked = corral_policy::check(vec![corral_policy::Source::new("test.cedar", text.to_string())]);
    let Some(plan) = checked.plan else {
        panic!("policy does not compile: {:#?}", checked.diagnostics);
    };
    FileTables::from_plan(&plan, PRINCIPAL).unwrap()
}

/// One test's world. Drop order: fanotify, cgroup (kills), tmpfs.
struct Env {
    fan: Option<Fanotify>,
    rx: Receiver<Event>,
    cg: Option<Cgroup>,
    mnt: Option<Tmpfs>,
    m: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(f) = self.fan.take() {
            let _ = f.stop();
        }
        drop(self.cg.take());
        drop(self.mnt.take());
    }
}

fn write(p: impl AsRef<Path>, s: &str) {
    std::fs::write(p, s).unwrap();
}

impl Env {
    fn new(name: &str, mode: Mode, flags: Arc<dyn OpenFlags>, cap: usize) -> Env {
        let mnt = Tmpfs::new(name);
        let m = mnt.dir.to_string_lossy().into_owned();
        for d in ["private", "ro", "bin", "other"] {
            std::fs::create_dir(format!("{m}/{d}")).unwrap();
        }
        write(format!("{m}/ok.txt"), "hello\n");
        write(format!("{m}/secret.txt"), "secret\n");
        write(format!("{m}/private/x"), "private\n");
        write(format!("{m}/ro/file"), "readonly\n");
        std::fs::copy("/bin/true", format!("{m}/bin/ok")).unwrap();
        std::fs::copy("/bin/false", format!("{m}/bin/denied")).unwrap();
        std::fs::copy("/bin/true", format!("{m}/bin/argv")).unwrap();
        let t = tables(&policy(&m));
        assert_eq!(t.denied_identities(), vec![format!("{m}/bin/denied").as_str()]);
        let cg = Cgroup::create(&format!("corral-test-fan-{name}-{}", std::process::id())).unwrap();
        let (tx, rx) = channel(cap);
        let cfg = Config {
            session: SessionId(7),
            principal: PRINCIPAL.into(),
            cgroup_rel: cg.rel(),
            mounts: vec![mnt.dir.clone()],
            mode,
        };
        let fan = Fanotify::start(cfg, t, flags, tx).unwrap();
        Env {
            fan: Some(fan),
            rx,
            cg: Some(cg),
            mnt: Some(mnt),
            m,
        }
    }

    fn std(name: &str) -> Env {
        Env::new(name, Mode::Enforce, Arc::new(SyscallFlags), 1024)
    }

    fn fan(&self) -> &Fanotify {
        self.fan.as_ref().unwrap()
    }

    fn cg(&self) -> &Cgroup {
        self.cg.as_ref().unwrap()
    }

    fn p(&self, rel: &str) -> String {
        format!("{}/{rel}", self.m)
    }

    /// Runs `argv` inside the session cgroup.
    fn run(&self, argv: &[&str]) -> Output {
        self.run_in(self.cg(), argv)
    }

    fn run_in(&self, cg: &Cgroup, argv: &[&str]) -> Output {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        cg.place(&mut cmd).unwrap();
        cmd.output().unwrap()
    }

    fn events(&mut self) -> Vec<Event> {
        let mut v = Vec::new();
        while let Ok(e) = self.rx.try_recv() {
            v.push(e);
        }
        v
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: expected success, got {:?}, stderr {:?}",
        o.status,
        stderr(o)
    );
}

fn assert_eperm(o: &Output, what: &str) {
    assert!(
        !o.status.success(),
        "{what}: expected failure, got success (stdout {:?})",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        stderr(o).contains("Operation not permitted"),
        "{what}: stderr {:?}",
        stderr(o)
    );
}

macro_rules! root_or_skip {
    ($name:literal) => {
        if !common::require_root($name) {
            return;
        }
    };
}

#[test]
fn read_allowed_and_denied_by_file_and_dir() {
    root_or_skip!("read_allowed_and_denied_by_file_and_dir");
    let env = Env::std("rd");
    let o = env.run(&["/bin/cat", &env.p("ok.txt")]);
    assert_ok(&o, "cat ok.txt");
    assert_eq!(o.stdout, b"hello\n");
    assert_eperm(
        &env.run(&["/bin/cat", &env.p("secret.txt")]),
        "cat secret.txt (forbid on File)",
    );
    assert_eperm(
        &env.run(&["/bin/cat", &env.p("private/x")]),
        "cat private/x (forbid on Dir)",
    );
    // The directory itself is in Dir::".../private/": listing it is denied.
    assert_eperm(&env.run(&["/bin/ls", &env.p("private")]), "ls private");
    assert_ok(&env.run(&["/bin/ls", &env.p("ro")]), "ls ro");
}

#[test]
fn write_decided_by_write_table() {
    root_or_skip!("write_decided_by_write_table");
    let env = Env::std("wr");
    assert_ok(
        &env.run(&["/bin/sh", "-c", &format!("echo x >> {}", env.p("ok.txt"))]),
        "append ok.txt",
    );
    assert_eperm(
        &env.run(&["/bin/sh", "-c", &format!("echo x > {}", env.p("ro/file"))]),
        "write ro/file",
    );
    assert_eperm(
        &env.run(&["/bin/sh", "-c", &format!("echo x > {}", env.p("ro/new"))]),
        "create ro/new",
    );
    let o = env.run(&["/bin/cat", &env.p("ro/file")]);
    assert_ok(&o, "read ro/file");
    assert_eq!(o.stdout, b"readonly\n");
}

#[test]
fn unknown_open_mode_is_decided_strictly() {
    root_or_skip!("unknown_open_mode_is_decided_strictly");
    let mut env = Env::new("strict", Mode::Enforce, Arc::new(NoOpenFlags), 1024);
    // Readable but not writable: with the mode unknown, both must allow.
    let o = env.run(&["/bin/cat", &env.p("ro/file")]);
    assert_eperm(&o, "cat ro/file with NoOpenFlags");
    assert_ok(
        &env.run(&["/bin/cat", &env.p("ok.txt")]),
        "cat ok.txt with NoOpenFlags",
    );
    let ev = env.events();
    let deny = ev
        .iter()
        .find(|e| matches!(&e.what, What::FileOpen { path, .. } if path.ends_with("/ro/file")))
        .expect("event for ro/file");
    assert_eq!(deny.decision, Some(Decision::Deny));
    assert_eq!(
        deny.what,
        What::FileOpen {
            path: env.p("ro/file"),
            access: Access::Write
        }
    );
    assert_eq!(deny.policies, vec!["ro-dir".to_string()]);
}

#[test]
fn other_names_resolve_to_the_object() {
    root_or_skip!("other_names_resolve_to_the_object");
    let env = Env::std("names");
    std::os::unix::fs::symlink(env.p("secret.txt"), env.p("link")).unwrap();
    std::os::unix::fs::symlink(env.p("private"), env.p("other/plink")).unwrap();
    assert_eperm(&env.run(&["/bin/cat", &env.p("link")]), "symlink to secret");
    assert_eperm(&env.run(&["/bin/cat", &env.p("other/plink/x")]), "symlinked dir");
    assert_eperm(&env.run(&["/bin/cat", &env.p("ro/../secret.txt")]), "..");
    let mut cmd = Command::new("/bin/cat");
    cmd.arg("./other/../private/x").current_dir(&env.m);
    env.cg().place(&mut cmd).unwrap();
    assert_eperm(&cmd.output().unwrap(), "relative .. from cwd");
    assert_eperm(
        &env.run(&["/bin/cat", &format!("/proc/self/root{}", env.p("secret.txt"))]),
        "/proc/self/root",
    );
    // An fd to the secret handed in from outside: reading the inherited fd
    // is not an open, reopening it through /proc/self/fd is.
    let open = || std::fs::File::open(env.p("secret.txt")).unwrap();
    let mut cmd = Command::new("/bin/cat");
    cmd.stdin(Stdio::from(open()));
    env.cg().place(&mut cmd).unwrap();
    let o = cmd.output().unwrap();
    assert_ok(&o, "cat of an inherited fd");
    assert_eq!(o.stdout, b"secret\n");
    let mut cmd = Command::new("/bin/cat");
    cmd.arg("/proc/self/fd/0").stdin(Stdio::from(open()));
    env.cg().place(&mut cmd).unwrap();
    assert_eperm(&cmd.output().unwrap(), "/proc/self/fd/0 reopen");
}

#[test]
fn exec_allowed_and_denied() {
    root_or_skip!("exec_allowed_and_denied");
    let mut env = Env::std("exec");
    assert_ok(&env.run(&[&env.p("bin/ok")]), "exec bin/ok");
    let mut cmd = Command::new(env.p("bin/denied"));
    env.cg().place(&mut cmd).unwrap();
    let err = cmd.output().expect_err("exec of bin/denied must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    assert_eperm(
        &env.run(&["/bin/sh", "-c", &env.p("bin/denied")]),
        "sh -c bin/denied",
    );
    let ev = env.events();
    let ok = ev
        .iter()
        .find(|e| matches!(&e.what, What::Exec { path, .. } if path.ends_with("/bin/ok")))
        .expect("exec event for bin/ok");
    assert_eq!(ok.decision, Some(Decision::Allow));
    assert_eq!(ok.policies, vec!["exec-all".to_string()]);
    let denied: Vec<_> = ev
        .iter()
        .filter(|e| matches!(&e.what, What::Exec { path, argv: None } if path.ends_with("/bin/denied")))
        .collect();
    assert_eq!(denied.len(), 2, "{ev:#?}");
    assert!(denied
        .iter()
        .all(|e| e.decision == Some(Decision::Deny) && e.policies == ["no-denied-bin"]));
    // The exec's own FAN_OPEN_PERM is not a separate (read/write) decision.
    assert!(
        !ev.iter()
            .any(|e| matches!(&e.what, What::FileOpen { path, .. } if path.contains("/bin/"))),
        "{ev:#?}"
    );
}

#[test]
fn exec_depending_on_argv_is_allowed_and_marked_deferred() {
    root_or_skip!("exec_depending_on_argv_is_allowed_and_marked_deferred");
    let mut env = Env::std("argv");
    assert_ok(&env.run(&[&env.p("bin/argv"), "--bad"]), "exec bin/argv");
    let ev = env.events();
    let e = ev
        .iter()
        .find(|e| matches!(&e.what, What::Exec { path, .. } if path.ends_with("/bin/argv")))
        .expect("exec event");
    assert_eq!(e.decision, None, "deferred to the userspace layer");
    assert!(e.policies.contains(&"argv-check".to_string()), "{:?}", e.policies);
}

#[test]
fn hardlink_and_copy_of_denied_binary_are_denied() {
    root_or_skip!("hardlink_and_copy_of_denied_binary_are_denied");
    let mut env = Env::std("ident");
    std::fs::hard_link(env.p("bin/denied"), env.p("other/hl")).unwrap();
    std::fs::copy(env.p("bin/denied"), env.p("other/copy")).unwrap();
    std::fs::rename(env.p("other/copy"), env.p("other/renamed-copy")).unwrap();
    // Same size as /bin/false, different bytes: allowed.
    std::fs::copy("/bin/true", env.p("other/true-copy")).unwrap();
    assert_eq!(
        std::fs::metadata(env.p("other/true-copy")).unwrap().size(),
        std::fs::metadata(env.p("bin/denied")).unwrap().size()
    );
    assert_eperm(&env.run(&["/bin/sh", "-c", &env.p("other/hl")]), "hardlink");
    assert_eperm(&env.run(&["/bin/sh", "-c", &env.p("other/renamed-copy")]), "copy");
    assert_ok(
        &env.run(&[&env.p("other/true-copy")]),
        "same-size different binary",
    );
    let ev = env.events();
    for p in ["other/hl", "other/renamed-copy"] {
        let e = ev
            .iter()
            .find(|e| matches!(&e.what, What::Exec { path, .. } if *path == env.p(p)))
            .expect("exec event");
        assert_eq!(e.decision, Some(Decision::Deny));
        assert_eq!(e.policies, vec!["no-denied-bin".to_string()], "{p}");
    }
}

#[test]
fn loader_cannot_run_denied_binary() {
    root_or_skip!("loader_cannot_run_denied_binary");
    let env = Env::std("ldso");
    assert_ok(&env.run(&[LOADER, &env.p("bin/ok")]), "ld.so bin/ok");
    let o = env.run(&[LOADER, &env.p("bin/denied")]);
    assert_eperm(&o, "ld.so bin/denied");
    std::fs::copy(env.p("bin/denied"), env.p("other/copy")).unwrap();
    assert_eperm(
        &env.run(&[LOADER, &env.p("other/copy")]),
        "ld.so copy of bin/denied",
    );
    // A program run by the loader opens data files and lists directories.
    let o = env.run(&[LOADER, "/bin/cat", &env.p("ro/file")]);
    assert_ok(&o, "ld.so /bin/cat ro/file");
    assert_eq!(o.stdout, b"readonly\n");
    assert_ok(&env.run(&[LOADER, "/bin/ls", &env.p("ro")]), "ld.so /bin/ls ro");
    assert_eperm(
        &env.run(&[LOADER, "/bin/cat", &env.p("bin/denied")]),
        "ld.so /bin/cat bin/denied",
    );
    // Outside the session the loader runs it.
    let o = Command::new(LOADER).arg(env.p("bin/denied")).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "outside: /bin/false's exit code, stderr {:?}",
        stderr(&o)
    );
}

#[test]
fn child_cgroup_created_after_start_is_governed() {
    root_or_skip!("child_cgroup_created_after_start_is_governed");
    let env = Env::std("child");
    let sub = env.cg().child("late").unwrap();
    let deeper = sub.child("deeper").unwrap();
    assert_eperm(
        &env.run_in(&sub, &["/bin/cat", &env.p("secret.txt")]),
        "child cgroup",
    );
    assert_eperm(
        &env.run_in(&deeper, &["/bin/cat", &env.p("secret.txt")]),
        "grandchild cgroup",
    );
    assert_ok(
        &env.run_in(&deeper, &["/bin/cat", &env.p("ok.txt")]),
        "grandchild allowed read",
    );
    drop(deeper);
    drop(sub);
}

#[test]
fn process_outside_the_session_is_not_affected() {
    root_or_skip!("process_outside_the_session_is_not_affected");
    let mut env = Env::std("outside");
    let o = Command::new("/bin/cat")
        .arg(env.p("secret.txt"))
        .output()
        .unwrap();
    assert_ok(&o, "cat outside");
    assert_eq!(o.stdout, b"secret\n");
    let o = Command::new(env.p("bin/denied")).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "bin/denied runs outside (it is /bin/false)"
    );
    assert!(
        env.events().is_empty(),
        "no events for processes outside the session"
    );
    assert_eq!(env.fan().decisions(), 0);
}

/// Inode marks of this process's fanotify groups, from fdinfo: (ino, ignored_mask).
fn ignore_marks() -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
        let Ok(s) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for l in s.lines().filter(|l| l.starts_with("fanotify ino:")) {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix(k))
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
            };
            if let (Some(ino), Some(ig)) = (field("ino:"), field("ignored_mask:")) {
                out.push((ino, ig));
            }
        }
    }
    out
}

#[test]
fn swap_flips_decisions_and_flushes_ignore_marks() {
    root_or_skip!("swap_flips_decisions_and_flushes_ignore_marks");
    let env = Env::std("swap");
    let f = env.p("other/data");
    write(&f, "data\n");
    let ino = std::fs::metadata(&f).unwrap().ino();
    // A long-lived process: reads, waits for a line, reads again.
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &format!("cat {f}; read x; cat {f}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    env.cg().place(&mut cmd).unwrap();
    let mut child = cmd.spawn().unwrap();
    // Wait for the first read.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 5];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    assert_eq!(&first, b"data\n");
    // Allowed for read, write and exec, nlink 1: the kernel stops asking.
    assert!(
        ignore_marks().iter().any(|(i, ig)| *i == ino && *ig != 0),
        "ignore mark on {f}: {:?}",
        ignore_marks()
    );
    let deny = format!(
        "{}\n@id(\"no-data\")\nforbid (principal, action in Action::\"FileOpen\", resource) when {{ resource == File::\"{f}\" }};\n",
        policy(&env.m)
    );
    env.fan().swap(tables(&deny));
    assert!(
        !ignore_marks().iter().any(|(i, _)| *i == ino),
        "swap flushed the ignore mark"
    );
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "second cat printed {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
    // And back.
    env.fan().swap(tables(&policy(&env.m)));
    assert_ok(&env.run(&["/bin/cat", &f]), "allowed again after the second swap");
}

#[test]
fn shadow_mode_lets_denials_through_and_reports_them() {
    root_or_skip!("shadow_mode_lets_denials_through_and_reports_them");
    let mut env = Env::new("shadow", Mode::Shadow, Arc::new(SyscallFlags), 1024);
    let o = env.run(&["/bin/cat", &env.p("secret.txt")]);
    assert_ok(&o, "cat secret in shadow mode");
    assert_eq!(o.stdout, b"secret\n");
    assert_eq!(
        env.run(&[&env.p("bin/denied")]).status.code(),
        Some(1),
        "denied binary runs in shadow mode"
    );
    let ev = env.events();
    let r = ev
        .iter()
        .find(|e| matches!(&e.what, What::FileOpen { path, .. } if path.ends_with("/secret.txt")))
        .expect("read event");
    assert_eq!(r.decision, Some(Decision::WouldDeny));
    assert_eq!(r.policies, vec!["no-secret".to_string()]);
    let x = ev
        .iter()
        .find(|e| matches!(&e.what, What::Exec { path, .. } if path.ends_with("/bin/denied")))
        .expect("exec event");
    assert_eq!(x.decision, Some(Decision::WouldDeny));
}

#[test]
fn events_carry_path_access_decision_policy_and_process() {
    root_or_skip!("events_carry_path_access_decision_policy_and_process");
    let mut env = Env::std("events");
    let mut cmd = Command::new("/bin/cat");
    cmd.arg(env.p("secret.txt"));
    env.cg().place(&mut cmd).unwrap();
    let child = cmd.stderr(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let ev = env.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    let e = &ev[0];
    assert_eq!(e.session, SessionId(7));
    assert_eq!(e.principal, PRINCIPAL);
    assert_eq!(e.layer, Layer::Fanotify);
    assert_eq!(
        e.what,
        What::FileOpen {
            path: env.p("secret.txt"),
            access: Access::Read
        }
    );
    assert_eq!(e.decision, Some(Decision::Deny));
    assert_eq!(e.policies, vec!["no-secret".to_string()]);
    assert_eq!(e.proc.pid, pid);
    assert_eq!(e.proc.ppid, std::process::id());
    assert_eq!(e.proc.comm, "cat");
    assert_eq!(e.proc.exe.as_deref(), Some("/usr/bin/cat"));
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now_ns = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
    assert!(
        e.ts_ns > 0 && e.ts_ns <= now_ns && now_ns - e.ts_ns < 60_000_000_000,
        "monotonic ts {}",
        e.ts_ns
    );
    // Allowed reads are reported too, with the permit that allows them.
    assert_ok(&env.run(&["/bin/cat", &env.p("ro/file")]), "cat ro/file");
    let ev = env.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(
        ev[0].what,
        What::FileOpen {
            path: env.p("ro/file"),
            access: Access::Read
        }
    );
    assert_eq!(ev[0].decision, Some(Decision::Allow));
    assert_eq!(ev[0].policies, vec!["read-all".to_string()]);
    assert_eq!(env.fan().decisions(), 2);
    assert_eq!(env.fan().lost(), 0);
}

#[test]
fn full_channel_counts_lost_events_and_never_blocks() {
    root_or_skip!("full_channel_counts_lost_events_and_never_blocks");
    let mut env = Env::new("lost", Mode::Enforce, Arc::new(SyscallFlags), 1);
    // ro/file is never ignore-marked (not writable): every open is asked.
    let o = env.run(&[
        "/bin/sh",
        "-c",
        &format!(
            "for i in 1 2 3 4 5 6; do cat {} >/dev/null; done",
            env.p("ro/file")
        ),
    ]);
    assert_ok(&o, "six reads");
    assert_eq!(env.fan().decisions(), 6);
    assert_eq!(env.fan().lost(), 5);
    assert_eq!(env.events().len(), 1);
}

#[test]
fn start_fails_naming_the_mount() {
    root_or_skip!("start_fails_naming_the_mount");
    let m = Tmpfs::new("startfail");
    let t = tables(&policy(&m.dir.to_string_lossy()));
    let cfg = |mounts: Vec<PathBuf>| Config {
        session: SessionId(1),
        principal: PRINCIPAL.into(),
        cgroup_rel: "/corral-test/none".into(),
        mounts,
        mode: Mode::Enforce,
    };
    let (tx, _rx) = channel(4);
    let err = Fanotify::start(
        cfg(vec![PathBuf::from("/nonexistent/corral")]),
        t.clone(),
        Arc::new(NoOpenFlags),
        tx.clone(),
    )
    .expect_err("missing mount");
    assert!(err.to_string().contains("/nonexistent/corral"), "{err}");
    let err = Fanotify::start(
        cfg(vec![PathBuf::from("/proc")]),
        t.clone(),
        Arc::new(NoOpenFlags),
        tx.clone(),
    )
    .expect_err("procfs");
    assert!(err.to_string().contains("/proc"), "{err}");
    let err = Fanotify::start(cfg(vec![]), t, Arc::new(NoOpenFlags), tx).expect_err("no mounts");
    assert!(err.to_string().contains("no mount"), "{err}");
}
