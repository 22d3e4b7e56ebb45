//! The query parameters of `GET /api/events`, `GET /api/events/stream`
//! and `GET /api/stats`: the filters of `corral events`
//! ([`corral_audit::filters`], one parser for both), plus paging.

use corral_audit::filters::Filters;
pub(crate) use corral_audit::filters::{session_id, FilterError};
use corral_audit::{Query, Store};
use serde::Deserialize;

/// The default number of events a page returns (as `corral events`).
pub(crate) const DEFAULT_LIMIT: usize = 1000;

/// The filter parameters, as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventParams {
    /// `s123`, `123` or `last`.
    pub session: Option<String>,
    /// An event kind (`file`, `exec`, `net`, ...).
    pub kind: Option<String>,
    /// `allow`, `deny` or `would_deny`.
    pub decision: Option<String>,
    /// `30s`, `10m`, `2h`, `1d`, `1w` or a number of seconds.
    pub since: Option<String>,
    /// Substring of target, executable or policies.
    pub grep: Option<String>,
    /// One MCP tool call's id.
    pub mcp_call: Option<String>,
    /// At most this many (default 1000, 0 = all).
    pub limit: Option<usize>,
    /// Only events stored after this id.
    pub after_id: Option<i64>,
}

impl EventParams {
    /// The filters of `corral events` among these parameters.
    pub(crate) fn filters(&self) -> Filters {
        Filters {
            session: self.session.clone(),
            kind: self.kind.clone(),
            decision: self.decision.clone(),
            since: self.since.clone(),
            grep: self.grep.clone(),
            mcp_call: self.mcp_call.clone(),
        }
    }

    /// The store query these parameters ask for. `limit` 0 means no limit.
    pub(crate) fn query(&self, store: &Store) -> Result<Query, FilterError> {
        let mut q = self.filters().query(store)?;
        q.limit = match self.limit.unwrap_or(DEFAULT_LIMIT) {
            0 => None,
            n => Some(n),
        };
        q.after_id = self.after_id;
        Ok(q)
    }
}
