//! The proxy's shared context: policy, mode, principal, secrets,
//! certificates, upstream client, limits and the event sink. One [`Proxy`]
//! serves any number of connections
//! ([`serve_connection`](crate::serve_connection)).
//!
//! The policy and the mode can change while connections are served
//! ([`Proxy::set_policy`], [`Proxy::set_mode`]): each request takes both
//! once, when it starts, and finishes with what it was decided on.

use crate::ca::Ca;
use crate::certs::{server_config, LeafCerts, DEFAULT_CACHE_SIZE};
use crate::decide::ProxyPolicy;
use crate::event::{EventSink, HttpEvent};
use crate::secret::Secret;
use crate::upstream::{root_store, Upstream, UpstreamError};
use corral_core::Mode;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// Where the client meant to connect (known to whoever hands the
/// connection over: the redirect's original destination, or a CONNECT
/// target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    /// The host name, when known. TLS SNI and every request's Host must
    /// equal it.
    pub host: Option<String>,
    /// The destination address.
    pub ip: IpAddr,
    /// The destination port.
    pub port: u16,
}

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to receive a complete request head (and, for a new connection,
    /// its first bytes and the TLS handshake). Slow clients are cut off.
    pub header_timeout: Duration,
    /// Largest request head (HTTP/1.1) or header list (HTTP/2), in bytes.
    pub max_header_bytes: usize,
    /// Largest request body buffered to substitute a placeholder secret
    /// (only bodies to hosts a `bodies` secret is allowed for are
    /// buffered); a larger one is refused with `413`.
    pub max_rewrite_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_rewrite_body: 8 * 1024 * 1024,
        }
    }
}

/// Why a proxy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Upstream trust.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The server TLS configuration.
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A malformed set of secrets.
    #[error("bad secrets: {0}")]
    Secrets(String),
}

/// How to build a [`Proxy`].
pub struct ProxyConfig {
    /// The agent the traffic belongs to (`Agent::"<name>"`).
    pub principal: String,
    /// The policy.
    pub policy: ProxyPolicy,
    /// Enforce, or shadow (denials recorded as `would_deny`, not enforced).
    pub mode: Mode,
    /// Placeholder secrets to substitute.
    pub secrets: Vec<Secret>,
    /// Names with fixed addresses (the session's `--add-host` entries):
    /// a plain-HTTP Host is checked against these before DNS, and the
    /// upstream connection for such a name goes to its address.
    pub hosts: Vec<(String, IpAddr)>,
    /// Let `CONNECT` and redirected connections go to loopback and
    /// unspecified addresses. Off (the default) for sessions: the proxy runs
    /// on the host, so its loopback is the host's. Tests and benchmarks
    /// with an upstream on loopback turn it on.
    pub loopback_upstream: bool,
    /// The interception CA.
    pub ca: Arc<Ca>,
    /// Trust the system's roots for upstream servers.
    pub system_roots: bool,
    /// Extra PEM files of upstream roots.
    pub extra_roots: Vec<PathBuf>,
    /// Limits on clients.
    pub limits: Limits,
    /// Leaf cache size.
    pub cache_size: usize,
    /// Where events go.
    pub on_event: EventSink,
    /// The session's MCP layer: MCP over HTTP(S) is governed by it
    /// (`None`: no MCP handling, every request is forwarded as HTTP).
    pub mcp: Option<Arc<corral_mcp::Authority>>,
}

impl ProxyConfig {
    /// A configuration with system roots, default limits and cache size,
    /// enforcing, without secrets.
    pub fn new(principal: impl Into<String>, policy: ProxyPolicy, ca: Arc<Ca>, on_event: EventSink) -> Self {
        ProxyConfig {
            principal: principal.into(),
            policy,
            mode: Mode::Enforce,
            secrets: vec![],
            hosts: vec![],
            loopback_upstream: false,
            ca,
            system_roots: true,
            extra_roots: vec![],
            limits: Limits::default(),
            cache_size: DEFAULT_CACHE_SIZE,
            on_event,
            mcp: None,
        }
    }
}

