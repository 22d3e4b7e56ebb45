//! MCP governance end to end, with real MCP peers: the official Python SDK
//! (`mcp` from PyPI) drives `@modelcontextprotocol/server-everything` and
//! `@modelcontextprotocol/server-filesystem` (npm) inside a real podman
//! session, wrapped with `corral mcp wrap` (stdio) and through the egress
//! proxy (streamable HTTP, from a network namespace the test creates).
//! Asserts what the client got, what never reached a server, and what the
//! audit trail holds, including kernel events linked to the tool call in
//! flight.
//!
//! Needs root, podman, `ip`, node and the peers `scripts/deps.sh`
//! (`corral_mcp_deps`) installs under /var/cache/corral/mcp-test; without
//! one of them the test records a skip (`CORRAL-SKIP`).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
mod egress_util;

use common::{has, podman_ready, text, Scratch};
use serde_json::Value;
use std::path::Path;

const DEPS: &str = "/var/cache/corral/mcp-test";

/// Files and programs for the tools the script runs; the MCP rules under
/// test; one file the filesystem server may not read (the kernel layer).
const POLICY: &str = r#"
@id("read-all")
permit (principal, action == Action::"FileOpenReadOnly", resource) when { resource in Dir::"/" };
@id("write-scratch")
permit (principal, action in Action::"FileOpen", resource)
when { resource in [Dir::"/tmp/", Dir::"/dev/", Dir::"/proc/", Dir::"@WS@/"] };
@id("exec-all")
permit (principal, action == Action::"ProcessExec", resource);
@id("loopback")
permit (principal, action == Action::"NetworkConnect", resource) when { context.ip.isLoopback() };
@id("no-secret-file")
forbid (principal, action in Action::"FileOpen", resource == File::"@WS@/fsroot/secret.txt");

@id("mcp-everything")
permit (principal, action == Action::"McpCall", resource in MCP::Server::"everything");
@id("mcp-fs")
permit (principal, action == Action::"McpCall", resource in MCP::Server::"fs");
@id("no-env")
forbid (principal, action == Action::"McpCall", resource == MCP::Tool::"get-env");
"#;

/// The agent: scenarios with the SDK client, and raw bypass attempts.
const SCRIPT: &str = r#"
set -u
PY=@DEPS@/venv/bin/python
BIN=@DEPS@/node_modules/.bin
T=@TESTS@
cd "$WS"
EV="corral mcp wrap --name everything -- $BIN/mcp-server-everything"
echo "== sdk-stdio"
$PY $T/client.py --mode legacy --steps '[
  {"list_tools":{}},
  {"call":"echo","args":{"message":"hi"}},
  {"call":"get-env"},
  {"call":"get-sum","args":{"a":2,"b":3}}]' stdio -- $EV
echo "== raw-stdio"
$PY $T/raw.py --expect 6 --wait 5 \
  --line '[{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"echo","arguments":{"message":"batched"}}},{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"get-env"}}]' \
  --line '{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"echo","name":"get-env"}}' \
  --line '{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"get\u200b-env"}}' \
  --line '{"jsonrpc":"2.0","id":14,"method":"tools/call","params":{"name":"g\u0435t-env"}}' \
  --lines-file big.jsonl \
  --line '{"jsonrpc":"2.0","id":15,"method":"tools/call","params":{"name":"echo","arguments":{"message":"still here"}}}' \
  stdio -- $EV
echo "== sdk-fs"
$PY $T/client.py --mode legacy --steps '[
  {"call":"read_text_file","args":{"path":"'"$WS"'/fsroot/note.txt"}},
  {"call":"read_text_file","args":{"path":"'"$WS"'/fsroot/secret.txt"}}]' \
  stdio -- corral mcp wrap --name fs -- $BIN/mcp-server-filesystem "$WS/fsroot"
echo "== done"
"#;

fn skip_unless(test: &str) -> bool {
    if !podman_ready(test) {
        return false;
    }
    for p in ["ip", "node"] {
        if !has(p) {
            corral_vmtest::skip(test, &format!("{p} is not installed"));
            return false;
        }
    }
    for f in [
        "venv/bin/python",
        "node_modules/.bin/mcp-server-everything",
        "node_modules/.bin/mcp-server-filesystem",
    ] {
        if !Path::new(DEPS).join(f).exists() {
            corral_vmtest::skip(
                test,
                &format!("{DEPS}/{f} is missing (scripts/deps.sh: corral_mcp_deps installs it)"),
            );
            return false;
        }
    }
    true
}

