//! The control UI server as `corral run` uses it: started or joined, its
//! URL (with the token) in the banner, one server for two runs, loopback
//! only by default, and unreachable from inside a session — the kernel's
//! connect hook refuses the session's connections to its port (EPERM, not
//! merely "nothing listens").

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{podman_ready, text, Scratch, StopUi};
use corral_vmtest::{is_root, skip};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// A GET with an optional bearer token: (status code, body).
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    request(addr, "GET", path, token, None)
}

/// A request with an optional bearer token and JSON body: (status, body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body_head = body
        .map(|b| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )
        })
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{body_head}Connection: close\r\n\r\n{}",
        body.unwrap_or("")
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let code = buf[9..12].parse().unwrap();
    let body = buf.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("").to_string();
    (code, body)
}

/// Python's errno for a connect from inside a session: the session prints
/// `errno=N` (0 = connected).
const CONNECT: &str = "import socket,sys\n\
s=socket.socket()\n\
s.settimeout(5)\n\
try:\n    s.connect(('127.0.0.1', int(sys.argv[1]))); print('errno=0')\n\
except OSError as e:\n    print('errno=%s' % e.errno)\n";

fn run_connect(dir: &Scratch, store: &Path, port: u16, container: bool) -> (String, String) {
    let script = dir.file("connect.py", CONNECT);
    // Everything permitted: the refusal can only come from the kernel's
    // rule for corral's own port, which no permit overrides.
    let policy = dir.file(
        "all.cedar",
        "@id(\"all\")\npermit (principal, action in [Action::\"FileOpen\", \
         Action::\"ProcessExec\", Action::\"NetworkConnect\"], resource);\n",
    );
    let mut c = dir.corral();
    c.arg("run").arg("--policy").arg(&policy);
    if !container {
        c.arg("--no-container");
    }
    c.args(["--project"])
        .arg(&dir.0)
        .arg("--store")
        .arg(store)
        .args(["--", "python3"])
        .arg(&script)
        .arg(port.to_string());
    let o = c.output().expect("corral run");
    assert!(o.status.success(), "run failed: {}", text(&o.stderr));
    (text(&o.stdout), text(&o.stderr))
}

