//! MCP over HTTPS through a real proxy on 127.0.0.1: an in-test MCP
//! server (streamable HTTP answering with JSON or with SSE written in
//! tiny chunks that split lines, CRLFs and UTF-8 sequences; a GET stream;
//! session ids; a legacy `/sse` + `/messages?sessionId=` pair), a policy
//! that forbids one tool, and assertions on what the client got and on
//! what the server received.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use bytes::Bytes;
use corral_core::{Decision, Mode};
use corral_mcp::sse::{Decoder, Event, Item};
use corral_mcp::{Authority, Limits as McpLimits, McpEvent, McpPolicy, McpSink, Stage};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use util::*;

const MCP_POLICY: &str = r#"
@id("mcp-all")
permit (principal, action == Action::"McpCall", resource in MCP::Server::"upstream.test");
@id("no-env")
forbid (principal, action == Action::"McpCall", resource == MCP::Tool::"printEnv");
"#;

// ---------------------------------------------------------------- server

/// A stream that is not MCP (its first event is no `endpoint`), with
/// spellings a re-encoder would change.
const EVENTS: &str = ": hb\r\n\r\nevent: tick\r\ndata:{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\r\nfoo: bar\r\n\r\ndata: {bad\r\n\r\n";

/// A response body fed through a channel (or given whole).
struct ChanBody {
    first: VecDeque<Bytes>,
    rx: Option<mpsc::Receiver<Bytes>>,
}

impl ChanBody {
    fn whole(b: impl Into<Bytes>) -> ChanBody {
        ChanBody {
            first: VecDeque::from([b.into()]),
            rx: None,
        }
    }
    fn stream(first: Option<Bytes>, rx: mpsc::Receiver<Bytes>) -> ChanBody {
        ChanBody {
            first: first.into_iter().collect(),
            rx: Some(rx),
        }
    }
}

impl http_body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.first.pop_front() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(b))));
        }
        match self.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(http_body::Frame::data(b)))),
        }
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
struct Got {
    method: String,
    /// Path and query.
    target: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
    /// The body was read to its end without error.
    complete: bool,
}

#[derive(Clone, Default)]
struct Server {
    got: Arc<Mutex<Vec<Got>>>,
    /// Legacy sessions: their SSE streams.
    legacy: Arc<Mutex<HashMap<String, mpsc::Sender<Bytes>>>>,
    next: Arc<AtomicUsize>,
}

impl Server {
    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
    /// Complete bodies received, as text.
    fn bodies(&self) -> Vec<String> {
        self.got()
            .iter()
            .filter(|g| g.complete && !g.body.is_empty())
            .map(|g| String::from_utf8_lossy(&g.body).into_owned())
            .collect()
    }
    fn any_body_mentions(&self, needle: &str) -> bool {
        self.got()
            .iter()
            .any(|g| String::from_utf8_lossy(&g.body).contains(needle))
    }
}

fn tools() -> Value {
    json!({"tools": [
        {"name": "echo", "description": "Echoes back: \u{e9}\u{1f600}\u{4e2d}"},
        {"name": "printEnv", "description": "Prints the environment"},
        {"name": "add", "description": "Adds \u{1f522}"},
    ]})
}

fn result_for(method: &str, params: &Value) -> Value {
    match method {
        "initialize" => json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "test", "version": "1"},
        }),
        "tools/list" => tools(),
        "tools/call" => json!({"content": [{
            "type": "text",
            "text": format!("called {} with {}", params["name"].as_str().unwrap_or("?"), params["arguments"]),
        }]}),
        _ => json!({}),
    }
}

/// The server's answer to a message or batch (`None`: nothing to answer).
fn answer(v: &Value) -> Option<Value> {
    let one = |m: &Value| -> Option<Value> {
        let method = m.get("method")?.as_str()?;
        let id = m.get("id")?;
        Some(json!({"jsonrpc": "2.0", "id": id, "result": result_for(method, &m["params"])}))
    };
    match v {
        Value::Array(items) => {
            let out: Vec<Value> = items.iter().filter_map(one).collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        m => one(m),
    }
}

/// Writes `text` in chunks of `n` bytes, yielding between them.
fn dribble(text: Vec<u8>, n: usize) -> ChanBody {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        for c in text.chunks(n.max(1)) {
            if tx.send(Bytes::copy_from_slice(c)).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    });
    ChanBody::stream(None, rx)
}

