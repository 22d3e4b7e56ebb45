//! Audit export: stored events in the shapes SIEMs and fleet collectors read.
//!
//! * [`jsonl`]: one JSON object per event, the shape `corral events --json`
//!   prints (the event plus `id`, `wall_ns`, `policy_at`), lossless.
//! * [`ocsf`]: one OCSF 1.1.0 event per line, for SIEMs that speak the Open
//!   Cybersecurity Schema Framework.
//! * [`otlp`]: a live exporter that sends every stored event to an
//!   OpenTelemetry collector as an OTLP/HTTP log record.
//!
//! File exports read the store page by page ([`export_query`]), so memory
//! stays bounded whatever the store holds. The live exporter reads a
//! [`Subscription`](crate::Subscription) on its own thread: it never makes
//! the pipeline, the store or enforcement wait, and counts what it could
//! not deliver.
//!
//! This module only reads: it never writes to the store.

pub mod http;
pub mod jsonl;
pub mod mcp;
pub mod ocsf;
pub mod otlp;

use crate::{AuditError, Query, Store, Stored};
use corral_core::{Decision, Layer, What};
use std::borrow::Cow;
use std::io::Write;
use std::str::FromStr;

/// Events read from the store per page by [`export_query`] callers that have
/// no reason to pick another size.
pub const PAGE: usize = 10_000;

/// What went wrong while exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The output cannot be written.
    #[error("cannot write the export: {0}")]
    Write(#[source] std::io::Error),
    /// An event cannot be encoded as JSON.
    #[error("cannot encode an event as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The store cannot be read.
    #[error(transparent)]
    Store(#[from] AuditError),
    /// An export format that does not exist was named.
    #[error("unknown export format `{0}` (expected jsonl or ocsf)")]
    UnknownFormat(String),
    /// The OTLP endpoint is not usable.
    #[error("OTLP endpoint `{endpoint}`: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A line-per-event file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// corral's own event shape ([`jsonl`]).
    Jsonl,
    /// OCSF 1.1.0 events ([`ocsf`]).
    Ocsf,
}

impl Format {
    /// The name accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Ocsf => "ocsf",
        }
    }
}

impl FromStr for Format {
    type Err = ExportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" => Ok(Format::Jsonl),
            "ocsf" => Ok(Format::Ocsf),
            _ => Err(ExportError::UnknownFormat(s.to_owned())),
        }
    }
}

/// Writes events as lines of JSON in one [`Format`].
pub struct LineWriter<W: Write> {
    out: W,
    format: Format,
    host: String,
    written: u64,
}

impl<W: Write> LineWriter<W> {
    /// A writer of `format` lines to `out` (which should be buffered).
    pub fn new(out: W, format: Format) -> LineWriter<W> {
        LineWriter {
            out,
            format,
            host: host_name(),
            written: 0,
        }
    }

