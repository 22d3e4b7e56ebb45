//! One request: check that it is for the connection's host, decide it with
//! the policy (in shadow mode a denial is recorded, not enforced), inject
//! headers, substitute placeholder secrets where allowed, forward it
//! through the pooled client and stream the response back (or splice an
//! upgraded connection), then report it.

use crate::decide::{HttpAsk, ProxyPolicy, Verdict};
use crate::event::HttpEvent;
use crate::proxy::{Dest, Proxy};
use crate::secret::Ask;
use crate::serve::serve_boxed;
use crate::smuggle::HeadFlags;
use crate::upstream::ProxyBody;
use bytes::Bytes;
use corral_core::{Decision, Mode};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

/// What a connection is for.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The host every request must name (SNI, destination name or address).
    pub host: String,
    /// Where the client meant to connect.
    pub dest: Dest,
    /// ALPN chose HTTP/2.
    pub h2: bool,
    /// The process that opened the connection, when known.
    pub client: Option<crate::event::Client>,
    /// The connection's host is not known (a redirected plain-HTTP
    /// connection): a request's Host is accepted when it resolves to the
    /// destination address.
    pub verify_host: bool,
    /// Hosts already found to resolve to the destination, so a keep-alive
    /// connection resolves each once, not per request.
    pub verified: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ConnInfo {
    /// Whether `host` names this connection's destination address (see
    /// [`ConnInfo::verify_host`]), resolving it once per connection.
    async fn resolves_here(&self, host: &str, ctx: &Proxy) -> bool {
        let seen = |v: &Vec<String>| v.iter().any(|h| h == host);
        if self.verified.lock().is_ok_and(|v| seen(&v)) {
            return true;
        }
        let ok = ctx.resolves_to(host, self.dest.ip).await;
        if let (true, Ok(mut v)) = (ok, self.verified.lock()) {
            // A handful of names per connection at most; bounded anyway.
            if v.len() < 16 && !seen(&v) {
                v.push(host.to_string());
            }
        }
        ok
    }
}

/// Headers that belong to one hop (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// The event of a request, filled in as it goes.
struct Record {
    ev: HttpEvent,
    start: Instant,
    bytes_in: Arc<AtomicU64>,
    /// Placeholders seen in a streamed request body (withheld secrets).
    body_withheld: Option<crate::secret::Seen>,
}

impl Record {
    /// Records a policy verdict: the record, marked allowed (or, in shadow
    /// mode, `would_deny`), to go on with; or the 403 that names the
    /// deciding policies (returned once per denied request, so its size
    /// does not matter: no box).
    #[allow(clippy::result_large_err)]
    fn decided(
        mut self,
        verdict: &Verdict,
        mode: Mode,
        ctx: &Arc<Proxy>,
    ) -> Result<Record, Response<ProxyBody>> {
        self.ev.policies = verdict.policies.iter().map(|p| p.id.clone()).collect();
        self.ev.policy_at = verdict.policies.iter().map(|p| p.at.clone()).collect();
        if !verdict.allowed && mode == Mode::Shadow {
            self.ev.decision = Decision::WouldDeny;
            return Ok(self);
        }
        if !verdict.allowed {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "denied by corral policy",
                Some(verdict),
                self,
                ctx,
            ));
        }
        self.ev.decision = Decision::Allow;
        Ok(self)
    }

    fn finish(mut self, ctx: &Proxy, bytes_out: u64) {
        self.ev.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        if let Some(seen) = self.body_withheld.take() {
            for name in seen.lock().unwrap_or_else(PoisonError::into_inner).iter() {
                if !self.ev.secrets_withheld.contains(name) {
                    self.ev.secrets_withheld.push(name.clone());
                }
            }
        }
        self.ev.bytes_out = bytes_out;
        self.ev.duration = self.start.elapsed();
        ctx.emit(self.ev);
    }
}

/// A response body that counts what it sends and reports the request when
/// it ends (or is dropped: a client that goes away is reported too).
struct Tracked {
    inner: ProxyBody,
    sent: u64,
    record: Option<Record>,
    ctx: Arc<Proxy>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.sent += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(rec) = &mut this.record {
                    rec.ev.error = Some(format!("upstream body failed: {e}"));
                }
            }
            Poll::Ready(None) => {
                if let Some(rec) = this.record.take() {
                    rec.finish(&this.ctx, this.sent);
                }
            }
            Poll::Pending => {}
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(rec) = self.record.take() {
            rec.finish(&self.ctx, self.sent);
        }
    }
}

