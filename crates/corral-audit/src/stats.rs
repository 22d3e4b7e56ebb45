//! Counts over the events a [`Query`] matches: per kind, per decision, the
//! drop counters, and the layers each session's events came from (the
//! control API's `/api/stats` and sessions' `layers`).

use crate::query::where_sql;
use crate::{AuditError, Query, Store};
use rusqlite::params_from_iter;
use serde::Serialize;
use std::collections::BTreeMap;

/// Counts of the events matching a query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Events per kind (`file`, `exec`, ...; kinds with none are absent).
    pub by_kind: BTreeMap<String, u64>,
    /// Events per decision: `allow`, `deny`, `would_deny` and `none` (no
    /// decision: telemetry), each always present.
    pub by_decision: BTreeMap<String, u64>,
    /// Events that could not be stored, per reason (of the query's session,
    /// or of every session; not filtered by the other fields).
    pub drops: BTreeMap<String, u64>,
    /// Every matching event.
    pub total: u64,
}

impl Store {
    /// Counts the events `q` matches (its `limit` and `after_id` apply as
    /// filters only: `after_id` narrows, `limit` is ignored).
    pub fn stats(&self, q: &Query) -> Result<Stats, AuditError> {
        let (filter, params) = where_sql(q);
        let sql = format!("SELECT kind, decision, count(*) FROM events{filter} GROUP BY kind, decision");
        let mut stmt = self.conn.prepare(&sql).map_err(self.db("counting events"))?;
        let rows = stmt
            .query_map(params_from_iter(params), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(self.db("counting events"))?;
        let mut out = Stats::default();
        for d in ["allow", "deny", "would_deny", "none"] {
            out.by_decision.insert(d.to_owned(), 0);
        }
        for row in rows {
            let (kind, decision, n) = row.map_err(self.db("counting events"))?;
            let n = n.max(0) as u64;
            *out.by_kind.entry(kind).or_default() += n;
            *out.by_decision
                .entry(decision.unwrap_or_else(|| "none".into()))
                .or_default() += n;
            out.total += n;
        }
        let (sql, p): (&str, Vec<i64>) = match q.session {
            Some(s) => (
                "SELECT reason, sum(count) FROM drops WHERE session = ?1 GROUP BY reason",
                vec![i64::from(s)],
            ),
            None => ("SELECT reason, sum(count) FROM drops GROUP BY reason", vec![]),
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.db("reading drops"))?;
        let rows = stmt
            .query_map(params_from_iter(p), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(self.db("reading drops"))?;
        for row in rows {
            let (reason, n) = row.map_err(self.db("reading drops"))?;
            out.drops.insert(reason, n.max(0) as u64);
        }
        Ok(out)
    }

    /// The layers (`fanotify`, `cgroup_bpf`, `proxy`, `mcp`, ...) each
    /// session's events came from, sorted. One scan of the events.
    pub fn layers(&self) -> Result<BTreeMap<u32, Vec<String>>, AuditError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT session, layer FROM events ORDER BY session, layer")
            .map_err(self.db("listing layers"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))
            .map_err(self.db("listing layers"))?;
        let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for row in rows {
            let (s, l) = row.map_err(self.db("listing layers"))?;
            out.entry(s).or_default().push(l);
        }
        Ok(out)
    }
}
