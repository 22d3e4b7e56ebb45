//! The crate's error: every variant that touches the database names its file.

use std::path::PathBuf;

/// What went wrong in the audit store.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The directory that should hold the store cannot be created.
    #[error("cannot create the directory of audit store `{}`: {source}", path.display())]
    CreateDir {
        /// The store's path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file cannot be opened as an audit store (corrupt, locked, not a
    /// database, unreadable).
    #[error("cannot open audit store `{}`: {source}", path.display())]
    Open {
        /// The store's path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// The store was written by a newer corral.
    #[error(
        "audit store `{}` has schema version {found}, newer than this corral understands ({known})",
        path.display()
    )]
    TooNew {
        /// The store's path.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A database operation failed.
    #[error("audit store `{}`: {op}: {source}", path.display())]
    Db {
        /// The store's path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// A session with this id is already recorded.
    #[error("audit store `{}`: session `s{id}` is already recorded", path.display())]
    DuplicateSession {
        /// The store's path.
        path: PathBuf,
        /// The session id.
        id: u32,
    },
    /// A stored row cannot be decoded.
    #[error("audit store `{}`: row {id} of `{table}` cannot be decoded: {source}", path.display())]
    Decode {
        /// The store's path.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The row id.
        id: i64,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// An event cannot be encoded as JSON.
    #[error("cannot encode an event as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    /// An unknown event kind was named.
    #[error("unknown event kind `{0}` (expected file, exec, net, http, process, session, policy or other)")]
    UnknownKind(String),
    /// The pipeline's writer thread could not be started.
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The pipeline's writer thread panicked (a bug).
    #[error("the audit writer thread panicked")]
    WriterPanicked,
}