fn respond(
    status: StatusCode,
    body: ProxyBody,
    json: bool,
    rec: Record,
    ctx: &Arc<Proxy>,
) -> Response<ProxyBody> {
    let mut rec = rec;
    rec.ev.status = Some(status.as_u16());
    let tracked = Tracked {
        inner: body,
        sent: 0,
        record: Some(rec),
        ctx: ctx.clone(),
    };
    let mut resp = Response::new(tracked.boxed());
    *resp.status_mut() = status;
    if json {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    resp
}

/// A refusal: `status` with a JSON body `{"error": ..., "request": ...}`
/// (and the policies, for a policy denial).
fn refuse(
    status: StatusCode,
    error: &str,
    verdict: Option<&Verdict>,
    rec: Record,
    ctx: &Arc<Proxy>,
) -> Response<ProxyBody> {
    let mut rec = rec;
    let request = format!(
        "{} {}://{}{}",
        rec.ev.method,
        rec.ev.scheme,
        crate::decide::host_with_port(&rec.ev.host, rec.ev.port, &rec.ev.scheme),
        rec.ev.path
    );
    let mut body = serde_json::json!({ "error": error, "request": request });
    if let Some(v) = verdict {
        body["policies"] = serde_json::to_value(&v.policies).unwrap_or_default();
        body["reason"] = serde_json::Value::String(v.reason.clone());
    }
    rec.ev.decision = Decision::Deny;
    if rec.ev.error.is_none() {
        rec.ev.error = Some(match verdict {
            Some(v) => v.reason.clone(),
            None => error.to_string(),
        });
    }
    respond(status, full(body.to_string()), true, rec, ctx)
}

/// An answer of the MCP layer in place of forwarding: the request was
/// not sent upstream.
fn mcp_answer(a: crate::mcp::Answer, rec: Record, ctx: &Arc<Proxy>) -> Response<ProxyBody> {
    let mut rec = rec;
    rec.ev.decision = Decision::Deny;
    rec.ev.error = Some(a.note);
    let mut r = respond(a.status, full(a.body), a.json, rec, ctx);
    if !a.json {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

/// The host and port a request names: `:authority` or the URI's authority
/// (absolute form), else the `Host` header.
fn authority<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Splits `host[:port]` (IPv6 in brackets) and normalises the host.
pub(crate) fn split_authority(a: &str, default_port: u16) -> Option<(String, u16)> {
    let a = a.rsplit('@').next()?;
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (h, port)
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (a, default_port),
        }
    };
    let host = corral_policy::request::normalize_host(host).ok()?;
    Some((host, port))
}

/// Serves one request.
pub(crate) async fn handle(
    mut req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    ctx: Arc<Proxy>,
    flags: Arc<HeadFlags>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    // One policy and one mode per request, whatever is swapped in meanwhile.
    let policy = ctx.policy();
    let mode = ctx.mode();
    let default_port = if conn.scheme == "https" { 443 } else { 80 };
    let raw_path = req.uri().path().to_string();
    let normalized = crate::decide::normalize_path(&raw_path);
    let path = normalized.clone().unwrap_or_else(|_| raw_path.clone());
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let rec = Record {
        ev: HttpEvent {
            principal: ctx.principal.clone(),
            kind: "request",
            method: method.as_str().to_string(),
            scheme: conn.scheme.to_string(),
            host: conn.host.clone(),
            port: conn.dest.port,
            path: path.clone(),
            status: None,
            bytes_in: 0,
            bytes_out: 0,
            duration: std::time::Duration::ZERO,
            decision: Decision::Deny,
            policies: vec![],
            policy_at: vec![],
            injected_headers: vec![],
            secrets_used: vec![],
            secrets_withheld: vec![],
            client: conn.client.clone(),
            error: None,
        },
        start,
        bytes_in: Arc::new(AtomicU64::new(0)),
        body_withheld: None,
    };
    if flags.conflict()
        || (req.headers().contains_key(header::CONTENT_LENGTH)
            && req.headers().contains_key(header::TRANSFER_ENCODING))
    {
        let mut r = refuse(
            StatusCode::BAD_REQUEST,
            "request has both Content-Length and Transfer-Encoding (possible request smuggling)",
            None,
            rec,
            &ctx,
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(r);
    }
    if method == Method::CONNECT {
        return Ok(connect(req, conn, ctx, rec, (&policy, mode)).await);
    }
    if let Err(e) = normalized {
        return Ok(refuse(StatusCode::BAD_REQUEST, &e, None, rec, &ctx));
    }
    let Some(auth) = authority(&req) else {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "request names no host",
            None,
            rec,
            &ctx,
        ));
    };
    let Some((host, port)) = split_authority(&auth, default_port) else {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            &format!("request names an invalid host `{auth}`"),
            None,
            rec,
            &ctx,
        ));
    };
    let conn_host = corral_policy::request::normalize_host(&conn.host).unwrap_or_else(|_| conn.host.clone());
    let agrees = if conn.verify_host && port == conn.dest.port && host != conn_host {
        // A redirected plain-HTTP connection: the Host must be a name for
        // the address the client connected to (or that address itself).
        conn.resolves_here(&host, &ctx).await
    } else {
        host == conn_host && port == conn.dest.port
    };
    if !agrees {
        if conn.verify_host {
            let msg = format!(
                "request for `{}` on a connection to {}: the Host does not resolve to the destination address",
                crate::decide::host_with_port(&host, port, conn.scheme),
                std::net::SocketAddr::new(conn.dest.ip, conn.dest.port),
            );
            return Ok(refuse(StatusCode::MISDIRECTED_REQUEST, &msg, None, rec, &ctx));
        }
        let msg = format!(
            "request for `{}` on a connection to `{}`: the Host must name the destination",
            crate::decide::host_with_port(&host, port, conn.scheme),
            crate::decide::host_with_port(&conn_host, conn.dest.port, conn.scheme),
        );
        return Ok(refuse(StatusCode::MISDIRECTED_REQUEST, &msg, None, rec, &ctx));
    }
    let mut rec = rec;
    rec.ev.host = host.clone();
    let verdict = policy.decide_http(
        &ctx.principal,
        &HttpAsk {
            scheme: conn.scheme,
            method: method.as_str(),
            host: &host,
            ip: conn.dest.ip,
            port,
            path: &path,
            query: &query,
        },
    );
    let mut rec = match rec.decided(&verdict, mode, &ctx) {
        Ok(rec) => rec,
        Err(denied) => return Ok(denied),
    };

    let wants_upgrade = req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let upgrade_headers: Vec<(HeaderName, HeaderValue)> = if wants_upgrade {
        req.headers()
            .get_all(header::UPGRADE)
            .iter()
            .map(|v| (header::UPGRADE, v.clone()))
            .chain([(header::CONNECTION, HeaderValue::from_static("upgrade"))])
            .collect()
    } else {
        vec![]
    };

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    for (n, v) in upgrade_headers {
        parts.headers.append(n, v);
    }
    for inj in policy.rewrites(&ctx.principal, &host, port) {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(inj.header.as_bytes()),
            HeaderValue::from_bytes(inj.value.expose().as_bytes()),
        ) else {
            rec.ev.error = Some(format!(
                "header `{}` from policy `{}` is not a valid header",
                inj.header, inj.policy.id
            ));
            continue;
        };
        parts.headers.insert(name, value);
        rec.ev.injected_headers.push(inj.header.clone());
    }
    // Sent with the path it was decided on.
    let pq = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let uri = format!(
        "{}://{}{}",
        conn.scheme,
        corral_policy::request::host_port(&host, port),
        pq
    );
    parts.uri = match uri.parse() {
        Ok(u) => u,
        Err(e) => {
            return Ok(refuse(
                StatusCode::BAD_REQUEST,
                &format!("cannot build the upstream URI: {e}"),
                None,
                rec,
                &ctx,
            ));
        }
    };
    parts.version = http::Version::HTTP_11;
    let counter = rec.bytes_in.clone();
    let body = body
        .map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                counter.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
            f
        })
        .boxed();
    // MCP: classify, and for MCP govern the body (before secrets: what
    // is substituted is what the governor forwards).
    let mut exchange = None;
    let mut tripped = None;
    let mut body = body;
    if let (Some(m), false) = (ctx.mcp.as_ref(), wants_upgrade) {
        let at = crate::mcp::Endpoint {
            scheme: conn.scheme.to_string(),
            host: host.clone(),
            port,
            path: path.clone(),
        };
        match m.request(at, &query, &method, &mut parts.headers, body).await {
            crate::mcp::Hook::Forward {
                body: b,
                exchange: x,
                tripped: t,
            } => {
                body = b;
                exchange = x;
                tripped = t;
            }
            crate::mcp::Hook::Answer(a) => return Ok(mcp_answer(a, rec, &ctx)),
        }
    }
    let mut secrets = Ask::new(&ctx.secrets, &policy, &ctx.principal, &host, port);
    if let Some(e) = secrets.headers(&mut parts.headers).pop() {
        rec.ev.error = Some(e);
    }
    let limit = ctx.limits.max_rewrite_body;
    let body = match secrets.body(body, &mut parts.headers, wants_upgrade, limit).await {
        Ok((body, seen)) => {
            rec.body_withheld = seen;
            body
        }
        Err((status, why)) => {
            rec.ev.secrets_used = secrets.used;
            rec.ev.secrets_withheld = secrets.withheld;
            return Ok(refuse(status, &why, None, rec, &ctx));
        }
    };
    rec.ev.secrets_used = secrets.used;
    rec.ev.secrets_withheld = secrets.withheld;
    let up_req = Request::from_parts(parts, body);
    ctx.upstream.pin(&host, conn.dest.ip);
    let client = if wants_upgrade {
        ctx.upstream.client_h1()
    } else {
        ctx.upstream.client()
    };
    let result = client.request(up_req).await;
    if let (Some(t), Some(m)) = (&tripped, ctx.mcp.as_ref()) {
        if t.is_set() {
            return Ok(mcp_answer(m.cut_off(&host), rec, &ctx));
        }
    }
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            let detail = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default();
            rec.ev.error = Some(
                format!("upstream request failed: {e} {detail}")
                    .trim_end()
                    .to_string(),
            );
            let body = serde_json::json!({
                "error": "upstream request failed",
                "detail": format!("{e} {detail}").trim_end(),
            });
            let mut r = respond(StatusCode::BAD_GATEWAY, full(body.to_string()), true, rec, &ctx);
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Ok(r);
        }
    };
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_up) = client_upgrade {
            let upstream_up = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(c), Ok(u)) = (client_up.await, upstream_up.await) {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u)).await;
                }
            });
            let (parts, _) = resp.into_parts();
            let mut out = respond(status, full(Bytes::new()), false, rec, &ctx);
            *out.headers_mut() = parts.headers;
            return Ok(out);
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let (status, body) = match exchange {
        Some(x) => x.response(status, &mut parts.headers, body.boxed()).await,
        None => (status, body.boxed()),
    };
    let mut out = respond(status, body, false, rec, &ctx);
    *out.headers_mut() = parts.headers;
    Ok(out)
}

