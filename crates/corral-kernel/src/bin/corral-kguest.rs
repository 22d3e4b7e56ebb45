//! `corral-kguest`: the kernel scenarios, run where they are to be proved —
//! inside the BPF LSM test VM (tests/lsm_vm.rs boots it), or natively.
//!
//! Usage: `corral-kguest KT_BINARY` where KT_BINARY is `corral-kt`. Starts a
//! session on a fresh cgroup with the file layer forced to BPF LSM (or
//! `--fanotify`), runs every case with real processes, prints one line per
//! case: `CASE <name> PASS|FAIL <got> (want <expected>)`, then `EVENTS <n>
//! deny=<n>` and exits 0 only when every case passed.

use corral_core::{Decision, What};
use corral_kernel::cgroup::Cgroup;
use corral_kernel::session::{FileLayer, KernelSession, SessionConfig};
use std::path::Path;
use std::process::Command;

const POLICY: &str = r#"
@id("read-all") permit (principal, action == Action::"FileOpenReadOnly", resource in Dir::"/");
@id("write-work") permit (principal, action == Action::"FileOpenReadWrite", resource in Dir::"/tmp/work/");
@id("no-secret") forbid (principal, action in Action::"FileOpen", resource == File::"/tmp/work/secret.txt");
@id("no-private") forbid (principal, action in Action::"FileOpen", resource in Dir::"/tmp/work/private/");
@id("exec-all") permit (principal, action == Action::"ProcessExec", resource in Dir::"/");
@id("no-forbidden") forbid (principal, action == Action::"ProcessExec", resource == File::"/tmp/work/bin/forbidden");
@id("no-force") forbid (principal, action == Action::"ProcessExec", resource == File::"/tmp/work/bin/ok") when { context.argv.contains("--force") };
@id("net") permit (principal, action == Action::"NetworkConnect", resource) when { context.port == PORT_A };
"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(kt) = args.get(1).cloned() else {
        eprintln!("usage: corral-kguest KT_BINARY [--fanotify]");
        std::process::exit(2);
    };
    if kt == "--hold" {
        // `corral-kguest --hold CGROUP_DIR`: a supervisor that starts a
        // deny-all network session on CGROUP_DIR, runs `sleep 1000` in it,
        // prints `READY <pid>` and waits to be killed (the watchdog test).
        if let Err(e) = hold(args.get(2).map(String::as_str).unwrap_or("")) {
            println!("ERROR {e}");
            std::process::exit(3);
        }
        return;
    }
    let fanotify = args.iter().any(|a| a == "--fanotify");
    match run(&kt, fanotify) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            println!("ERROR {e}");
            std::process::exit(3);
        }
    }
}

struct Case {
    name: &'static str,
    action: String,
    /// "ok", "EPERM", "nonzero" (the exec ran a program that failed), "ok0"
    /// (exec whose program exited 0).
    want: &'static str,
}

