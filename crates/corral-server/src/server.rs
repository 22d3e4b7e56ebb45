//! Binding: the configured loopback port or the next free one, the token,
//! and serving until told to stop.

use crate::routes;
use crate::state::AppState;
use crate::{token, ServerError};
use corral_audit::Store;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::TcpListener;

/// The default address: `ui.listen`'s default in corral-runtime's config.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 18080);

/// How many ports after the configured one [`Server::bind`] tries.
pub const PORT_TRIES: u16 = 20;

/// What the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (default 127.0.0.1:18080). Port 0: any free port.
    pub listen: SocketAddr,
    /// Allow a non-loopback `listen` (only when the user configured one).
    pub allow_non_loopback: bool,
    /// The audit store (created when missing).
    pub store_path: PathBuf,
    /// The run root (`$CORRAL_RUN_DIR` or `/run/corral`, see
    /// [`default_run_root`]): running sessions' control sockets are in
    /// `<run root>/control`.
    pub run_root: PathBuf,
    /// The access token; `None`: a random one.
    pub token: Option<String>,
    /// How to start sessions (`POST /api/sessions`); `None`: that route
    /// answers 403.
    pub start: Option<crate::StartConfig>,
}

impl ServerConfig {
    /// The defaults for a store and a run root.
    pub fn new(store_path: PathBuf, run_root: PathBuf) -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN,
            allow_non_loopback: false,
            store_path,
            run_root,
            token: None,
            start: None,
        }
    }
}

/// The run root sessions use: `$CORRAL_RUN_DIR`, else `/run/corral` (as
/// `corral run`).
pub fn default_run_root() -> PathBuf {
    std::env::var_os("CORRAL_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/corral"))
}

/// A bound, not yet serving, control API server.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
}

/// Binds `ip:port`, or the next free port up to `port + PORT_TRIES`.
async fn bind_first_free(listen: SocketAddr) -> Result<TcpListener, ServerError> {
    let first = listen.port();
    // Port 0 asks the kernel for any free port: one try is enough.
    let last = if first == 0 {
        0
    } else {
        first.saturating_add(PORT_TRIES)
    };
    for port in first..=last {
        let addr = SocketAddr::new(listen.ip(), port);
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(source) => return Err(ServerError::Bind { addr, source }),
        }
    }
    Err(ServerError::NoFreePort {
        ip: listen.ip(),
        first,
        last,
    })
}

impl Server {
    /// Checks the address, binds it (or the next free port) and opens the
    /// store. Refuses a non-loopback address unless `allow_non_loopback`.
    pub async fn bind(cfg: ServerConfig) -> Result<Server, ServerError> {
        if !cfg.listen.ip().is_loopback() && !cfg.allow_non_loopback {
            return Err(ServerError::NonLoopback(cfg.listen));
        }
        let token = match cfg.token {
            Some(t) => {
                token::check(&t)?;
                t
            }
            None => token::generate()?,
        };
        let listener = bind_first_free(cfg.listen).await?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let store_path = cfg.store_path.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&store_path))
            .await
            .map_err(|e| ServerError::Serve(std::io::Error::other(e)))??;
        let port = addr.port();
        let mut hosts = vec![addr.to_string(), format!("localhost:{port}")];
        if addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) {
            hosts.push(format!("127.0.0.1:{port}"));
        }
        hosts.dedup();
        let origins = hosts.iter().map(|h| format!("http://{h}")).collect();
        let (changes_tx, changes) = tokio::sync::watch::channel(0u64);
        // No inotify (or no watch left): the streams poll every
        // watch::FALLBACK instead.
        let watcher = crate::watch::start(&cfg.store_path, changes_tx).ok();
        let state = Arc::new(AppState {
            token,
            hosts,
            origins,
            store: Arc::new(Mutex::new(store)),
            store_path: cfg.store_path,
            run_root: cfg.run_root,
            start: cfg.start,
            started: Instant::now(),
            closing: tokio::sync::watch::Sender::new(false),
            changes,
            _watcher: watcher,
        });
        Ok(Server {
            listener,
            addr,
            state,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The access token.
    pub fn token(&self) -> &str {
        &self.state.token
    }

    /// The URL to print in the banner: opening it sets the cookie.
    pub fn url(&self) -> String {
        format!("http://{}/?token={}", self.addr, self.state.token)
    }

    /// Serves until `shutdown` completes, then stops accepting and returns
    /// once open requests are done (live streams end with the server).
    pub async fn serve<F>(self, shutdown: F) -> Result<(), ServerError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let app = routes::router(Arc::clone(&self.state));
        let state = Arc::clone(&self.state);
        let shutdown = async move {
            shutdown.await;
            // Live streams never end on their own: tell them to.
            state.closing.send_replace(true);
        };
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServerError::Serve)
    }
}
