//! A whole kernel session on this host: telemetry tracepoints, and the file
//! layer (fanotify fallback) reading open flags from the tracepoints.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{cgroup_name, kt, plan, require_root, rt, Tmpfs};
use corral_core::{Decision, Event, What};
use corral_kernel::cgroup::Cgroup;
use corral_kernel::session::{KernelSession, SessionConfig};

fn drain(
    rt: &tokio::runtime::Runtime,
    s: &mut KernelSession,
    rx: &mut tokio::sync::mpsc::Receiver<Event>,
) -> Vec<Event> {
    rt.block_on(s.flush());
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[test]
fn telemetry_exec_argv_fork_exit() {
    if !require_root("telemetry_exec_argv_fork_exit") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let cg = Cgroup::create(&cgroup_name("trace")).unwrap();
    let (mut s, mut rx) = KernelSession::start(common::net_only(11, cg.path()), &plan("")).unwrap();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", "/bin/echo 'a b' '' c >/dev/null; exit 3"]);
    cg.place(&mut cmd).unwrap();
    let st = cmd.status().unwrap();
    assert_eq!(st.code(), Some(3));
    // Outside the session: no telemetry.
    let _ = std::process::Command::new("/bin/echo")
        .arg("outside-marker")
        .output()
        .unwrap();
    let evs = drain(&rt, &mut s, &mut rx);
    let exec = evs
        .iter()
        .find_map(|e| match &e.what {
            What::ExecTrace { path, argv } if path == "/bin/echo" => Some((e, argv.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no exec event for /bin/echo: {evs:#?}"));
    assert_eq!(exec.1, vec!["/bin/echo", "a b", "", "c"]);
    assert!(exec.0.proc.ppid > 0, "ppid filled");
    let sh_pid = evs
        .iter()
        .find_map(|e| match &e.what {
            What::ExecTrace { path, .. } if path == "/bin/sh" => Some(e.proc.pid),
            _ => None,
        })
        .expect("exec event for /bin/sh");
    assert!(
        evs.iter().any(
            |e| matches!(e.what, What::Fork { child } if child == exec.0.proc.pid) && e.proc.pid == sh_pid
        ),
        "fork sh -> echo: {evs:#?}"
    );
    assert!(
        evs.iter()
            .any(|e| e.proc.pid == sh_pid && matches!(e.what, What::Exit { code: 3 })),
        "exit 3 of sh: {evs:#?}"
    );
    assert!(
        !evs.iter().any(
            |e| matches!(&e.what, What::ExecTrace { argv, .. } if argv.iter().any(|a| a == "outside-marker"))
        ),
        "a process outside the session produced telemetry"
    );
}

#[test]
fn file_layer_tells_read_from_write_by_open_flags() {
    if !require_root("file_layer_tells_read_from_write_by_open_flags") {
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let fs = Tmpfs::new("rw");
    let f = fs.path.join("notes.txt");
    std::fs::write(&f, "hello").unwrap();
    let dir = fs.path.display().to_string();
    let policy = format!(
        r#"@id("read-tmp") permit (principal, action == Action::"FileOpenReadOnly", resource in Dir::"{dir}/");
@id("run-anything") permit (principal, action == Action::"ProcessExec", resource);"#
    );
    let cg = Cgroup::create(&cgroup_name("rw")).unwrap();
    let mut cfg = SessionConfig::new(12, "claude", cg.path());
    cfg.file_mounts = vec![fs.path.clone()];
    let (mut s, mut rx) = KernelSession::start(cfg, &plan(&policy)).unwrap();
    let path = f.display().to_string();
    assert_eq!(kt(Some(&cg), &format!("read {path}")), (0, "ok 5".to_string()));
    assert_eq!(
        kt(Some(&cg), &format!("write {path}")).0,
        1,
        "write is denied with EPERM"
    );
    // Swap to a policy that also permits writing: the same request flips.
    let more = format!(
        "{policy}\n@id(\"write-tmp\") permit (principal, action == Action::\"FileOpenReadWrite\", resource in Dir::\"{dir}/\");"
    );
    s.swap(&plan(&more), None).unwrap();
    assert_eq!(
        kt(Some(&cg), &format!("write {path}")).0,
        0,
        "write allowed after swap"
    );
    let evs = drain(&rt, &mut s, &mut rx);
    let denied = evs
        .iter()
        .find(|e| {
            e.decision == Some(Decision::Deny)
                && matches!(&e.what, What::FileOpen { path: p, .. } if *p == path)
        })
        .unwrap_or_else(|| panic!("no deny event: {evs:#?}"));
    assert!(matches!(
        denied.what,
        What::FileOpen {
            access: corral_core::Access::Write,
            ..
        }
    ));
    assert!(
        denied.policies.is_empty(),
        "default deny names no policy: {:?}",
        denied.policies
    );
    drop(s);
    drop(cg);
}

#[test]
fn exec_arguments_are_decided_before_the_first_instruction() {
    if !require_root("exec_arguments_are_decided_before_the_first_instruction") {
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let rt = rt();
    let _g = rt.enter();
    let fs = Tmpfs::new("argv");
    let policy = r#"@id("read-all") permit (principal, action == Action::"FileOpenReadOnly", resource in Dir::"/");
@id("write-all") permit (principal, action == Action::"FileOpenReadWrite", resource in Dir::"/");
@id("exec-all") permit (principal, action == Action::"ProcessExec", resource in Dir::"/");
@id("no-force") forbid (principal, action == Action::"ProcessExec", resource) when { context.argv.contains("--force") };"#;
    let (p, judge) = common::plan_and_judge(policy);
    let cg = Cgroup::create(&cgroup_name("argv")).unwrap();
    let mut cfg = SessionConfig::new(13, "claude", cg.path());
    cfg.file_mounts = vec![fs.path.clone()];
    cfg.exec_judge = Some(judge);
    let (mut s, mut rx) = KernelSession::start(cfg, &p).unwrap();
    let marker = fs.path.join("ran");
    // Allowed: the program runs.
    let mut ok = std::process::Command::new("/bin/sh");
    ok.args(["-c", &format!("echo yes > {}", marker.display())]);
    cg.place(&mut ok).unwrap();
    assert!(ok.status().unwrap().success());
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "yes");
    std::fs::remove_file(&marker).unwrap();
    // Denied by argv: killed before its first instruction, so the file it
    // would write never appears.
    let mut bad = std::process::Command::new("/bin/sh");
    bad.args(["-c", &format!("echo yes > {}", marker.display()), "--force"]);
    cg.place(&mut bad).unwrap();
    let st = bad.status().unwrap();
    assert_eq!(st.signal(), Some(libc_sigkill()), "killed by SIGKILL: {st:?}");
    assert!(!marker.exists(), "the denied program ran");
    let evs = drain(&rt, &mut s, &mut rx);
    let d = evs
        .iter()
        .find(|e| e.decision == Some(Decision::Deny) && matches!(&e.what, What::Exec { .. }))
        .unwrap_or_else(|| panic!("no exec deny event: {evs:#?}"));
    assert_eq!(d.policies, vec!["no-force".to_string()]);
    match &d.what {
        What::Exec { path, argv } => {
            assert!(
                path.ends_with("sh") || path.contains("dash") || path.contains("bash"),
                "{path}"
            );
            assert!(argv.as_ref().unwrap().contains(&"--force".to_string()));
        }
        other => panic!("{other:?}"),
    }
}

fn libc_sigkill() -> i32 {
    9
}

#[test]
fn supervisor_death_kills_the_session_without_a_lapse() {
    if !require_root("supervisor_death_kills_the_session_without_a_lapse") {
        return;
    }
    use std::io::BufRead;
    let cg = Cgroup::create(&cgroup_name("reaper")).unwrap();
    let mut sup = std::process::Command::new(env!("CARGO_BIN_EXE_corral-kguest"))
        .arg("--hold")
        .arg(cg.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(sup.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Enforced while the supervisor lives.
    assert_eq!(kt(Some(&cg), &format!("tcp 127.0.0.1 {port}")).0, 1);
    sup.kill().unwrap();
    let _ = sup.wait();
    // The watchdog kills the session's processes...
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "session process {pid} survived its supervisor: {stat}"
    );
    assert!(cg.pids().is_empty(), "cgroup still has {:?}", cg.pids());
}

#[test]
fn a_layer_that_cannot_attach_stops_the_session_and_leaves_nothing_attached() {
    if !require_root("a_layer_that_cannot_attach_stops_the_session_and_leaves_nothing_attached") {
        return;
    }
    let caps = corral_kernel::probe::probe();
    if caps.lsm_attachable() {
        common::skip(
            "a_layer_that_cannot_attach_stops_the_session_and_leaves_nothing_attached",
            "BPF LSM attaches on this host, so forcing it cannot fail here",
        );
        return;
    }
    let rt = rt();
    let _g = rt.enter();
    let cg = Cgroup::create(&cgroup_name("failclosed")).unwrap();
    let mut cfg = SessionConfig::new(14, "claude", cg.path());
    cfg.file_layer = corral_kernel::session::FileLayer::Lsm;
    let err = match KernelSession::start(cfg, &plan("")) {
        Ok(_) => panic!("the session started without the layer it was told to use"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("lsm/file_open") || err.contains("BPF LSM"),
        "names the hook: {err}"
    );
    // Nothing stayed attached to the cgroup.
    let out = std::process::Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cg.path())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listing.contains("connect4") && !listing.contains("sendmsg"),
        "left attached: {listing}"
    );
    // And a process there is not governed by a half-started session: it can connect.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (code, out) = kt(
        Some(&cg),
        &format!("tcp 127.0.0.1 {}", l.local_addr().unwrap().port()),
    );
    assert_eq!(code, 0, "{out}");
}
