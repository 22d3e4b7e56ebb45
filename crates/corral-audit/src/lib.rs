//! corral's audit store: every [`corral_core::Event`] in one SQLite file, and
//! the pipeline that feeds it without ever making enforcement wait.
//!
//! This crate is the only one that talks to SQLite. It owns the schema (WAL
//! mode, batched inserts, no fsync per event), the queries the CLI and UI
//! run, and the per-session drop counters: an event that could not be
//! stored is always counted, never silently lost.
//!
//! It must never block or panic on the enforcement path: callers hand events
//! to a [`PipelineSender`], whose `send` is a `try_send`.

mod error;
pub mod export;
pub mod filters;
mod kind;
pub mod pipeline;
mod process;
mod query;
mod retention;
mod schema;
mod stats;
mod store;

pub use error::AuditError;
pub use export::ExportError;
pub use kind::{kind_of, Kind};
pub use pipeline::{Options, Pipeline, PipelineSender, PipelineStats, Subscription};
pub use process::ProcessInfo;
pub use query::Query;
pub use retention::{Pruned, Retention};
pub use stats::Stats;
pub use store::{SessionRow, SessionSummary, Store, Stored};

use std::path::PathBuf;

/// Where the store lives by default: `$XDG_STATE_HOME/corral/audit.db`, or
/// `~/.local/state/corral/audit.db` (the system temporary directory when
/// neither is set).
pub fn default_path() -> PathBuf {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let state = absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|h| h.join(".local").join("state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("corral").join("audit.db")
}