/// An SSE answer: a comment, then the message pretty-printed over several
/// `data:` lines, CRLF line ends throughout.
fn sse_answer(v: &Value) -> Vec<u8> {
    let mut s = String::from(": start\r\nevent: message\r\nid: 1\r\n");
    for line in serde_json::to_string_pretty(v).unwrap().lines() {
        s.push_str(&format!("data: {line}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn resp(status: u16, ctype: &str, body: ChanBody) -> Response<ChanBody> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(body)
        .unwrap()
}

async fn serve(s: Server, req: Request<Incoming>) -> Result<Response<ChanBody>, hyper::Error> {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let (body, complete) = match req.into_body().collect().await {
        Ok(c) => (c.to_bytes().to_vec(), true),
        Err(_) => (Vec::new(), false),
    };
    s.got.lock().unwrap().push(Got {
        method: method.clone(),
        target: target.clone(),
        headers: headers.clone(),
        body: body.clone(),
        complete,
    });
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let hdr = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    Ok(match (method.as_str(), path) {
        ("POST", "/mcp") => {
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                return Ok(resp(400, "text/plain", ChanBody::whole("bad json")));
            };
            let Some(a) = answer(&v) else {
                return Ok(resp(202, "text/plain", ChanBody::whole("")));
            };
            let mut r = if hdr("x-reply") == "sse" {
                let n = hdr("x-chunk").parse().unwrap_or(3);
                resp(200, "text/event-stream", dribble(sse_answer(&a), n))
            } else {
                resp(200, "application/json", ChanBody::whole(a.to_string()))
            };
            if v["method"] == "initialize" && hdr("mcp-session-id").is_empty() {
                let id = format!("sess-{}", s.next.fetch_add(1, Ordering::SeqCst));
                r.headers_mut().insert("mcp-session-id", id.parse().unwrap());
            }
            r
        }
        ("GET", "/mcp") if !hdr("mcp-session-id").is_empty() => {
            let text = concat!(
                ": ping\n\n",
                "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n",
                "data: {bad json \u{e9}\n\n",
                "event: custom\ndata: hello\n\n",
                "id: 5\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"method\":\"sampling/createMessage\",\"params\":{}}\r\n\r\n",
            );
            resp(200, "text/event-stream", dribble(text.as_bytes().to_vec(), 2))
        }
        ("DELETE", "/mcp") => resp(200, "text/plain", ChanBody::whole("")),
        ("GET", "/sse") => {
            let n = s.next.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = mpsc::channel(16);
            s.legacy.lock().unwrap().insert(format!("L{n}"), tx);
            let first = format!("event: endpoint\ndata: /messages?sessionId=L{n}\n\n");
            resp(200, "text/event-stream", ChanBody::stream(Some(first.into()), rx))
        }
        ("POST", "/messages") => {
            let id = query.strip_prefix("sessionId=").unwrap_or("");
            let tx = s.legacy.lock().unwrap().get(id).cloned();
            let (Some(tx), Ok(v)) = (tx, serde_json::from_slice::<Value>(&body)) else {
                return Ok(resp(400, "text/plain", ChanBody::whole("bad")));
            };
            if let Some(a) = answer(&v) {
                // Split, like the streamable answers.
                let ev = format!("event: message\r\ndata: {a}\r\n\r\n");
                for c in ev.as_bytes().chunks(5) {
                    let _ = tx.send(Bytes::copy_from_slice(c)).await;
                }
            }
            resp(202, "text/plain", ChanBody::whole("Accepted"))
        }
        // Not MCP: an event stream, and an echo.
        ("GET", "/events") => resp(200, "text/event-stream", dribble(EVENTS.as_bytes().to_vec(), 3)),
        // Not MCP: echoes the body.
        ("POST", "/api") => resp(200, "application/json", ChanBody::whole(body)),
        _ => resp(404, "text/plain", ChanBody::whole("no")),
    })
}

// ---------------------------------------------------------------- setup

struct Env {
    up: Upstream,
    p: TestProxy,
    server: Server,
    events: Arc<Mutex<Vec<McpEvent>>>,
}

impl Env {
    fn events(&self) -> Vec<McpEvent> {
        self.events.lock().unwrap().clone()
    }
}

async fn env_with(limits: McpLimits) -> Env {
    let server = Server::default();
    let s = server.clone();
    let up = start_upstream_with(Arc::default(), move |r| serve(s.clone(), r)).await;
    let text = format!("{POLICY}{MCP_POLICY}");
    let doc = corral_policy::load(vec![corral_policy::Source::new("test.cedar", text.as_str())]).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    let sink: McpSink = Arc::new(move |ev| e.lock().unwrap().push(ev));
    let auth = Authority::new("claude", McpPolicy::new(doc), Mode::Enforce, limits, sink);
    let p = start_proxy_with(
        &up,
        Setup {
            policy: &text,
            mcp: Some(auth),
            ..Setup::default()
        },
    )
    .await;
    Env {
        up,
        p,
        server,
        events,
    }
}

async fn env() -> Env {
    env_with(McpLimits::default()).await
}

/// One request over a new HTTP/1.1 connection through the proxy.
async fn send(e: &Env, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let tls = tls_connect(&e.p, HOST, &[b"http/1.1"]).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    s.send_request(req).await.unwrap()
}

fn request(
    e: &Env,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(target)
        .header("host", format!("{HOST}:{}", e.up.port));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

const JSON: (&str, &str) = ("content-type", "application/json");
const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");
const VERSION: (&str, &str) = ("mcp-protocol-version", "2025-06-18");

fn call(id: i64, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {"x": 1}}})
}

