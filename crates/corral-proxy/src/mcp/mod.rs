//! MCP over HTTP: streamable HTTP (POST with JSON or SSE answers, the GET
//! stream, `Mcp-Session-Id`) and the legacy HTTP+SSE transport (an SSE
//! stream whose `endpoint` event names where to POST), governed by
//! corral-mcp's [`Governor`] inside the proxy's request path.
//!
//! Which requests are MCP: those with an `Mcp-Session-Id` or
//! `MCP-Protocol-Version` header; POSTs whose body is JSON-RPC (see
//! [`sniff`], whatever the Content-Type says); every request to an
//! endpoint already seen carrying MCP; and GET streams whose first event
//! is a legacy `endpoint` event. Everything else is forwarded as before:
//! a body that is not JSON is classified by its first byte, a JSON one by
//! its first 64 KiB (or what arrived within 500 ms), and past those it
//! streams, classified as it goes and cut off, unfinished, if it shows
//! JSON-RPC after all.
//!
//! An MCP request body is read whole (up to the authority's
//! `max_message`, else `413`) and handed to the conversation's governor;
//! what it forwards is the governor's serialization, and what it answers
//! goes back without contacting the upstream. Answers are read as JSON
//! (buffered) or as SSE (streamed through the [`corral_mcp::sse`] decoder),
//! each message through the governor.
//!
//! This module never forwards bytes of a message it has not parsed and
//! decided, and never buffers more than one message.

mod body;
mod sniff;
mod stream;
mod table;

use crate::upstream::ProxyBody;
use body::{Rejoin, Tripped};
use bytes::Bytes;
use corral_mcp::jsonrpc::{self, code};
use corral_mcp::{Authority, Direction, Governor, Transport};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use sniff::{Scanner, Verdict};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use stream::SseBody;
use table::Bounded;
use tokio::sync::mpsc;

/// Endpoints remembered as carrying MCP.
const MAX_ENDPOINTS: usize = 1024;
/// Streamable-HTTP sessions remembered.
const MAX_SESSIONS: usize = 1024;
/// Legacy POST endpoints bound to their SSE stream.
const MAX_LEGACY: usize = 1024;
/// Most of an unannounced JSON body read before it is forwarded.
const SNIFF_WINDOW: usize = 64 * 1024;
/// Longest wait for the start of an unannounced body before it is
/// forwarded (and classified while it streams).
const SNIFF_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
/// Answers waiting to be injected into a legacy SSE stream.
const INJECT_QUEUE: usize = 64;

const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// Where a request goes: what the tables key on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// The host (normalised).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The path (normalised), without the query.
    pub path: String,
}

/// One MCP conversation: its governor, and for a legacy SSE stream the
/// way into it.
#[derive(Debug)]
pub(crate) struct Conversation {
    gov: Mutex<Governor>,
    transport: Transport,
    inject: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
}

impl Conversation {
    fn new(gov: Governor, transport: Transport) -> Arc<Conversation> {
        Arc::new(Conversation {
            gov: Mutex::new(gov),
            transport,
            inject: Mutex::new(None),
        })
    }

    fn gov(&self) -> MutexGuard<'_, Governor> {
        self.gov.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a message for the conversation's SSE stream; false when it
    /// has none (or it is gone, or full).
    fn inject(&self, msg: Vec<u8>) -> bool {
        let tx = self.inject.lock().unwrap_or_else(PoisonError::into_inner);
        tx.as_ref().is_some_and(|tx| tx.try_send(msg).is_ok())
    }

    fn has_stream(&self) -> bool {
        self.inject
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|tx| !tx.is_closed())
    }
}

/// The MCP layer of one proxy.
pub(crate) struct Mcp {
    auth: Arc<Authority>,
    endpoints: Mutex<Bounded<Endpoint, Transport>>,
    sessions: Mutex<Bounded<(Endpoint, String), Arc<Conversation>>>,
    legacy: Mutex<Bounded<(Endpoint, String), Weak<Conversation>>>,
}

impl std::fmt::Debug for Mcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mcp")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An answer to the client, sent without contacting the upstream.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    /// `application/json`, or `text/plain` for a legacy `202`.
    pub json: bool,
    pub body: Vec<u8>,
    /// For the request's event.
    pub note: String,
}

/// What to do with a request.
pub(crate) enum Hook {
    /// Send it upstream with this body; handle the response with the
    /// exchange; when `tripped` is set after the request, the body was cut
    /// off (JSON-RPC found while it streamed): answer with
    /// [`Mcp::cut_off`] instead.
    Forward {
        body: ProxyBody,
        exchange: Option<Exchange>,
        tripped: Option<Tripped>,
    },
    /// Answer now.
    Answer(Answer),
}

