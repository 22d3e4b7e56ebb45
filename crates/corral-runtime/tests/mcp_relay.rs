//! `corral mcp wrap` end to end, without a container: the real static relay
//! (the corral-init binary the build script embeds, started as `corral`)
//! wraps a small stdio MCP server written in Python, and an `McpHost` on a
//! temporary socket governs it with a real Cedar policy. The test plays
//! the agent on the relay's stdin and stdout; the server appends every
//! line it receives to a file, so the test sees what did and did not reach
//! it. Every test kills what it started and removes its directory, passed
//! or failed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_core::{Decision, Mode};
use corral_mcp::{Authority, Direction, Limits, McpEvent, McpPolicy, McpSink, Stage};
use corral_policy::Source;
use corral_runtime::init;
use corral_runtime::mcp::{monotonic_ns, CallLog, McpHost};
use serde_json::{json, Value};

/// How long anything that should be quick may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);
/// The message limit of these tests (bytes).
const MAX_MESSAGE: usize = 4096;

const POLICY: &str = r#"@id("fake-server") permit (principal, action == Action::"McpCall", resource in MCP::Server::"fake");
@id("no-secret") forbid (principal, action == Action::"McpCall", resource == MCP::Tool::"secret");
"#;

/// The stdio MCP server: `fake.py LOG PIDFILE EXIT_CODE`. It logs every
/// line it receives, answers initialize, tools/list (echo and secret) and
/// tools/call (echo may sleep first), batches too, and exits with
/// EXIT_CODE at end of input.
const SERVER: &str = r#"
import json, os, sys, time
log = open(sys.argv[1], "a")
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
TOOLS = [
    {"name": "echo", "description": "echoes", "inputSchema": {"type": "object"}},
    {"name": "secret", "description": "tells a secret", "inputSchema": {"type": "object"}},
]
def answer(m):
    if not isinstance(m, dict) or "id" not in m or "method" not in m:
        return None
    method, params = m["method"], m.get("params") or {}
    if method == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                  "serverInfo": {"name": "fake", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        args = params.get("arguments") or {}
        if params.get("name") == "echo":
            time.sleep(args.get("sleep", 0))
            result = {"content": [{"type": "text", "text": "Echo: %s" % args.get("message")}]}
        else:
            result = {"content": [{"type": "text", "text": "the secret is 42"}]}
    else:
        return {"jsonrpc": "2.0", "id": m["id"], "error": {"code": -32601, "message": "unknown method"}}
    return {"jsonrpc": "2.0", "id": m["id"], "result": result}
while True:
    line = sys.stdin.readline()
    if not line:
        break
    log.write(line)
    log.flush()
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if isinstance(msg, list):
        out = [a for a in map(answer, msg) if a is not None]
        reply = out or None
    else:
        reply = answer(msg)
    if reply is not None:
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
sys.exit(int(sys.argv[3]))
"#;

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        // Under the target directory unless socket paths would exceed the
        // 108 bytes of sockaddr_un.
        let mut base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        if base.as_os_str().len() > 60 {
            base = std::env::temp_dir();
        }
        let path = base.join(format!("mcp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Events = Arc<Mutex<Vec<McpEvent>>>;

/// The supervisor's side: a runtime, the host, the policy, what it saw.
struct Host {
    rt: tokio::runtime::Runtime,
    host: Option<McpHost>,
    events: Events,
    calls: Arc<CallLog>,
    socket: PathBuf,
    relay_bin: PathBuf,
    dir: TempDir,
}

impl Host {
    fn new(name: &str) -> Host {
        let dir = TempDir::new(name);
        // Installed (not just written) so that exec never meets ETXTBSY
        // from a child another test thread forked meanwhile.
        let relay_bin = init::install(&dir.join("bin")).unwrap();
        std::fs::write(dir.join("fake.py"), SERVER).unwrap();
        let doc = corral_policy::load(vec![Source::new("p.cedar", POLICY)]).unwrap();
        let events: Events = Arc::default();
        let sink_events = events.clone();
        let sink: McpSink = Arc::new(move |e| sink_events.lock().unwrap().push(e));
        let authority = Authority::new(
            "agent",
            McpPolicy::new(doc),
            Mode::Enforce,
            Limits {
                max_message: MAX_MESSAGE,
                max_batch: 16,
            },
            sink,
        );
        let calls = Arc::new(CallLog::new());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let socket = dir.join("mcp.sock");
        let host = {
            let _g = rt.enter();
            McpHost::listen(&socket, authority, calls.clone()).unwrap()
        };
        Host {
            rt,
            host: Some(host),
            events,
            calls,
            socket,
            relay_bin,
            dir,
        }
    }

    /// Starts the relay as `corral ARGS...` wrapping the fake server.
    fn wrap(&self, opts: &[&str], exit_code: i32) -> Relay {
        let mut args: Vec<String> = vec!["mcp".into(), "wrap".into()];
        args.extend(opts.iter().map(|s| s.to_string()));
        args.push("--".into());
        args.extend([
            "python3".to_string(),
            self.dir.join("fake.py").display().to_string(),
            self.dir.join("received.log").display().to_string(),
            self.dir.join("server.pid").display().to_string(),
            exit_code.to_string(),
        ]);
        self.run_corral(&args, &self.socket)
    }

    fn run_corral(&self, args: &[String], socket: &Path) -> Relay {
        let mut child = Command::new(&self.relay_bin)
            .arg0("corral")
            .args(args)
            .env("CORRAL_MCP_SOCK", socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Relay {
            stdin: child.stdin.take(),
            child,
            lines,
            dir: self.dir.0.clone(),
        }
    }

    /// Lines the server received.
    fn received(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("received.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn server_pid(&self) -> i32 {
        wait_until("the server's pid file", || self.dir.join("server.pid").exists());
        std::fs::read_to_string(self.dir.join("server.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn events(&self) -> Vec<McpEvent> {
        self.events.lock().unwrap().clone()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.host = None;
        let pidfile = self.dir.join("server.pid");
        if let Ok(pid) = std::fs::read_to_string(pidfile) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                if !is_dead(pid) && cmdline(pid).contains("fake.py") {
                    kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        let _ = &self.rt;
    }
}

/// One relay process, the test playing its agent.
struct Relay {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    dir: PathBuf,
}

impl Relay {
    fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin closed");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn recv(&mut self) -> Value {
        let line = match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(_) => panic!("no answer from the relay; stderr: {}", self.stderr_now()),
        };
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON from the relay ({e}): {line:?}"))
    }

    fn call(&mut self, msg: Value) -> Value {
        self.send(&msg.to_string());
        self.recv()
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the relay is still running");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its stderr, once it has exited.
    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            err.read_to_string(&mut text).unwrap();
        }
        text
    }

    fn stderr_now(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stdin = None;
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = &self.dir;
    }
}

fn kill(pid: i32, sig: nix::sys::signal::Signal) {
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

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn request(id: i64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn tool_call(id: i64, tool: &str, args: Value) -> Value {
    request(id, "tools/call", json!({"name": tool, "arguments": args}))
}

fn initialize(relay: &mut Relay) {
    let r = relay.call(request(
        1,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}),
    ));
    assert_eq!(r["result"]["serverInfo"]["name"], "fake", "{r}");
    relay.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
}

#[test]
fn a_wrapped_server_is_governed_by_the_policy() {
    let host = Host::new("governed");
    let mut relay = host.wrap(&[], 7);
    initialize(&mut relay);

    // tools/list: the forbidden tool is hidden.
    let r = relay.call(request(2, "tools/list", json!({})));
    let names: Vec<&str> = r["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo"], "{r}");

    // A permitted call is answered by the server.
    let r = relay.call(tool_call(3, "echo", json!({"message": "hi"})));
    assert_eq!(r["id"], 3);
    assert_eq!(r["result"]["content"][0]["text"], "Echo: hi", "{r}");

    // A forbidden call is answered by corral, naming the policy.
    let r = relay.call(tool_call(4, "secret", json!({})));
    assert_eq!(r["id"], 4);
    assert_eq!(r["error"]["code"], -32001, "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("no-secret"), "{message}");

    // A batch with a forbidden member: the permitted one reaches the
    // server; corral answers the forbidden one at once (a batch of its
    // own: stdio servers may ignore batches), the server the other.
    let first = relay.call(json!([
        tool_call(5, "echo", json!({"message": "batched"})),
        tool_call(6, "secret", json!({"message": "batched"})),
    ]));
    let second = relay.recv();
    let r = json!([first, second]);
    let answers: Vec<Value> = [&first, &second]
        .iter()
        .flat_map(|a| {
            a.as_array()
                .cloned()
                .unwrap_or_else(|| panic!("not a batch: {a}"))
        })
        .collect();
    let by_id = |id: i64| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {r}"))
    };
    assert_eq!(by_id(5)["result"]["content"][0]["text"], "Echo: batched");
    assert_eq!(by_id(6)["error"]["code"], -32001);

    // An oversized line is refused (id null) and the session goes on.
    let big = tool_call(8, "echo", json!({"message": "x".repeat(2 * MAX_MESSAGE)}));
    let r = relay.call(big);
    assert_eq!(r["id"], Value::Null, "{r}");
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("4096"), "{r}");
    let r = relay.call(tool_call(9, "echo", json!({"message": "after"})));
    assert_eq!(r["result"]["content"][0]["text"], "Echo: after", "{r}");

    // Invalid JSON is refused.
    relay.send("{not json");
    let r = relay.recv();
    assert_eq!(r["id"], Value::Null, "{r}");
    assert_eq!(r["error"]["code"], -32700, "{r}");

    // End of input: the relay exits with the server's status.
    relay.close_stdin();
    let status = relay.wait();
    assert_eq!(status.code(), Some(7), "stderr: {}", relay.stderr());

    // What reached the server: no secret call, nothing oversized or
    // unparseable; the permitted calls did.
    let received = host.received();
    assert!(
        received
            .iter()
            .any(|l| l.contains("Echo") || l.contains("\"hi\"")),
        "{received:?}"
    );
    assert!(received.iter().any(|l| l.contains("batched")), "{received:?}");
    for line in &received {
        assert!(
            !line.contains("secret"),
            "a forbidden call reached the server: {line}"
        );
        assert!(line.len() < MAX_MESSAGE, "an oversized line reached the server");
        assert!(!line.contains("not json"), "unparseable input reached the server");
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(batch) = v.as_array() {
            assert_eq!(batch.len(), 1, "{line}");
        }
    }

    // What was recorded.
    let events = host.events();
    let denied = events
        .iter()
        .find(|e| e.stage == Stage::Request && e.tool.as_deref() == Some("secret"))
        .unwrap();
    assert_eq!(denied.decision, Some(Decision::Deny));
    assert_eq!(denied.server, "fake");
    assert_eq!(denied.policies[0].id, "no-secret");
    let allowed = events
        .iter()
        .find(|e| e.stage == Stage::Request && e.tool.as_deref() == Some("echo"))
        .unwrap();
    assert_eq!(allowed.decision, Some(Decision::Allow));
    assert!(allowed.call.is_some());
    let listed = events
        .iter()
        .find(|e| e.stage == Stage::Response && e.method == "tools/list")
        .unwrap();
    assert_eq!(listed.hidden, ["secret"]);
    let refused: Vec<&McpEvent> = events
        .iter()
        .filter(|e| e.stage == Stage::Refused && e.direction == Direction::ToServer)
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused.iter().any(|e| e.bytes > MAX_MESSAGE as u64),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|e| e.error.as_deref().unwrap_or("").contains("JSON")),
        "{refused:?}"
    );
}

#[test]
fn kernel_events_of_the_server_are_linked_to_the_call_in_flight() {
    let host = Host::new("linked");
    let mut relay = host.wrap(&["--name", "fake"], 0);
    initialize(&mut relay);
    let server = host.server_pid() as u32;
    let relay_pid = relay.child.id();
    assert_eq!(
        host.calls.link(server, relay_pid, monotonic_ns()),
        None,
        "no call yet"
    );

    relay.send(&tool_call(2, "echo", json!({"message": "slow", "sleep": 2.0})).to_string());
    wait_until("the call to reach the server", || {
        host.received().iter().any(|l| l.contains("slow"))
    });
    let during = monotonic_ns();
    let call = host
        .events()
        .iter()
        .find(|e| e.stage == Stage::Request && e.tool.as_deref() == Some("echo"))
        .and_then(|e| e.call.clone())
        .unwrap();
    assert_eq!(
        host.calls.link(server, relay_pid, during).as_deref(),
        Some(call.as_str())
    );
    assert_eq!(
        host.calls.link(relay_pid, 0, during).as_deref(),
        Some(call.as_str())
    );
    assert_eq!(
        host.calls.link(std::process::id(), 0, during),
        None,
        "the test process is no server"
    );

    let r = relay.recv();
    assert_eq!(r["result"]["content"][0]["text"], "Echo: slow", "{r}");
    let after = monotonic_ns();
    assert_eq!(
        host.calls.link(server, relay_pid, after),
        None,
        "linked after the answer"
    );
    // The interval is remembered for late events.
    assert_eq!(
        host.calls.link(server, relay_pid, during).as_deref(),
        Some(call.as_str())
    );

    relay.close_stdin();
    assert_eq!(relay.wait().code(), Some(0));
}

#[test]
fn losing_the_supervisor_kills_the_server() {
    let mut host = Host::new("gone");
    let mut relay = host.wrap(&[], 0);
    initialize(&mut relay);
    let server = host.server_pid();
    assert!(!is_dead(server));

    host.host = None; // closes every connection
    let status = relay.wait();
    assert_eq!(status.code(), Some(137));
    wait_until("the server to die", || is_dead(server));
    let stderr = relay.stderr();
    assert!(
        stderr.contains("corral mcp wrap: corral's MCP supervisor went away: killed"),
        "{stderr}"
    );
}

#[test]
fn signals_to_the_relay_reach_the_server() {
    let host = Host::new("signals");
    let mut relay = host.wrap(&[], 0);
    initialize(&mut relay);
    let server = host.server_pid();
    kill(relay.child.id() as i32, nix::sys::signal::Signal::SIGTERM);
    // The server dies of it and the relay reports that, as a shell would.
    assert_eq!(relay.wait().code(), Some(128 + 15), "stderr: {}", relay.stderr());
    assert!(is_dead(server));
}

#[test]
fn without_a_supervisor_the_server_is_not_started() {
    let host = Host::new("no-socket");
    let args: Vec<String> = ["mcp", "wrap", "--", "sh", "-c"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("touch {}", host.dir.join("started").display())])
        .collect();
    let mut relay = host.run_corral(&args, &host.dir.join("absent.sock"));
    assert_eq!(relay.wait().code(), Some(125));
    let stderr = relay.stderr();
    assert!(stderr.contains("could not be governed"), "{stderr}");
    assert!(stderr.contains("not starting `sh -c touch"), "{stderr}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!host.dir.join("started").exists(), "the server ran");
}

#[test]
fn a_refused_server_is_not_started() {
    let host = Host::new("refused");
    let mut relay = host.wrap(&["--name", "bad name"], 0);
    assert_eq!(relay.wait().code(), Some(125));
    let stderr = relay.stderr();
    assert!(
        stderr.contains("corral refused to start this MCP server: invalid MCP server name"),
        "{stderr}"
    );
    assert!(!host.dir.join("server.pid").exists(), "the server ran");
    let events = host.events();
    assert!(
        events
            .iter()
            .any(|e| e.stage == Stage::Refused && e.server == "bad name"),
        "{events:?}"
    );
    // The host still serves others.
    let mut relay = host.wrap(&[], 0);
    initialize(&mut relay);
    relay.close_stdin();
    assert_eq!(relay.wait().code(), Some(0));
}

#[test]
fn other_corral_commands_are_refused_in_a_session() {
    let host = Host::new("usage");
    let mut relay = host.run_corral(&["run".into(), "claude".into()], &host.socket);
    assert_eq!(relay.wait().code(), Some(2));
    let stderr = relay.stderr();
    assert!(stderr.contains("only `corral mcp wrap` is available"), "{stderr}");
}
