//! The upstream side: the TLS trust the proxy verifies servers with (the
//! system roots plus roots the user adds) and the pooled HTTP client that
//! forwards requests (connections are reused per scheme and authority; ALPN
//! offers `h2` and `http/1.1`).
//!
//! A request is sent to the address the client meant to reach: the caller
//! pins each host name to its destination address before forwarding
//! ([`Upstream::pin`]), and the connector's resolver answers with the pin
//! (DNS only for names never pinned). Pooled connections are keyed by
//! scheme and `host:port`; the upstream certificate is verified for the
//! host name, which is what the policy decided on.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// The body type the proxy forwards (streamed, never buffered whole).
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// The pooled client.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector<PinnedResolver>>, ProxyBody>;

/// Why the upstream trust could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// An extra roots file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An extra roots file holds no usable certificate.
    #[error("`{path}`: {reason}")]
    BadRoots {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// What went into the upstream root store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootsReport {
    /// System roots added.
    pub system_added: usize,
    /// System roots that failed to parse (skipped, counted here).
    pub system_rejected: usize,
    /// Errors reading the system store (e.g. an unreadable bundle).
    pub system_errors: Vec<String>,
    /// Extra roots added, from the user's files.
    pub extra_added: usize,
}

/// Builds the upstream root store: the system roots (unless `system` is
/// false) plus every certificate in `extra` PEM files.
pub fn root_store(
    system: bool,
    extra: &[PathBuf],
) -> Result<(rustls::RootCertStore, RootsReport), UpstreamError> {
    let mut store = rustls::RootCertStore::empty();
    let mut report = RootsReport::default();
    if system {
        let found = rustls_native_certs::load_native_certs();
        report.system_errors = found.errors.iter().map(|e| e.to_string()).collect();
        let (added, rejected) = store.add_parsable_certificates(found.certs);
        report.system_added = added;
        report.system_rejected = rejected;
    }
    for path in extra {
        let certs = read_pem_certs(path)?;
        for c in certs {
            store.add(c).map_err(|e| UpstreamError::BadRoots {
                path: path.clone(),
                reason: format!("certificate rejected: {e}"),
            })?;
            report.extra_added += 1;
        }
    }
    Ok((store, report))
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, UpstreamError> {
    let data = std::fs::read(path).map_err(|source| UpstreamError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| UpstreamError::BadRoots {
            path: path.to_path_buf(),
            reason: format!("not PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(UpstreamError::BadRoots {
            path: path.to_path_buf(),
            reason: "no `CERTIFICATE` block".into(),
        });
    }
    Ok(certs)
}

/// The client TLS configuration: verify against `roots`, ALPN h2 and
/// http/1.1 (set by the connector).
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, UpstreamError> {
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Host name → destination address, shared by the proxy and the resolver.
#[derive(Debug, Clone, Default)]
pub struct Pins(Arc<Mutex<HashMap<String, IpAddr>>>);

/// A resolver that answers with the pinned address of a name, and asks the
/// system resolver for names never pinned.
#[derive(Debug, Clone)]
pub struct PinnedResolver(Pins);

type Addrs = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<Name> for PinnedResolver {
    type Response = Addrs;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_ascii_lowercase();
        let pinned = self.0 .0.lock().ok().and_then(|m| m.get(&host).copied());
        Box::pin(async move {
            if let Some(ip) = pinned {
                return Ok(vec![SocketAddr::new(ip, 0)].into_iter());
            }
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(found.into_iter())
        })
    }
}

/// The upstream side of the proxy: trust, pins and the pooled client.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: HttpClient,
    client_h1: HttpClient,
    pins: Pins,
    report: RootsReport,
}

impl Upstream {
    /// A pooled client verifying servers against `roots`.
    pub fn new(roots: rustls::RootCertStore, report: RootsReport) -> Result<Upstream, UpstreamError> {
        let pins = Pins::default();
        let mut http = HttpConnector::new_with_resolver(PinnedResolver(pins.clone()));
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config(roots.clone())?)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http.clone());
        let client = Client::builder(TokioExecutor::new()).build(https);
        // Upgrades (WebSocket) exist only in HTTP/1.1: offer nothing else.
        let https_h1 = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config(roots)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client_h1 = Client::builder(TokioExecutor::new()).build(https_h1);
        Ok(Upstream {
            client,
            client_h1,
            pins,
            report,
        })
    }

    /// The client.
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    /// The HTTP/1.1-only client, for requests that ask for an upgrade.
    pub fn client_h1(&self) -> &HttpClient {
        &self.client_h1
    }

    /// Sends requests for `host` to `ip`.
    pub fn pin(&self, host: &str, ip: IpAddr) {
        if let Ok(mut m) = self.pins.0.lock() {
            m.insert(host.to_ascii_lowercase(), ip);
        }
    }

    /// What went into the root store.
    pub fn roots_report(&self) -> &RootsReport {
        &self.report
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn extra_roots_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("corral-proxy-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = root_store(false, std::slice::from_ref(&missing)).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let err = root_store(false, std::slice::from_ref(&junk)).unwrap_err();
        assert!(err.to_string().contains("junk.pem"), "{err}");
        assert!(err.to_string().contains("no `CERTIFICATE` block"), "{err}");
        let bad = dir.join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = root_store(false, std::slice::from_ref(&bad)).unwrap_err();
        assert!(err.to_string().contains("bad.pem"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn system_roots_are_loaded_and_rejects_counted() {
        let (store, report) = root_store(true, &[]).unwrap();
        // This host has a CA bundle; every root is either added or counted.
        assert!(report.system_added > 0, "{report:?}");
        assert_eq!(store.len(), report.system_added);
        assert_eq!(report.extra_added, 0);
    }
}
