//! The HTTPS server every path ends at: 127.0.0.1, its own test CA, a
//! certificate for `bench.test` and `*.bench.test`, HTTP/1.1 with
//! keep-alive, two fixed responses (`/small`, `/large`).
//!
//! It counts the requests it answers by the path the client names in a
//! header and the value of the header the proxies inject (each proxy its
//! own value), so the bench can check that every request of every path was
//! forwarded, and rewritten by its proxy.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// The header the proxies inject.
pub const TOKEN_HEADER: &str = "x-bench-token";
/// The header the client names its path with.
pub const PATH_HEADER: &str = "x-bench-path";

/// The value proxy `name` injects: each proxy its own, so the upstream
/// can tell whose rewrite it sees.
pub fn token(name: &str) -> String {
    format!("bench-{name}-3f9a")
}

/// Requests answered, by the client's path name and the injected value
/// (`path|value`, `path|-` without one).
#[derive(Debug, Default)]
pub struct Counts(Mutex<HashMap<String, u64>>);

impl Counts {
    fn count(&self, path: Option<&[u8]>, value: Option<&[u8]>) {
        let text = |v: Option<&[u8]>| v.map(|b| String::from_utf8_lossy(b).into_owned());
        let key = format!(
            "{}|{}",
            text(path).unwrap_or_default(),
            text(value).unwrap_or_else(|| "-".into())
        );
        if let Ok(mut m) = self.0.lock() {
            *m.entry(key).or_default() += 1;
        }
    }

    /// Requests of path `name`: in all, and with `value` injected (`None`:
    /// with none).
    pub fn of(&self, name: &str, value: Option<&str>) -> (u64, u64) {
        let Ok(m) = self.0.lock() else {
            return (0, 0);
        };
        let prefix = format!("{name}|");
        let all = m
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, n)| n)
            .sum();
        let exact = m
            .get(&format!("{name}|{}", value.unwrap_or("-")))
            .copied()
            .unwrap_or(0);
        (all, exact)
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
    let h = req.headers();
    counts.count(
        h.get(PATH_HEADER).map(|v| v.as_bytes()),
        h.get(TOKEN_HEADER).map(|v| v.as_bytes()),
    );
    let (status, body) = match req.uri().path() {
        "/small" => (200, small),
        "/large" => (200, large),
        _ => (404, Bytes::from_static(b"not found\n")),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::NOT_FOUND);
    Ok(resp)
}

/// Starts the upstream on the current runtime; the CA goes to `dir`.
pub async fn start(dir: &Path, small: usize, large: usize) -> anyhow::Result<Upstream> {
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
    let counts = Arc::new(Counts::default());
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
