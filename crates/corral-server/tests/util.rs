//! Shared helpers: a temp store with a few events, a running server, and a
//! small HTTP/1.1 client over a real socket (so the tests control every
//! header, Host and Origin included).

use corral_audit::{SessionRow, Store, Stored};
use corral_core::{Access, Decision, Event, Layer, Proc, SessionId, What};
use corral_server::{Server, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn event(session: u32, what: What, decision: Option<Decision>) -> Stored {
    Stored {
        id: None,
        wall_ns: now_ns(),
        policy_at: if decision.is_some() {
            vec!["policy.cedar:3".into()]
        } else {
            vec![]
        },
        event: Event {
            session: SessionId(session),
            principal: format!("Agent::\"a{session}\""),
            ts_ns: 1_000,
            proc: Proc {
                pid: 42,
                ppid: 1,
                comm: "bash".into(),
                exe: Some("/usr/bin/bash".into()),
            },
            what,
            decision,
            layer: Layer::BpfLsm,
            policies: if decision.is_some() {
                vec!["read-tmp".into()]
            } else {
                vec![]
            },
            mcp_call: None,
        },
    }
}

pub fn open(path: &str, session: u32, decision: Decision) -> Stored {
    event(
        session,
        What::FileOpen {
            path: path.into(),
            access: Access::Read,
        },
        Some(decision),
    )
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A store with sessions 1 and 2: session 1 reads /etc/passwd (allow) and
/// /etc/shadow (deny), execs /usr/bin/git (allow); session 2 reads
/// /tmp/x (would_deny).
pub fn fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let mut store = Store::open(&path).unwrap();
    for id in [1, 2] {
        store
            .session_started(&SessionRow {
                id,
                principal: format!("Agent::\"a{id}\""),
                policy_label: "policy.cedar".into(),
                policy_sha256: "00".repeat(32),
                mode: "enforce".into(),
                started_ns: now_ns(),
                command: vec!["bash".into()],
            })
            .unwrap();
    }
    let mut evs = vec![
        open("/etc/passwd", 1, Decision::Allow),
        open("/etc/shadow", 1, Decision::Deny),
        event(
            1,
            What::Exec {
                path: "/usr/bin/git".into(),
                argv: Some(vec!["git".into(), "status".into()]),
            },
            Some(Decision::Allow),
        ),
        open("/tmp/x", 2, Decision::WouldDeny),
    ];
    store.insert_assign(&mut evs).unwrap();
    (dir, path)
}

pub struct Running {
    pub addr: SocketAddr,
    pub token: String,
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), corral_server::ServerError>>>,
}

impl Running {
    /// Stops the server; fails if it does not stop within 5 s.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("server did not stop within 5 s")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// A config for `store` on any free port; the run root (control sockets)
/// is `run` beside the store, where no session runs unless a test puts a
/// fake control socket there.
pub fn config(store: PathBuf) -> ServerConfig {
    let run = store.parent().unwrap().join("run");
    let mut c = ServerConfig::new(store, run);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c
}

pub async fn start(store: PathBuf) -> Running {
    start_with(config(store)).await
}

pub async fn start_with(cfg: ServerConfig) -> Running {
    let server = Server::bind(cfg).await.unwrap();
    let (addr, token, url) = (server.local_addr(), server.token().to_owned(), server.url());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        token,
        url,
        stop: Some(tx),
        task: Some(task),
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// The request's bytes: `Host: 127.0.0.1:PORT` unless `headers` has a Host.
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    req.into_bytes()
}

/// Splits a response's head into status and headers.
pub fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

fn dechunk(mut b: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = b.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        b = &rest[n + 2..];
    }
}

/// One request on a fresh connection; the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&request_bytes(addr, method, path, headers, body))
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("no complete response within 10 s")
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let (status, headers) = parse_head(head);
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Resp {
        status,
        headers,
        body,
    }
}

/// `GET path` with the bearer token.
pub async fn get(r: &Running, path: &str) -> Resp {
    let auth = format!("Bearer {}", r.token);
    request(r.addr, "GET", path, &[("Authorization", &auth)], None).await
}

/// `POST path` with the bearer token and a JSON body.
pub async fn post(r: &Running, path: &str, body: &str) -> Resp {
    let auth = format!("Bearer {}", r.token);
    request(r.addr, "POST", path, &[("Authorization", &auth)], Some(body)).await
}

/// A stand-in for a running session's control socket under `run_root`:
/// answers each request as a session would (a reload whose text contains
/// `REFUSE` is refused) and records the requests it got.
pub struct FakeSession {
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    path: PathBuf,
}

impl FakeSession {
    pub fn start(run_root: &std::path::Path, id: u32) -> FakeSession {
        use std::io::{BufRead as _, Write as _};
        let dir = run_root.join("control");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("s{id}.sock"));
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            let mut mode = "enforce".to_string();
            let mut sha = "11".repeat(32);
            for s in l.incoming() {
                let Ok(s) = s else { return };
                let mut line = String::new();
                if std::io::BufReader::new(&s).read_line(&mut line).unwrap_or(0) == 0 {
                    continue; // a liveness probe
                }
                let req: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
                let mut error = None;
                match req["op"].as_str().unwrap() {
                    "mode" => mode = req["mode"].as_str().unwrap().to_owned(),
                    "reload" if req["text"].as_str().unwrap().contains("REFUSE") => {
                        error = Some("policy.cedar:1:1: refused by the fake".to_string())
                    }
                    "reload" => sha = "22".repeat(32),
                    _ => {}
                }
                if req["op"] != "status" {
                    seen.lock().unwrap().push(req);
                }
                let mut reply = serde_json::json!({
                    "ok": error.is_none(), "session": id, "principal": format!("Agent::\"a{id}\""),
                    "mode": mode, "policy_label": "policy.cedar", "policy_sha256": sha,
                });
                if let Some(e) = error {
                    reply["error"] = e.into();
                }
                let _ = (&s).write_all(format!("{reply}\n").as_bytes());
            }
        });
        FakeSession { requests, path }
    }
}

impl Drop for FakeSession {
    fn drop(&mut self) {
        // Nobody accepts once the socket file is gone and the thread's
        // listener is unreachable; the thread ends with the test binary.
        let _ = std::fs::remove_file(&self.path);
    }
}