/// What a session run left: its output, its events, its policy file.
struct Ran {
    out: String,
    err: String,
    events: Vec<Value>,
    policy: std::path::PathBuf,
}

/// Runs `script` (with `@DEPS@` and `@TESTS@` filled in) as the agent of a
/// session in project `ws` under `policy` (`@WS@` filled in), with `extra`
/// arguments to `corral run`; asserts the script ran to its end. The
/// clients are copied into the project: the session sees the host's /tmp
/// (where a clone of this repository may live) as a fresh tmpfs.
fn run_session(dir: &Scratch, ws: &Path, script: &str, policy: &str, extra: &[String]) -> Ran {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp");
    let clients = ws.join("clients");
    std::fs::create_dir_all(&clients).unwrap();
    for f in ["client.py", "raw.py"] {
        std::fs::copy(src.join(f), clients.join(f)).unwrap();
    }
    let script = script
        .replace("@DEPS@", DEPS)
        .replace("@TESTS@", &clients.display().to_string());
    std::fs::write(ws.join("script.sh"), script).unwrap();
    let policy = dir.file("policy.cedar", &policy.replace("@WS@", &ws.display().to_string()));
    let events = dir.0.join("events.jsonl");
    let o = dir
        .corral()
        .args(["run", "--policy"])
        .arg(&policy)
        .arg("--events")
        .arg(&events)
        .arg("--project")
        .arg(ws)
        .args(extra)
        .args(["-e", &format!("WS={}", ws.display())])
        .args(["--", "bash", ws.join("script.sh").to_str().unwrap()])
        .output()
        .expect("run corral");
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    eprintln!("--- session stdout\n{out}\n--- session stderr\n{err}");
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    assert!(out.contains("== done"), "the script did not finish:\n{out}");
    let events = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    Ran {
        out,
        err,
        events,
        policy,
    }
}

fn section<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    let start = format!("== {name}");
    out.lines()
        .skip_while(|l| *l != start)
        .skip(1)
        .take_while(|l| !l.starts_with("== "))
        .collect()
}

fn json_lines(lines: &[&str]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn by_id(lines: &[Value], id: i64) -> &Value {
    lines
        .iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("no answer with id {id} in {lines:#?}"))
}

fn mcp_events<'a>(events: &'a [Value], server: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["what"]["kind"] == "mcp" && e["what"]["server"] == server)
        .collect()
}

