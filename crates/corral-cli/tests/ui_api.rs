//! The control API against a real session: `corral run` (podman, kernel
//! programs) under a policy that forbids one file; the API server
//! (corral-server, in this process) over the same store and run root
//! sees it running, switches its mode, applies a relaxed policy (the read
//! goes through afterwards) and stops it (the run ends, `session_end` is
//! stored, the list says it is no longer running).
//!
//! Needs root and podman; without them the test records a skip.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{podman_ready, Scratch};
use std::io::{BufRead as _, Read as _, Write as _};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

const POLICY: &str = r#"@id("read-all")
permit (principal, action == Action::"FileOpenReadOnly", resource)
when { resource in Dir::"/" };

@id("write-tmp-dev")
permit (principal, action in Action::"FileOpen", resource)
when { resource in [Dir::"/tmp/", Dir::"/dev/", Dir::"/proc/"] };

@id("exec-system")
permit (principal, action == Action::"ProcessExec", resource)
when { resource in [Dir::"/usr/", Dir::"/bin/", Dir::"/lib/", Dir::"/run/corral/"] };

@id("forbid-secret")
forbid (principal, action in Action::"FileOpen", resource)
when { resource == File::"/tmp/secret" };
"#;

/// One request, `Connection: close`; (status, JSON body).
fn call(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, rest) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        // One chunk is enough for these small answers.
        rest.split_once("\r\n")
            .map(|(_, b)| b)
            .unwrap_or("")
            .rsplit_once("\r\n0\r\n")
            .map(|(b, _)| b)
            .unwrap_or("")
            .to_string()
    } else {
        rest.to_string()
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn the_api_controls_a_real_session() {
    let t = "the_api_controls_a_real_session";
    if !podman_ready(t) {
        return;
    }
    let dir = Scratch::new("uiapi");
    dir.file("secret", "TOP-SECRET\n");
    let policy = dir.file("policy.cedar", POLICY);
    let script = "if cat /tmp/secret >/dev/null 2>&1; then echo R1=read; else echo R1=refused; fi; \
                  while [ ! -e go1 ]; do sleep 0.05; done; \
                  if cat /tmp/secret >/dev/null 2>&1; then echo R2=read; else echo R2=refused; fi; \
                  exec sleep 600";
    let mut child = dir
        .corral()
        .arg("run")
        .arg("--policy")
        .arg(&policy)
        .arg("--project")
        .arg(&dir.0)
        .arg("-v")
        .arg(format!("{}:/tmp/secret:ro", dir.0.join("secret").display()))
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = Kill(child);
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let (etx, err_lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = etx.send(l);
        }
    });
    let expect = |prefix: &str| -> String {
        loop {
            match lines.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "no {prefix:?}; stderr: {:?}",
                    err_lines.try_iter().collect::<Vec<_>>()
                ),
            }
        }
    };
    assert_eq!(expect("R1="), "R1=refused");

    // The server, over the session's store and the real run root.
    let store = dir.0.join("state/corral/audit.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut cfg = corral_server::ServerConfig::new(store, corral_server::default_run_root());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let server = rt.block_on(corral_server::Server::bind(cfg)).unwrap();
    let (addr, token) = (server.local_addr(), server.token().to_owned());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(server.serve(async move {
        let _ = stop_rx.await;
    }));

    let (st, v) = call(addr, &token, "GET", "/api/sessions", None);
    assert_eq!(st, 200, "{v}");
    let me = v.as_array().unwrap().last().unwrap().clone();
    let sid = me["id"].as_u64().unwrap();
    assert_eq!(me["running"], true, "{me}");
    assert_eq!(me["live"]["mode"], "enforce", "{me}");
    assert!(!me["layers"].as_array().unwrap().is_empty(), "{me}");

    let (st, v) = call(
        addr,
        &token,
        "POST",
        &format!("/api/sessions/{sid}/mode"),
        Some(r#"{"mode":"shadow"}"#),
    );
    assert_eq!((st, v["mode"].clone()), (200, "shadow".into()), "{v}");
    let (st, v) = call(
        addr,
        &token,
        "POST",
        &format!("/api/sessions/s{sid}/mode"),
        Some(r#"{"mode":"enforce"}"#),
    );
    assert_eq!((st, v["mode"].clone()), (200, "enforce".into()), "{v}");

    // A typo: 422 at its line, nothing applied.
    let typo = POLICY.replace("when { resource == File", "when { resourse == File");
    let body = serde_json::json!({"text": typo, "sessions": [sid]}).to_string();
    let (st, v) = call(addr, &token, "POST", "/api/policy/apply", Some(&body));
    assert_eq!(st, 422, "{v}");
    let first_error = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["severity"] == "error")
        .cloned()
        .unwrap();
    assert_eq!(first_error["line"], 15, "{v}");
    // Without the forbid: the session takes it, and the read goes through.
    let relaxed = POLICY.split("@id(\"forbid-secret\")").next().unwrap();
    let body =
        serde_json::json!({"text": relaxed, "label": "relaxed.cedar", "sessions": [sid, 4_000_000_000u32]})
            .to_string();
    let (st, v) = call(addr, &token, "POST", "/api/policy/apply", Some(&body));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["results"][0]["ok"], true, "{v}");
    assert_eq!(v["results"][1]["ok"], false, "{v}");
    std::fs::write(dir.0.join("go1"), "").unwrap();
    assert_eq!(expect("R2="), "R2=read");
    let (_, v) = call(addr, &token, "GET", &format!("/api/policy?session={sid}"), None);
    assert_eq!(v["label"], "relaxed.cedar", "{v}");

    // Stop: the run ends within seconds and is recorded as ended.
    let t0 = Instant::now();
    let (st, v) = call(addr, &token, "POST", &format!("/api/sessions/{sid}/stop"), None);
    assert_eq!(st, 200, "{v}");
    while child.0.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(20), "still running after stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("POST stop -> corral run exited in {:?}", t0.elapsed());
    let (_, v) = call(addr, &token, "GET", "/api/sessions", None);
    let me = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == sid)
        .unwrap()
        .clone();
    assert_eq!(me["running"], false, "{me}");
    assert!(me["ended_ns"].is_u64(), "{me}");
    let (_, v) = call(
        addr,
        &token,
        "GET",
        &format!("/api/events?session={sid}&kind=session"),
        None,
    );
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["what"]["kind"].as_str())
        .collect();
    assert_eq!(kinds.last(), Some(&"session_end"), "{v}");
    let (st, _) = call(addr, &token, "POST", &format!("/api/sessions/{sid}/stop"), None);
    assert_eq!(st, 404);

    let _ = stop_tx.send(());
    rt.block_on(task).unwrap().unwrap();
}
