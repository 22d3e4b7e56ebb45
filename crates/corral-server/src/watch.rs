//! Wakes the live streams when the store changes: one inotify watch (the
//! `notify` crate) on the store's directory, filtered to the database
//! file and its `-wal` / `-shm`, shared by every stream through a
//! `tokio::sync::watch` counter. Writers in other processes (sessions
//! started by another `corral run`) append to the WAL, so their commits
//! wake us too. A stream still re-queries every [`FALLBACK`] in case a
//! notification is missed (an overflowed inotify queue, a store on a
//! filesystem without inotify).

use notify::{EventKind, RecursiveMode, Watcher as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a stream re-queries without a notification.
pub(crate) const FALLBACK: Duration = Duration::from_secs(1);

/// The watcher; dropping it stops watching.
pub(crate) struct StoreWatch {
    _watcher: notify::RecommendedWatcher,
}

/// The store's own files: `audit.db`, `audit.db-wal`, `audit.db-shm`.
fn is_store_file(store: &Path, p: &Path) -> bool {
    let (Some(name), Some(db)) = (p.file_name(), store.file_name()) else {
        return false;
    };
    let (name, db) = (name.to_string_lossy(), db.to_string_lossy());
    name == db
        || name
            .strip_prefix(db.as_ref())
            .is_some_and(|s| s == "-wal" || s == "-shm")
}

/// Watches the store at `store`; each change bumps the counter `tx` holds.
/// `Err`: inotify is unavailable (the streams poll).
pub(crate) fn start(store: &Path, tx: tokio::sync::watch::Sender<u64>) -> Result<StoreWatch, notify::Error> {
    let path: PathBuf = store.to_path_buf();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else {
            // An error (e.g. the queue overflowed): wake everyone anyway.
            tx.send_modify(|n| *n = n.wrapping_add(1));
            return;
        };
        if matches!(ev.kind, EventKind::Access(_)) {
            return;
        }
        if ev.paths.iter().any(|p| is_store_file(&path, p)) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    })?;
    w.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(StoreWatch { _watcher: w })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_store_files_count() {
        let s = Path::new("/x/audit.db");
        for p in ["/x/audit.db", "/x/audit.db-wal", "/x/audit.db-shm"] {
            assert!(is_store_file(s, Path::new(p)), "{p}");
        }
        for p in ["/x/audit.db-journal", "/x/other.db", "/x/audit.dbx"] {
            assert!(!is_store_file(s, Path::new(p)), "{p}");
        }
    }
}
