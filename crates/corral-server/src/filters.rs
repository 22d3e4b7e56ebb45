//! The query parameters of `GET /api/events` and `GET /api/events/stream`:
//! the filters of `corral events`, with the same meaning.
//!
//! The parsing duplicates the few lines of corral-cli's
//! `commands/events.rs` (`Filters::query`, `parse_session_id`, `parse_age`)
//! rather than pulling corral-cli or corral-runtime into this crate; the
//! next step is to move these helpers into corral-audit (next to `Query`)
//! and have both callers use them.

use corral_audit::{Kind, Query, Store};
use corral_core::Decision;
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// A parameter with a value that cannot mean anything.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilterError {
    /// The parameter is malformed.
    #[error("`{param}` {value:?}: expected {expected}")]
    Bad {
        /// Which parameter.
        param: &'static str,
        /// What was sent.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// `session=last` with no session in the store.
    #[error("`session` \"last\": no session recorded yet")]
    NoSession,
    /// The store failed.
    #[error("{0}")]
    Store(#[from] corral_audit::AuditError),
}

fn bad(param: &'static str, value: &str, expected: &'static str) -> FilterError {
    FilterError::Bad {
        param,
        value: value.to_owned(),
        expected,
    }
}

/// `s123` or `123`.
pub(crate) fn session_id(s: &str) -> Result<u32, FilterError> {
    s.strip_prefix('s')
        .unwrap_or(s)
        .parse::<u32>()
        .map_err(|_| bad("session", s, "an id like s123, or last"))
}

/// `30s`, `10m`, `2h`, `1d`, `1w`, or a bare number of seconds.
fn age(s: &str) -> Result<Duration, FilterError> {
    let e = || bad("since", s, "a duration such as 30s, 10m, 2h or 1d");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| e())?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(e()),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .map(Duration::from_secs)
        .ok_or_else(e)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl EventParams {
    /// The store query these parameters ask for. `limit` 0 means no limit.
    pub(crate) fn query(&self, store: &Store) -> Result<Query, FilterError> {
        let session = match self.session.as_deref() {
            None => None,
            Some("last") => Some(store.last_session()?.ok_or(FilterError::NoSession)?),
            Some(s) => Some(session_id(s)?),
        };
        let kind = self
            .kind
            .as_deref()
            .map(|k| {
                k.parse::<Kind>().map_err(|_| {
                    bad(
                        "kind",
                        k,
                        "file, exec, net, http, mcp, process, session, policy or other",
                    )
                })
            })
            .transpose()?;
        let decision = match self.decision.as_deref() {
            None => None,
            Some("allow") => Some(Decision::Allow),
            Some("deny") => Some(Decision::Deny),
            Some("would_deny" | "would-deny") => Some(Decision::WouldDeny),
            Some(d) => return Err(bad("decision", d, "allow, deny or would_deny")),
        };
        let since_wall_ns = self
            .since
            .as_deref()
            .map(age)
            .transpose()?
            .map(|d| now_ns().saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
        let limit = match self.limit.unwrap_or(DEFAULT_LIMIT) {
            0 => None,
            n => Some(n),
        };
        Ok(Query {
            session,
            kind,
            decision,
            since_wall_ns,
            grep: self.grep.clone(),
            mcp_call: self.mcp_call.clone(),
            limit,
            after_id: self.after_id,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(age("30").unwrap(), Duration::from_secs(30));
        assert_eq!(age("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(age("1w").unwrap(), Duration::from_secs(604_800));
        for b in ["", "0", "m", "10x", "-5s", "99999999999999999999d"] {
            assert!(age(b).is_err(), "{b:?} accepted");
        }
    }

    #[test]
    fn session_ids() {
        assert_eq!(session_id("s12").unwrap(), 12);
        assert_eq!(session_id("12").unwrap(), 12);
        let e = session_id("x12").unwrap_err().to_string();
        assert!(e.contains("`session`") && e.contains("x12"), "{e}");
    }
}
