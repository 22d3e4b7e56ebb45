//! A process as the events of its session knew it at some point: its
//! parent, name, executable and arguments (the control API's event
//! detail, which walks the parent chain).

use crate::{AuditError, Store};
use corral_core::{Event, What};
use rusqlite::OptionalExtension;
use serde::Serialize;

/// One process of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    /// Its pid (host pid namespace).
    pub pid: u32,
    /// Its parent's pid.
    pub ppid: u32,
    /// Its name (`comm`).
    pub comm: String,
    /// Its executable, when known.
    pub exe: Option<String>,
    /// Its arguments, from the newest exec or exec trace of this pid; `None`
    /// when none was recorded.
    pub argv: Option<Vec<String>>,
}

impl Store {
    fn event_where(
        &self,
        sql: &str,
        session: u32,
        pid: u32,
        at_id: i64,
    ) -> Result<Option<Event>, AuditError> {
        let data: Option<(i64, String)> = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut st| {
                st.query_row(rusqlite::params![session, pid, at_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
            })
            .map_err(self.db("reading a process"))?;
        data.map(|(id, d)| {
            serde_json::from_str(&d).map_err(|source| AuditError::Decode {
                path: self.path.clone(),
                table: "events",
                id,
                source,
            })
        })
        .transpose()
    }

    /// Process `pid` of `session` as of event `at_id` (that event and
    /// earlier ones): from its own newest event, else from the fork that
    /// made it (which gives only its parent). `None` when no event knows it.
    pub fn process_at(&self, session: u32, pid: u32, at_id: i64) -> Result<Option<ProcessInfo>, AuditError> {
        let own = self.event_where(
            "SELECT id, data FROM events WHERE session = ?1 AND pid = ?2 AND id <= ?3 ORDER BY id DESC LIMIT 1",
            session,
            pid,
            at_id,
        )?;
        let mut info = match own {
            Some(e) => ProcessInfo {
                pid,
                ppid: e.proc.ppid,
                comm: e.proc.comm,
                exe: e.proc.exe,
                argv: None,
            },
            None => {
                let fork = self.event_where(
                    "SELECT id, data FROM events WHERE session = ?1 AND kind = 'process' \
                     AND json_extract(data, '$.what.kind') = 'fork' \
                     AND json_extract(data, '$.what.child') = ?2 AND id <= ?3 ORDER BY id DESC LIMIT 1",
                    session,
                    pid,
                    at_id,
                )?;
                match fork {
                    // A fork's child runs its parent's program until it execs.
                    Some(e) => ProcessInfo {
                        pid,
                        ppid: e.proc.pid,
                        comm: e.proc.comm,
                        exe: e.proc.exe,
                        argv: None,
                    },
                    None => return Ok(None),
                }
            }
        };
        let exec = self.event_where(
            "SELECT id, data FROM events WHERE session = ?1 AND pid = ?2 AND id <= ?3 \
             AND (kind = 'exec' OR (kind = 'process' AND json_extract(data, '$.what.kind') = 'exec_trace')) \
             ORDER BY id DESC LIMIT 1",
            session,
            pid,
            at_id,
        )?;
        info.argv = exec.and_then(|e| match e.what {
            What::Exec { argv, .. } => argv,
            What::ExecTrace { argv, .. } => Some(argv),
            _ => None,
        });
        Ok(Some(info))
    }

    /// The parent chain of `event`'s process (stored as `at_id`): the
    /// process itself first, then its parent, up to the first process no
    /// event of the session knows (the session's root has its parent
    /// outside), at most 64 long.
    pub fn process_chain(&self, event: &Event, at_id: i64) -> Result<Vec<ProcessInfo>, AuditError> {
        let session = event.session.0;
        let mut out = Vec::new();
        let first = self
            .process_at(session, event.proc.pid, at_id)?
            .map(|mut p| {
                // The event's own view of its process wins.
                p.ppid = event.proc.ppid;
                p.comm = event.proc.comm.clone();
                p.exe = event.proc.exe.clone();
                p
            })
            .unwrap_or_else(|| ProcessInfo {
                pid: event.proc.pid,
                ppid: event.proc.ppid,
                comm: event.proc.comm.clone(),
                exe: event.proc.exe.clone(),
                argv: None,
            });
        let mut next = first.ppid;
        out.push(first);
        while next > 1 && out.len() < 64 && !out.iter().any(|p| p.pid == next) {
            match self.process_at(session, next, at_id)? {
                Some(p) => {
                    next = p.ppid;
                    out.push(p);
                }
                None => break,
            }
        }
        Ok(out)
    }
}
