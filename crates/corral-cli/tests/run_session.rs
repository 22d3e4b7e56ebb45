//! `corral run` end to end: real podman (runc), real kernel programs, the
//! real `corral` binary. Each test asserts on what a user sees: exit
//! status, stderr, the recorded events, and what is left on the host.
//!
//! Needs root and podman; without them each test records a skip
//! (`CORRAL-SKIP`, counted by scripts/test.sh), never passes silently.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{has, podman_ready, text, Scratch};
use corral_vmtest::{is_root, skip};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const POLICY: &str = r#"// test policy
@id("read-all")
permit (principal, action == Action::"FileOpenReadOnly", resource)
when { resource in Dir::"/" };

@id("write-tmp-dev")
permit (principal, action in Action::"FileOpen", resource)
when { resource in [Dir::"/tmp/", Dir::"/dev/", Dir::"/proc/"] };

@id("forbid-secret")
forbid (principal, action in Action::"FileOpen", resource)
when { resource == File::"/tmp/secret" };

@id("exec-system")
permit (principal, action == Action::"ProcessExec", resource)
when { resource in [Dir::"/usr/", Dir::"/bin/", Dir::"/lib/", Dir::"/run/corral/"] };

@id("forbid-id")
forbid (principal, action == Action::"ProcessExec", resource)
when { resource == File::"/usr/bin/id" };
"#;

/// The line (1-based) of the `permit`/`forbid` keyword of the policy
/// annotated `@id("<id>")` in POLICY.
fn line_of(id: &str) -> usize {
    let lines: Vec<&str> = POLICY.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(&format!("@id(\"{id}\")")))
        .expect("id in POLICY");
    at + 1
        + lines[at..]
            .iter()
            .position(|l| l.starts_with("permit") || l.starts_with("forbid"))
            .expect("effect after the id")
}

struct Session<'a> {
    dir: &'a Scratch,
    policy: PathBuf,
    events: PathBuf,
}

