//! Shared helpers: a real HTTPS upstream (its own CA), a proxy on
//! 127.0.0.1 with a fixed destination, and TLS clients trusting corral's CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use bytes::Bytes;
use corral_core::Mode;
use corral_proxy::{Ca, Dest, HttpEvent, Limits, Proxy, ProxyConfig, ProxyPolicy, Secret};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

pub const HOST: &str = "upstream.test";
pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const SECRET: &str = "Bearer a b \"c\" ünï";

pub const POLICY: &str = r#"
@id("net")
permit (principal, action == Action::"NetworkConnect", resource == Host::"upstream.test");
@id("http")
permit (principal, action == Action::"HttpRequest", resource == Host::"upstream.test");
@id("no-admin")
forbid (principal, action == Action::"HttpRequest", resource == Host::"upstream.test")
  when { context.path like "/admin*" };
@id("token")
permit (principal, action == Action::"HttpRewrite", resource == Host::"upstream.test")
  when { context.header == "Authorization" && context.value == "Bearer a b \"c\" ünï" };
@id("loopback")
permit (principal, action == Action::"NetworkConnect", resource == Host::"127.0.0.1");
"#;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The upstream test server.
pub struct Upstream {
    pub port: u16,
    /// TCP connections accepted.
    pub accepted: Arc<AtomicUsize>,
    /// Request lines seen.
    pub seen: Arc<Mutex<Vec<String>>>,
    /// PEM file of the upstream's CA.
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// Echoes the request line, headers and the body length (and the body
/// itself when the request has `x-echo-body`); WebSocket upgrades become
/// an echo server.
async fn upstream_service(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Vec<String>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let line = format!("{} {} {:?}", req.method(), req.uri(), req.version());
    seen.lock().unwrap().push(line.clone());
    if let Some(key) = req.headers().get("sec-websocket-key").cloned() {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let up = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            use futures_util::{SinkExt, StreamExt};
            let io = TokioIo::new(up.await.unwrap());
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                io,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() || m.is_binary() {
                    ws.send(m).await.unwrap();
                }
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    let mut text = format!("{line}\n");
    for (k, v) in req.headers() {
        text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    let echo = req.headers().contains_key("x-echo-body");
    let mut body = req.into_body();
    let mut n: u64 = 0;
    let mut seen = Vec::new();
    while let Some(f) = body.frame().await {
        if let Some(d) = f?.data_ref() {
            n += d.len() as u64;
            if echo {
                seen.extend_from_slice(d);
            }
        }
    }
    text.push_str(&format!("body-bytes: {n}\n"));
    if echo {
        text.push_str(&format!("body: {}\n", String::from_utf8_lossy(&seen)));
    }
    Ok(Response::new(Full::new(Bytes::from(text))))
}

pub async fn start_upstream() -> Upstream {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    start_upstream_with(seen, move |r| upstream_service(r, s.clone())).await
}

/// An HTTPS upstream for [`HOST`] (its own CA) answering with `svc`;
/// `seen` becomes [`Upstream::seen`] (the service records into it).
pub async fn start_upstream_with<S, Fut, B>(seen: Arc<Mutex<Vec<String>>>, svc: S) -> Upstream
where
    S: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, hyper::Error>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "upstream test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = CertificateParams::new(vec![HOST.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let svc = svc.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(svc);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Upstream {
        port,
        accepted,
        seen,
        ca_file,
        _dir: dir,
    }
}

/// A proxy listening on 127.0.0.1, every connection meant for `dest_host`
/// at the upstream's port.
pub struct TestProxy {
    pub addr: SocketAddr,
    /// The proxy itself (mode and policy can be changed while it serves).
    pub proxy: Arc<Proxy>,
    pub events: Arc<Mutex<Vec<HttpEvent>>>,
    pub ca_pem: PathBuf,
    pub ca_der: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

impl TestProxy {
    pub fn events(&self) -> Vec<HttpEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `n` events were recorded.
    pub async fn wait_events(&self, n: usize) -> Vec<HttpEvent> {
        for _ in 0..200 {
            let e = self.events();
            if e.len() >= n {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("expected {n} events, got {:?}", self.events());
    }
}

pub async fn start_proxy(up: &Upstream, dest_host: &str, limits: Limits) -> TestProxy {
    start_proxy_to(up, Some(dest_host), limits).await
}

/// [`start_proxy`] with the destination's host name possibly unknown.
pub async fn start_proxy_to(up: &Upstream, dest_host: Option<&str>, limits: Limits) -> TestProxy {
    start_proxy_with(
        up,
        Setup {
            dest_host,
            limits,
            ..Setup::default()
        },
    )
    .await
}

/// What a test proxy is made with.
pub struct Setup<'a> {
    /// The host every connection is meant for (`None`: unknown).
    pub dest_host: Option<&'a str>,
    /// Policy text (`test.cedar`).
    pub policy: &'a str,
    pub limits: Limits,
    pub secrets: Vec<Secret>,
    pub mode: Mode,
    /// The MCP layer (`None`: MCP is not handled).
    pub mcp: Option<Arc<corral_mcp::Authority>>,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            dest_host: Some(HOST),
            policy: POLICY,
            limits: Limits::default(),
            secrets: vec![],
            mode: Mode::Enforce,
            mcp: None,
        }
    }
}

/// A policy from text (`test.cedar`).
pub fn policy(text: &str) -> ProxyPolicy {
    let doc = corral_policy::load(vec![corral_policy::Source::new("test.cedar", text)]).unwrap();
    ProxyPolicy::new(doc).unwrap()
}

pub async fn start_proxy_with(up: &Upstream, setup: Setup<'_>) -> TestProxy {
    let Setup {
        dest_host,
        policy: text,
        limits,
        secrets,
        mode,
        mcp,
    } = setup;
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::load_or_create(&dir.path().join("ca")).unwrap());
    let policy = policy(text);
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let mut cfg = ProxyConfig::new(
        "claude",
        policy,
        ca.clone(),
        Arc::new(move |e| ev.lock().unwrap().push(e)),
    );
    cfg.system_roots = false;
    cfg.extra_roots = vec![up.ca_file.clone()];
    cfg.limits = limits;
    cfg.secrets = secrets;
    cfg.mode = mode;
    cfg.mcp = mcp;
    // The test upstream listens on loopback.
    cfg.loopback_upstream = true;
    let proxy = Arc::new(Proxy::new(cfg).unwrap());
    let served = proxy.clone();
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dest = Dest {
        host: dest_host.map(str::to_string),
        ip: LOCAL,
        port: up.port,
    };
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(corral_proxy::serve_connection(tcp, dest.clone(), served.clone()));
        }
    });
    TestProxy {
        addr,
        proxy,
        events,
        ca_pem: ca.pem_path().to_path_buf(),
        ca_der: ca.cert_der().clone(),
        _dir: dir,
    }
}