    /// Writes one event as one line.
    pub fn write(&mut self, s: &Stored) -> Result<(), ExportError> {
        let v = match self.format {
            Format::Jsonl => jsonl::to_value(s)?,
            Format::Ocsf => ocsf::to_value(s, &self.host),
        };
        // serde_json escapes control characters: the line has no newline.
        serde_json::to_writer(&mut self.out, &v).map_err(|e| {
            if e.is_io() {
                ExportError::Write(e.into())
            } else {
                ExportError::Json(e)
            }
        })?;
        self.out.write_all(b"\n").map_err(ExportError::Write)?;
        self.written += 1;
        Ok(())
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> Result<W, ExportError> {
        self.out.flush().map_err(ExportError::Write)?;
        Ok(self.out)
    }
}

/// Writes every event matching `q` to `out` as `format` lines, oldest first,
/// reading the store `page` events at a time (at least one); returns how
/// many were written.
///
/// The query's filters apply; its `after_id` is where the export starts and
/// its `limit` is ignored (an export is everything that matches). Events
/// stored while the export runs are included if they match and arrive
/// before the last page is read.
pub fn export_query<W: Write>(
    store: &Store,
    q: &Query,
    format: Format,
    page: usize,
    out: W,
) -> Result<u64, ExportError> {
    let page = page.max(1);
    let mut w = LineWriter::new(out, format);
    let mut q = Query {
        limit: Some(page),
        // With a limit and no `after_id` a query returns the newest events
        // (a tail): start before the first possible row id instead.
        after_id: Some(q.after_id.unwrap_or(i64::MIN)),
        ..q.clone()
    };
    loop {
        let rows = store.query(&q)?;
        for s in &rows {
            w.write(s)?;
        }
        match rows.last().and_then(|s| s.id) {
            Some(last) if rows.len() == page => q.after_id = Some(last),
            _ => break,
        }
    }
    let n = w.written();
    w.finish()?;
    Ok(n)
}

/// This host's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else
/// `localhost`), for OCSF's `device` and OTLP's `host.name`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The `kind` tag of an event's `what`, as serialized (`file_open`, ...).
pub(crate) fn what_name(what: &What) -> &'static str {
    match what {
        What::FileOpen { .. } => "file_open",
        What::Exec { .. } => "exec",
        What::Connect { .. } => "connect",
        What::Http { .. } => "http",
        What::Mcp { .. } => "mcp",
        What::Fork { .. } => "fork",
        What::Exit { .. } => "exit",
        What::ExecTrace { .. } => "exec_trace",
        What::Lost { .. } => "lost",
        What::SessionStart { .. } => "session_start",
        What::SessionEnd { .. } => "session_end",
        What::ModeChange { .. } => "mode_change",
        What::PolicyLoad { .. } => "policy_load",
    }
}

/// The layer's name, as serialized (`bpf_lsm`, ...).
pub(crate) fn layer_name(l: Layer) -> &'static str {
    match l {
        Layer::BpfLsm => "bpf_lsm",
        Layer::CgroupBpf => "cgroup_bpf",
        Layer::Fanotify => "fanotify",
        Layer::Userspace => "userspace",
        Layer::Tracepoint => "tracepoint",
        Layer::Proxy => "proxy",
        Layer::Mcp => "mcp",
    }
}

/// The decision's name, as serialized (`allow`, `deny`, `would_deny`).
pub(crate) fn decision_name(d: Decision) -> &'static str {
    crate::query::decision_str(d)
}

/// What the event is about: a path, `ip:port`, `METHOD url` (a URL for a
/// refused connection), a child pid, a policy label (the store's `target`
/// column).
pub(crate) fn target(what: &What) -> Option<String> {
    match what {
        What::FileOpen { path, .. } | What::Exec { path, .. } | What::ExecTrace { path, .. } => {
            Some(path.clone())
        }
        What::Connect { ip, port, .. } => Some(std::net::SocketAddr::new(*ip, *port).to_string()),
        What::Http { .. } => http::target(what),
        What::Mcp { .. } => mcp::target(what),
        What::Fork { child } => Some(child.to_string()),
        What::PolicyLoad { label, .. } => Some(label.clone()),
        What::Exit { .. }
        | What::Lost { .. }
        | What::SessionStart { .. }
        | What::SessionEnd { .. }
        | What::ModeChange { .. } => None,
    }
}

/// `s` with control characters escaped, so it fits on one line.
pub fn one_line(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// The mode's name, as serialized (`enforce`, `shadow`).
pub fn mode_name(m: corral_core::Mode) -> &'static str {
    match m {
        corral_core::Mode::Enforce => "enforce",
        corral_core::Mode::Shadow => "shadow",
    }
}