impl<'a> Session<'a> {
    fn new(dir: &'a Scratch, policy: &str, tag: &str) -> Session<'a> {
        let secret = dir.file("secret", "TOP-SECRET\n");
        let _ = secret;
        dir.file("allowed", "fine to read\n");
        Session {
            dir,
            policy: dir.file(&format!("policy-{tag}.cedar"), policy),
            events: dir.0.join(format!("events-{tag}.jsonl")),
        }
    }

    fn cmd(&self, extra: &[&str], command: &[&str]) -> Command {
        let mut c = self.dir.corral();
        c.arg("run")
            .arg("--policy")
            .arg(&self.policy)
            .arg("--events")
            .arg(&self.events)
            .arg("--project")
            .arg(&self.dir.0)
            .arg("-v")
            .arg(format!("{}:/tmp/secret:ro", self.dir.0.join("secret").display()))
            .arg("-v")
            .arg(format!(
                "{}:/tmp/allowed:ro",
                self.dir.0.join("allowed").display()
            ))
            .args(extra)
            .arg("--")
            .args(command);
        c
    }

    fn run(&self, extra: &[&str], command: &[&str]) -> Output {
        self.cmd(extra, command).output().expect("run corral")
    }

    fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The error a denied open or exec shows: EPERM on every layer (fanotify's
/// FAN_DENY can only be EPERM, and BPF LSM returns the same so that a
/// denial looks alike on every host), whatever the banner names.
fn denied_text(_banner: &str) -> &'static str {
    "Operation not permitted"
}

/// Asserts a denial's message, using the banner of the same run (or of a
/// reference run when this one was quiet).
fn assert_denied(stderr: &str, banner: &str, what: &str) {
    let want = denied_text(banner);
    assert!(stderr.contains(want), "{what}: expected {want:?} in: {stderr}");
}

#[test]
fn file_exec_net_decisions_and_exit_codes_pass_through() {
    let t = "file_exec_net_decisions_and_exit_codes_pass_through";
    if !podman_ready(t) {
        return;
    }
    let dir = Scratch::new("decisions");
    let s = Session::new(&dir, POLICY, "a");

    // A forbidden file: Permission denied, exit 1, deny event with the line.
    let o = s.run(&[], &["cat", "/tmp/secret"]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", text(&o.stderr));
    let banner = text(&o.stderr);
    assert!(banner.contains("corral: session s"), "banner: {banner}");
    assert_denied(&banner, &banner, "cat /tmp/secret");
    assert!(!text(&o.stdout).contains("TOP-SECRET"));
    let evs = s.events();
    let deny = evs
        .iter()
        .find(|e| e["decision"] == "deny" && e["what"]["path"] == "/tmp/secret")
        .unwrap_or_else(|| panic!("no deny event for /tmp/secret in {evs:#?}"));
    let at = deny["policy_at"][0].as_str().unwrap_or_default();
    assert_eq!(
        at,
        format!("{}:{}", s.policy.display(), line_of("forbid-secret")),
        "policy line in {deny}"
    );
    assert_eq!(deny["policies"][0], "forbid-secret");

    // An allowed file reads fine.
    let o = s.run(&[], &["cat", "/tmp/allowed"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "fine to read\n");

    // A forbidden binary does not run (126: found but not executable).
    let o = s.run(&[], &["/usr/bin/id"]);
    assert_eq!(o.status.code(), Some(126), "stderr: {}", text(&o.stderr));
    assert_denied(&text(&o.stderr), &banner, "exec /usr/bin/id");
    assert!(!text(&o.stdout).contains("uid="));

    // A connect the policy does not permit fails in the kernel (EPERM, not
    // a refusal from a peer).
    let o = s.run(&[], &["bash", "-c", "exec 3<>/dev/tcp/10.88.0.1/9"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("Operation not permitted"),
        "stderr: {}",
        text(&o.stderr)
    );

    // A new mount namespace would hold unmarked copies of the container's
    // mounts (the fanotify fallback's blind spot): corral-init's seccomp
    // filter refuses it, and the secret stays unread.
    let o = s.run(&[], &["sh", "-c", "unshare -Um cat /tmp/secret; echo rc=$?"]);
    assert_eq!(text(&o.stdout), "rc=1\n", "stderr: {}", text(&o.stderr));
    assert!(text(&o.stderr).contains("unshare failed: Operation not permitted"));

    // Exit codes and death by signal pass through.
    for (cmd, code) in [("exit 0", 0), ("exit 1", 1), ("exit 42", 42)] {
        let o = s.run(&[], &["sh", "-c", cmd]);
        assert_eq!(o.status.code(), Some(code), "{cmd}: {}", text(&o.stderr));
    }
    let o = s.run(&[], &["sh", "-c", "kill -9 $$"]);
    assert_eq!(
        o.status.signal(),
        Some(9),
        "status {:?}: {}",
        o.status,
        text(&o.stderr)
    );
    let o = s.run(&[], &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(
        o.status.signal(),
        Some(15),
        "status {:?}: {}",
        o.status,
        text(&o.stderr)
    );
}

#[test]
fn first_instruction_runs_under_enforcement_every_time() {
    let t = "first_instruction_runs_under_enforcement_every_time";
    if !podman_ready(t) {
        return;
    }
    let dir = Scratch::new("first");
    let s = Session::new(&dir, POLICY, "b");
    let banner = text(&s.run(&[], &["true"]).stderr);
    for i in 0..50 {
        let o = s.run(&["-q"], &["cat", "/tmp/secret"]);
        assert_eq!(o.status.code(), Some(1), "run {i}: {}", text(&o.stderr));
        assert!(!text(&o.stdout).contains("TOP-SECRET"), "run {i} read the secret");
        assert_denied(&text(&o.stderr), &banner, &format!("run {i}"));
    }
}

#[test]
fn concurrent_sessions_enforce_their_own_principals() {
    let t = "concurrent_sessions_enforce_their_own_principals";
    if !podman_ready(t) {
        return;
    }
    let policy = format!(
        "{POLICY}\n@id(\"bob-no-allowed\")\nforbid (principal == Agent::\"bob\", action in Action::\"FileOpen\", resource)\nwhen {{ resource == File::\"/tmp/allowed\" }};\n"
    );
    let dir = Scratch::new("concurrent");
    let s = Session::new(&dir, &policy, "c");
    // Both sessions are alive at once (each sleeps before its read).
    let script = "sleep 2; cat /tmp/allowed";
    let alice = s
        .cmd(&["--as", "alice", "-q"], &["sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("alice");
    let bob = s
        .cmd(&["--as", "bob", "-q"], &["sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bob");
    let a = alice.wait_with_output().expect("alice");
    let b = bob.wait_with_output().expect("bob");
    assert_eq!(a.status.code(), Some(0), "alice: {}", text(&a.stderr));
    assert_eq!(text(&a.stdout), "fine to read\n");
    assert_eq!(b.status.code(), Some(1), "bob: {}", text(&b.stderr));
    let banner = text(&s.run(&[], &["true"]).stderr);
    assert_denied(&text(&b.stderr), &banner, "bob");
    let evs = s.events();
    assert!(evs
        .iter()
        .any(|e| e["principal"] == "bob" && e["decision"] == "deny" && e["what"]["path"] == "/tmp/allowed"));
    assert!(!evs
        .iter()
        .any(|e| e["principal"] == "alice" && e["decision"] == "deny"));
}

/// What session `sid` may leave behind: its container, its cgroups (v2
/// and every v1 hierarchy), its run directory, pinned BPF objects, and its
/// network namespace (`netns`, recorded while it ran).
fn leftovers(sid: &str, netns: &str) -> Vec<String> {
    let mut out = Vec::new();
    let name = format!("corral-{sid}");
    let exists = Command::new("podman")
        .args(["container", "exists", &name])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if exists {
        out.push(format!("container {name}"));
    }
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = h.path().join("corral").join(sid);
        if p.exists() {
            out.push(format!("cgroup {}", p.display()));
        }
    }
    let run = Path::new("/run/corral/sessions").join(sid);
    if run.exists() {
        out.push(format!("run dir {}", run.display()));
    }
    for e in std::fs::read_dir("/sys/fs/bpf").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().contains("corral") {
            out.push(format!("pinned {}", e.path().display()));
        }
    }
    if !netns.is_empty() && Path::new(netns).exists() {
        out.push(format!("netns {netns}"));
    }
    out
}

/// The session id (`s…`) from a process's cgroup path.
fn sid_of(pid: u32) -> String {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let rest = cg.split("/corral/").nth(1).unwrap_or_default();
    rest.split('/').next().unwrap_or_default().trim().to_string()
}

/// The container's network namespace path while it runs.
fn netns_of(sid: &str) -> String {
    Command::new("podman")
        .args([
            "inspect",
            "--format",
            "{{.NetworkSettings.SandboxKey}}",
            &format!("corral-{sid}"),
        ])
        .output()
        .map(|o| text(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Waits until the session's agent (`sleep 1234`) runs; returns its pid.
fn agent_pid(deadline: Duration) -> Option<u32> {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmd == b"sleep\x001234\x00" {
                let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                if cg.contains("/corral/s") {
                    return Some(pid);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn interrupt_and_agent_kill_leave_nothing_behind() {
    let t = "interrupt_and_agent_kill_leave_nothing_behind";
    if !podman_ready(t) {
        return;
    }
    let dir = Scratch::new("cleanup");
    let s = Session::new(&dir, POLICY, "d");

    // SIGINT to corral: the agent gets it, the session is torn down.
    let mut c = s
        .cmd(&["-q"], &["sleep", "1234"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = agent_pid(Duration::from_secs(30)).expect("the agent started");
    let sid = sid_of(pid);
    let netns = netns_of(&sid);
    assert!(netns.starts_with("/run/netns/"), "netns of {sid}: {netns:?}");
    let running = leftovers(&sid, &netns);
    assert!(
        running.len() >= 4,
        "a running session shows up in the listing: {running:?}"
    );
    let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
    let end = Instant::now() + Duration::from_secs(30);
    let st = loop {
        if let Some(st) = c.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < end, "corral did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        st.signal(),
        Some(2),
        "corral passes on the agent's death by SIGINT: {st:?}"
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "agent still alive");
    assert_eq!(leftovers(&sid, &netns), Vec::<String>::new(), "after SIGINT");

    // kill -9 of the agent: the session ends by signal 9, nothing is left.
    let c = s
        .cmd(&["-q"], &["sleep", "1234"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = agent_pid(Duration::from_secs(30)).expect("the agent started");
    let sid = sid_of(pid);
    let netns = netns_of(&sid);
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    let o = c.wait_with_output().expect("wait");
    assert_eq!(o.status.signal(), Some(9), "{:?}: {}", o.status, text(&o.stderr));
    assert_eq!(
        leftovers(&sid, &netns),
        Vec::<String>::new(),
        "after kill -9 of the agent"
    );
}

#[test]
fn bare_session_without_a_container() {
    let t = "bare_session_without_a_container";
    if !is_root() {
        skip(t, "needs root");
        return;
    }
    let dir = Scratch::new("bare");
    let secret = dir.file("bare-secret", "TOP-SECRET\n");
    let policy = format!(
        "{POLICY}\n@id(\"forbid-bare\")\nforbid (principal, action in Action::\"FileOpen\", resource)\nwhen {{ resource == File::\"{}\" }};\n",
        secret.display()
    );
    let s = Session::new(&dir, &policy, "e");
    let mut c = dir.corral();
    c.args(["run", "--no-container", "--policy"])
        .arg(&s.policy)
        .arg("--events")
        .arg(&s.events)
        .arg("--project")
        .arg(&dir.0);
    let o = c
        .arg("--")
        .args([
            "sh",
            "-c",
            &format!("cat {}; echo rc=$?; exit 3", secret.display()),
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(3), "stderr: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "rc=1\n");
    assert_denied(&text(&o.stderr), &text(&o.stderr), "bare cat");
}

#[test]
fn real_agents_start_in_default_mode() {
    let t = "real_agents_start_in_default_mode";
    if !podman_ready(t) {
        return;
    }
    let dir = Scratch::new("agents");
    for (agent, want) in [("claude", "Claude Code"), ("codex", "codex-cli")] {
        if !has(agent) {
            skip(
                t,
                &format!("{agent} is not installed (scripts/deps.sh corral_agent_deps installs it)"),
            );
            continue;
        }
        let o = dir
            .corral()
            .args(["run", agent, "--", "--version"])
            .output()
            .expect("run corral");
        assert_eq!(
            o.status.code(),
            Some(0),
            "{agent}: stdout {:?} stderr {:?}",
            text(&o.stdout),
            text(&o.stderr)
        );
        assert!(
            text(&o.stdout).contains(want),
            "{agent} --version printed: {}",
            text(&o.stdout)
        );
        let err = text(&o.stderr);
        assert!(err.contains(&format!("principal {agent}")), "banner: {err}");
        assert!(err.contains("policy built-in default"), "banner: {err}");
    }
}

/// A tmux session running a command; killed on drop.
struct Tmux(String);

impl Tmux {
    fn keys(&self, keys: &[&str]) {
        let st = Command::new("tmux")
            .args(["send-keys", "-t", &self.0])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(st.success());
    }
    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-J", "-t", &self.0])
            .output()
            .expect("tmux capture-pane");
        text(&o.stdout)
    }
    /// Waits until the screen contains `what`.
    fn wait_for(&self, what: &str) -> String {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if s.contains(what) {
                return s;
            }
            assert!(Instant::now() < end, "screen never showed {what:?}:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[test]
fn interactive_shell_under_tmux() {
    let t = "interactive_shell_under_tmux";
    if !podman_ready(t) {
        return;
    }
    if !has("tmux") {
        skip(t, "tmux is not installed");
        return;
    }
    let dir = Scratch::new("tmux");
    let s = Session::new(&dir, POLICY, "f");
    let exit_file = dir.0.join("exit-code");
    let name = format!("corral-test-tmux-{}", std::process::id());
    let cmd = format!(
        "env XDG_STATE_HOME={st} XDG_CONFIG_HOME={cf} {bin} run -e 'PS1=corral-prompt$ ' --policy {p} --project {d} -- bash --norc --noprofile -i; echo EXIT=$? > {e}; sleep 60",
        st = dir.0.join("state").display(),
        cf = dir.0.join("config").display(),
        bin = env!("CARGO_BIN_EXE_corral"),
        p = s.policy.display(),
        d = dir.0.display(),
        e = exit_file.display(),
    );
    let st = Command::new("tmux")
        .args(["new-session", "-d", "-s", &name, "-x", "100", "-y", "30", &cmd])
        .current_dir(&dir.0)
        .status()
        .expect("tmux new-session");
    assert!(st.success());
    let tm = Tmux(name.clone());
    tm.wait_for("corral-prompt$ ");
    // A command runs, with the terminal's size.
    tm.keys(&["echo out-$((6*7)); stty size", "Enter"]);
    tm.wait_for("out-42");
    tm.wait_for("30 100");
    // Resize: the agent sees the new size.
    let st = Command::new("tmux")
        .args(["resize-window", "-t", &name, "-x", "80", "-y", "24"])
        .status()
        .expect("tmux resize");
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(500));
    tm.keys(&["stty size", "Enter"]);
    tm.wait_for("24 80");
    // Ctrl-C goes to the agent's foreground job, not to corral.
    tm.keys(&["sleep 300; echo after-sleep", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tm.keys(&["C-c"]);
    tm.keys(&["echo still-$((2*21))", "Enter"]);
    let screen = tm.wait_for("still-42");
    assert!(
        !screen.lines().any(|l| l.trim() == "after-sleep"),
        "Ctrl-C did not stop the sleep:\n{screen}"
    );
    // Exit code passes through.
    tm.keys(&["exit 3", "Enter"]);
    let end = Instant::now() + Duration::from_secs(30);
    while !exit_file.exists() {
        assert!(Instant::now() < end, "corral did not exit:\n{}", tm.screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        std::fs::read_to_string(&exit_file).unwrap_or_default().trim(),
        "EXIT=3"
    );
}

/// A minimal image built here (no registry): busybox and its applets.
struct TestImage(String);

impl TestImage {
    fn build(dir: &Scratch) -> Option<TestImage> {
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            return None;
        }
        let root = dir.0.join("image-root");
        std::fs::create_dir_all(root.join("bin")).expect("image root");
        for d in ["tmp", "etc", "proc", "sys", "dev", "run"] {
            std::fs::create_dir_all(root.join(d)).expect("image dir");
        }
        std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
        for app in ["sh", "cat", "echo", "id", "sleep", "ls"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).expect("applet link");
        }
        let tag = format!("localhost/corral-test-busybox:{}", std::process::id());
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C {} -c . | podman import --change 'ENV PATH=/bin' - {tag} >/dev/null",
                root.display()
            ))
            .status()
            .expect("podman import");
        assert!(st.success(), "podman import failed");
        Some(TestImage(tag))
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn image_mode_enforces_the_same_policy() {
    let t = "image_mode_enforces_the_same_policy";
    if !podman_ready(t) {
        return;
    }
    let dir = Scratch::new("image");
    let Some(img) = TestImage::build(&dir) else {
        skip(t, "/bin/busybox is not installed (busybox-static)");
        return;
    };
    let s = Session::new(&dir, POLICY, "g");
    let o = s.run(&["--image", &img.0], &["cat", "/tmp/secret"]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", text(&o.stderr));
    let banner = text(&o.stderr);
    assert_denied(&banner, &banner, "cat in an image");
    assert!(!text(&o.stdout).contains("TOP-SECRET"));
    let o = s.run(&["--image", &img.0], &["cat", "/tmp/allowed"]);
    assert_eq!(text(&o.stdout), "fine to read\n", "stderr: {}", text(&o.stderr));
    // The image's own files are what runs (busybox, not the host's cat).
    let o = s.run(&["--image", &img.0], &["sh", "-c", "ls /bin/busybox && exit 42"]);
    assert_eq!(o.status.code(), Some(42), "stderr: {}", text(&o.stderr));
    assert!(s.events().iter().any(|e| e["decision"] == "deny"
        && e["what"]["path"] == "/tmp/secret"
        && e["proc"]["exe"] == "/bin/busybox"));
}

#[test]
fn refuses_to_start_what_it_cannot_parse() {
    let dir = Scratch::new("refuse");
    let marker = dir.0.join("ran");
    let cmd = format!("touch {}", marker.display());
    // A typo: the error names file:line:col.
    let typo = dir.file("typo.cedar", "permit (principal, action == Action::\"FileOpenReadOnly\", resource)\nwhen { resource in Dir::\"/\" ;\n");
    // A rule Cedar accepts but that is a mistake corral refuses.
    let lint = dir.file(
        "lint.cedar",
        "forbid (principal, action == Action::\"FileOpen\", resource == File::\"/etc/shadow\");\n",
    );
    for (policy, want) in [
        (&typo, format!("{}:2:", typo.display())),
        (&lint, format!("{}:1:", lint.display())),
    ] {
        let o = dir
            .corral()
            .args(["run", "--no-container", "--policy"])
            .arg(policy)
            .args(["--", "sh", "-c", &cmd])
            .output()
            .expect("run corral");
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(&want),
            "want {want:?} in: {}",
            text(&o.stderr)
        );
        assert!(
            text(&o.stderr).contains("nothing was started"),
            "{}",
            text(&o.stderr)
        );
        assert!(!marker.exists(), "the command ran");
    }
}

#[test]
fn names_the_missing_engine() {
    let dir = Scratch::new("noengine");
    let o = dir
        .corral()
        .args(["run", "--", "true"])
        .env("PATH", dir.0.join("empty-path"))
        .output()
        .expect("run corral");
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("podman is not installed (apt-get install podman runc)"),
        "{err}"
    );
    assert!(err.contains("docker is not installed"), "{err}");
    assert!(err.contains("--no-container"), "{err}");
}

#[test]
fn events_land_in_the_store_and_are_queryable() {
    let t = "events_land_in_the_store_and_are_queryable";
    if !podman_ready(t) {
        return;
    }
    let dir = Scratch::new("store");
    let s = Session::new(&dir, POLICY, "h");
    let o = s.run(
        &["-q"],
        &["sh", "-c", "cat /tmp/secret; cat /tmp/allowed; exit 5"],
    );
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    // A second corral process reads what the first stored.
    let q = |args: &[&str]| -> Vec<serde_json::Value> {
        let o = dir
            .corral()
            .arg("events")
            .args(args)
            .arg("--json")
            .output()
            .expect("corral events");
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    };
    let denies = q(&["--session", "last", "--decision", "deny"]);
    assert_eq!(denies.len(), 1, "{denies:#?}");
    let d = &denies[0];
    assert_eq!(d["what"]["path"], "/tmp/secret");
    assert_eq!(d["what"]["access"], "read");
    assert_eq!(d["policies"][0], "forbid-secret");
    assert_eq!(
        d["policy_at"][0],
        format!("{}:{}", s.policy.display(), line_of("forbid-secret"))
    );
    assert_eq!(d["proc"]["exe"], "/usr/bin/cat");
    assert!(d["wall_ns"].as_u64().unwrap_or(0) > 0 && d["ts_ns"].as_u64().unwrap_or(0) > 0);
    let sid = d["session"].as_u64().expect("session id");
    // Each filter narrows.
    assert!(q(&[
        "--session",
        &format!("s{sid}"),
        "--kind",
        "file",
        "--grep",
        "/tmp/allowed"
    ])
    .iter()
    .all(|e| e["what"]["path"] == "/tmp/allowed" && e["decision"] == "allow"));
    assert!(!q(&[
        "--session",
        &format!("s{sid}"),
        "--kind",
        "file",
        "--grep",
        "/tmp/allowed"
    ])
    .is_empty());
    assert!(q(&["--session", "last", "--kind", "exec"])
        .iter()
        .all(|e| e["what"]["kind"] == "exec"));
    assert!(!q(&["--session", "last", "--kind", "exec", "--since", "10m"]).is_empty());
    // The session's row: principal, exit, counts.
    let o = dir
        .corral()
        .args(["sessions", "--json"])
        .output()
        .expect("corral sessions");
    let rows: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let row = rows.iter().find(|r| r["id"] == sid).expect("the session's row");
    assert_eq!(row["principal"], "sh");
    assert_eq!(row["exit"], "exit 5");
    assert_eq!(row["denied"], 1);
    assert!(row["allowed"].as_u64().unwrap_or(0) >= 3, "{row}");
}

/// A running `corral run`: its stdout lines and the session id from the
/// banner, as they come.
struct Live {
    child: std::process::Child,
    out: std::sync::mpsc::Receiver<String>,
    err: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Live {
    fn start(mut c: Command) -> (Live, String) {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start corral run");
        let (tx, out) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (sid_tx, sid_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let e = err.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for l in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = l.strip_prefix("corral: session ") {
                    let _ = sid_tx.send(rest.split(' ').next().unwrap_or_default().to_string());
                }
                e.lock().unwrap().push_str(&l);
                e.lock().unwrap().push('\n');
            }
        });
        let sid = sid_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no banner; stderr: {}", err.lock().unwrap()));
        (Live { child, out, err }, sid)
    }

    /// Waits for a stdout line starting with `prefix`; returns it.
    fn expect(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(_) => panic!("no line {prefix:?}; stderr: {}", self.err.lock().unwrap()),
            }
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn mode_switch_and_policy_reload_while_running() {
    let t = "mode_switch_and_policy_reload_while_running";
    if !podman_ready(t) {
        return;
    }
    let dir = Scratch::new("control");
    let s = Session::new(&dir, POLICY, "c");
    // Each step reads the forbidden file, says how it went, and waits for
    // the test (a file appearing in the workspace) before the next.
    let step = |n: u32| {
        format!(
            "if cat /tmp/secret >/dev/null 2>&1; then echo R{n}=read; else echo R{n}=refused; fi; \
             echo READY{n}; while [ ! -e go{n} ]; do sleep 0.05; done; "
        )
    };
    let script = format!(
        "if [ -e /run/corral/control ]; then echo CTL=visible; else echo CTL=hidden; fi; {}{}{}{}",
        step(1),
        step(2),
        step(3),
        "if cat /tmp/secret >/dev/null 2>&1; then echo R4=read; else echo R4=refused; fi"
    );
    let (live, sid) = Live::start(s.cmd(&[], &["sh", "-c", &script]));
    let ctl = |args: &[&str]| -> Output {
        dir.corral()
            .args(args)
            .args(["--session", &sid])
            .output()
            .expect("corral control command")
    };
    assert_eq!(
        live.expect("CTL="),
        "CTL=hidden",
        "the control socket must not be reachable from the session"
    );
    assert_eq!(live.expect("R1="), "R1=refused");
    live.expect("READY1");
    // Shadow: the same read goes through, recorded as would-deny.
    let o = ctl(&["mode", "shadow"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("mode shadow"), "{}", text(&o.stdout));
    std::fs::write(dir.0.join("go1"), "").unwrap();
    assert_eq!(live.expect("R2="), "R2=read");
    live.expect("READY2");
    // Back to enforce; a broken policy is refused with its file:line:col
    // and changes nothing.
    assert!(ctl(&["mode", "enforce"]).status.success());
    let broken = dir.file(
        "broken.cedar",
        "permit (principal, action, resource)\nwhen { resource in Dir::\"/\" ;\n",
    );
    let o = ctl(&["reload", broken.to_str().unwrap()]);
    assert!(!o.status.success(), "a broken policy must be refused");
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("{}:2:", broken.display())),
        "diagnostic with file:line:col: {err}"
    );
    std::fs::write(dir.0.join("go2"), "").unwrap();
    assert_eq!(
        live.expect("R3="),
        "R3=refused",
        "the refused reload changed nothing"
    );
    live.expect("READY3");
    // A policy without the forbid: the read is allowed from now on, and
    // its event names the new file's line.
    let relaxed_text = POLICY.replace(
        "@id(\"forbid-secret\")\nforbid (principal, action in Action::\"FileOpen\", resource)\nwhen { resource == File::\"/tmp/secret\" };",
        "",
    );
    assert!(!relaxed_text.contains("/tmp/secret\""));
    let relaxed = dir.file("relaxed.cedar", &relaxed_text);
    let o = ctl(&["reload", relaxed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    std::fs::write(dir.0.join("go3"), "").unwrap();
    assert_eq!(live.expect("R4="), "R4=read");
    let mut live = live;
    let st = live.child.wait().expect("wait");
    assert_eq!(st.code(), Some(0), "{}", live.err.lock().unwrap());
    assert!(
        matches!(ctl(&["mode"]).status.code(), Some(1)),
        "the control socket is gone with the session"
    );

    // The audit trail tells the story.
    let q = |args: &[&str]| -> Vec<serde_json::Value> {
        let o = dir
            .corral()
            .arg("events")
            .args(["--session", &sid, "--json"])
            .args(args)
            .output()
            .expect("corral events");
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    };
    let secret: Vec<String> = q(&["--kind", "file", "--grep", "/tmp/secret"])
        .iter()
        .filter(|e| e["proc"]["exe"] == "/usr/bin/cat")
        .map(|e| e["decision"].as_str().unwrap_or("-").to_string())
        .collect();
    assert_eq!(
        secret,
        ["deny", "would_deny", "deny", "allow"],
        "R1..R4 as decided"
    );
    let modes: Vec<String> = q(&["--kind", "session"])
        .iter()
        .map(|e| {
            e["what"]["kind"].as_str().unwrap_or("").to_string()
                + ":"
                + e["what"]["mode"].as_str().unwrap_or("")
        })
        .collect();
    assert_eq!(
        modes,
        [
            "session_start:enforce",
            "mode_change:shadow",
            "mode_change:enforce",
            "session_end:"
        ]
    );
    let loads = q(&["--kind", "policy"]);
    assert_eq!(loads.len(), 2, "{loads:#?}");
    assert!(loads[0]["what"]["error"]
        .as_str()
        .unwrap_or("")
        .contains("broken.cedar:2:"));
    assert_eq!(loads[1]["what"]["label"], relaxed.display().to_string());
    assert!(loads[1]["what"].get("error").is_none());
    let allowed = q(&["--kind", "file", "--grep", "/tmp/secret", "--decision", "allow"]);
    let at = allowed
        .iter()
        .find(|e| e["proc"]["exe"] == "/usr/bin/cat")
        .expect("the allowed read");
    assert_eq!(at["policies"][0], "read-all");
    assert!(
        at["policy_at"][0]
            .as_str()
            .unwrap_or("")
            .starts_with(&relaxed.display().to_string()),
        "{at}"
    );
}

#[test]
fn stop_ends_a_running_session_which_is_recorded_as_ended() {
    let t = "stop_ends_a_running_session_which_is_recorded_as_ended";
    if !podman_ready(t) {
        return;
    }
    let dir = Scratch::new("stop");
    let s = Session::new(&dir, POLICY, "s");
    let (live, sid) = Live::start(s.cmd(&[], &["sh", "-c", "echo UP; exec sleep 600"]));
    live.expect("UP");
    let t0 = Instant::now();
    let o = dir.corral().args(["stop", &sid]).output().expect("corral stop");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut live = live;
    // sleep dies of SIGTERM at once; the grace period is only a bound.
    let st = loop {
        if let Some(st) = live.child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "corral run still running {:?} after stop; stderr: {}",
            t0.elapsed(),
            live.err.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("corral stop -> corral run exited in {:?} ({st:?})", t0.elapsed());
    // corral run ends as its command did: by SIGTERM.
    assert!(
        st.signal() == Some(15) || st.code() == Some(128 + 15),
        "{st:?}: {}",
        live.err.lock().unwrap()
    );
    let o = dir
        .corral()
        .args(["events", "--session", &sid, "--kind", "session", "--json"])
        .output()
        .expect("corral events");
    let kinds: Vec<String> = text(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|e| e["what"]["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(kinds, ["session_start", "session_end"], "{}", text(&o.stderr));
    // Nothing left to stop.
    let o = dir.corral().args(["stop", &sid]).output().expect("corral stop");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("not running"), "{}", text(&o.stderr));
}

#[test]
fn events_follow_shows_a_running_session_live() {
    let t = "events_follow_shows_a_running_session_live";
    if !podman_ready(t) {
        return;
    }
    let dir = Scratch::new("follow");
    let s = Session::new(&dir, POLICY, "f");
    let store = dir.0.join("state/corral/audit.db");
    // The store must exist before `--follow` opens it.
    let o = s.run(&["-q"], &["true"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut follow = dir
        .corral()
        .args(["events", "--follow", "--json", "--limit", "0", "--store"])
        .arg(&store)
        .stdout(Stdio::piped())
        .spawn()
        .expect("corral events --follow");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    // The session waits for the test before it ends: its deny must reach the
    // follower while it still runs.
    let script = "cat /tmp/secret 2>/dev/null; echo DENIED; while [ ! -e go ]; do sleep 0.05; done";
    let (live, _sid) = Live::start(s.cmd(&[], &["sh", "-c", script]));
    live.expect("DENIED");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_str(&l).expect("json line");
            seen = v["decision"] == "deny" && v["what"]["path"] == "/tmp/secret";
        }
    }
    std::fs::write(dir.0.join("go"), "").unwrap();
    let mut live = live;
    let st = live.child.wait().expect("wait");
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        seen,
        "the running session's deny did not reach `corral events --follow`"
    );
    assert_eq!(st.code(), Some(0));
}