impl Hook {
    fn pass(body: ProxyBody) -> Hook {
        Hook::Forward {
            body,
            exchange: None,
            tripped: None,
        }
    }
}

/// An MCP request on its way: what its response needs.
pub(crate) struct Exchange {
    mcp: Arc<Mcp>,
    at: Endpoint,
    what: What,
}

enum What {
    /// A governed POST.
    Post {
        conv: Arc<Conversation>,
        /// Errors for the batch members the governor refused, when the
        /// forwarded rest expects no answer.
        reply: Option<Vec<u8>>,
        /// The request carried a session id.
        had_session: bool,
        /// The conversation is a legacy stream's: answers go there.
        legacy: bool,
    },
    /// A GET to an MCP endpoint (the server's stream).
    Get {
        conv: Option<Arc<Conversation>>,
        session: Option<String>,
    },
    /// A GET not known as MCP: its SSE answer is watched for a legacy
    /// `endpoint` event.
    Watch,
}

fn header_str(h: &HeaderMap, name: &HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The media type, lower case, without parameters.
fn media_type(h: &HeaderMap) -> String {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A Content-Encoding other than `identity`.
fn encoded(h: &HeaderMap) -> Option<String> {
    h.get_all(header::CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .find(|v| !v.is_empty() && v != "identity")
}

fn accepts_sse(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A JSON-RPC error (id null) as an answer.
fn rpc_error(status: StatusCode, message: &str) -> Answer {
    let v = jsonrpc::error_response(None, code::INVALID_REQUEST, &format!("corral: {message}"), None);
    Answer {
        status,
        json: true,
        body: jsonrpc::value_bytes(&v),
        note: format!("MCP: {message}"),
    }
}

/// Several JSON-RPC texts as one: the one, or a batch of all their
/// messages.
fn merge(parts: Vec<Vec<u8>>) -> Vec<u8> {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    let mut all = Vec::new();
    for p in parts {
        match serde_json::from_slice::<Value>(&p) {
            Ok(Value::Array(v)) => all.extend(v),
            Ok(v) => all.push(v),
            Err(_) => {}
        }
    }
    jsonrpc::value_bytes(&Value::Array(all))
}

/// Reads the rest of a body after `head`, up to `limit` bytes in all.
async fn read_limited(mut head: Vec<u8>, body: Option<ProxyBody>, limit: usize) -> Result<Vec<u8>, String> {
    if head.len() > limit {
        return Err(format!("more than {limit} bytes"));
    }
    let Some(mut body) = body else { return Ok(head) };
    while let Some(f) = body.frame().await {
        let f = f.map_err(|e| format!("cannot read the body: {e}"))?;
        if let Some(d) = f.data_ref() {
            if head.len() + d.len() > limit {
                return Err(format!("more than {limit} bytes"));
            }
            head.extend_from_slice(d);
        }
    }
    Ok(head)
}

fn declared_len(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

impl Mcp {
    /// The MCP layer for a proxy whose sessions' MCP traffic `auth` governs.
    pub(crate) fn new(auth: Arc<Authority>) -> Mcp {
        Mcp {
            auth,
            endpoints: Mutex::new(Bounded::new(MAX_ENDPOINTS)),
            sessions: Mutex::new(Bounded::new(MAX_SESSIONS)),
            legacy: Mutex::new(Bounded::new(MAX_LEGACY)),
        }
    }

    fn limit(&self) -> usize {
        self.auth.limits().max_message
    }

    fn known(&self, at: &Endpoint) -> Option<Transport> {
        lock(&self.endpoints).get(at).copied()
    }

    fn remember(&self, at: &Endpoint, t: Transport) {
        let mut e = lock(&self.endpoints);
        // A legacy endpoint stays one.
        if e.get(at) != Some(&Transport::Sse) {
            e.insert(at.clone(), t);
        }
    }

    /// The live legacy stream a POST endpoint was announced by.
    fn bound(&self, at: &Endpoint, query: &str) -> Option<Arc<Conversation>> {
        lock(&self.legacy)
            .get(&(at.clone(), query.to_string()))
            .and_then(Weak::upgrade)
            .filter(|c| c.has_stream())
    }

    fn bind(&self, at: Endpoint, query: String, conv: &Arc<Conversation>) {
        self.remember(&at, Transport::Sse);
        let mut t = lock(&self.legacy);
        if t.len() >= MAX_LEGACY {
            t.retain(|w| w.strong_count() > 0);
        }
        t.insert((at, query), Arc::downgrade(conv));
    }

    /// The conversation of a streamable-HTTP session (made when new).
    fn session(&self, at: &Endpoint, id: &str) -> Arc<Conversation> {
        let key = (at.clone(), id.to_string());
        let mut t = lock(&self.sessions);
        if let Some(c) = t.get(&key) {
            return c.clone();
        }
        let c = self.conversation(&at.host, Transport::Http);
        c.gov().set_session(Some(id.to_string()));
        t.insert(key, c.clone());
        c
    }

    fn file(&self, at: &Endpoint, id: String, conv: &Arc<Conversation>) {
        conv.gov().set_session(Some(id.clone()));
        lock(&self.sessions).insert((at.clone(), id), conv.clone());
    }

    fn conversation(&self, server: &str, t: Transport) -> Arc<Conversation> {
        Conversation::new(self.auth.governor(server, t), t)
    }

    fn refused(&self, t: Transport, server: &str, conv: &str, d: Direction, bytes: u64, why: &str) {
        self.auth.refused(t, server, conv, d, bytes, why);
    }

    /// Classifies a request and, for MCP, governs its body.
    pub(crate) async fn request(
        self: &Arc<Self>,
        at: Endpoint,
        query: &str,
        method: &Method,
        headers: &mut HeaderMap,
        body: ProxyBody,
    ) -> Hook {
        let session = header_str(headers, &SESSION_ID);
        let announced = session.is_some() || headers.contains_key(&PROTOCOL_VERSION);
        let known = self.known(&at);
        let bound = self.bound(&at, query);
        let is_mcp = announced || known.is_some() || bound.is_some();
        match *method {
            Method::POST if is_mcp => {
                let t = if bound.is_some() || known == Some(Transport::Sse) {
                    Transport::Sse
                } else {
                    Transport::Http
                };
                if let Some(a) = self.check_post(&at, headers, t) {
                    return Hook::Answer(a);
                }
                self.post(at, headers, session, bound, t, Vec::new(), Some(body))
                    .await
            }
            Method::POST => {
                if let Some(enc) = encoded(headers) {
                    // A compressed body cannot be sniffed. MCP clients
                    // accept SSE answers; other uploads stream on.
                    if accepts_sse(headers) {
                        let why = format!("a compressed body (Content-Encoding `{enc}`) that accepts SSE answers is refused: corral cannot read it");
                        self.refused(Transport::Http, &at.host, "", Direction::ToServer, 0, &why);
                        return Hook::Answer(rpc_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &why));
                    }
                    return Hook::pass(body);
                }
                self.sniff(at, headers, body).await
            }
            Method::GET if is_mcp => {
                headers.remove(header::ACCEPT_ENCODING);
                let conv = session.as_deref().map(|s| self.session(&at, s));
                Hook::Forward {
                    body,
                    exchange: Some(Exchange {
                        mcp: self.clone(),
                        at,
                        what: What::Get { conv, session },
                    }),
                    tripped: None,
                }
            }
            Method::GET => Hook::Forward {
                body,
                exchange: Some(Exchange {
                    mcp: self.clone(),
                    at,
                    what: What::Watch,
                }),
                tripped: None,
            },
            Method::DELETE if is_mcp => {
                if let Some(s) = session {
                    lock(&self.sessions).remove(&(at, s));
                }
                Hook::pass(body)
            }
            _ => Hook::pass(body),
        }
    }

    /// Refusals of a POST to an MCP endpoint before its body is read.
    fn check_post(&self, at: &Endpoint, headers: &HeaderMap, t: Transport) -> Option<Answer> {
        let mt = media_type(headers);
        let why = if mt != "application/json" {
            format!(
                "an MCP message must be sent as `application/json`, not `{}`",
                if mt.is_empty() { "(no Content-Type)" } else { &mt }
            )
        } else if let Some(enc) = encoded(headers) {
            format!("a compressed MCP message (Content-Encoding `{enc}`) is refused: corral cannot read it")
        } else {
            return None;
        };
        self.refused(t, &at.host, "", Direction::ToServer, 0, &why);
        Some(rpc_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &why))
    }

    /// Reads the start of a POST body nobody announced as MCP.
    async fn sniff(self: &Arc<Self>, at: Endpoint, headers: &mut HeaderMap, mut body: ProxyBody) -> Hook {
        let window = SNIFF_WINDOW.min(self.limit()).max(1);
        let mut scan = Scanner::default();
        let mut head = Vec::new();
        let mut seen = 0;
        let mut rest = Some(());
        let mut verdict = Verdict::Unknown;
        let deadline = tokio::time::Instant::now() + SNIFF_WAIT;
        while verdict == Verdict::Unknown && seen < window {
            let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
                // A client that waits for the answer before it sends
                // more: streamed, still classified as it goes.
                break;
            };
            match frame {
                None => {
                    rest = None;
                    verdict = scan.finish();
                }
                Some(Err(e)) => {
                    return Hook::Answer(Answer {
                        status: StatusCode::BAD_REQUEST,
                        json: true,
                        body: serde_json::json!({ "error": format!("cannot read the request body: {e}") })
                            .to_string()
                            .into_bytes(),
                        note: format!("cannot read the request body: {e}"),
                    })
                }
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        seen += d.len();
                        verdict = scan.feed(d);
                    }
                    head.push(f);
                }
            }
        }
        let rest = rest.map(|()| body);
        match verdict {
            Verdict::Mcp => {
                let bytes: Vec<u8> = head
                    .iter()
                    .filter_map(|f| f.data_ref())
                    .flat_map(|d| d.iter().copied())
                    .collect();
                self.post(at, headers, None, None, Transport::Http, bytes, rest)
                    .await
            }
            Verdict::NotMcp => Hook::pass(Rejoin::new(head, rest).boxed()),
            Verdict::Unknown => {
                let tripped = Tripped::default();
                Hook::Forward {
                    body: Rejoin::new(head, rest).guarded(scan, tripped.clone()).boxed(),
                    exchange: None,
                    tripped: Some(tripped),
                }
            }
        }
    }

    /// The answer for a body cut off because it showed JSON-RPC only
    /// after it had started streaming.
    pub(crate) fn cut_off(&self, host: &str) -> Answer {
        let why = format!(
            "a JSON-RPC message appeared past the first {} bytes of a body sent as something else: the upstream got an unfinished body; send MCP with its headers or `jsonrpc` first",
            SNIFF_WINDOW.min(self.limit())
        );
        self.refused(Transport::Http, host, "", Direction::ToServer, 0, &why);
        rpc_error(StatusCode::BAD_REQUEST, &why)
    }

    /// Governs a POST body (`head` read so far, then `rest`).
    #[allow(clippy::too_many_arguments)]
    async fn post(
        self: &Arc<Self>,
        at: Endpoint,
        headers: &mut HeaderMap,
        session: Option<String>,
        bound: Option<Arc<Conversation>>,
        t: Transport,
        head: Vec<u8>,
        rest: Option<ProxyBody>,
    ) -> Hook {
        let limit = self.limit();
        let too_large = |n: u64| {
            let why = format!("an MCP message over corral's limit of {limit} bytes is refused");
            self.refused(t, &at.host, "", Direction::ToServer, n, &why);
            Hook::Answer(rpc_error(StatusCode::PAYLOAD_TOO_LARGE, &why))
        };
        if let Some(n) = declared_len(headers).filter(|n| *n > limit as u64) {
            return too_large(n);
        }
        let msg = match read_limited(head, rest, limit).await {
            Ok(m) => m,
            Err(e) if e.starts_with("more than") => return too_large(limit as u64 + 1),
            Err(e) => return Hook::Answer(rpc_error(StatusCode::BAD_REQUEST, &e)),
        };
        self.remember(&at, t);
        let legacy = bound.is_some();
        let conv = match (bound, session.as_deref()) {
            (Some(c), _) => c,
            (None, Some(s)) => self.session(&at, s),
            (None, None) => self.conversation(&at.host, t),
        };
        let step = conv.gov().from_client(&msg);
        let Some(fwd) = step.forward else {
            let reply = step.reply.unwrap_or_default();
            let note = "MCP: answered by corral, not forwarded".to_string();
            if legacy && conv.inject(reply.clone()) {
                return Hook::Answer(Answer {
                    status: StatusCode::ACCEPTED,
                    json: false,
                    body: b"Accepted".to_vec(),
                    note,
                });
            }
            return Hook::Answer(Answer {
                status: if reply.is_empty() {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::OK
                },
                json: true,
                body: reply,
                note,
            });
        };
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(fwd.len()));
        // Answers are read: they must come uncompressed.
        headers.remove(header::ACCEPT_ENCODING);
        Hook::Forward {
            body: full(fwd),
            exchange: Some(Exchange {
                mcp: self.clone(),
                at,
                what: What::Post {
                    conv,
                    reply: step.reply,
                    had_session: session.is_some(),
                    legacy,
                },
            }),
            tripped: None,
        }
    }
}

