//! What every handler shares.

use corral_audit::Store;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The server's shared state.
pub(crate) struct AppState {
    /// The access token.
    pub token: String,
    /// Host header values that name this server (`127.0.0.1:PORT`, ...).
    pub hosts: Vec<String>,
    /// Origin header values of this server's own pages.
    pub origins: Vec<String>,
    /// The audit store (one connection; queries run on the blocking pool).
    pub store: Arc<Mutex<Store>>,
    /// Where the store is.
    pub store_path: PathBuf,
    /// The run root: running sessions' control sockets are in
    /// `<run root>/control`.
    pub run_root: PathBuf,
    /// How to start sessions (`None`: it cannot).
    pub start: Option<crate::StartConfig>,
    /// When the server started.
    pub started: Instant,
    /// Set to true when the server stops: live streams end.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// Bumped whenever the store's files change (see [`crate::watch`]).
    pub changes: tokio::sync::watch::Receiver<u64>,
    /// Keeps the file watcher alive (`None`: inotify unavailable; streams
    /// fall back to polling).
    pub _watcher: Option<crate::watch::StoreWatch>,
}

impl AppState {
    /// Runs `f` with the store on the blocking pool.
    pub(crate) async fn with_store<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> T + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let guard = store
                .lock()
                .map_err(|_| "the audit store is unusable after an earlier failure".to_string())?;
            Ok(f(&guard))
        })
        .await
        .map_err(|e| format!("store task failed: {e}"))?
    }

    /// Runs a blocking control-socket call on the blocking pool.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&std::path::Path) -> T + Send + 'static,
    {
        let root = self.run_root.clone();
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|e| format!("control task failed: {e}"))
    }
}