/// The shared context of every connection.
pub struct Proxy {
    pub(crate) principal: String,
    policy: RwLock<Arc<ProxyPolicy>>,
    shadow: AtomicBool,
    pub(crate) secrets: Vec<Secret>,
    /// Names with fixed addresses (`--add-host`), lower case.
    hosts: std::collections::HashMap<String, IpAddr>,
    loopback_upstream: bool,
    pub(crate) certs: Arc<LeafCerts>,
    pub(crate) tls: Arc<rustls::ServerConfig>,
    pub(crate) upstream: Upstream,
    pub(crate) limits: Limits,
    on_event: EventSink,
    pub(crate) mcp: Option<Arc<crate::mcp::Mcp>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("principal", &self.principal)
            .field("mode", &self.mode())
            .field("secrets", &self.secrets)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds the context: loads upstream roots, sets up TLS both ways.
    pub fn new(cfg: ProxyConfig) -> Result<Proxy, ProxyError> {
        crate::secret::check(&cfg.secrets).map_err(ProxyError::Secrets)?;
        let (roots, report) = root_store(cfg.system_roots, &cfg.extra_roots)?;
        let certs = Arc::new(LeafCerts::new(cfg.ca, cfg.cache_size));
        Ok(Proxy {
            principal: cfg.principal,
            policy: RwLock::new(Arc::new(cfg.policy)),
            shadow: AtomicBool::new(cfg.mode == Mode::Shadow),
            secrets: cfg.secrets,
            loopback_upstream: cfg.loopback_upstream,
            hosts: cfg
                .hosts
                .into_iter()
                .map(|(h, ip)| (h.to_ascii_lowercase(), ip))
                .collect(),
            tls: server_config(certs.clone())?,
            certs,
            upstream: Upstream::new(roots, report)?,
            limits: cfg.limits,
            on_event: cfg.on_event,
            mcp: cfg.mcp.map(|a| Arc::new(crate::mcp::Mcp::new(a))),
        })
    }

    /// The policy the next decision is made with.
    pub fn policy(&self) -> Arc<ProxyPolicy> {
        self.policy.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the policy for every request that starts from now on;
    /// requests already decided finish with the policy they were decided on.
    pub fn set_policy(&self, policy: ProxyPolicy) {
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(policy);
    }

    /// Enforce or shadow.
    pub fn mode(&self) -> Mode {
        if self.shadow.load(Ordering::SeqCst) {
            Mode::Shadow
        } else {
            Mode::Enforce
        }
    }

    /// Switches the mode for every request and connection that starts from
    /// now on. In shadow mode what the policy denies is forwarded anyway
    /// and recorded as `would_deny` with the denying policies; placeholder
    /// secrets are still only substituted where `SecretUse` allows.
    pub fn set_mode(&self, mode: Mode) {
        self.shadow.store(mode == Mode::Shadow, Ordering::SeqCst);
    }

    /// The upstream side (root store report, pins).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The leaf cache.
    pub fn certs(&self) -> &LeafCerts {
        &self.certs
    }

    pub(crate) fn emit(&self, e: HttpEvent) {
        (self.on_event)(e)
    }

    /// Whether the proxy may connect to `ip`: never a loopback or
    /// unspecified address (the host's own), unless configured for tests.
    pub(crate) fn may_reach(&self, ip: IpAddr) -> bool {
        self.loopback_upstream || crate::transparent::reachable(ip)
    }

    /// `NetworkConnect` to an address (an opaque stream), with the current
    /// policy.
    pub(crate) fn decide_connect(&self, host: Option<&str>, ip: IpAddr, port: u16) -> crate::decide::Verdict {
        self.policy().decide_connect(&self.principal, host, ip, port)
    }

    /// A verdict's decision in the current mode.
    pub(crate) fn decision_of(&self, v: &crate::decide::Verdict) -> corral_core::Decision {
        match (v.allowed, self.mode()) {
            (true, _) => corral_core::Decision::Allow,
            (false, Mode::Shadow) => corral_core::Decision::WouldDeny,
            (false, Mode::Enforce) => corral_core::Decision::Deny,
        }
    }

    /// Whether `host` (a name or an address literal) is a name for `ip`:
    /// the configured hosts first, then the system resolver.
    pub(crate) async fn resolves_to(&self, host: &str, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(lit) = bare.parse::<IpAddr>() {
            return lit.to_canonical() == ip;
        }
        if let Some(pinned) = self.hosts.get(&host.to_ascii_lowercase()) {
            return pinned.to_canonical() == ip;
        }
        let lookup = tokio::net::lookup_host((host, 0));
        match tokio::time::timeout(self.limits.header_timeout, lookup).await {
            Ok(Ok(mut addrs)) => addrs.any(|a| a.ip().to_canonical() == ip),
            _ => false,
        }
    }
}
