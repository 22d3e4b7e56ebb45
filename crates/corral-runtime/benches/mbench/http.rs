//! server-everything's streamable HTTP transport, and a client of it: one
//! keep-alive HTTP/1.1 connection (hyper) on its own single-threaded
//! runtime, to the server or to the egress proxy. Each call is a POST of
//! one message with the session's `Mcp-Session-Id`; the answer (SSE, or
//! JSON) is read whole before the clock stops.

use crate::{check_echo, echo_call, Target, PATIENCE};
use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// server-everything on `PORT`, killed (by PID) on drop.
pub struct HttpServer {
    child: Child,
    /// Where it listens (all addresses; the bench uses 127.0.0.1).
    pub port: u16,
}

impl HttpServer {
    /// Starts it on a free port and waits until it accepts connections.
    pub fn start(server: &Path) -> anyhow::Result<HttpServer> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let child = Command::new(server)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            // It logs a line per request.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn `{} streamableHttp`", server.display()))?;
        let mut s = HttpServer { child, port };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(s);
            }
            if let Some(status) = s.child.try_wait()? {
                bail!("server-everything over HTTP exited ({status}) before listening on port {port}");
            }
            if Instant::now() > deadline {
                bail!(
                    "server-everything did not listen on port {port} within {} s",
                    PATIENCE.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer, read whole.
struct Answer {
    status: StatusCode,
    session: Option<HeaderValue>,
    body: Bytes,
    /// The body is an SSE stream (else JSON).
    sse: bool,
}

impl Answer {
    /// The JSON-RPC messages it carried (SSE `data`, or the JSON body).
    fn messages(&self) -> anyhow::Result<Vec<Value>> {
        messages(&self.body, self.sse)
    }
}

/// A client with an initialized MCP session.
pub struct HttpTarget {
    name: &'static str,
    rt: tokio::runtime::Runtime,
    send: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    session: HeaderValue,
    version: HeaderValue,
}

impl HttpTarget {
    /// Connects to `addr` (the server, or the proxy in front of it at
    /// `port`), initializes a session and, when `governed`, checks that a
    /// forbidden tool is refused.
    pub fn start(
        name: &'static str,
        addr: SocketAddr,
        port: u16,
        governed: bool,
    ) -> anyhow::Result<HttpTarget> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let send = rt
            .block_on(async {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                anyhow::Ok(send)
            })
            .with_context(|| format!("{name}: connect to {addr}"))?;
        // The server's port in both cases: through the proxy the request
        // names where it is meant to go.
        let host = HeaderValue::from_str(&format!("127.0.0.1:{port}"))?;
        let mut t = HttpTarget {
            name,
            rt,
            send,
            host,
            session: HeaderValue::from_static(""),
            version: HeaderValue::from_static("2025-06-18"),
        };
        let init = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "corral-mbench", "version": "0"},
            },
        });
        let a = t.post_blocking(init.to_string(), false)?;
        let Some(session) = a.session.clone() else {
            bail!("{name}: initialize answered without a session id ({})", a.status);
        };
        t.session = session;
        let r = a.messages()?.first().cloned().unwrap_or_default();
        if let Some(v) = r["result"]["protocolVersion"].as_str() {
            t.version = HeaderValue::from_str(v)?;
        } else {
            bail!("{name}: initialize was not answered: {r}");
        }
        let a = t.post_blocking(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.into(),
            true,
        )?;
        if a.status != StatusCode::ACCEPTED {
            bail!("{name}: notifications/initialized answered {}", a.status);
        }
        if governed {
            let call = json!({
                "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": crate::setup::FORBIDDEN[0], "arguments": {}},
            });
            let a = t.post_blocking(call.to_string(), true)?;
            let r = a.messages()?.first().cloned().unwrap_or_default();
            if r["error"]["code"] != -32001 {
                bail!("{name}: the forbidden tool was not refused ({}): {r}", a.status);
            }
        }
        Ok(t)
    }

    fn request(&self, body: String, with_session: bool) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut b = Request::post("/mcp")
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream");
        if with_session {
            b = b
                .header("mcp-session-id", self.session.clone())
                .header("mcp-protocol-version", self.version.clone());
        }
        Ok(b.body(Full::new(Bytes::from(body)))?)
    }

    fn post_blocking(&mut self, body: String, with_session: bool) -> anyhow::Result<Answer> {
        let req = self.request(body, with_session)?;
        let send = &mut self.send;
        let name = self.name;
        self.rt
            .block_on(async { tokio::time::timeout(PATIENCE, post(send, req)).await })
            .map_err(|_| anyhow!("{name}: no answer within {} s", PATIENCE.as_secs()))?
            .context(name)
    }
}

/// Sends `req` and reads the answer whole.
async fn post(send: &mut SendRequest<Full<Bytes>>, req: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
    send.ready().await?;
    let r = send.send_request(req).await?;
    let status = r.status();
    let session = r.headers().get("mcp-session-id").cloned();
    let sse = r
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = r.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        session,
        body,
        sse,
    })
}

/// The JSON-RPC messages in an answer's body.
fn messages(body: &[u8], sse: bool) -> anyhow::Result<Vec<Value>> {
    if body.is_empty() {
        return Ok(vec![]);
    }
    if !sse {
        return Ok(vec![
            serde_json::from_slice(body).context("a JSON answer that does not parse")?
        ]);
    }
    let text = std::str::from_utf8(body).context("an SSE answer that is not UTF-8")?;
    let mut out = Vec::new();
    for event in text.replace("\r\n", "\n").split("\n\n") {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if !data.is_empty() {
            let v = serde_json::from_str(&data.join("\n"))
                .with_context(|| format!("an SSE event that is not JSON: {event:?}"))?;
            out.push(v);
        }
    }
    Ok(out)
}

impl Target for HttpTarget {
    fn calls(&mut self, ids: Range<u64>) -> anyhow::Result<Vec<Duration>> {
        let mut reqs = Vec::with_capacity(ids.clone().count());
        for id in ids.clone() {
            reqs.push((id, self.request(echo_call(id), true)?));
        }
        let send = &mut self.send;
        let run = async {
            let mut out = Vec::with_capacity(reqs.len());
            for (id, req) in reqs {
                let start = Instant::now();
                let a = tokio::time::timeout(PATIENCE, post(send, req))
                    .await
                    .map_err(|_| anyhow!("no answer to call {id} within {} s", PATIENCE.as_secs()))??;
                out.push(start.elapsed());
                if a.status != StatusCode::OK {
                    bail!("call {id} answered {}", a.status);
                }
                match a.messages()?.as_slice() {
                    [v] => check_echo(v, id)?,
                    m => bail!("call {id} answered with {} messages: {m:?}", m.len()),
                }
            }
            Ok(out)
        };
        self.rt.block_on(run)
    }
}
