//! The client side: one HTTPS keep-alive connection (direct, or through a
//! proxy with `CONNECT`), and the four measurements made over such
//! connections on every path.

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The host name the keep-alive measurements use (its leaf is cached after
/// the first connection).
pub const WARM_HOST: &str = "api.bench.test";

/// One way to reach the upstream.
pub struct Route {
    pub name: String,
    /// The proxy to send `CONNECT` to (none: straight to the upstream).
    pub proxy: Option<SocketAddr>,
    pub upstream: SocketAddr,
    /// Trusts the one CA whose certificates this route's client sees.
    pub tls: tokio_rustls::TlsConnector,
    /// Connections opened and requests completed on this route.
    pub conns: AtomicU64,
    pub requests: AtomicU64,
}

impl Route {
    pub fn new(
        name: &str,
        proxy: Option<SocketAddr>,
        upstream: SocketAddr,
        ca: CertificateDer<'static>,
    ) -> anyhow::Result<Route> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca)?;
        let mut cfg =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Every new connection makes a full handshake (as a new process
        // would): no session resumption.
        cfg.resumption = rustls::client::Resumption::disabled();
        Ok(Route {
            name: name.to_string(),
            proxy,
            upstream,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            conns: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        })
    }
}

/// An open keep-alive connection to `host`.
pub struct Conn {
    send: SendRequest<Empty<Bytes>>,
    authority: String,
    /// TCP connect and, through a proxy, its answer to CONNECT.
    tunnel: Duration,
    /// The TLS handshake.
    handshake: Duration,
}

/// Reads a proxy's answer to `CONNECT` (nothing follows it before the
/// client speaks TLS) and checks it is a 2xx.
async fn tunnel(tcp: &mut TcpStream, target: SocketAddr) -> anyhow::Result<()> {
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            bail!("the proxy's CONNECT answer is too long");
        }
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            bail!("the proxy closed the connection during CONNECT");
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    if !head.ends_with(b"\r\n\r\n") {
        bail!("the proxy sent bytes after its CONNECT answer");
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.split_whitespace().nth(1).unwrap_or("");
    if !status.starts_with('2') {
        bail!("CONNECT refused: {}", text.lines().next().unwrap_or_default());
    }
    Ok(())
}

impl Conn {
    /// Opens a connection (through the route's proxy, if any) and makes
    /// the TLS handshake with SNI `host`.
    pub async fn open(route: &Route, host: &str) -> anyhow::Result<Conn> {
        let start = Instant::now();
        let mut tcp = TcpStream::connect(route.proxy.unwrap_or(route.upstream)).await?;
        tcp.set_nodelay(true)?;
        if route.proxy.is_some() {
            tunnel(&mut tcp, route.upstream).await?;
        }
        let tunnel = start.elapsed();
        let name = ServerName::try_from(host.to_string())?;
        let tls = route
            .tls
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake for `{host}` on {}", route.name))?;
        let handshake = start.elapsed() - tunnel;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        route.conns.fetch_add(1, Ordering::Relaxed);
        Ok(Conn {
            send,
            authority: format!("{host}:{}", route.upstream.port()),
            tunnel,
            handshake,
        })
    }

    /// One GET; checks the status and the body's length; returns its
    /// duration (request sent to last body byte).
    pub async fn get(&mut self, route: &Route, path: &str, len: usize) -> anyhow::Result<Duration> {
        let req = hyper::Request::builder()
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(crate::upstream::PATH_HEADER, &route.name)
            .body(Empty::new())?;
        let start = Instant::now();
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut n = 0usize;
        while let Some(f) = body.frame().await {
            if let Some(d) = f?.data_ref() {
                n += d.len();
            }
        }
        let took = start.elapsed();
        if status != hyper::StatusCode::OK || n != len {
            bail!(
                "{} {path}: status {status}, {n} body bytes (expected 200, {len})",
                route.name
            );
        }
        route.requests.fetch_add(1, Ordering::Relaxed);
        Ok(took)
    }
}

/// Percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stats {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

impl Stats {
    pub fn of(mut v: Vec<Duration>) -> Stats {
        v.sort();
        let at = |p: f64| -> f64 {
            let i = ((p * v.len() as f64).ceil() as usize).saturating_sub(1);
            v.get(i).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
        };
        let sum: f64 = v.iter().map(|d| d.as_secs_f64()).sum();
        Stats {
            n: v.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            mean_ms: if v.is_empty() {
                0.0
            } else {
                sum * 1000.0 / v.len() as f64
            },
        }
    }
}