/// Resolves a legacy `endpoint` event's URL against the stream's
/// endpoint: the POST endpoint and its query.
fn resolve(base: &Endpoint, url: &str) -> Option<(Endpoint, String)> {
    let url = url.trim();
    let url = url.split('#').next().unwrap_or_default();
    let lower = url.to_ascii_lowercase();
    let (scheme, rest) = if lower.starts_with("https://") {
        ("https".to_string(), url.get(8..))
    } else if lower.starts_with("http://") {
        ("http".to_string(), url.get(7..))
    } else if let Some(r) = url.strip_prefix("//") {
        (base.scheme.clone(), Some(r))
    } else {
        (base.scheme.clone(), None)
    };
    let (host, port, pq) = match rest {
        Some(r) => {
            let cut = r.find(['/', '?']).unwrap_or(r.len());
            let (auth, pq) = r.split_at(cut);
            let default = if scheme == "https" { 443 } else { 80 };
            let (h, p) = crate::forward::split_authority(auth, default)?;
            let pq = if pq.starts_with('/') {
                pq.to_string()
            } else {
                format!("/{pq}")
            };
            (h, p, pq)
        }
        None if url.starts_with('/') => (base.host.clone(), base.port, url.to_string()),
        None if url.starts_with('?') => (base.host.clone(), base.port, format!("{}{url}", base.path)),
        None => {
            let dir = base
                .path
                .rfind('/')
                .map_or("/", |i| base.path.get(..=i).unwrap_or("/"));
            (base.host.clone(), base.port, format!("{dir}{url}"))
        }
    };
    let (path, query) = pq.split_once('?').unwrap_or((&pq, ""));
    let path = crate::decide::normalize_path(path).ok()?;
    Some((
        Endpoint {
            scheme,
            host,
            port,
            path,
        },
        query.to_string(),
    ))
}

