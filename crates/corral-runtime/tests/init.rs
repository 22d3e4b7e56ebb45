//! corral-init run natively (no container): the embedded static binary is
//! installed in a temporary directory and a `UnixListener` there plays the
//! supervisor. Every test cleans up its directory and processes when it
//! ends, passed or failed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use corral_runtime::init;
use nix::sys::signal::Signal;

/// How long anything that should be quick may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// A directory removed on drop, with any process whose pid a test script
/// wrote in `<name>.pid` killed first.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        // Under the target directory (not a noexec /tmp) unless the socket
        // path would exceed the 108 bytes of sockaddr_un.
        let mut base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        if base.as_os_str().len() > 60 {
            base = std::env::temp_dir();
        }
        let path = base.join(format!("init-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        for pid in pid_files(&self.0) {
            if !is_dead(pid) && cmdline(pid).contains("sleep") {
                kill(pid, Signal::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pid_files(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect()
}

fn kill(pid: i32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Gone, or a zombie nobody has reaped yet.
fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A supervisor: the installed binary and the listening socket.
struct Supervisor {
    listener: UnixListener,
    socket: PathBuf,
    init: PathBuf,
    dir: TempDir,
}

impl Supervisor {
    fn new(name: &str) -> Supervisor {
        let dir = TempDir::new(name);
        let init = init::install(dir.path()).unwrap();
        let socket = dir.join("go.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        Supervisor {
            listener,
            socket,
            init,
            dir,
        }
    }

    /// Starts corral-init (through `wrapper`, if any) running `command` and
    /// accepts its connection.
    fn spawn(&self, wrapper: &[&str], command: &[&str], env: &[(&str, &str)]) -> Session {
        let mut argv: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        argv.push(self.init.display().to_string());
        argv.extend(command.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("CORRAL_GO", &self.socket)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        let mut session = Session {
            child,
            conn: None,
            reader: None,
        };
        let deadline = Instant::now() + PATIENCE;
        let conn = loop {
            match self.listener.accept() {
                Ok((conn, _)) => break conn,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Ok(Some(status)) = session.child.try_wait() {
                        panic!(
                            "corral-init exited ({status}) without connecting: {}",
                            session.stderr()
                        );
                    }
                    assert!(Instant::now() < deadline, "corral-init did not connect");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(err) => panic!("accept: {err}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(PATIENCE)).unwrap();
        session.reader = Some(BufReader::new(conn.try_clone().unwrap()));
        session.conn = Some(conn);
        session
    }

    /// Starts corral-init (through `wrapper`, if any) running `sh -c script`.
    fn start_with(&self, wrapper: &[&str], script: &str, env: &[(&str, &str)]) -> Session {
        self.spawn(wrapper, &["--", "sh", "-c", script], env)
    }

    fn start(&self, script: &str, env: &[(&str, &str)]) -> Session {
        self.start_with(&[], script, env)
    }

    /// Runs `script` to completion after `go`; returns the reported line
    /// and corral-init's status. Closes the socket as soon as the line is
    /// read, as a supervisor may: that must not change the status.
    fn run(&self, script: &str) -> (String, ExitStatus) {
        let mut s = self.start(script, &[]);
        s.expect_hello();
        s.send("go\n");
        let line = s.line();
        s.close();
        (line, s.wait(PATIENCE))
    }
}

/// One corral-init process and the supervisor's end of its socket. On drop
/// the socket is closed (corral-init then kills what it started) and
/// corral-init is killed if it is still there.
struct Session {
    child: Child,
    conn: Option<UnixStream>,
    reader: Option<BufReader<UnixStream>>,
}

impl Session {
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.as_mut().unwrap().read_line(&mut line).unwrap();
        line
    }

    fn hello(&mut self) -> i32 {
        let line = self.line();
        let pid = line.strip_prefix("hello ").and_then(|p| p.strip_suffix('\n'));
        pid.unwrap_or_else(|| panic!("expected hello, got {line:?}"))
            .parse()
            .unwrap()
    }

    fn expect_hello(&mut self) {
        assert_eq!(self.hello(), self.child.id() as i32);
    }

    fn send(&mut self, text: &str) {
        use std::io::Write;
        self.conn.as_mut().unwrap().write_all(text.as_bytes()).unwrap();
    }

    fn close(&mut self) {
        self.conn = None;
        self.reader = None;
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "corral-init still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            err.read_to_string(&mut text).unwrap();
        }
        text
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an ELF image has a PT_INTERP program header (a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(elf.get(..4), Some(&b"\x7fELF"[..]), "not an ELF file");
    assert_eq!(elf.get(4), Some(&2), "not a 64-bit ELF file");
    assert_eq!(elf.get(5), Some(&1), "not a little-endian ELF file");
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    assert!(phnum > 0, "no program headers");
    const PT_INTERP: u32 = 3;
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

#[test]
fn binary_is_static_and_install_is_idempotent() {
    assert!(
        !has_interpreter(init::binary()),
        "corral-init needs a dynamic loader"
    );
    // The test binary itself is dynamic: the parser does find PT_INTERP.
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert!(has_interpreter(&me));

    let dir = TempDir::new("install");
    let first = init::install(dir.path()).unwrap();
    let name = first.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("corral-init-") && name.len() == "corral-init-".len() + 16,
        "{name}"
    );
    let meta = std::fs::metadata(&first).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    assert_eq!(std::fs::read(&first).unwrap(), init::binary());
    let ino = std::os::unix::fs::MetadataExt::ino(&meta);

    let second = init::install(dir.path()).unwrap();
    assert_eq!(first, second);
    let meta = std::fs::metadata(&second).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&meta),
        ino,
        "an identical file was rewritten"
    );

    // A damaged copy is replaced; no temporary file is left behind.
    std::fs::write(&first, b"truncated").unwrap();
    assert_eq!(init::install(dir.path()).unwrap(), first);
    assert_eq!(std::fs::read(&first).unwrap(), init::binary());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn run_dir_install_puts_the_relay_beside_init() {
    let dir = TempDir::new("run-dir");
    let bin = init::install(&dir.join("state")).unwrap();
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let installed = init::install_into_run_dir(&bin, &run).unwrap();
    assert_eq!(installed, run.join("init"));
    let relay = run.join(init::RELAY_PATH);
    let (a, b) = (
        std::fs::metadata(&installed).unwrap(),
        std::fs::metadata(&relay).unwrap(),
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(a.ino(), b.ino(), "not a hard link");
    assert_eq!(b.permissions().mode() & 0o777, 0o755);
    let bin_dir = std::fs::metadata(relay.parent().unwrap()).unwrap();
    assert_eq!(bin_dir.permissions().mode() & 0o777, 0o755);
    assert_eq!(std::fs::read(&relay).unwrap(), init::binary());
    // Again (a reused run directory) is fine.
    init::install_into_run_dir(&bin, &run).unwrap();
}

#[test]
fn exit_codes_pass_through() {
    let sup = Supervisor::new("exit-codes");
    for code in [0, 1, 42] {
        let (line, status) = sup.run(&format!("exit {code}"));
        assert_eq!(line, format!("exit code {code}\n"));
        assert_eq!(status.code(), Some(code));
    }
}

#[test]
fn death_by_signal_passes_through() {
    let sup = Supervisor::new("exit-signals");
    for (name, number) in [("KILL", 9), ("TERM", 15)] {
        let (line, status) = sup.run(&format!("kill -{name} $$"));
        assert_eq!(line, format!("exit signal {number}\n"));
        assert_eq!(status.code(), Some(128 + number));
    }
}

#[test]
fn failed_exec_is_126_or_127() {
    let sup = Supervisor::new("exec-fail");
    let not_executable = sup.dir.join("data.txt");
    std::fs::write(&not_executable, "not a program").unwrap();
    for (script, code) in [
        ("exec /nonexistent/command".to_string(), 127),
        (format!("exec {}", not_executable.display()), 126),
    ] {
        let (line, status) = sup.run(&script);
        assert_eq!(line, format!("exit code {code}\n"), "{script}");
        assert_eq!(status.code(), Some(code), "{script}");
    }

    // corral-init's own exec of the command, without `--`.
    let mut s = sup.spawn(&[], &["/nonexistent/command", "arg"], &[]);
    s.expect_hello();
    s.send("go\n");
    assert_eq!(s.line(), "exit code 127\n");
    assert_eq!(s.wait(PATIENCE).code(), Some(127));
    let stderr = s.stderr();
    assert!(
        stderr.contains("corral-init: cannot run `/nonexistent/command`: No such file or directory"),
        "{stderr}"
    );
}

#[test]
fn abort_refuses_to_start() {
    let sup = Supervisor::new("abort");
    let marker = sup.dir.join("ran");
    let mut s = sup.start(&format!("touch {}", marker.display()), &[]);
    s.expect_hello();
    s.send("abort the policy `p.cedar` did not load\n");
    assert_eq!(s.wait(PATIENCE).code(), Some(125));
    assert_eq!(s.line(), "", "corral-init said more after abort");
    let stderr = s.stderr();
    assert!(
        stderr.contains(
            "corral-init: the supervisor refused to start the session: the policy `p.cedar` did not load"
        ),
        "{stderr}"
    );
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn supervisor_gone_before_go_refuses_to_start() {
    let sup = Supervisor::new("gone-before-go");
    let marker = sup.dir.join("ran");
    let mut s = sup.start(&format!("touch {}", marker.display()), &[]);
    s.expect_hello();
    s.close();
    assert_eq!(s.wait(PATIENCE).code(), Some(125));
    let stderr = s.stderr();
    assert!(
        stderr.contains("the supervisor went away before enforcement was attached; not starting"),
        "{stderr}"
    );
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn supervisor_gone_after_go_kills_the_session() {
    let sup = Supervisor::new("gone-after-go");
    let d = sup.dir.path().display();
    // A background grandchild in the command's process group, and (where
    // setsid(1) exists) a daemon in a session of its own.
    let script = format!(
        "sleep 1000 & echo $! > {d}/grandchild.pid
         if command -v setsid >/dev/null; then setsid sleep 1000 & echo $! > {d}/daemon.pid; fi
         echo $$ > {d}/command.pid
         wait"
    );
    let mut s = sup.start(&script, &[]);
    s.expect_hello();
    s.send("go\n");
    wait_until("the command's pid files", PATIENCE, || {
        sup.dir.join("command.pid").exists()
    });
    let pids = pid_files(sup.dir.path());
    assert!(pids.len() >= 2, "{pids:?}");
    assert!(pids.iter().all(|&pid| !is_dead(pid)));

    let closed = Instant::now();
    s.close();
    let status = s.wait(Duration::from_secs(5));
    assert_eq!(status.code(), Some(137));
    wait_until("the session's processes to die", Duration::from_secs(5), || {
        pids.iter().all(|&pid| is_dead(pid))
    });
    assert!(closed.elapsed() < Duration::from_secs(5));
    let stderr = s.stderr();
    assert!(
        stderr.contains("the supervisor went away; killing the session"),
        "{stderr}"
    );
}

#[test]
fn command_environment_is_clean_and_without_new_privileges() {
    let sup = Supervisor::new("environment");
    let d = sup.dir.path().display();
    let script = format!("env > {d}/env.txt; grep NoNewPrivs /proc/self/status > {d}/nnp.txt");
    let ca = sup.dir.join("nothing.pem");
    let ca = ca.to_str().unwrap();
    let mut s = sup.start(
        &script,
        &[("CORRAL_CA", ca), ("KEPT", "yes"), ("CORRAL_INIT_VERBOSE", "1")],
    );
    s.expect_hello();
    s.send("go\n");
    assert_eq!(s.line(), "exit code 0\n");
    assert_eq!(s.wait(PATIENCE).code(), Some(0));
    let env = std::fs::read_to_string(sup.dir.join("env.txt")).unwrap();
    assert!(env.lines().any(|l| l == "KEPT=yes"), "{env}");
    for var in ["CORRAL_GO", "CORRAL_CA", "CORRAL_INIT_VERBOSE"] {
        assert!(
            !env.lines().any(|l| l.starts_with(&format!("{var}="))),
            "{var} leaked: {env}"
        );
    }
    let nnp = std::fs::read_to_string(sup.dir.join("nnp.txt")).unwrap();
    assert_eq!(nnp.split_whitespace().collect::<Vec<_>>(), ["NoNewPrivs:", "1"]);
}

#[test]
fn the_mcp_relay_is_on_the_commands_path() {
    // As in a session: `init` and `bin/corral` in the run directory.
    let mut sup = Supervisor::new("relay-path");
    let run = sup.dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    sup.init = init::install_into_run_dir(&sup.init, &run).unwrap();
    let bin = run.join("bin");
    let d = sup.dir.path().display();
    // `corral` resolves to the relay, which refuses other commands with 2.
    let script = format!(
        "echo \"$PATH\" > {d}/path.txt; command -v corral > {d}/which.txt; \
         corral run x 2> {d}/refused.txt; echo $? > {d}/status.txt"
    );
    let mut s = sup.spawn(&[], &["--", "sh", "-c", &script], &[("PATH", "/usr/bin:/bin")]);
    s.expect_hello();
    s.send("go\n");
    assert_eq!(s.line(), "exit code 0\n");
    let read = |name: &str| {
        std::fs::read_to_string(sup.dir.join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read("path.txt"), format!("/usr/bin:/bin:{}", bin.display()));
    assert_eq!(read("which.txt"), bin.join("corral").display().to_string());
    assert_eq!(read("status.txt"), "2");
    assert!(read("refused.txt").contains("only `corral mcp wrap` is available"));

    // Without a `bin` beside init, PATH is left alone.
    let plain = Supervisor::new("plain-path");
    let mut s = plain.spawn(
        &[],
        &[
            "--",
            "sh",
            "-c",
            &format!("echo \"$PATH\" > {}/path.txt", plain.dir.path().display()),
        ],
        &[("PATH", "/usr/bin:/bin")],
    );
    s.expect_hello();
    s.send("go\n");
    assert_eq!(s.line(), "exit code 0\n");
    let path = std::fs::read_to_string(plain.dir.join("path.txt")).unwrap();
    assert_eq!(path.trim(), "/usr/bin:/bin");
}

#[test]
fn signals_are_forwarded_to_the_command() {
    let sup = Supervisor::new("forward");
    let ready = sup.dir.join("ready");
    let script = format!(
        "trap 'exit 7' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let mut s = sup.start(&script, &[]);
    s.expect_hello();
    s.send("go\n");
    wait_until("the command to trap TERM", PATIENCE, || ready.exists());
    kill(s.child.id() as i32, Signal::SIGTERM);
    assert_eq!(s.line(), "exit code 7\n");
    assert_eq!(s.wait(PATIENCE).code(), Some(7));
}

#[test]
fn ca_is_added_to_bundles_once() {
    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBcorral\n-----END CERTIFICATE-----\n";
    const OLD: &str = "-----BEGIN CERTIFICATE-----\nMIIBsystem\n-----END CERTIFICATE-----";
    let sup = Supervisor::new("ca");
    let bundle = sup.dir.join("bundle.crt");
    let missing = sup.dir.join("missing.crt");
    std::fs::write(&bundle, OLD).unwrap();
    let bundles = format!("{}:{}", missing.display(), bundle.display());

    // First from the default place, next to the binary.
    std::fs::write(sup.init.parent().unwrap().join("ca.pem"), PEM).unwrap();
    let mut s = sup.start("exit 0", &[("CORRAL_CA_BUNDLES", &bundles)]);
    s.expect_hello();
    s.send("go\n");
    assert_eq!(s.wait(PATIENCE).code(), Some(0));
    assert_eq!(std::fs::read_to_string(&bundle).unwrap(), format!("{OLD}\n{PEM}"));
    assert!(!missing.exists());

    // Then named by CORRAL_CA: already there, not added again.
    let other = sup.dir.join("other.pem");
    std::fs::write(&other, PEM).unwrap();
    let other = other.to_str().unwrap();
    let mut s = sup.start("exit 0", &[("CORRAL_CA_BUNDLES", &bundles), ("CORRAL_CA", other)]);
    s.expect_hello();
    s.send("go\n");
    assert_eq!(s.wait(PATIENCE).code(), Some(0));
    assert_eq!(std::fs::read_to_string(&bundle).unwrap(), format!("{OLD}\n{PEM}"));
}

/// As PID 1 of its own pid namespace (as in a container), when unshare(1)
/// and the privilege to use it are there.
#[test]
fn as_pid_1_of_a_namespace() {
    let wrapper = ["unshare", "--pid", "--fork", "--kill-child"];
    let usable = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg("true")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        eprintln!("skipped: cannot create a pid namespace with unshare");
        return;
    }
    let sup = Supervisor::new("pid1");

    let mut s = sup.start_with(&wrapper, "exit 42", &[]);
    assert_eq!(s.hello(), 1);
    s.send("go\n");
    assert_eq!(s.line(), "exit code 42\n");
    assert_eq!(s.wait(PATIENCE).code(), Some(42));

    let mut s = sup.start_with(&wrapper, "sleep 1000 & sleep 1001 & wait", &[]);
    assert_eq!(s.hello(), 1);
    s.send("go\n");
    let unshare = s.child.id() as i32;
    let mut session = Vec::new();
    wait_until("both sleeps", PATIENCE, || {
        session = descendants(unshare);
        session
            .iter()
            .filter(|&&pid| cmdline(pid).starts_with("sleep"))
            .count()
            == 2
    });
    s.close();
    assert_eq!(s.wait(Duration::from_secs(5)).signal_or_code(), 137);
    wait_until("the namespace to die", Duration::from_secs(5), || {
        session.iter().all(|&pid| is_dead(pid))
    });
}

trait SignalOrCode {
    fn signal_or_code(&self) -> i32;
}

impl SignalOrCode for ExitStatus {
    /// unshare(1) reports its child's death by signal by dying of it.
    fn signal_or_code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.code().or(self.signal().map(|s| 128 + s)).unwrap_or(-1)
    }
}

/// The descendants of `root`, from /proc.
fn descendants(root: i32) -> Vec<i32> {
    let procs: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            procs
                .iter()
                .filter(|&&(_, ppid)| ppid == parent)
                .map(|&(pid, _)| pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}
