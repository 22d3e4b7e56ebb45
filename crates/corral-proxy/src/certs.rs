//! Leaf certificates on demand: one per server name, issued by the
//! [`Ca`](crate::ca::Ca) the first time a client asks for it and kept in a
//! bounded in-memory cache (least recently used goes first). Also the
//! rustls server configuration the proxy terminates client TLS with.
//!
//! Nothing here is written to disk; leaf keys live only in this cache.

use crate::ca::{Ca, CaError};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default number of cached leaves.
pub const DEFAULT_CACHE_SIZE: usize = 1024;

/// Why a leaf could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The CA could not sign it.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// rustls rejected the key.
    #[error("cannot use the leaf key: {0}")]
    Key(#[from] rustls::Error),
}

struct Entry {
    key: Arc<CertifiedKey>,
    issued: Instant,
    used: u64,
}

struct Cache {
    map: HashMap<String, Entry>,
    tick: u64,
}

/// Issues and caches leaves per server name.
pub struct LeafCerts {
    ca: Arc<Ca>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    cache: Mutex<Cache>,
    capacity: usize,
    /// A leaf is re-issued once it is older than this (well before it expires).
    max_age: Duration,
}

impl std::fmt::Debug for LeafCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCerts")
            .field("capacity", &self.capacity)
            .field("cached", &self.len())
            .finish()
    }
}

impl LeafCerts {
    /// A cache of at most `capacity` leaves (at least 1) signed by `ca`.
    pub fn new(ca: Arc<Ca>, capacity: usize) -> LeafCerts {
        LeafCerts {
            ca,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            cache: Mutex::new(Cache {
                map: HashMap::new(),
                tick: 0,
            }),
            capacity: capacity.max(1),
            max_age: Ca::leaf_validity() / 2,
        }
    }

    /// The leaf for a (normalised, lower-case) server name or IP address,
    /// from the cache or freshly issued.
    pub fn get(&self, name: &str) -> Result<Arc<CertifiedKey>, CertError> {
        if let Some(k) = self.lookup(name) {
            return Ok(k);
        }
        // Issue outside the lock: signing is the slow part. Two tasks asking
        // for the same new name may both issue; the later insert wins, and
        // both leaves are valid.
        let leaf = self.ca.issue_leaf(name)?;
        let signer = self.provider.key_provider.load_private_key(leaf.key)?;
        let key = Arc::new(CertifiedKey::new(leaf.chain, signer));
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.tick += 1;
        let used = c.tick;
        if c.map.len() >= self.capacity && !c.map.contains_key(name) {
            let oldest = c.map.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone());
            if let Some(o) = oldest {
                c.map.remove(&o);
            }
        }
        c.map.insert(
            name.to_string(),
            Entry {
                key: key.clone(),
                issued: Instant::now(),
                used,
            },
        );
        Ok(key)
    }

    fn lookup(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.tick += 1;
        let tick = c.tick;
        let max_age = self.max_age;
        let e = c.map.get_mut(name)?;
        if e.issued.elapsed() > max_age {
            return None;
        }
        e.used = tick;
        Some(e.key.clone())
    }

    /// Number of cached leaves.
    pub fn len(&self) -> usize {
        self.cache.lock().map(|c| c.map.len()).unwrap_or(0)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a leaf for `name` is cached.
    pub fn contains(&self, name: &str) -> bool {
        self.cache
            .lock()
            .map(|c| c.map.contains_key(name))
            .unwrap_or(false)
    }
}

/// Resolves the server certificate from the client's SNI. Without SNI it
/// answers nothing (the handshake fails); the proxy builds a one-off
/// configuration for such clients with [`fixed_server_config`].
#[derive(Debug)]
pub struct SniResolver(pub Arc<LeafCerts>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        self.0.get(&name).ok()
    }
}

/// Always the same certificate.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn builder() -> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier>, rustls::Error> {
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
}

fn with_alpn(mut c: rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(c)
}

/// The server configuration for clients that send SNI: leaves per name,
/// ALPN `h2` and `http/1.1`.
pub fn server_config(certs: Arc<LeafCerts>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let c = builder()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver(certs)));
    Ok(with_alpn(c))
}

/// A server configuration presenting one leaf (clients without SNI, where
/// the name comes from the connection's destination).
pub fn fixed_server_config(key: Arc<CertifiedKey>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let c = builder()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(key)));
    Ok(with_alpn(c))
}