#[test]
fn real_mcp_servers_are_governed_over_stdio() {
    let t = "real_mcp_servers_are_governed_over_stdio";
    if !skip_unless(t) {
        return;
    }
    let dir = Scratch::new("mcp");
    let ws = dir.0.join("ws");
    std::fs::create_dir_all(ws.join("fsroot")).unwrap();
    std::fs::write(ws.join("fsroot/note.txt"), "a note for the tool\n").unwrap();
    std::fs::write(ws.join("fsroot/secret.txt"), "TOP-SECRET\n").unwrap();
    // One line of 5 MiB: over the 4 MiB limit.
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"message\":\"{}\"}}}}}}\n",
        "x".repeat(5 << 20)
    );
    std::fs::write(ws.join("big.jsonl"), big).unwrap();
    let Ran {
        out,
        err,
        events: all,
        policy,
    } = run_session(&dir, &ws, SCRIPT, POLICY, &[]);
    assert!(
        err.contains("mcp: decided (stdio: corral mcp wrap"),
        "the banner names the MCP layer: {err}"
    );

    // The SDK: permitted tools work, the forbidden one is an error naming
    // its policy, and it is not listed.
    let sdk = json_lines(&section(&out, "sdk-stdio"));
    assert_eq!(sdk.len(), 4, "{out}");
    let tools: Vec<&str> = sdk[0]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(tools.contains(&"echo") && tools.contains(&"get-sum"), "{tools:?}");
    assert!(
        !tools.contains(&"get-env"),
        "the forbidden tool is listed: {tools:?}"
    );
    assert_eq!(sdk[1]["result"]["text"], "Echo: hi");
    assert_eq!(sdk[2]["ok"], false);
    assert_eq!(sdk[2]["error"]["code"], -32001);
    let msg = sdk[2]["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("no-env ({}:", policy.display())), "{msg}");
    assert!(
        sdk[3]["result"]["text"].as_str().unwrap().contains('5'),
        "{}",
        sdk[3]
    );

    // Raw bypass attempts: none reaches get-env (whose answer would dump
    // the environment), each is answered with a JSON-RPC error, and the
    // conversation goes on.
    let raw_lines = section(&out, "raw-stdio");
    assert!(
        !raw_lines.iter().any(|l| l.contains("PATH") || l.contains("HOME")),
        "get-env ran: {raw_lines:#?}"
    );
    let raw = json_lines(&raw_lines);
    let batch = raw
        .iter()
        .find(|v| v.is_array())
        .unwrap_or_else(|| panic!("no batch answer: {raw:#?}"));
    let batch = batch.as_array().unwrap();
    let echo = batch.iter().find(|m| m["id"] == 10);
    let denied = batch
        .iter()
        .find(|m| m["id"] == 11)
        .unwrap_or_else(|| panic!("{batch:?}"));
    assert_eq!(denied["error"]["code"], -32001, "{denied}");
    // server-everything ignores batches on stdio (its SDK does): what
    // matters is that the forbidden member was answered by corral.
    if let Some(e) = echo {
        assert!(e.to_string().contains("batched"), "{e}");
    }
    // Duplicate keys: unreadable, so answered with id null.
    let dup = raw
        .iter()
        .find(|v| {
            v["id"].is_null()
                && v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("duplicate key"))
        })
        .unwrap_or_else(|| panic!("no answer to the duplicate keys: {raw:#?}"));
    assert_eq!(dup["error"]["code"], -32700);
    assert_eq!(by_id(&raw, 13)["error"]["code"], -32602, "zero-width space");
    assert_eq!(by_id(&raw, 14)["error"]["code"], -32602, "cyrillic e");
    let oversized = raw
        .iter()
        .find(|v| {
            v["id"].is_null()
                && v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("MCP limit"))
        })
        .unwrap_or_else(|| panic!("no answer to the oversized line: {raw:#?}"));
    assert_eq!(oversized["error"]["code"], -32600);
    assert!(by_id(&raw, 15).to_string().contains("still here"));

    // Filesystem server: the tool is permitted both times, but the kernel
    // layer denies the server's open of the forbidden file.
    let fs = json_lines(&section(&out, "sdk-fs"));
    assert_eq!(fs.len(), 2, "{out}");
    assert!(
        fs[0]["result"]["text"]
            .as_str()
            .unwrap()
            .contains("a note for the tool"),
        "{}",
        fs[0]
    );
    assert!(!fs[1].to_string().contains("TOP-SECRET"), "{}", fs[1]);

    // The audit trail.
    let ev = mcp_events(&all, "everything");
    let call = |tool: &str, decision: &str| {
        ev.iter()
            .find(|e| {
                e["what"]["stage"] == "request" && e["what"]["tool"] == tool && e["decision"] == decision
            })
            .unwrap_or_else(|| panic!("no {decision} request event for {tool}: {ev:#?}"))
    };
    let echo_call = call("echo", "allow");
    assert_eq!(echo_call["policies"][0], "mcp-everything");
    assert!(echo_call["mcp_call"].as_str().is_some_and(|c| c.contains('#')));
    assert!(
        echo_call["proc"]["pid"].as_u64().unwrap() > 0,
        "the relay's pid: {echo_call}"
    );
    let denied = call("get-env", "deny");
    assert_eq!(denied["policies"][0], "no-env");
    let line = POLICY
        .lines()
        .position(|l| l.contains("MCP::Tool::\"get-env\""))
        .unwrap()
        + 1;
    assert_eq!(
        denied["policy_at"][0],
        format!("{}:{line}", policy.display()).as_str(),
        "{denied}"
    );
    assert!(
        ev.iter().any(|e| e["what"]["method"] == "tools/list"
            && e["what"]["stage"] == "response"
            && e["what"]["hidden"][0] == "get-env"
            && e["policies"][0] == "no-env"),
        "{ev:#?}"
    );
    assert!(
        ev.iter().any(|e| e["what"]["stage"] == "refused"
            && e["decision"] == "deny"
            && e["what"]["error"]
                .as_str()
                .is_some_and(|m| m.contains("MCP limit"))),
        "{ev:#?}"
    );

    // The file reads the filesystem server did for each call carry that
    // call's id: the allowed read, and the kernel's denial.
    let fs_ev = mcp_events(&all, "fs");
    let call_id = |file: &str| {
        fs_ev
            .iter()
            .find(|e| {
                e["what"]["stage"] == "request"
                    && e["what"]["args"].as_str().is_some_and(|a| a.contains(file))
            })
            .and_then(|e| e["mcp_call"].as_str())
            .unwrap_or_else(|| panic!("no call for {file}: {fs_ev:#?}"))
            .to_string()
    };
    let (note_call, secret_call) = (call_id("note.txt"), call_id("secret.txt"));
    assert_ne!(note_call, secret_call);
    let opened = |file: &str| -> Vec<&Value> {
        all.iter()
            .filter(|e| {
                e["what"]["kind"] == "file_open"
                    && e["what"]["path"].as_str().is_some_and(|p| p.ends_with(file))
            })
            .collect()
    };
    let note = opened("fsroot/note.txt");
    assert!(
        note.iter()
            .any(|e| e["decision"] == "allow" && e["mcp_call"] == note_call.as_str()),
        "the read of note.txt is not linked to {note_call}: {note:#?}"
    );
    let secret = opened("fsroot/secret.txt");
    assert!(
        secret.iter().any(|e| e["decision"] == "deny"
            && e["mcp_call"] == secret_call.as_str()
            && e["policies"][0] == "no-secret-file"),
        "the denied read of secret.txt is not linked to {secret_call}: {secret:#?}"
    );

    // `corral events --mcp-call` answers "which tool call read this file".
    let o = dir
        .corral()
        .args(["events", "--session", "last", "--mcp-call", &note_call])
        .output()
        .unwrap();
    let listed = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(listed.contains("fsroot/note.txt"), "{listed}");
    assert!(listed.contains("fs: tools/call read_text_file"), "{listed}");
    assert!(!listed.contains("secret.txt"), "{listed}");
}