fn kt(bin: &str, cg: Option<&Cgroup>, action: &str) -> std::io::Result<(i32, String)> {
    let mut cmd = Command::new(bin);
    cmd.args(action.split_whitespace());
    if let Some(cg) = cg {
        cg.place(&mut cmd).map_err(std::io::Error::other)?;
    }
    let out = cmd
        .output()
        .map_err(|e| std::io::Error::new(e.kind(), format!("run {bin} {action}: {e}")))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

fn verdict(want: &str, code: i32, out: &str) -> bool {
    match want {
        "ok" => code == 0,
        "EPERM" => code == 1 && out.contains("EPERM"),
        // `exec` prints the program's output, then `ok <its exit code>`.
        "ok0" => code == 0 && out.lines().last() == Some("ok 0"),
        // Killed by a signal (the exec helper reports -1).
        // ... and printed nothing: it never ran.
        "killed" => code == 0 && out.trim() == "ok -1",
        "nonzero" => {
            code == 0
                && out
                    .lines()
                    .last()
                    .is_some_and(|l| l.starts_with("ok ") && l != "ok 0")
        }
        _ => false,
    }
}

fn run(kt_bin: &str, fanotify: bool) -> Result<bool, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let _g = rt.enter();
    // Files.
    let w = Path::new("/tmp/work");
    let _ = std::fs::remove_dir_all(w);
    for d in ["bin", "private", "sub"] {
        std::fs::create_dir_all(w.join(d))?;
    }
    std::fs::write(w.join("allowed.txt"), "fine")?;
    std::fs::write("/tmp/outside.txt", "outside")?;
    std::fs::write(w.join("secret.txt"), "secret")?;
    std::fs::write(w.join("private/key"), "key")?;
    std::fs::copy(kt_bin, w.join("bin/ok"))?;
    // The forbidden binary must differ from corral-kt itself: the fanotify
    // fallback also denies byte-identical copies of a forbidden binary.
    let mut forbidden = std::fs::read(kt_bin)?;
    forbidden.extend_from_slice(b"\0corral-forbidden");
    std::fs::write(w.join("bin/forbidden"), forbidden)?;
    std::os::unix::fs::symlink(w.join("secret.txt"), w.join("link-to-secret"))?;
    std::fs::hard_link(w.join("bin/forbidden"), w.join("bin/hardlink"))?;
    std::fs::copy(w.join("bin/forbidden"), w.join("bin/copy-of-forbidden"))?;
    std::fs::write(w.join("script.sh"), "#!/tmp/work/bin/forbidden pid\n")?;
    use std::os::unix::fs::PermissionsExt;
    for f in ["script.sh", "bin/forbidden", "bin/copy-of-forbidden"] {
        std::fs::set_permissions(w.join(f), std::fs::Permissions::from_mode(0o755))?;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let pa = listener.local_addr()?.port();
    let other = std::net::TcpListener::bind("127.0.0.1:0")?;
    let pb = other.local_addr()?.port();

    let checked = corral_policy::check(vec![corral_policy::Source::new(
        "guest.cedar",
        POLICY.replace("PORT_A", &pa.to_string()),
    )]);
    let doc = checked.doc.ok_or("policy did not load")?;
    let judge =
        corral_kernel::session::JudgeRef(std::sync::Arc::new(corral_kernel::argv::CedarJudge::new(&doc)));
    let plan = checked.plan.ok_or("policy did not compile")?;
    let cg = Cgroup::create(&format!("corral-guest-{}", std::process::id()))?;
    let mut cfg = SessionConfig::new(1, "claude", cg.path());
    cfg.exec_judge = Some(judge);
    if fanotify {
        cfg.file_layer = FileLayer::Fanotify;
        cfg.file_mounts = vec!["/tmp".into()];
    } else {
        cfg.file_layer = FileLayer::Lsm;
    }
    let (mut session, mut rx) = KernelSession::start(cfg, &plan)?;
    println!("LAYERS {:?}", session.layers());
    for m in session.lsm_missing() {
        println!("MISSING {m}");
    }

    let c = |name, action: String, want| Case { name, action, want };
    let cases = vec![
        c("read-allowed", "read /tmp/work/allowed.txt".into(), "ok"),
        c("read-forbidden-file", "read /tmp/work/secret.txt".into(), "EPERM"),
        c("read-forbidden-dir", "read /tmp/work/private/key".into(), "EPERM"),
        c("write-allowed", "write /tmp/work/allowed.txt".into(), "ok"),
        c("write-outside-permit", "write /tmp/outside.txt".into(), "EPERM"),
        c(
            "symlink-to-forbidden",
            "read /tmp/work/link-to-secret".into(),
            "EPERM",
        ),
        c("dotdot-path", "read /tmp/work/sub/../secret.txt".into(), "EPERM"),
        c(
            "proc-self-root",
            "read /proc/self/root/tmp/work/secret.txt".into(),
            "EPERM",
        ),
        c(
            "proc-self-fd-reopen",
            "reopen /tmp/work/secret.txt".into(),
            "EPERM",
        ),
        c("exec-allowed", "exec /tmp/work/bin/ok pid".into(), "ok0"),
        c(
            "exec-forbidden",
            "exec /tmp/work/bin/forbidden pid".into(),
            "EPERM",
        ),
        c(
            "exec-hardlink-of-forbidden",
            "exec /tmp/work/bin/hardlink pid".into(),
            "EPERM",
        ),
        c(
            "exec-copy-of-forbidden",
            "exec /tmp/work/bin/copy-of-forbidden pid".into(),
            "EPERM",
        ),
        c(
            "exec-via-ld-so",
            "exec /lib64/ld-linux-x86-64.so.2 /tmp/work/bin/forbidden pid".into(),
            "nonzero",
        ),
        c(
            "script-with-forbidden-interpreter",
            "exec /tmp/work/script.sh".into(),
            "EPERM",
        ),
        c(
            "exec-argv-allowed",
            "exec /tmp/work/bin/ok pid --gentle".into(),
            "ok0",
        ),
        c(
            "exec-argv-forbidden-killed-before-running",
            "exec /tmp/work/bin/ok pid --force".into(),
            "killed",
        ),
        c(
            "bind-mount-alias",
            "bindread /tmp/work/secret.txt /tmp/work/allowed.txt".into(),
            if fanotify { "gap" } else { "EPERM" },
        ),
        c("connect-allowed", format!("tcp 127.0.0.1 {pa}"), "ok"),
        c("connect-denied", format!("tcp 127.0.0.1 {pb}"), "EPERM"),
        c(
            "connect-v4-mapped-denied",
            format!("tcp ::ffff:127.0.0.1 {pb}"),
            "EPERM",
        ),
    ];
    let mut all = true;
    for case in &cases {
        let (code, out) = kt(kt_bin, Some(&cg), &case.action)?;
        let shown = out.replace('\n', " | ");
        if case.want == "gap" {
            // A known gap of this layer (docs/SECURITY.md): reported, not
            // counted; the line says whether the escape worked here.
            println!("CASE {} KNOWN-GAP {shown}", case.name);
            continue;
        }
        let pass = verdict(case.want, code, &out);
        all &= pass;
        println!(
            "CASE {} {} {shown} (want {})",
            case.name,
            if pass { "PASS" } else { "FAIL" },
            case.want
        );
    }
    // A cgroup created after attach is governed.
    let child = cg.child("later")?;
    let (code, out) = kt(kt_bin, Some(&child), "read /tmp/work/secret.txt")?;
    let pass = verdict("EPERM", code, &out);
    all &= pass;
    println!(
        "CASE child-cgroup-after-attach {} {out} (want EPERM)",
        if pass { "PASS" } else { "FAIL" }
    );
    // Outside the session nothing is decided.
    let (code, out) = kt(kt_bin, None, "read /tmp/work/secret.txt")?;
    let pass = verdict("ok", code, &out);
    all &= pass;
    println!(
        "CASE outside-session-untouched {} {out} (want ok)",
        if pass { "PASS" } else { "FAIL" }
    );
    // Renaming the process changes nothing.
    let mut cmd = Command::new(kt_bin);
    cmd.arg("serve")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    cg.place(&mut cmd)?;
    let mut child_proc = cmd.spawn()?;
    let mut stdin = child_proc.stdin.take().ok_or("stdin")?;
    let mut out = std::io::BufReader::new(child_proc.stdout.take().ok_or("stdout")?);
    let mut ask = |line: &str| -> std::io::Result<String> {
        use std::io::{BufRead, Write};
        writeln!(stdin, "{line}")?;
        let mut s = String::new();
        out.read_line(&mut s)?;
        Ok(s.trim().to_string())
    };
    ask("comm cat")?;
    let got = ask("read /tmp/work/secret.txt")?;
    let pass = got.contains("EPERM");
    all &= pass;
    println!(
        "CASE comm-rename-changes-nothing {} {got} (want EPERM)",
        if pass { "PASS" } else { "FAIL" }
    );
    // Mode switch at runtime: shadow lets the same read through (reported
    // as would-deny), enforce refuses it again.
    session.set_mode(corral_core::Mode::Shadow)?;
    let shadowed = ask("read /tmp/work/secret.txt")?;
    session.set_mode(corral_core::Mode::Enforce)?;
    let enforced = ask("read /tmp/work/secret.txt")?;
    let pass = shadowed == "ok 6" && enforced.contains("EPERM");
    all &= pass;
    println!(
        "CASE mode-switch-flips-running-process {} shadow: {shadowed}, enforce: {enforced} (want ok 6, EPERM)",
        if pass { "PASS" } else { "FAIL" }
    );
    // Hot swap: the running process's next open sees the new policy.
    let swapped = POLICY.replace("PORT_A", &pa.to_string()).replace(
        r#"@id("no-secret") forbid (principal, action in Action::"FileOpen", resource == File::"/tmp/work/secret.txt");"#,
        "",
    );
    let plan2 = corral_policy::check(vec![corral_policy::Source::new("guest2.cedar", swapped)])
        .plan
        .ok_or("swapped policy did not compile")?;
    session.swap(&plan2, None)?;
    let got = ask("read /tmp/work/secret.txt")?;
    let pass = got == "ok 6";
    all &= pass;
    println!(
        "CASE hot-swap-flips-running-process {} {got} (want ok 6)",
        if pass { "PASS" } else { "FAIL" }
    );
    // A plan the kernel tables cannot hold (BPF LSM: a listed path longer
    // than 254 bytes) is refused whole: nothing of it applies.
    if !fanotify {
        let long = format!("/tmp/work/{}", "x".repeat(300));
        let bad = format!(
            "{}\n@id(\"long\") forbid (principal, action in Action::\"FileOpen\", resource == File::\"{long}\");\n\
             @id(\"no-allowed\") forbid (principal, action in Action::\"FileOpen\", resource == File::\"/tmp/work/allowed.txt\");",
            POLICY.replace("PORT_A", &pa.to_string())
        );
        let plan3 = corral_policy::check(vec![corral_policy::Source::new("guest3.cedar", bad)])
            .plan
            .ok_or("long-path policy did not compile")?;
        let refused = session.swap(&plan3, None).is_err();
        let got = ask("read /tmp/work/allowed.txt")?;
        let pass = refused && got == "ok 4";
        all &= pass;
        println!(
            "CASE invalid-swap-changes-nothing {} refused={refused} {got} (want refused, ok 4)",
            if pass { "PASS" } else { "FAIL" }
        );
    }
    let _ = child_proc.kill();
    let _ = child_proc.wait();

    rt.block_on(session.flush());
    let evs: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    let deny_secret = evs.iter().any(|e| {
        e.decision == Some(Decision::Deny)
            && e.policies == vec!["no-secret".to_string()]
            && matches!(&e.what, What::FileOpen { path, .. } if path == "/tmp/work/secret.txt")
    });
    all &= deny_secret;
    println!(
        "CASE deny-event-with-policy-id {} (events {})",
        if deny_secret { "PASS" } else { "FAIL" },
        evs.len()
    );
    let denies = evs.iter().filter(|e| e.decision == Some(Decision::Deny)).count();
    println!("EVENTS {} deny={denies} lost={}", evs.len(), session.lost());
    drop(session);
    drop(child);
    drop(cg);
    all &= redirect_cases(kt_bin)?;
    Ok(all)
}

/// The TCP redirect to the egress proxy on this kernel (sock_ops and
/// getpeername4/6 included), on its own cgroup: a permitted destination
/// reaches a loopback stand-in proxy with its origin, a forbidden one is
/// refused. Prints `REDIRECT-MISSING` for optional programs the kernel refused.
fn redirect_cases(kt_bin: &str) -> Result<bool, Box<dyn std::error::Error>> {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0")?;
    proxy.set_nonblocking(true)?;
    let std::net::SocketAddr::V4(v4) = proxy.local_addr()? else {
        return Err("the proxy listener is not v4".into());
    };
    let plan = corral_policy::check(vec![corral_policy::Source::new(
        "redirect.cedar",
        r#"@id("web") permit (principal, action == Action::"NetworkConnect", resource)
           when { context.ip.isInRange(ip("192.0.2.0/24")) };
           @id("no-evil") forbid (principal, action == Action::"NetworkConnect", resource)
           when { context.ip.isInRange(ip("198.51.100.0/24")) };"#
            .to_string(),
    )])
    .plan
    .ok_or("redirect policy did not compile")?;
    let cg = Cgroup::create(&format!("corral-guest-redirect-{}", std::process::id()))?;
    let mut cfg = SessionConfig::new(2, "claude", cg.path());
    cfg.file_layer = FileLayer::Off;
    cfg.redirect = Some(corral_kernel::Redirect { v4, v6: None });
    let (session, _rx) = KernelSession::start(cfg, &plan)?;
    for m in session.redirect_missing() {
        println!("REDIRECT-MISSING {m}");
    }
    let origins = session.origins().ok_or("no origins with a redirect")?;
    let (code, out) = kt(kt_bin, Some(&cg), "tcpw 192.0.2.1 443")?;
    // `ok PEER PID`: what getpeername() said, and the child's pid.
    let mut f = out.split_whitespace().skip(1);
    let (shown, pid) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
    let accepted = if code == 0 {
        let mut got = None;
        for _ in 0..200 {
            if let Ok((_, peer)) = proxy.accept() {
                got = Some(peer);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        got
    } else {
        None
    };
    let origin = accepted.and_then(|peer| origins.take(peer));
    let pass = code == 0
        && origin
            .as_ref()
            .is_some_and(|o| o.dst.to_string() == "192.0.2.1:443" && o.pid.to_string() == pid)
        && (shown == "192.0.2.1:443" || !session.redirect_missing().is_empty());
    println!(
        "CASE tcp-redirect-to-proxy {} {out} origin={origin:?} (want ok 192.0.2.1:443, origin 192.0.2.1:443)",
        if pass { "PASS" } else { "FAIL" }
    );
    let (code, out) = kt(kt_bin, Some(&cg), "tcpw 198.51.100.7 443")?;
    let refused = verdict("EPERM", code, &out);
    println!(
        "CASE tcp-redirect-forbid-refused {} {out} (want EPERM)",
        if refused { "PASS" } else { "FAIL" }
    );
    drop(session);
    drop(cg);
    Ok(pass && refused)
}

fn hold(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let _g = rt.enter();
    let cg = Cgroup::open(Path::new(dir))?;
    let plan = corral_policy::check(vec![corral_policy::Source::new("hold.cedar", String::new())])
        .plan
        .ok_or("empty policy did not compile")?;
    let mut cfg = SessionConfig::new(9, "claude", cg.path());
    cfg.file_layer = FileLayer::Off;
    let (_session, _rx) = KernelSession::start(cfg, &plan)?;
    let mut cmd = Command::new("/bin/sleep");
    cmd.arg("1000");
    cg.place(&mut cmd)?;
    let child = cmd.spawn()?;
    println!("READY {}", child.id());
    use std::io::Write;
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}