#[test]
fn run_starts_or_joins_the_ui_and_sessions_cannot_reach_it() {
    let t = "run_starts_or_joins_the_ui_and_sessions_cannot_reach_it";
    if !is_root() {
        skip(t, "needs root (sessions attach cgroup programs)");
        return;
    }
    let dir = Scratch::new("ui-server");
    let store = dir.0.join("audit.db");
    let _stop = StopUi(&dir, store.clone());

    // 1. `corral ui` starts the server on a free loopback port.
    let ui = dir.start_ui(&store);
    let (url, info, addr, token) = (ui.url, ui.info, ui.addr, ui.token);
    assert!(addr.ip().is_loopback(), "bound {addr}");
    assert_eq!(url, format!("http://{addr}/?token={token}"));
    // The discovery file holds the token: owner only.
    let ui_dir = dir.0.join("state/corral/ui");
    for e in std::fs::read_dir(&ui_dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "json") {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", e.path().display());
        }
    }
    // From the host, with the token: served; without: 401.
    let (code, body) = get(addr, "/api/health", Some(&token));
    assert_eq!(code, 200, "{body}");
    assert_eq!(get(addr, "/api/health", None).0, 401);

    // 2. A bare session joins this server (same URL in the banner) and its
    // connect to the port is refused by the kernel: EPERM (1), where a
    // port nobody listens on would give ECONNREFUSED (111).
    let (out, err) = run_connect(&dir, &store, addr.port(), false);
    assert!(
        err.contains(&format!("corral: control UI {url}")),
        "banner lacks the UI URL: {err}"
    );
    assert_eq!(out.trim(), "errno=1", "bare session connect: {out} / {err}");
    assert_eq!(
        dir.ui_discovery()["pid"],
        info["pid"],
        "a second server was started"
    );
    // The refusal is in the audit trail, as a denied connect to the port.
    let o = dir
        .corral()
        .args(["events", "--store"])
        .arg(&store)
        .args(["--kind", "net", "--decision", "deny", "--json"])
        .output()
        .unwrap();
    let denied = text(&o.stdout);
    assert!(
        denied.contains(&format!("\"port\":{}", addr.port())),
        "no denied connect to the UI port recorded: {denied}"
    );
    // The server is still there for the host.
    assert_eq!(get(addr, "/api/health", Some(&token)).0, 200);

    // 3. Inside a container, the same: its loopback connect to the port is
    // refused by the kernel rule too.
    if podman_ready(&format!("{t} (container part)")) {
        let (out, err) = run_connect(&dir, &store, addr.port(), true);
        assert_eq!(out.trim(), "errno=1", "container connect: {out} / {err}");
    }

    // 4. `corral ui stop` stops it and removes the discovery file.
    let o = dir
        .corral()
        .args(["ui", "stop", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
    let o = dir
        .corral()
        .args(["ui", "url", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "ui url after stop");
}

#[test]
fn the_default_address_is_loopback_and_no_ui_starts_nothing() {
    let t = "the_default_address_is_loopback_and_no_ui_starts_nothing";
    if !is_root() {
        skip(t, "needs root (sessions attach cgroup programs)");
        return;
    }
    let dir = Scratch::new("ui-default");
    let store = dir.0.join("audit.db");
    let _stop = StopUi(&dir, store.clone());

    // --no-ui: no server, no discovery file, no banner line.
    let o = dir
        .corral()
        .args(["run", "--no-container", "--no-ui", "--project"])
        .arg(&dir.0)
        .arg("--store")
        .arg(&store)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("control UI"), "{}", text(&o.stderr));
    assert!(!dir.0.join("state/corral/ui").join("lock").exists());

    // Default: a server on 127.0.0.1 from port 18080 up, never another
    // address: the socket's local address is the loopback one.
    let o = dir
        .corral()
        .args(["run", "--no-container", "--project"])
        .arg(&dir.0)
        .arg("--store")
        .arg(&store)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let info = dir.ui_discovery();
    let addr: SocketAddr = info["addr"].as_str().unwrap().parse().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert!((18080..=18100).contains(&addr.port()), "{addr}");
    assert!(
        text(&o.stderr).contains(&format!("corral: control UI http://{addr}/?token=")),
        "{}",
        text(&o.stderr)
    );
    // What the kernel says the server listens on: only that address.
    let pid = info["pid"].as_u64().unwrap();
    let ss = std::process::Command::new("ss")
        .args(["-Htlnp"])
        .output()
        .unwrap();
    let mine: Vec<String> = text(&ss.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .map(|l| l.split_whitespace().nth(3).unwrap_or("").to_string())
        .collect();
    assert_eq!(mine, vec![addr.to_string()], "listening sockets of the server");

    // Removing the state directory makes the server exit (nobody can find
    // it any more): no server outlives a scratch test dir.
    std::fs::remove_dir_all(dir.0.join("state/corral/ui")).unwrap();
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(gone, "server {pid} still running after its discovery file went");
}

#[test]
fn the_ui_starts_a_session() {
    let t = "the_ui_starts_a_session";
    if !is_root() {
        skip(t, "needs root (sessions attach cgroup programs)");
        return;
    }
    let dir = Scratch::new("ui-start");
    let store = dir.0.join("audit.db");
    let _stop = StopUi(&dir, store.clone());
    let ui = dir.start_ui(&store);
    let (addr, token) = (ui.addr, ui.token);
    let policy = dir.file(
        "all.cedar",
        "@id(\"all\")\npermit (principal, action in [Action::\"FileOpen\", \
         Action::\"ProcessExec\", Action::\"NetworkConnect\"], resource);\n",
    );
    let bad = dir.file("bad.cedar", "permit (principal, action, resource)\n");
    let post = |body: serde_json::Value| {
        request(
            addr,
            "POST",
            "/api/sessions",
            Some(&token),
            Some(&body.to_string()),
        )
    };

    // Bad input: a relative project, an empty command: 400, nothing run.
    let (code, body) = post(serde_json::json!({"command": ["true"], "project": "rel"}));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("project"), "{body}");
    let (code, _) = post(serde_json::json!({"command": [], "project": dir.0}));
    assert_eq!(code, 400);
    // A policy corral run refuses: 422 with its reason.
    let (code, body) = post(serde_json::json!({
        "command": ["true"], "project": dir.0, "policy": bad
    }));
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("refused") || body.contains("error"), "{body}");

    // A real session: started, named, recorded to this store, its output
    // in the log, its exit code in the session list.
    let (code, body) = post(serde_json::json!({
        "command": ["sh", "-c", "echo started-from-the-ui; exit 3"],
        "project": dir.0,
        "policy": policy,
        "principal": "ui-test"
    }));
    assert_eq!(code, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["session"].as_u64().unwrap();
    let log = v["log"].as_str().unwrap().to_string();
    let mut ended = serde_json::Value::Null;
    for _ in 0..200 {
        let (_, list) = get(addr, "/api/sessions", Some(&token));
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        if let Some(s) = list
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"].as_u64() == Some(id) && !s["ended_ns"].is_null())
        {
            ended = s.clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ended["exit"], "exit 3", "session {id}: {ended}");
    assert_eq!(ended["principal"], "ui-test", "{ended}");
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(out.contains("started-from-the-ui"), "{out}");
}