/// server-everything over HTTP, inside the remote network namespace:
/// streamable HTTP on :3001 (`/mcp`), the legacy HTTP+SSE transport on
/// :3002 (`/sse`). Killed (by pid) on drop.
struct HttpServers(Vec<std::process::Child>);

impl HttpServers {
    fn start(ns: &str) -> HttpServers {
        let bin = format!("{DEPS}/node_modules/.bin/mcp-server-everything");
        let mut v = Vec::new();
        for (port, mode) in [("3001", "streamableHttp"), ("3002", "sse")] {
            let c = std::process::Command::new("ip")
                .args(["netns", "exec", ns, "env", &format!("PORT={port}"), &bin, mode])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start server-everything in the remote namespace");
            v.push(c);
        }
        HttpServers(v)
    }

    /// Waits until both listen (node takes a moment to start).
    fn wait(&self, ns: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let o = std::process::Command::new("ip")
                .args(["netns", "exec", ns, "ss", "-Hltn"])
                .output()
                .expect("ss");
            let s = text(&o.stdout);
            if s.contains(":3001") && s.contains(":3002") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server-everything did not listen: {s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for HttpServers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const HTTP_POLICY: &str = r#"
@id("read-all")
permit (principal, action == Action::"FileOpenReadOnly", resource) when { resource in Dir::"/" };
@id("write-scratch")
permit (principal, action in Action::"FileOpen", resource)
when { resource in [Dir::"/tmp/", Dir::"/dev/", Dir::"/proc/", Dir::"@WS@/"] };
@id("exec-all")
permit (principal, action == Action::"ProcessExec", resource);
@id("loopback")
permit (principal, action == Action::"NetworkConnect", resource) when { context.ip.isLoopback() };
@id("net-mcp")
permit (principal, action == Action::"NetworkConnect", resource)
when { resource in [Host::"mcp.corral.test:3001", Host::"mcp.corral.test:3002"] };

@id("mcp-remote")
permit (principal, action == Action::"McpCall", resource in MCP::Server::"mcp.corral.test");
@id("no-env")
forbid (principal, action == Action::"McpCall", resource == MCP::Tool::"get-env");
"#;

const HTTP_SCRIPT: &str = r#"
set -u
PY=@DEPS@/venv/bin/python
T=@TESTS@
cd "$WS"
URL=http://mcp.corral.test:3001/mcp
echo "== sdk-http"
$PY $T/client.py --mode legacy --steps '[
  {"list_tools":{}},
  {"call":"echo","args":{"message":"over http"}},
  {"call":"get-env"}]' http $URL
echo "== sdk-sse"
$PY $T/client.py --mode legacy --timeout 10 --steps '[
  {"list_tools":{}},
  {"call":"echo","args":{"message":"over sse"}},
  {"call":"get-env"}]' sse http://mcp.corral.test:3002/sse
echo "== raw-http"
$PY $T/raw.py http --init \
  --body '[{"jsonrpc":"2.0","id":20,"method":"tools/call","params":{"name":"echo","arguments":{"message":"batched"}}},{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"get-env"}}]' \
  --body '{"jsonrpc":"2.0","id":22,"method":"tools/call","params":{"name":"echo","name":"get-env"}}' \
  --body '{"jsonrpc":"2.0","id":23,"method":"tools/call","params":{"name":"get\u200b-env"}}' \
  --body-file big.json \
  $URL
echo "== raw-http-type"
$PY $T/raw.py http --header 'Content-Type: text/plain' \
  --body '{"jsonrpc":"2.0","id":24,"method":"tools/call","params":{"name":"get-env"}}' $URL
echo "== done"
"#;

#[test]
fn real_mcp_servers_are_governed_over_http_through_the_proxy() {
    let t = "real_mcp_servers_are_governed_over_http_through_the_proxy";
    if !skip_unless(t) || !has("ss") {
        if has("ip") && !has("ss") {
            corral_vmtest::skip(t, "ss (iproute2) is not installed");
        }
        return;
    }
    let dir = Scratch::new("mcp-http");
    let remote = egress_util::Remote::start(&dir.0).expect("the remote test network");
    let servers = HttpServers::start(&remote.ns);
    let ws = dir.0.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":98,\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"message\":\"{}\"}}}}}}",
        "y".repeat(5 << 20)
    );
    std::fs::write(ws.join("big.json"), big).unwrap();
    servers.wait(&remote.ns);
    let add_host = format!("mcp.corral.test:{}", remote.ip);
    let Ran {
        out,
        events: all,
        policy,
        ..
    } = run_session(
        &dir,
        &ws,
        HTTP_SCRIPT,
        HTTP_POLICY,
        &["--add-host".into(), add_host],
    );
    drop(servers);

