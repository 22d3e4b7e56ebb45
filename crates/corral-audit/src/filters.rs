//! The event filters of `corral events` and the control API's
//! `/api/events`, as the user writes them (`--session s3`, `kind=file`,
//! `since=10m`), parsed into a [`Query`]. One parser for both, so a filter
//! means the same thing in the terminal and in the browser.

use crate::{AuditError, Kind, Query, Store};
use corral_core::Decision;
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The filters, as written (each `None` when not given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Filters {
    /// `s123`, `123` or `last`.
    pub session: Option<String>,
    /// `file`, `exec`, `net`, `http`, `mcp`, `process`, `session`, `policy`
    /// or `other`.
    pub kind: Option<String>,
    /// `allow`, `deny` or `would_deny`.
    pub decision: Option<String>,
    /// `30s`, `10m`, `2h`, `1d`, `1w` or a number of seconds.
    pub since: Option<String>,
    /// Substring of the target, executable or policies.
    pub grep: Option<String>,
    /// One MCP tool call's id (`m1#3`).
    pub mcp_call: Option<String>,
}

/// A filter whose value cannot mean anything.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The value is malformed.
    #[error("`{param}` {value:?}: expected {expected}")]
    Bad {
        /// Which filter (`session`, `kind`, ...).
        param: &'static str,
        /// What was given.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// `last` with no session in the store.
    #[error("`session` \"last\": no session recorded yet")]
    NoSession,
    /// The store failed.
    #[error("{0}")]
    Store(#[from] AuditError),
}

fn bad(param: &'static str, value: &str, expected: &'static str) -> FilterError {
    FilterError::Bad {
        param,
        value: value.to_owned(),
        expected,
    }
}

/// `s123` or `123`.
pub fn session_id(s: &str) -> Result<u32, FilterError> {
    s.strip_prefix('s')
        .unwrap_or(s)
        .parse::<u32>()
        .map_err(|_| bad("session", s, "an id like s123, or last"))
}

/// `last` (the store's newest session), `s123` or `123`.
pub fn session_arg(store: &Store, s: &str) -> Result<u32, FilterError> {
    match s {
        "last" => store.last_session()?.ok_or(FilterError::NoSession),
        s => session_id(s),
    }
}

/// `30s`, `10m`, `2h`, `1d`, `1w`, or a bare number of seconds; more than 0.
pub fn age(s: &str) -> Result<Duration, FilterError> {
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

/// `allow`, `deny` or `would_deny` (`would-deny` too).
pub fn decision(s: &str) -> Result<Decision, FilterError> {
    match s {
        "allow" => Ok(Decision::Allow),
        "deny" => Ok(Decision::Deny),
        "would_deny" | "would-deny" => Ok(Decision::WouldDeny),
        d => Err(bad("decision", d, "allow, deny or would_deny")),
    }
}

/// Now, ns since the epoch.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Filters {
    /// The store query these filters ask for (no limit, no `after_id`);
    /// `since` counts back from now.
    pub fn query(&self, store: &Store) -> Result<Query, FilterError> {
        let session = self
            .session
            .as_deref()
            .map(|s| session_arg(store, s))
            .transpose()?;
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
        let decision = self.decision.as_deref().map(decision).transpose()?;
        let since_wall_ns = self
            .since
            .as_deref()
            .map(age)
            .transpose()?
            .map(|d| now_ns().saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
        Ok(Query {
            session,
            kind,
            decision,
            since_wall_ns,
            grep: self.grep.clone(),
            mcp_call: self.mcp_call.clone(),
            limit: None,
            after_id: None,
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

    #[test]
    fn decisions() {
        assert_eq!(decision("would-deny").unwrap(), Decision::WouldDeny);
        let e = decision("maybe").unwrap_err().to_string();
        assert!(e.contains("`decision` \"maybe\""), "{e}");
    }
}
