//! corral's proxy as an explicit proxy on 127.0.0.1: a listener whose
//! connections go to `serve_connection` (clients send `CONNECT`, the TLS
//! inside is intercepted with corral's CA), a policy that allows the
//! bench's hosts and injects one header, and an event sink that counts.

use crate::upstream::{token, Upstream, TOKEN_HEADER};
use corral_core::Decision;
use corral_proxy::{Ca, Dest, HttpEvent, Proxy, ProxyConfig, ProxyPolicy};
use rustls_pki_types::CertificateDer;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The policy of path `name`: with `full`, requests are also decided with
/// `HttpRequest` (a permit and a forbid) and a header is injected
/// (`HttpRewrite`); without, `NetworkConnect` alone governs them.
///
/// The CONNECT target is the upstream's address (127.0.0.1 resolves
/// without DNS, and names under `bench.test` do not resolve at all); the
/// host is the TLS SNI and the Host header, and is what requests are
/// decided on.
fn policy(name: &str, full: bool) -> String {
    let value = token(name);
    let connect = r#"
@id("tunnel")
permit (principal, action == Action::"NetworkConnect", resource == Host::"127.0.0.1");
@id("net")
permit (principal, action == Action::"NetworkConnect", resource in Host::"*.bench.test");
"#;
    if !full {
        return connect.to_string();
    }
    format!(
        r#"{connect}
@id("http")
permit (principal, action == Action::"HttpRequest", resource in Host::"*.bench.test")
  when {{ context.method == "GET" }};
@id("admin")
forbid (principal, action == Action::"HttpRequest", resource in Host::"*.bench.test")
  when {{ context.path like "/admin*" }};
@id("token")
permit (principal, action == Action::"HttpRewrite", resource in Host::"*.bench.test")
  when {{ context.header == "{TOKEN_HEADER}" && context.value == "{value}" }};
"#
    )
}

/// What the event sink saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Headers each request should have had injected.
    injected: usize,
    /// Allowed requests answered 200 with the header(s) injected.
    pub requests: AtomicU64,
    /// Allowed CONNECT tunnels.
    pub connects: AtomicU64,
    /// Anything else (refusals, errors, denials): none is expected.
    pub other: AtomicU64,
    /// The first few of those, for the report.
    pub other_sample: Mutex<Vec<String>>,
}

impl Seen {
    fn record(&self, e: HttpEvent) {
        let ok = e.decision == Decision::Allow && e.error.is_none();
        if ok && e.kind == "request" && e.status == Some(200) && e.injected_headers.len() == self.injected {
            self.requests.fetch_add(1, Ordering::Relaxed);
        } else if ok && e.kind == "connect" {
            self.connects.fetch_add(1, Ordering::Relaxed);
        } else {
            self.other.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut s) = self.other_sample.lock() {
                if s.len() < 5 {
                    s.push(format!("{e:?}"));
                }
            }
        }
    }

    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.connects.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        )
    }
}

/// A running corral proxy.
pub struct Corral {
    pub addr: SocketAddr,
    /// Whether its policy injects the header.
    pub injects: bool,
    pub ca_der: CertificateDer<'static>,
    pub seen: Arc<Seen>,
}

/// Starts corral's proxy for path `name` on `rt` (its own runtime: its
/// worker threads are the proxy's), with its CA in `dir/ca` (shared by
/// every corral path) and the policy [`policy`] gives.
pub fn start(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    up: &Upstream,
    name: &str,
    full: bool,
) -> anyhow::Result<Corral> {
    let ca = Arc::new(Ca::load_or_create(&dir.join("ca"))?);
    let doc = corral_policy::load(vec![corral_policy::Source::new(
        "pbench.cedar",
        policy(name, full),
    )])
    .map_err(|d| {
        let msgs: Vec<String> = d.iter().map(|d| d.message.clone()).collect();
        anyhow::anyhow!("the bench policy does not load: {}", msgs.join("; "))
    })?;
    let policy = ProxyPolicy::new(doc)?;
    let seen = Arc::new(Seen {
        injected: usize::from(full),
        ..Seen::default()
    });
    let s = seen.clone();
    let mut cfg = ProxyConfig::new("bench", policy, ca.clone(), Arc::new(move |e| s.record(e)));
    cfg.system_roots = false;
    cfg.extra_roots = vec![up.ca_file.clone()];
    // The bench's upstream listens on loopback.
    cfg.loopback_upstream = true;
    let proxy = Arc::new(Proxy::new(cfg)?);
    let listener = rt.block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))?;
    let addr = listener.local_addr()?;
    let dest = Dest {
        host: None,
        ip: addr.ip(),
        port: addr.port(),
    };
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(corral_proxy::serve_connection(tcp, dest.clone(), proxy.clone()));
        }
    });
    Ok(Corral {
        addr,
        injects: full,
        ca_der: ca.cert_der().clone(),
        seen,
    })
}
