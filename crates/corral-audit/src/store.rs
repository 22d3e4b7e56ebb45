//! The store: one SQLite file in WAL mode, written in batches.

use crate::query::{decision_str, to_sql};
use crate::{kind_of, schema, AuditError, Query};
use corral_core::{Decision, Event};
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a writer waits for another one before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One stored event: the event plus what the store adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The row id once stored (`None` before).
    pub id: Option<i64>,
    /// Wall-clock time the pipeline received the event, ns since the epoch.
    pub wall_ns: u64,
    /// `file:line` of each deciding policy, in the order of `event.policies`.
    pub policy_at: Vec<String>,
    /// The event.
    pub event: Event,
}

/// A session as recorded when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    /// The session id.
    pub id: u32,
    /// The principal (`Agent::"<name>"`).
    pub principal: String,
    /// A label for the policy (usually its file name).
    pub policy_label: String,
    /// SHA-256 of the policy text, lower-case hex.
    pub policy_sha256: String,
    /// `enforce` or `shadow`.
    pub mode: String,
    /// Wall-clock start, ns since the epoch.
    pub started_ns: u64,
    /// The command the session runs.
    pub command: Vec<String>,
}

/// A session with its outcome and event counts: its start row (empty
/// fields, start 0, when only its events or drops were seen) and what
/// followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The row recorded at start.
    #[serde(flatten)]
    pub session: SessionRow,
    /// Wall-clock end, ns, once ended.
    pub ended_ns: Option<u64>,
    /// How it ended, once ended.
    pub exit: Option<String>,
    /// Events the kernel reported lost, once ended.
    pub lost: Option<u64>,
    /// Stored events with decision `allow`.
    pub allowed: u64,
    /// Stored events with decision `deny`.
    pub denied: u64,
    /// Stored events with decision `would_deny`.
    pub would_deny: u64,
    /// Events dropped before they were stored, all reasons.
    pub drops: u64,
    /// Events the session generated in all, once ended (stored + drops).
    pub generated: Option<u64>,
}