/// A one-line human summary of an event, e.g.
/// `s7 pid 42 (bash) open rw /home/me/.ssh/id_ed25519: DENIED by forbid-ssh (policy.cedar:12)`
/// or, for an http event whose process the proxy was not told,
/// `s7 proxy GET https://api.github.com:443/user -> 403, in 0 B, out 57 B, 2.1 ms: DENIED by
/// forbid-gh (team.cedar:12); error: forbidden by forbid-gh`.
pub fn summary(s: &Stored) -> String {
    let e = &s.event;
    let object = match &e.what {
        What::Http { .. } => format!(
            "{} -> {}",
            http::target(&e.what).unwrap_or_default(),
            http::outcome(&e.what).unwrap_or_default()
        ),
        What::Mcp { .. } => format!(
            "mcp {} ({})",
            mcp::target(&e.what).unwrap_or_default(),
            mcp::outcome(&e.what).unwrap_or_default()
        ),
        What::FileOpen { path, access } => format!(
            "open {} {path}",
            match access {
                corral_core::Access::Read => "r",
                corral_core::Access::Write => "rw",
                corral_core::Access::Exec => "x",
            }
        ),
        What::Exec { path, argv } => match argv {
            Some(a) => format!("exec {path} [{}]", a.join(" ")),
            None => format!("exec {path}"),
        },
        What::ExecTrace { path, argv } => format!("exec (trace) {path} [{}]", argv.join(" ")),
        What::Connect { ip, port, transport } => format!(
            "connect {} {}",
            match transport {
                corral_core::Transport::Tcp => "tcp",
                corral_core::Transport::Udp => "udp",
            },
            std::net::SocketAddr::new(*ip, *port)
        ),
        What::Fork { child } => format!("fork pid {child}"),
        What::Exit { code } => format!("exit {code}"),
        What::Lost { count } => format!("lost {count} events"),
        What::SessionStart { mode, command, .. } => {
            format!("session start ({}): {}", mode_name(*mode), command.join(" "))
        }
        What::SessionEnd { exit } => format!("session end: {exit}"),
        What::ModeChange { mode } => format!("mode switched to {}", mode_name(*mode)),
        What::PolicyLoad { label, sha256, error } => match error {
            None => format!("policy {label} ({}) loaded", sha256.get(..12).unwrap_or(sha256)),
            Some(err) => format!("policy {label} refused: {err}"),
        },
    };
    let mut out = if http::pid_unknown(&e.what) {
        format!("{} proxy {object}", e.session)
    } else if mcp::pid_unknown(e) {
        format!("{} {object}", e.session)
    } else {
        format!("{} pid {} ({}) {object}", e.session, e.proc.pid, e.proc.comm)
    };
    let error = http::error(&e.what).or_else(|| mcp::error(&e.what));
    if let Some(d) = e.decision {
        out.push_str(match d {
            Decision::Allow => ": allowed",
            Decision::Deny => ": DENIED",
            Decision::WouldDeny => ": would deny (shadow mode)",
        });
        let by = policies_at(s);
        if !by.is_empty() {
            out.push_str(" by ");
            out.push_str(&by.join(", "));
        } else if d != Decision::Allow && error.is_none() {
            out.push_str(" (no permit: default deny)");
        }
    }
    if let Some(err) = error {
        out.push_str("; error: ");
        out.push_str(err);
    }
    if let Some(call) = &e.mcp_call {
        out.push_str(" [mcp call ");
        out.push_str(call);
        out.push(']');
    }
    one_line(&out).into_owned()
}

/// Each deciding policy id with its `file:line` when known: `id (at)`.
fn policies_at(s: &Stored) -> Vec<String> {
    s.event
        .policies
        .iter()
        .enumerate()
        .map(|(i, id)| match s.policy_at.get(i).filter(|at| !at.is_empty()) {
            Some(at) => format!("{id} ({at})"),
            None => id.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!("jsonl".parse::<Format>().ok(), Some(Format::Jsonl));
        assert_eq!("ocsf".parse::<Format>().ok(), Some(Format::Ocsf));
        assert!("json".parse::<Format>().is_err());
    }

    #[test]
    fn one_line_escapes_control_characters() {
        assert_eq!(one_line("a\nb\tc"), "a\\nb\\tc");
        assert!(matches!(one_line("plain"), Cow::Borrowed("plain")));
    }
}