/// Sequential small requests on one keep-alive connection, after a warm-up.
pub async fn latency(route: &Route, warmup: usize, n: usize, small: usize) -> anyhow::Result<Vec<Duration>> {
    let mut c = Conn::open(route, WARM_HOST).await?;
    for _ in 0..warmup {
        c.get(route, "/small", small).await?;
    }
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        t.push(c.get(route, "/small", small).await?);
    }
    Ok(t)
}

/// Throughput with `conns` keep-alive connections.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Load {
    pub conns: usize,
    /// Measured time, all rounds.
    pub secs: f64,
    pub requests: u64,
    pub per_sec: f64,
    pub mib_per_sec: f64,
    /// Request latency under this load.
    pub latency: Stats,
}

/// What load rounds measured, merged.
#[derive(Debug, Default)]
pub struct LoadRaw {
    conns: usize,
    secs: f64,
    bytes: f64,
    samples: Vec<Duration>,
}

impl LoadRaw {
    pub fn merge(&mut self, o: LoadRaw) {
        self.conns = o.conns;
        self.secs += o.secs;
        self.bytes += o.bytes;
        self.samples.extend(o.samples);
    }

    pub fn summary(&self) -> Load {
        let requests = self.samples.len() as u64;
        let secs = self.secs.max(1e-9);
        Load {
            conns: self.conns,
            secs: self.secs,
            requests,
            per_sec: requests as f64 / secs,
            mib_per_sec: self.bytes / secs / (1024.0 * 1024.0),
            latency: Stats::of(self.samples.clone()),
        }
    }
}

/// `conns` connections, each sending `path` back to back for `secs`
/// seconds (every connection opened and warmed before the clock starts; a
/// request in flight at the deadline is completed and counted).
pub async fn load(
    route: &Arc<Route>,
    conns: usize,
    secs: f64,
    path: &'static str,
    len: usize,
) -> anyhow::Result<LoadRaw> {
    let mut open = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut c = Conn::open(route, WARM_HOST).await?;
        for _ in 0..3 {
            c.get(route, path, len).await?;
        }
        open.push(c);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(conns);
    for mut c in open {
        let route = route.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = Vec::new();
            while Instant::now() < deadline {
                t.push(c.get(&route, path, len).await?);
            }
            anyhow::Ok((t, Instant::now()))
        }));
    }
    let mut samples = Vec::new();
    let mut end = start;
    for task in tasks {
        let (t, done) = task.await??;
        samples.extend(t);
        end = end.max(done);
    }
    Ok(LoadRaw {
        conns,
        secs: (end - start).as_secs_f64(),
        bytes: samples.len() as f64 * len as f64,
        samples,
    })
}

/// A new connection and its first request: in all, and its parts.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct First {
    pub total: Stats,
    /// TCP connect, and the proxy's answer to CONNECT.
    pub tunnel: Stats,
    /// The TLS handshake (the proxy's leaf; for some proxies also the
    /// upstream connection).
    pub tls: Stats,
    /// The first request, sent to last body byte.
    pub request: Stats,
}

/// What new-connection rounds measured, merged.
#[derive(Debug, Default)]
pub struct FirstRaw {
    total: Vec<Duration>,
    tunnel: Vec<Duration>,
    tls: Vec<Duration>,
    request: Vec<Duration>,
}

impl FirstRaw {
    pub fn merge(&mut self, o: FirstRaw) {
        self.total.extend(o.total);
        self.tunnel.extend(o.tunnel);
        self.tls.extend(o.tls);
        self.request.extend(o.request);
    }

    pub fn summary(&self) -> First {
        First {
            total: Stats::of(self.total.clone()),
            tunnel: Stats::of(self.tunnel.clone()),
            tls: Stats::of(self.tls.clone()),
            request: Stats::of(self.request.clone()),
        }
    }
}

/// A new connection and its first request, for each `i` in `range`: to
/// `host(i)` (the same name every time: the leaf is cached; a new name
/// every time: a leaf is issued). Connect + CONNECT + TLS + request.
pub async fn first_request(
    route: &Route,
    range: std::ops::Range<usize>,
    small: usize,
    host: impl Fn(usize) -> String,
) -> anyhow::Result<FirstRaw> {
    let mut raw = FirstRaw::default();
    for i in range {
        let start = Instant::now();
        let mut c = Conn::open(route, &host(i)).await?;
        raw.request.push(c.get(route, "/small", small).await?);
        raw.total.push(start.elapsed());
        raw.tunnel.push(c.tunnel);
        raw.tls.push(c.handshake);
    }
    Ok(raw)
}