/// The audit store.
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the store at `path`, creating it (and its directory) if needed.
    ///
    /// WAL mode, `synchronous=NORMAL` (a process crash loses nothing
    /// committed; a power loss may lose the last transactions), a 5 s busy
    /// timeout. A corrupt, locked or too-new file is an error naming it.
    pub fn open(path: &Path) -> Result<Store, AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| AuditError::CreateDir {
                path: path.to_owned(),
                source,
            })?;
        }
        let open_err = |source| AuditError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        // 64 MiB of page cache (default 2 MiB): the indexes' hot pages stay
        // in memory as the store grows (docs/BENCHMARKS.md: audit store).
        conn.pragma_update(None, "cache_size", -65_536)
            .map_err(open_err)?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(open_err)?;
        let found: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        if found > schema::VERSION {
            return Err(AuditError::TooNew {
                path: path.to_owned(),
                found,
                known: schema::VERSION,
            });
        }
        if found < 1 {
            tx.execute_batch(schema::V1).map_err(open_err)?;
        }
        if found < 2 {
            tx.execute_batch(schema::V2).map_err(open_err)?;
        }
        if found < 3 {
            tx.execute_batch(schema::V3).map_err(open_err)?;
        }
        if found < schema::VERSION {
            tx.pragma_update(None, "user_version", schema::VERSION)
                .map_err(open_err)?;
        }
        tx.commit().map_err(open_err)?;
        Ok(Store {
            conn,
            path: path.to_owned(),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub(crate) fn db(&self, op: &'static str) -> impl Fn(rusqlite::Error) -> AuditError + '_ {
        move |source| AuditError::Db {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// Records a session start. A session id already recorded is an error.
    pub fn session_started(&mut self, s: &SessionRow) -> Result<(), AuditError> {
        let command = serde_json::to_string(&s.command)?;
        let r = self.conn.execute(
            "INSERT INTO sessions (id, principal, policy_label, policy_sha256, mode, started_ns, command)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                s.id,
                s.principal,
                s.policy_label,
                s.policy_sha256,
                s.mode,
                s.started_ns as i64,
                command
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
                Err(AuditError::DuplicateSession {
                    path: self.path.clone(),
                    id: s.id,
                })
            }
            Err(e) => Err(self.db("recording a session start")(e)),
        }
    }

    /// Records a session's end: wall-clock end (ns), how it exited, how
    /// many events the kernel reported lost, and how many events the session
    /// generated in all (each one is stored or counted as a drop).
    pub fn session_ended(
        &mut self,
        id: u32,
        ended_ns: u64,
        exit: &str,
        lost: u64,
        generated: u64,
    ) -> Result<(), AuditError> {
        self.conn
            .execute(
                "UPDATE sessions SET ended_ns = ?2, exit = ?3, lost = ?4, generated = ?5 WHERE id = ?1",
                params![id, ended_ns as i64, exit, lost as i64, generated as i64],
            )
            .map_err(self.db("recording a session end"))?;
        Ok(())
    }

    /// Keeps a policy text (once per SHA-256 of `text`; `label` is where it
    /// came from). Returns the SHA-256.
    pub fn record_policy(&mut self, label: &str, text: &str) -> Result<String, AuditError> {
        use sha2::Digest as _;
        let sha = sha2::Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        self.conn
            .execute(
                "INSERT INTO policies (sha256, label, text) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![sha, label, text],
            )
            .map_err(self.db("recording a policy"))?;
        Ok(sha)
    }

    /// A policy text recorded by [`Store::record_policy`], with its label.
    pub fn policy_text(&self, sha256: &str) -> Result<Option<(String, String)>, AuditError> {
        self.conn
            .query_row(
                "SELECT label, text FROM policies WHERE sha256 = ?1",
                [sha256],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(self.db("reading a policy"))
    }

    /// Inserts a batch of events in one transaction; returns how many were
    /// stored (all of them, or none on error).
    pub fn insert(&mut self, events: &[Stored]) -> Result<usize, AuditError> {
        self.insert_inner(events, None)
    }

    /// Like [`Store::insert`], and sets each event's `id` once committed.
    pub fn insert_assign(&mut self, events: &mut [Stored]) -> Result<usize, AuditError> {
        let mut ids = Vec::with_capacity(events.len());
        let n = self.insert_inner(events, Some(&mut ids))?;
        for (s, id) in events.iter_mut().zip(ids) {
            s.id = Some(id);
        }
        Ok(n)
    }

    fn insert_inner(
        &mut self,
        events: &[Stored],
        mut ids: Option<&mut Vec<i64>>,
    ) -> Result<usize, AuditError> {
        let path = self.path.clone();
        let err = |op| {
            let path = path.clone();
            move |source| AuditError::Db { path, op, source }
        };
        let tx = self.conn.transaction().map_err(err("inserting events"))?;
        let mut counts: HashMap<u32, [i64; 3]> = HashMap::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events (session, wall_ns, ts_ns, kind, decision, layer, principal,
                        pid, ppid, comm, exe, target, policies, policy_at, data, mcp_call)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )
                .map_err(err("inserting events"))?;
            for s in events {
                let e = &s.event;
                let data = serde_json::to_string(e)?;
                let policy_at = serde_json::to_string(&s.policy_at)?;
                stmt.execute(params![
                    e.session.0,
                    s.wall_ns as i64,
                    e.ts_ns as i64,
                    kind_of(&e.what).as_str(),
                    e.decision.map(decision_str),
                    crate::export::layer_name(e.layer),
                    e.principal,
                    e.proc.pid,
                    e.proc.ppid,
                    e.proc.comm,
                    e.proc.exe,
                    crate::export::target(&e.what),
                    e.policies.join("\n"),
                    policy_at,
                    data,
                    e.mcp_call,
                ])
                .map_err(err("inserting events"))?;
                if let Some(ids) = ids.as_deref_mut() {
                    ids.push(tx.last_insert_rowid());
                }
                if let Some(d) = e.decision {
                    let c = counts.entry(e.session.0).or_default();
                    match d {
                        Decision::Allow => c[0] += 1,
                        Decision::Deny => c[1] += 1,
                        Decision::WouldDeny => c[2] += 1,
                    }
                }
            }
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO counts (session, allowed, denied, would_deny) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (session) DO UPDATE SET allowed = allowed + excluded.allowed,
                        denied = denied + excluded.denied, would_deny = would_deny + excluded.would_deny",
                )
                .map_err(err("counting decisions"))?;
            for (session, [a, d, w]) in counts {
                stmt.execute(params![session, a, d, w])
                    .map_err(err("counting decisions"))?;
            }
        }
        tx.commit().map_err(err("committing events"))?;
        Ok(events.len())
    }

    /// Adds `n` to the drop counter of (`session`, `reason`).
    pub fn add_drops(&mut self, session: u32, reason: &str, n: u64) -> Result<(), AuditError> {
        if n == 0 {
            return Ok(());
        }
        self.conn
            .execute(
                "INSERT INTO drops (session, reason, count) VALUES (?1, ?2, ?3)
                 ON CONFLICT (session, reason) DO UPDATE SET count = count + excluded.count",
                params![session, reason, n as i64],
            )
            .map_err(self.db("counting drops"))?;
        Ok(())
    }

    /// The drop counters of a session, by reason (sorted).
    pub fn drops(&self, session: u32) -> Result<Vec<(String, u64)>, AuditError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT reason, count FROM drops WHERE session = ?1 ORDER BY reason")
            .map_err(self.db("reading drops"))?;
        let rows = stmt
            .query_map([session], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(self.db("reading drops"))?;
        rows.collect::<Result<_, _>>().map_err(self.db("reading drops"))
    }

    /// The events matching `q`, oldest first (see [`Query`] for `limit`).
    pub fn query(&self, q: &Query) -> Result<Vec<Stored>, AuditError> {
        let (sql, params) = to_sql(q, false);
        let mut stmt = self.conn.prepare(&sql).map_err(self.db("querying events"))?;
        let rows = stmt
            .query_map(params_from_iter(params), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(self.db("querying events"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, wall_ns, policy_at, data) = row.map_err(self.db("querying events"))?;
            let decode = |source| AuditError::Decode {
                path: self.path.clone(),
                table: "events",
                id,
                source,
            };
            out.push(Stored {
                id: Some(id),
                wall_ns: wall_ns as u64,
                policy_at: serde_json::from_str(&policy_at).map_err(decode)?,
                event: serde_json::from_str(&data).map_err(decode)?,
            });
        }
        Ok(out)
    }

    /// Every session known to the store (recorded, or seen only in events or
    /// drops), oldest start first, with its decision and drop counts.
    pub fn sessions(&self) -> Result<Vec<SessionSummary>, AuditError> {
        let sql = "
            WITH ids AS (SELECT id FROM sessions UNION SELECT session FROM counts
                         UNION SELECT session FROM drops)
            SELECT ids.id, s.principal, s.policy_label, s.policy_sha256, s.mode, s.started_ns,
                   s.command, s.ended_ns, s.exit, s.lost,
                   coalesce(c.allowed, 0), coalesce(c.denied, 0), coalesce(c.would_deny, 0),
                   (SELECT coalesce(sum(count), 0) FROM drops d WHERE d.session = ids.id),
                   s.generated
            FROM ids LEFT JOIN sessions s ON s.id = ids.id LEFT JOIN counts c ON c.session = ids.id
            ORDER BY coalesce(s.started_ns, 0), ids.id";
        let mut stmt = self.conn.prepare(sql).map_err(self.db("listing sessions"))?;
        let rows = stmt
            .query_map([], |r| {
                let command: Option<String> = r.get(6)?;
                Ok((
                    SessionSummary {
                        session: SessionRow {
                            id: r.get(0)?,
                            principal: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                            policy_label: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                            policy_sha256: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                            mode: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                            started_ns: r.get::<_, Option<i64>>(5)?.unwrap_or(0) as u64,
                            command: Vec::new(),
                        },
                        ended_ns: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                        exit: r.get(8)?,
                        lost: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
                        allowed: r.get::<_, i64>(10)? as u64,
                        denied: r.get::<_, i64>(11)? as u64,
                        would_deny: r.get::<_, i64>(12)? as u64,
                        drops: r.get::<_, i64>(13)? as u64,
                        generated: r.get::<_, Option<i64>>(14)?.map(|v| v as u64),
                    },
                    command,
                ))
            })
            .map_err(self.db("listing sessions"))?;
        let mut out = Vec::new();
        for row in rows {
            let (mut s, command) = row.map_err(self.db("listing sessions"))?;
            if let Some(c) = command {
                s.session.command = serde_json::from_str(&c).map_err(|source| AuditError::Decode {
                    path: self.path.clone(),
                    table: "sessions",
                    id: i64::from(s.session.id),
                    source,
                })?;
            }
            out.push(s);
        }
        Ok(out)
    }

    /// The most recently started session, or else the session of the newest
    /// event; `None` for an empty store.
    pub fn last_session(&self) -> Result<Option<u32>, AuditError> {
        let started = self
            .conn
            .query_row(
                "SELECT id FROM sessions ORDER BY started_ns DESC, rowid DESC LIMIT 1",
                [],
                |r| r.get::<_, u32>(0),
            )
            .optional()
            .map_err(self.db("finding the last session"))?;
        if started.is_some() {
            return Ok(started);
        }
        self.conn
            .query_row("SELECT session FROM events ORDER BY id DESC LIMIT 1", [], |r| {
                r.get::<_, u32>(0)
            })
            .optional()
            .map_err(self.db("finding the last session"))
    }

    /// How many events match `q` (its `limit` ignored).
    pub fn count_matching(&self, q: &Query) -> Result<u64, AuditError> {
        let (sql, params) = to_sql(q, true);
        self.conn
            .query_row(&sql, params_from_iter(params), |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(self.db("counting events"))
    }

    /// Runs SQLite's `PRAGMA integrity_check`; `["ok"]` when the file is sound.
    pub fn integrity_check(&self) -> Result<Vec<String>, AuditError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(self.db("checking integrity"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(self.db("checking integrity"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.db("checking integrity"))
    }

    /// How many events are stored.
    pub fn count(&self) -> Result<u64, AuditError> {
        self.conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(self.db("counting events"))
    }

    /// Sets how long a write waits for a lock held by another connection.
    pub fn set_busy_timeout(&self, t: Duration) -> Result<(), AuditError> {
        self.conn
            .busy_timeout(t)
            .map_err(self.db("setting the busy timeout"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A version-2 file (before `mcp_call`) is migrated in place: its
    /// events stay, and new ones are found by their MCP call.
    #[test]
    fn a_version_2_store_is_migrated_to_3() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(schema::V1).unwrap();
            c.execute_batch(schema::V2).unwrap();
            c.pragma_update(None, "user_version", 2).unwrap();
            c.execute(
                "INSERT INTO events (session, wall_ns, ts_ns, kind, layer, principal, pid, ppid, comm,
                    policies, policy_at, data) VALUES (1, 1, 1, 'other', 'tracepoint', 'a', 1, 0, 'x', '', '[]',
                    '{\"session\":1,\"principal\":\"a\",\"ts_ns\":1,\"proc\":{\"pid\":1,\"ppid\":0,\"comm\":\"x\"},\"what\":{\"kind\":\"lost\",\"count\":3},\"layer\":\"tracepoint\"}')",
                [],
            )
            .unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        let v: i64 = s.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, schema::VERSION);
        assert_eq!(s.query(&Query::default()).unwrap().len(), 1);
        let e = corral_core::Event {
            session: corral_core::SessionId(1),
            principal: "a".into(),
            ts_ns: 2,
            proc: corral_core::Proc::default(),
            what: corral_core::What::Lost { count: 1 },
            decision: None,
            layer: corral_core::Layer::Tracepoint,
            policies: vec![],
            mcp_call: Some("m1#2,m1#3".into()),
        };
        s.insert(&[Stored {
            id: None,
            wall_ns: 2,
            policy_at: vec![],
            event: e,
        }])
        .unwrap();
        for (call, n) in [("m1#2", 1), ("m1#3", 1), ("m1#", 0), ("m1", 0)] {
            let q = Query {
                mcp_call: Some(call.into()),
                ..Query::default()
            };
            assert_eq!(s.query(&q).unwrap().len(), n, "{call}");
        }
    }
}