/// A TLS connection to the proxy, trusting corral's CA, with `sni` and ALPN.
pub async fn tls_connect(
    p: &TestProxy,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(p.addr).await?;
    tls_over(p, tcp, sni, alpn).await
}

/// TLS over an existing stream (a CONNECT tunnel), trusting corral's CA.
pub async fn tls_over(
    p: &TestProxy,
    tcp: TcpStream,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.ca_der.clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// One HTTP/1.1 request with `host` as Host header.
pub async fn get_h1(p: &TestProxy, up: &Upstream, host: &str, path: &str, body: Bytes) -> Reply {
    let tls = tls_connect(p, HOST, &[b"http/1.1"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let method = if body.is_empty() { "GET" } else { "POST" };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("{host}:{}", up.port))
        // Replaced where the policy injects Authorization.
        .header("authorization", "from-the-client")
        .body(Full::new(body))
        .unwrap();
    reply(send.send_request(req).await.unwrap()).await
}

/// Sends one request over a new HTTP/1.1 connection (SNI [`HOST`]).
pub async fn send_h1(p: &TestProxy, req: Request<Full<Bytes>>) -> Reply {
    let tls = tls_connect(p, HOST, &[b"http/1.1"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    reply(send.send_request(req).await.unwrap()).await
}

pub async fn reply(r: Response<Incoming>) -> Reply {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// One HTTP/2 request.
pub async fn get_h2(p: &TestProxy, up: &Upstream, path: &str) -> Reply {
    let tls = tls_connect(p, HOST, &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("https://{HOST}:{}{path}", up.port))
        .body(Full::new(Bytes::new()))
        .unwrap();
    reply(send.send_request(req).await.unwrap()).await
}

/// Writes raw bytes over TLS (HTTP/1.1) and reads until the proxy closes
/// (or `wait` passes).
pub async fn raw_tls(p: &TestProxy, data: &[u8], wait: Duration) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(p, HOST, &[b"http/1.1"]).await.unwrap();
    tls.write_all(data).await.unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let closed = loop {
        match tokio::time::timeout(wait, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}