    for (name, word) in [("sdk-http", "over http"), ("sdk-sse", "over sse")] {
        let sdk = json_lines(&section(&out, name));
        assert_eq!(sdk.len(), 3, "{name}: {out}");
        let tools: Vec<&str> = sdk[0]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {}", sdk[0]))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(tools.contains(&"echo"), "{name}: {tools:?}");
        assert!(
            !tools.contains(&"get-env"),
            "{name}: the forbidden tool is listed: {tools:?}"
        );
        assert_eq!(sdk[1]["result"]["text"], format!("Echo: {word}"), "{name}");
        assert_eq!(sdk[2]["ok"], false, "{name}: {}", sdk[2]);
        assert_eq!(sdk[2]["error"]["code"], -32001, "{name}: {}", sdk[2]);
        assert!(
            sdk[2]["error"]["message"].as_str().unwrap().contains("no-env"),
            "{name}: {}",
            sdk[2]
        );
    }

    // Raw bodies: each exchange is one JSON line with the HTTP status and
    // the body; get-env never runs (its answer would dump the server's
    // environment).
    let raw = json_lines(&section(&out, "raw-http"));
    let raw: Vec<&Value> = raw.iter().filter(|x| x["request"] == "raw").collect();
    assert_eq!(raw.len(), 4, "{raw:#?}");
    assert!(
        raw.iter()
            .all(|x| !x["body"].as_str().unwrap_or("").contains("PATH")),
        "{raw:#?}"
    );
    let body = |i: usize| raw[i]["body"].as_str().unwrap_or_default().to_string();
    assert!(
        body(0).contains("batched"),
        "the permitted member ran: {}",
        body(0)
    );
    assert!(
        body(0).contains("-32001"),
        "the forbidden member was answered by corral: {}",
        body(0)
    );
    assert!(body(1).contains("duplicate key"), "{}", body(1));
    assert!(body(2).contains("-32602"), "{}", body(2));
    assert_eq!(raw[3]["status"], 413, "{}", raw[3]);
    let typed = json_lines(&section(&out, "raw-http-type"));
    let typed = typed
        .iter()
        .find(|x| x["request"] == "raw")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(typed["status"], 415, "{typed}");

    // The audit trail: each call with its decision and policy line.
    let ev = mcp_events(&all, "mcp.corral.test");
    for transport in ["http", "sse"] {
        let denied = ev
            .iter()
            .find(|e| {
                e["what"]["transport"] == transport
                    && e["what"]["tool"] == "get-env"
                    && e["decision"] == "deny"
            })
            .unwrap_or_else(|| panic!("no denied get-env over {transport}: {ev:#?}"));
        assert_eq!(denied["policies"][0], "no-env");
        assert!(denied["policy_at"][0]
            .as_str()
            .unwrap()
            .starts_with(&policy.display().to_string()));
        assert!(
            ev.iter().any(|e| e["what"]["transport"] == transport
                && e["what"]["tool"] == "echo"
                && e["decision"] == "allow"
                && e["policies"][0] == "mcp-remote"),
            "no allowed echo over {transport}: {ev:#?}"
        );
    }
}