impl Exchange {
    /// The response to send the client, given the upstream's.
    pub(crate) async fn response(
        self,
        status: StatusCode,
        headers: &mut HeaderMap,
        body: ProxyBody,
    ) -> (StatusCode, ProxyBody) {
        let sse = media_type(headers) == "text/event-stream";
        match self.what {
            What::Watch => {
                if status.is_success() && sse && encoded(headers).is_none() {
                    let b = SseBody::watching(body, self.mcp, self.at);
                    return (status, b.boxed());
                }
                (status, body)
            }
            What::Get { conv, session } => {
                if status.is_success() && sse {
                    if let Some(a) = refuse_encoded(&self.mcp, &self.at, headers, conv.as_ref()) {
                        return answer(a, headers);
                    }
                    headers.remove(header::CONTENT_LENGTH);
                    let b = SseBody::governed(body, self.mcp, self.at, conv, session, None);
                    return (status, b.boxed());
                }
                (status, body)
            }
            What::Post {
                conv,
                mut reply,
                had_session,
                legacy,
            } => {
                if !had_session && status.is_success() {
                    if let Some(id) = header_str(headers, &SESSION_ID) {
                        self.mcp.file(&self.at, id, &conv);
                    }
                }
                if legacy {
                    if let Some(r) = reply.take() {
                        if !conv.inject(r) {
                            let label = conv.gov().label().to_string();
                            self.mcp.refused(
                                conv.transport,
                                &self.at.host,
                                &label,
                                Direction::ToClient,
                                0,
                                "an answer for the SSE stream was dropped: the stream is gone or not reading",
                            );
                        }
                    }
                }
                if !status.is_success() {
                    return (status, body);
                }
                let mt = media_type(headers);
                if mt == "text/event-stream" || mt == "application/json" {
                    if let Some(a) = refuse_encoded(&self.mcp, &self.at, headers, Some(&conv)) {
                        return answer(a, headers);
                    }
                }
                if mt == "text/event-stream" {
                    headers.remove(header::CONTENT_LENGTH);
                    let b = SseBody::governed(body, self.mcp, self.at, Some(conv), None, reply);
                    return (status, b.boxed());
                }
                if mt == "application/json" {
                    return json_response(&self.mcp, &self.at, &conv, status, headers, body, reply).await;
                }
                match reply {
                    Some(r) => {
                        headers.remove(header::CONTENT_ENCODING);
                        answer(
                            Answer {
                                status: StatusCode::OK,
                                json: true,
                                body: r,
                                note: String::new(),
                            },
                            headers,
                        )
                    }
                    None => (status, body),
                }
            }
        }
    }
}

