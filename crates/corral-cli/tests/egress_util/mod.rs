//! A "remote" test network for the egress tests: a network namespace with
//! a veth pair to the host (10.231.N.1 on the host, 10.231.N.2 inside),
//! and servers bound inside it:
//!
//! * :443 HTTPS (its own CA; names `api.corral.test` and
//!   `other.corral.test`; ALPN h2 and http/1.1) and :80 plain HTTP, both
//!   recording every request (method, path, version, headers) and echoing
//!   WebSocket messages on upgrade;
//! * :7 and :2222 a server-speaks-first TCP service: sends `corral-banner\n`, then
//!   echoes what it reads.
//!
//! Nothing is sent anywhere but into this namespace. Drop removes it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The names the HTTPS server's certificate holds.
pub const NAMES: [&str; 3] = ["api.corral.test", "other.corral.test", "denied.corral.test"];

/// One request the servers saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub scheme: &'static str,
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// The namespace, its servers and what they saw.
pub struct Remote {
    pub ns: String,
    veth: String,
    /// The servers' address (inside the namespace).
    pub ip: IpAddr,
    /// The CA that signed the HTTPS server's certificate (PEM file).
    pub ca_file: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted on :7.
    pub banner_conns: Arc<AtomicU32>,
    rt: Option<tokio::runtime::Runtime>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Remote {
    /// Creates the namespace and starts the servers; `dir` holds the CA file.
    pub fn start(dir: &Path) -> Result<Remote, String> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // /30 subnets: 64 per third octet.
        let slot = (pid.wrapping_mul(7) + n) % (200 * 64);
        let (third, base) = (10 + slot / 64, (slot % 64) * 4);
        let ns = format!("corral-e{pid}-{n}");
        let veth = format!("ce{}h{n}", pid % 100_000);
        let peer = format!("ce{}n{n}", pid % 100_000);
        let host_ip = format!("10.231.{third}.{}", base + 1);
        let ns_ip = format!("10.231.{third}.{}", base + 2);
        ip(&["netns", "add", &ns])?;
        let mut r = Remote {
            ns: ns.clone(),
            veth: veth.clone(),
            ip: ns_ip.parse().map_err(|e| format!("{e}"))?,
            ca_file: dir.join("remote-ca.pem"),
            seen: Arc::new(Mutex::new(Vec::new())),
            banner_conns: Arc::new(AtomicU32::new(0)),
            rt: None,
        };
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &ns])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &veth])?;
        ip(&["link", "set", &veth, "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{ns_ip}/30"), "dev", &peer])?;
        ip(&["-n", &ns, "link", "set", &peer, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        r.serve()?;
        Ok(r)
    }

    fn serve(&mut self) -> Result<(), String> {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "corral egress test remote CA");
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| e.to_string())?;
        std::fs::write(&self.ca_file, ca_cert.pem()).map_err(|e| e.to_string())?;
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let leaf = CertificateParams::new(NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .map_err(|e| e.to_string())?
            .signed_by(&leaf_key, &issuer)
            .map_err(|e| e.to_string())?;
        let mut cfg =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
                )
                .map_err(|e| e.to_string())?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));

        // The sockets are made inside the namespace by a thread that enters it.
        let nsf = std::fs::File::open(format!("/var/run/netns/{}", self.ns)).map_err(|e| e.to_string())?;
        let addr = self.ip;
        let listeners = std::thread::spawn(move || -> Result<Vec<std::net::TcpListener>, String> {
            nix::sched::setns(&nsf, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
            [443u16, 80, 7, 2222]
                .iter()
                .map(|p| {
                    let l = std::net::TcpListener::bind((addr, *p)).map_err(|e| format!("bind :{p}: {e}"))?;
                    l.set_nonblocking(true).map_err(|e| e.to_string())?;
                    Ok(l)
                })
                .collect()
        })
        .join()
        .map_err(|_| "netns thread panicked".to_string())??;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut it = listeners.into_iter();
        let (l443, l80) = (it.next().unwrap(), it.next().unwrap());
        let banner_listeners: Vec<std::net::TcpListener> = it.collect();
        let seen = self.seen.clone();
        let banner = self.banner_conns.clone();
        rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(l443).unwrap();
            loop {
                let Ok((tcp, _)) = l.accept().await else { continue };
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    serve_http(TokioIo::new(tls), "https", seen).await;
                });
            }
        });
        let seen = self.seen.clone();
        rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(l80).unwrap();
            loop {
                let Ok((tcp, _)) = l.accept().await else { continue };
                let seen = seen.clone();
                tokio::spawn(async move { serve_http(TokioIo::new(tcp), "http", seen).await });
            }
        });
        for l in banner_listeners {
            let banner = banner.clone();
            rt.spawn(async move {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                loop {
                    let Ok((mut tcp, _)) = l.accept().await else {
                        continue;
                    };
                    banner.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        if tcp.write_all(b"corral-banner\n").await.is_err() {
                            return;
                        }
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = tcp.read(&mut buf).await {
                            if n == 0 || tcp.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        }
        self.rt = Some(rt);
        Ok(())
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_http<I>(io: TokioIo<I>, scheme: &'static str, seen: Arc<Mutex<Vec<Seen>>>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |r| handle(r, scheme, seen.clone()));
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, svc)
        .await;
}

async fn handle(
    mut req: Request<Incoming>,
    scheme: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let mut s = Seen {
        scheme,
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        version: format!("{:?}", req.version()),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: Vec::new(),
    };
    if let Some(key) = req.headers().get("sec-websocket-key").cloned() {
        seen.lock().unwrap().push(s);
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let up = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            use futures_util::{SinkExt, StreamExt};
            let Ok(up) = up.await else { return };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(up),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(m)) = ws.next().await {
                if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                    break;
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
    let body = req.into_body().collect().await?.to_bytes();
    s.body = body.to_vec();
    let text = format!("remote says: {} {} {} {}\n", scheme, s.version, s.method, s.path);
    seen.lock().unwrap().push(s);
    Ok(Response::new(Full::new(Bytes::from(text))))
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &self.veth]);
    }
}

/// The address as a string.
pub fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => panic!("v4 only"),
    }
}