/// `CONNECT host:port` (explicit-proxy mode): decide `NetworkConnect`,
/// answer 200 and serve the tunnel as a new intercepted connection.
async fn connect(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    ctx: Arc<Proxy>,
    mut rec: Record,
    (policy, mode): (&ProxyPolicy, Mode),
) -> Response<ProxyBody> {
    rec.ev.kind = "connect";
    rec.ev.scheme = String::new();
    rec.ev.path = String::new();
    if conn.scheme != "http" {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT inside an intercepted TLS connection",
            None,
            rec,
            &ctx,
        );
    }
    let target = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let Some((host, port)) = split_authority(&target, 443) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("CONNECT to an invalid target `{target}`"),
            None,
            rec,
            &ctx,
        );
    };
    rec.ev.host = host.clone();
    rec.ev.port = port;
    let literal = host.parse::<std::net::IpAddr>().ok();
    let ip = match literal {
        Some(ip) => ip,
        None => match tokio::net::lookup_host((host.as_str(), port))
            .await
            .map(|mut a| a.next())
        {
            Ok(Some(a)) => a.ip(),
            _ => {
                return refuse(
                    StatusCode::BAD_GATEWAY,
                    &format!("cannot resolve `{host}`"),
                    None,
                    rec,
                    &ctx,
                );
            }
        },
    };
    if !ctx.may_reach(ip) {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!("CONNECT to {ip} refused: loopback and unspecified addresses are never reached through the proxy"),
            None,
            rec,
            &ctx,
        );
    }
    let verdict = policy.decide_connect(&ctx.principal, Some(&host), ip, port);
    let rec = match rec.decided(&verdict, mode, &ctx) {
        Ok(rec) => rec,
        Err(denied) => return denied,
    };
    let dest = Dest {
        host: literal.is_none().then_some(host),
        ip,
        port,
    };
    let inner_ctx = ctx.clone();
    let client = conn.client.clone();
    tokio::spawn(async move {
        if let Ok(up) = hyper::upgrade::on(req).await {
            serve_boxed(Box::new(TokioIo::new(up)), dest, client, inner_ctx).await;
        }
    });
    respond(StatusCode::OK, full(Bytes::new()), false, rec, &ctx)
}