/// A compressed MCP answer cannot be read: refused.
fn refuse_encoded(
    mcp: &Mcp,
    at: &Endpoint,
    headers: &HeaderMap,
    conv: Option<&Arc<Conversation>>,
) -> Option<Answer> {
    let enc = encoded(headers)?;
    let why = format!("the server's answer is compressed (Content-Encoding `{enc}`): corral cannot read it");
    let (t, label) = conv.map_or((Transport::Http, String::new()), |c| {
        (c.transport, c.gov().label().to_string())
    });
    mcp.refused(t, &at.host, &label, Direction::ToClient, 0, &why);
    Some(rpc_error(StatusCode::BAD_GATEWAY, &why))
}

/// An answer in place of the upstream's response.
fn answer(a: Answer, headers: &mut HeaderMap) -> (StatusCode, ProxyBody) {
    headers.remove(header::CONTENT_ENCODING);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if a.json { "application/json" } else { "text/plain" }),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(a.body.len()));
    (a.status, full(a.body))
}

/// A JSON answer: read whole (up to the limit), through the governor.
async fn json_response(
    mcp: &Mcp,
    at: &Endpoint,
    conv: &Arc<Conversation>,
    status: StatusCode,
    headers: &mut HeaderMap,
    body: ProxyBody,
    reply: Option<Vec<u8>>,
) -> (StatusCode, ProxyBody) {
    let limit = mcp.limit();
    let label = conv.gov().label().to_string();
    let over = declared_len(headers).is_some_and(|n| n > limit as u64);
    let read = if over {
        Err(format!("more than {limit} bytes"))
    } else {
        read_limited(Vec::new(), Some(body), limit).await
    };
    let msg = match read {
        Ok(m) => m,
        Err(e) => {
            let why = format!("the server's answer was refused: {e}");
            mcp.refused(conv.transport, &at.host, &label, Direction::ToClient, 0, &why);
            return answer(rpc_error(StatusCode::BAD_GATEWAY, &why), headers);
        }
    };
    if msg.iter().all(u8::is_ascii_whitespace) {
        // An empty body says nothing: nothing to govern.
        return match reply {
            Some(r) => answer(
                Answer {
                    status: StatusCode::OK,
                    json: true,
                    body: r,
                    note: String::new(),
                },
                headers,
            ),
            None => (status, full(msg)),
        };
    }
    let step = conv.gov().from_server(&msg);
    let Some(fwd) = step.forward else {
        return answer(
            rpc_error(
                StatusCode::BAD_GATEWAY,
                "the server's answer is not a valid JSON-RPC message; it was dropped",
            ),
            headers,
        );
    };
    let mut parts = vec![fwd];
    parts.extend(step.extra);
    parts.extend(reply);
    let out = merge(parts);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    (status, full(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ep(path: &str) -> Endpoint {
        Endpoint {
            scheme: "https".into(),
            host: "mcp.test".into(),
            port: 8443,
            path: path.into(),
        }
    }

    #[test]
    fn endpoint_urls_resolve_against_the_stream() {
        let base = ep("/v1/sse");
        assert_eq!(
            resolve(&base, "/messages?sessionId=a1"),
            Some((ep("/messages"), "sessionId=a1".into()))
        );
        assert_eq!(
            resolve(&base, "messages/?session_id=b"),
            Some((ep("/v1/messages/"), "session_id=b".into()))
        );
        assert_eq!(resolve(&base, "?x=1"), Some((ep("/v1/sse"), "x=1".into())));
        assert_eq!(
            resolve(&base, "https://MCP.test:8443/m/../p%61th?q#frag"),
            Some((ep("/path"), "q".into()))
        );
        let other = resolve(&base, "//other.test/m").unwrap().0;
        assert_eq!((other.host.as_str(), other.port), ("other.test", 443));
        assert_eq!(resolve(&base, "http://[bad"), None);
    }

    #[test]
    fn merged_texts_make_one_batch() {
        assert_eq!(merge(vec![b"{\"a\":1}".to_vec()]), b"{\"a\":1}");
        assert_eq!(
            merge(vec![b"[{\"a\":1}]".to_vec(), b"{\"b\":2}".to_vec()]),
            br#"[{"a":1},{"b":2}]"#
        );
    }
}