/// POSTs a JSON-RPC text to `/mcp`; status, headers, body.
async fn post(e: &Env, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut h = vec![JSON, ACCEPT];
    h.extend_from_slice(headers);
    reply(send(e, request(e, "POST", "/mcp", &h, body.to_string())).await).await
}

/// `initialize`: the session id the server gave.
async fn initialize(e: &Env) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let r = post(e, &init.to_string(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.headers["mcp-session-id"].to_str().unwrap().to_string()
}

async fn post_to(e: &Env, target: &str, v: Value) -> Reply {
    reply(send(e, request(e, "POST", target, &[JSON], v.to_string())).await).await
}

fn decode_sse(b: &[u8]) -> Vec<Item> {
    let mut d = Decoder::new(1 << 20);
    let mut out = Vec::new();
    d.feed(b, &mut out);
    out
}

fn messages(items: &[Item]) -> Vec<Value> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) if e.kind() == "message" => e.data.as_deref(),
            _ => None,
        })
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn tool_names(v: &Value) -> Vec<String> {
    v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// Reads an open SSE response as it comes.
fn reader(r: Response<Incoming>) -> mpsc::UnboundedReceiver<Item> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = r.into_body();
        let mut d = Decoder::new(1 << 20);
        while let Some(Ok(f)) = body.frame().await {
            if let Some(b) = f.data_ref() {
                let mut out = Vec::new();
                d.feed(b, &mut out);
                for i in out {
                    if tx.send(i).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// The next event (comments skipped), within 5 s.
async fn next_event(rx: &mut mpsc::UnboundedReceiver<Item>) -> Event {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(Item::Event(e))) => return e,
            Ok(Some(_)) => continue,
            other => panic!("no event: {other:?}"),
        }
    }
}

fn denied_by_no_env(v: &Value) {
    assert_eq!(v["error"]["code"], -32001, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("no-env"), "{msg}");
    assert_eq!(v["error"]["data"]["corral"]["policies"][0]["id"], "no-env", "{v}");
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permitted_call_works_and_a_forbidden_one_never_reaches_the_server() {
    let e = env().await;
    let sid = initialize(&e).await;
    assert!(sid.starts_with("sess-"), "{sid}");
    let session = ("mcp-session-id", sid.as_str());

    let r = post(&e, &call(1, "echo").to_string(), &[session, VERSION]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["id"], 1);
    assert!(v["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("called echo"));

    let r = post(&e, &call(2, "printEnv").to_string(), &[session, VERSION]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["id"], 2);
    denied_by_no_env(&v);

    assert!(!e.server.any_body_mentions("printEnv"), "{:?}", e.server.bodies());
    assert_eq!(
        e.server.got().iter().filter(|g| g.method == "POST").count(),
        2,
        "initialize and the echo call only"
    );
    // The session's events: the conversation is filed under its id.
    let ev = e.events();
    let denied = ev.iter().find(|m| m.tool.as_deref() == Some("printEnv")).unwrap();
    assert_eq!(denied.decision, Some(Decision::Deny));
    assert_eq!(denied.policies[0].id, "no-env");
    assert_eq!(denied.server, HOST);
    assert_eq!(denied.session.as_deref(), Some(sid.as_str()));
    let echo = ev.iter().find(|m| m.tool.as_deref() == Some("echo")).unwrap();
    assert_eq!(echo.conversation, denied.conversation);
    // The HTTP layer still reports each request.
    let http = e.p.wait_events(3).await;
    assert!(http
        .iter()
        .any(|h| h.decision == Decision::Deny && h.status == Some(200)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_list_is_filtered_in_json_and_in_sse_split_anywhere() {
    let e = env().await;
    let sid = initialize(&e).await;
    let session = ("mcp-session-id", sid.as_str());
    let list = |id: i64| json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}).to_string();

    let r = post(&e, &list(1), &[session]).await;
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(tool_names(&v), ["echo", "add"]);
    assert_eq!(r.headers["content-length"], r.body.len().to_string().as_str());

    // The server writes its SSE answer 1, 2, 3 and 7 bytes at a time: CRLFs,
    // field names and the emoji in the descriptions are split.
    for (id, n) in [(2, "1"), (3, "2"), (4, "3"), (5, "7")] {
        let r = post(&e, &list(id), &[session, ("x-reply", "sse"), ("x-chunk", n)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "text/event-stream");
        let items = decode_sse(r.body.as_bytes());
        assert_eq!(items[0], Item::Comment(" start".into()), "{items:?}");
        let msgs = messages(&items);
        assert_eq!(msgs.len(), 1, "chunks of {n}: {items:?}");
        assert_eq!(msgs[0]["id"], id);
        assert_eq!(tool_names(&msgs[0]), ["echo", "add"], "chunks of {n}");
        assert_eq!(
            msgs[0]["result"]["tools"][0]["description"],
            "Echoes back: \u{e9}\u{1f600}\u{4e2d}"
        );
        // The event keeps its id.
        let Item::Event(ev) = &items[1] else { panic!() };
        assert_eq!(ev.id.as_deref(), Some("1"));
        assert!(!r.body.contains("printEnv"), "{}", r.body);
    }
    let hidden: Vec<_> = e.events().into_iter().filter(|m| !m.hidden.is_empty()).collect();
    assert_eq!(hidden.len(), 5);
    assert!(hidden.iter().all(|m| m.hidden == ["printEnv"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_forbidden_member_forwards_only_the_rest() {
    let e = env().await;
    let sid = initialize(&e).await;
    let session = ("mcp-session-id", sid.as_str());
    let batch = json!([call(1, "echo"), call(2, "printEnv")]).to_string();
    let r = post(&e, &batch, &[session]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2, "{v}");
    let ok = arr.iter().find(|m| m["id"] == 1).unwrap();
    assert!(ok["result"].is_object(), "{ok}");
    denied_by_no_env(arr.iter().find(|m| m["id"] == 2).unwrap());

    // Only a notification is left to forward: the server answers 202 and
    // the client gets the errors instead.
    let batch = json!([
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
        call(3, "printEnv"),
    ])
    .to_string();
    let r = post(&e, &batch, &[session]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    denied_by_no_env(&v[0]);
    assert_eq!(v[0]["id"], 3);
    let last = e.server.bodies().pop().unwrap();
    assert!(last.contains("notifications/progress"), "{last}");
    assert!(!e.server.any_body_mentions("printEnv"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_with_413_and_nothing_is_forwarded() {
    let e = env_with(McpLimits {
        max_message: 4096,
        ..McpLimits::default()
    })
    .await;
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"pad": "x".repeat(10_000)}}})
    .to_string();
    // Announced by its header, and unannounced (sniffed from its body).
    for h in [&[VERSION][..], &[]] {
        let r = post(&e, &big, h).await;
        assert_eq!(r.status, 413, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"]["code"], -32600);
        assert!(v["error"]["message"].as_str().unwrap().contains("4096"), "{v}");
    }
    assert!(e.server.got().is_empty(), "{:?}", e.server.got());
    let refused = e.events().iter().filter(|m| m.stage == Stage::Refused).count();
    assert_eq!(refused, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_content_type_on_a_known_endpoint_is_refused_with_415() {
    let e = env().await;
    initialize(&e).await;
    let before = e.server.got().len();
    let body = call(1, "echo").to_string();
    let r = reply(
        send(
            &e,
            request(
                &e,
                "POST",
                "/mcp",
                &[("content-type", "text/plain")],
                body.clone(),
            ),
        )
        .await,
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["code"], -32600);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("text/plain"),
        "{v}"
    );
    // Compressed bodies cannot be read: refused too.
    let r = reply(
        send(
            &e,
            request(&e, "POST", "/mcp", &[JSON, ("content-encoding", "gzip")], body),
        )
        .await,
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.body);
    assert_eq!(e.server.got().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_and_look_alike_tool_names_are_refused() {
    let e = env().await;
    let sid = initialize(&e).await;
    let session = ("mcp-session-id", sid.as_str());
    let dup = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","name":"printEnv"}}"#;
    let r = post(&e, dup, &[session]).await;
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["code"], -32700, "{v}");
    for odd in ["print\u{0415}nv", "printEnv\u{200b}", "\u{ff50}rintEnv"] {
        let r = post(&e, &call(8, odd).to_string(), &[session]).await;
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"]["code"], -32602, "{odd:?}: {v}");
        assert_eq!(v["id"], 8);
    }
    assert_eq!(e.server.got().len(), 1, "only initialize arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_get_stream_is_governed_event_by_event() {
    let e = env().await;
    let sid = initialize(&e).await;
    let r = send(
        &e,
        request(
            &e,
            "GET",
            "/mcp",
            &[("accept", "text/event-stream"), ("mcp-session-id", sid.as_str())],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let items = decode_sse(&body);
    assert_eq!(items[0], Item::Comment(" ping".into()));
    let events: Vec<&Event> = items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    // The malformed message is gone; the custom event and the ids stay.
    assert_eq!(events.len(), 3, "{items:?}");
    assert_eq!(
        serde_json::from_str::<Value>(events[0].data.as_deref().unwrap()).unwrap()["method"],
        "notifications/tools/list_changed"
    );
    assert_eq!(events[1].kind(), "custom");
    assert_eq!(events[1].data.as_deref(), Some("hello"));
    assert_eq!(events[2].id.as_deref(), Some("5"));
    let req: Value = serde_json::from_str(events[2].data.as_deref().unwrap()).unwrap();
    assert_eq!(req["method"], "sampling/createMessage");
    let bad: Vec<_> = e
        .events()
        .into_iter()
        .filter(|m| m.stage == Stage::Refused)
        .collect();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].session.as_deref(), Some(sid.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sse_transport_denials_arrive_on_the_stream() {
    let e = env().await;
    // Nothing announces MCP here: the first event does.
    let r = send(
        &e,
        request(
            &e,
            "GET",
            "/sse",
            &[("accept", "text/event-stream")],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut rx = reader(r);
    let ep = next_event(&mut rx).await;
    assert_eq!(ep.kind(), "endpoint");
    let target = ep.data.unwrap();
    assert!(target.starts_with("/messages?sessionId=L"), "{target}");

    let r = post_to(&e, &target, call(1, "echo")).await;
    assert_eq!((r.status, r.body.as_str()), (202, "Accepted"));
    let m: Value = serde_json::from_str(&next_event(&mut rx).await.data.unwrap()).unwrap();
    assert_eq!(m["id"], 1);
    assert!(m["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("called echo"));

    let r = post_to(&e, &target, call(2, "printEnv")).await;
    assert_eq!((r.status, r.body.as_str()), (202, "Accepted"));
    let m = next_event(&mut rx).await;
    assert_eq!(m.kind(), "message");
    let m: Value = serde_json::from_str(&m.data.unwrap()).unwrap();
    assert_eq!(m["id"], 2);
    denied_by_no_env(&m);

    let r = post_to(
        &e,
        &target,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
    )
    .await;
    assert_eq!(r.status, 202);
    let m: Value = serde_json::from_str(&next_event(&mut rx).await.data.unwrap()).unwrap();
    assert_eq!(tool_names(&m), ["echo", "add"]);

    assert!(!e.server.any_body_mentions("printEnv"));
    let posts: Vec<_> = e
        .server
        .got()
        .into_iter()
        .filter(|g| g.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2, "the echo call and tools/list");
    assert!(posts.iter().all(|g| g.target == target));
    let ev = e.events();
    assert!(
        ev.iter().all(|m| m.transport == corral_mcp::Transport::Sse),
        "{ev:?}"
    );
    assert_eq!(
        ev.iter().filter(|m| m.decision == Some(Decision::Deny)).count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_not_mcp_pass_untouched() {
    let e = env().await;
    // JSON that quotes a JSON-RPC message deeper inside (an agent's API
    // request about MCP), with a content type and without.
    let body = json!({"model": "m", "messages": [{"role": "user",
        "content": {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "printEnv"}}}]})
    .to_string();
    for h in [&[JSON][..], &[]] {
        let r = reply(send(&e, request(&e, "POST", "/api", h, body.clone())).await).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body);
    }
    // Larger than the sniffing window: streamed, byte for byte.
    let big = format!(
        "{{\"data\":\"{}\",\"end\":{{\"jsonrpc\":1}}}}",
        "y".repeat(200_000)
    );
    let r = reply(send(&e, request(&e, "POST", "/api", &[JSON], big.clone())).await).await;
    assert_eq!(r.status, 200);
    assert!(r.body == big, "a large JSON body was changed");
    let text = "jsonrpc=2.0&method=tools/call";
    let r = reply(send(&e, request(&e, "POST", "/api", &[], text)).await).await;
    assert_eq!(r.body, text);
    // An event stream nobody announced as MCP, whose first event is no
    // `endpoint`: byte for byte.
    let r = reply(
        send(
            &e,
            request(
                &e,
                "GET",
                "/events",
                &[("accept", "text/event-stream")],
                Bytes::new(),
            ),
        )
        .await,
    )
    .await;
    assert_eq!(r.body, EVENTS);
    let got = e.server.got();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|g| g.complete));
    assert_eq!(got[0].body, body.as_bytes());
    assert_eq!(got[1].headers.get("content-type"), None);
    assert!(e.events().is_empty(), "{:?}", e.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_rpc_message_hidden_past_the_sniffing_window_is_cut_off() {
    use http_body_util::channel::Channel;
    let e = env().await;
    // `jsonrpc` last, after 100 KB of arguments.
    let head = format!(
        "{{\"method\":\"tools/call\",\"params\":{{\"name\":\"printEnv\",\"arguments\":{{\"pad\":\"{}",
        "z".repeat(100_000)
    );
    let tail = "\"}},\"id\":1,\"jsonrpc\":\"2.0\"}";
    let len = head.len() + tail.len();

    // Arriving at once, it is read whole and governed like any message.
    let r = reply(
        send(
            &e,
            request(&e, "POST", "/elsewhere", &[JSON], format!("{head}{tail}")),
        )
        .await,
    )
    .await;
    let v: Value = serde_json::from_str(&r.body).unwrap();
    denied_by_no_env(&v);
    assert!(e.server.got().is_empty());

    // Arriving in two parts, the first past the window (and on an endpoint
    // not yet known as MCP): streamed at first, then found; the server
    // never gets a complete body.
    let tls = tls_connect(&e.p, HOST, &[b"http/1.1"]).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
    let req = Request::builder()
        .method("POST")
        .uri("/other")
        .header("host", format!("{HOST}:{}", e.up.port))
        .header("content-type", "application/json")
        .header("content-length", len)
        .body(body)
        .unwrap();
    let sending = tokio::spawn(async move {
        tx.send_data(Bytes::from(head)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = tx.send_data(Bytes::from(tail)).await;
    });
    let r = reply(s.send_request(req).await.unwrap()).await;
    sending.await.unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("appeared past"),
        "{v}"
    );
    let got = e.server.got();
    assert!(
        got.iter().all(|g| !g.complete),
        "a complete body arrived: {:?}",
        got.iter().map(|g| (g.complete, g.body.len())).collect::<Vec<_>>()
    );
    assert!(
        e.events().iter().any(|m| m.stage == Stage::Refused),
        "{:?}",
        e.events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_drops_the_session() {
    let e = env().await;
    let sid = initialize(&e).await;
    let session = ("mcp-session-id", sid.as_str());
    post(&e, &call(1, "echo").to_string(), &[session]).await;
    let r = reply(send(&e, request(&e, "DELETE", "/mcp", &[session], Bytes::new())).await).await;
    assert_eq!(r.status, 200);
    post(&e, &call(2, "echo").to_string(), &[session]).await;
    let convs: Vec<String> = e
        .events()
        .iter()
        .filter(|m| m.tool.is_some() && m.stage == Stage::Request)
        .map(|m| m.conversation.clone())
        .collect();
    assert_eq!(convs.len(), 2);
    assert_ne!(convs[0], convs[1], "the session's conversation outlived DELETE");
}
