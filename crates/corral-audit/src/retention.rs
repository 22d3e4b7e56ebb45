//! Retention: what the store keeps, by age and by size.
//!
//! Pruning deletes the oldest events first, in short transactions (so a
//! reader or the writer never waits long), and counts what it deleted in the
//! `meta` table (`pruned_events`): an event that left by retention is
//! accounted for, like a drop. Sessions rows, decision counts and drop
//! counters are kept: they are small and are the summary of what happened.

use crate::{AuditError, Store};
use std::time::Duration;

/// What the store keeps. Both limits apply; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Events received longer ago than this are deleted.
    pub max_age: Option<Duration>,
    /// Past this many bytes of data (pages in use, not free pages), the
    /// oldest events are deleted until it is under again.
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// No limits.
    pub fn is_unlimited(&self) -> bool {
        self.max_age.is_none() && self.max_bytes.is_none()
    }
}

/// What one pruning pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events deleted for their age.
    pub by_age: u64,
    /// Events deleted to bring the size under the limit.
    pub by_size: u64,
}

/// Events per delete transaction.
const CHUNK: i64 = 20_000;

impl Store {
    /// Bytes in use: pages that hold data (the file does not shrink; freed
    /// pages are reused by later inserts).
    pub fn used_bytes(&self) -> Result<u64, AuditError> {
        let q = |sql: &str| -> Result<i64, AuditError> {
            self.conn()
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map_err(|source| AuditError::Db {
                    path: self.path().to_owned(),
                    op: "measuring the store",
                    source,
                })
        };
        let pages = q("PRAGMA page_count")? - q("PRAGMA freelist_count")?;
        Ok(pages.max(0) as u64 * q("PRAGMA page_size")?.max(0) as u64)
    }

    /// Events deleted by retention since the store was created.
    pub fn pruned_total(&self) -> Result<u64, AuditError> {
        self.conn()
            .query_row(
                "SELECT coalesce((SELECT value FROM meta WHERE key = 'pruned_events'), 0)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v.max(0) as u64)
            .map_err(|source| AuditError::Db {
                path: self.path().to_owned(),
                op: "reading the pruned count",
                source,
            })
    }

    /// Applies `r` now: events older than `max_age`, then the oldest events
    /// until the data is under `max_bytes`.
    pub fn prune(&mut self, r: &Retention) -> Result<Pruned, AuditError> {
        let mut out = Pruned::default();
        if let Some(age) = r.max_age {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let cutoff = now.saturating_sub(age).as_nanos().min(i64::MAX as u128) as i64;
            loop {
                let n = self.delete_chunk(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE wall_ns < ?1 ORDER BY id LIMIT ?2)",
                    cutoff,
                    CHUNK,
                )?;
                out.by_age += n;
                if n < CHUNK as u64 {
                    break;
                }
            }
        }
        if let Some(max) = r.max_bytes {
            while self.used_bytes()? > max {
                // A tenth of what is left per step (at least one chunk's
                // worth when many remain), so the loop ends quickly.
                let total = self.count()? as i64;
                if total == 0 {
                    break;
                }
                let step = (total / 10).clamp(1, CHUNK);
                let n = self.delete_chunk(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ?1 = 0 ORDER BY id LIMIT ?2)",
                    0,
                    step,
                )?;
                out.by_size += n;
                if n == 0 {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Runs one delete (`?1` its argument, `?2` the most rows) and adds
    /// what it deleted to `pruned_events`, in one transaction.
    fn delete_chunk(&mut self, sql: &str, arg: i64, limit: i64) -> Result<u64, AuditError> {
        let path = self.path().to_owned();
        let err = move |source| AuditError::Db {
            path: path.clone(),
            op: "applying retention",
            source,
        };
        let tx = self.conn_mut().transaction().map_err(err.clone())?;
        let n = tx
            .execute(sql, rusqlite::params![arg, limit])
            .map_err(err.clone())? as u64;
        if n > 0 {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('pruned_events', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                [n as i64],
            )
            .map_err(err.clone())?;
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }
}
