//! The HTTPS server every path ends at: 127.0.0.1, its own test CA, a
//! certificate for `bench.test` and `*.bench.test`, HTTP/1.1 with
//! keep-alive, two fixed responses (`/small`, `/large`).
//!
//! It counts the requests it answers by the value of the header the
//! proxies inject (each proxy its own value), so the bench can check that
//! every request of every path was forwarded, and rewritten by its proxy.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

/// The header the proxies inject.
pub const TOKEN_HEADER: &str = "x-bench-token";

/// The value proxy `name` injects: each proxy its own, so the upstream
/// can tell whose request it answers.
pub fn token(name: &str) -> String {
    format!("bench-{name}-3f9a")
}

/// Requests answered: without the header, with each proxy's value, other.
#[derive(Debug)]
pub struct Counts {
    pub plain: AtomicU64,
    pub by_token: Vec<(String, AtomicU64)>,
    pub other: AtomicU64,
}

impl Counts {
    fn new(proxies: &[&str]) -> Counts {
        Counts {
            plain: AtomicU64::new(0),
            by_token: proxies.iter().map(|p| (token(p), AtomicU64::new(0))).collect(),
            other: AtomicU64::new(0),
        }
    }

    /// Requests that came through proxy `name` (none: direct).
    pub fn of(&self, name: Option<&str>) -> u64 {
        let Some(name) = name else {
            return self.plain.load(Ordering::Relaxed);
        };
        let t = token(name);
        self.by_token
            .iter()
            .find(|(v, _)| *v == t)
            .map(|(_, n)| n.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    fn count(&self, value: Option<&[u8]>) {
        let n = match value {
            None => &self.plain,
            Some(v) => self
                .by_token
                .iter()
                .find(|(t, _)| t.as_bytes() == v)
                .map(|(_, n)| n)
                .unwrap_or(&self.other),
        };
        n.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    /// PEM file of the test CA (for the proxies' upstream trust).
    pub ca_file: PathBuf,
    /// The test CA, DER (for the direct client).
    pub ca_der: CertificateDer<'static>,
    pub counts: Arc<Counts>,
}

/// A CA, written to `dir/name.pem` (certificate) and, when `key_file` is
/// set, `dir/name.key` (its key, PKCS#8 PEM); returns the issuer and the
/// certificate.
pub fn make_ca(
    dir: &Path,
    name: &str,
    key_file: bool,
) -> anyhow::Result<(Issuer<'static, KeyPair>, CertificateDer<'static>)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("corral-pbench {name}"));
    let cert = params.self_signed(&key)?;
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, cert.pem()).with_context(|| format!("cannot write `{}`", pem.display()))?;
    if key_file {
        use std::os::unix::fs::OpenOptionsExt;
        let k = dir.join(format!("{name}.key"));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&k)
            .and_then(|mut f| std::io::Write::write_all(&mut f, key.serialize_pem().as_bytes()))
            .with_context(|| format!("cannot write `{}`", k.display()))?;
    }
    let der = cert.der().clone();
    Ok((Issuer::new(params, key), der))
}

async fn answer(
    req: Request<Incoming>,
    small: Bytes,
    large: Bytes,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    counts.count(req.headers().get(TOKEN_HEADER).map(|v| v.as_bytes()));
    let (status, body) = match req.uri().path() {
        "/small" => (200, small),
        "/large" => (200, large),
        _ => (404, Bytes::from_static(b"not found\n")),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::NOT_FOUND);
    Ok(resp)
}

/// Starts the upstream on the current runtime; the CA goes to `dir`;
/// `proxies` name the proxies whose header values it counts.
pub async fn start(dir: &Path, small: usize, large: usize, proxies: &[&str]) -> anyhow::Result<Upstream> {
    let (issuer, ca_der) = make_ca(dir, "upstream-ca", false)?;
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let leaf = CertificateParams::new(vec!["bench.test".to_string(), "*.bench.test".to_string()])?
        .signed_by(&leaf_key, &issuer)?;
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), ca_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let counts = Arc::new(Counts::new(proxies));
    let small = Bytes::from(vec![b's'; small]);
    let large = Bytes::from(vec![b'L'; large]);
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, small, large, c) = (acceptor.clone(), small.clone(), large.clone(), c.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(move |r| answer(r, small.clone(), large.clone(), c.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(Upstream {
        addr,
        ca_file: dir.join("upstream-ca.pem"),
        ca_der,
        counts,
    })
}
