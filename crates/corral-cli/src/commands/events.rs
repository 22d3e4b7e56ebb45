//! `corral events` and `corral sessions`: the audit trail, from the store.

use anyhow::{bail, Context as _, Result};
use corral_audit::export::{self, Format};
use corral_audit::{filters, ExportError, Query, Store};
use corral_core::{Decision, What};
use std::borrow::Cow;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `corral events` arguments.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EventsArgs {
    #[command(subcommand)]
    command: Option<EventsCmd>,
    #[command(flatten)]
    filters: Filters,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Keep printing new events as they are stored.
    #[arg(long, short)]
    follow: bool,
    /// At most this many events (the newest; default 1000, 0 = all).
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// The store (default: ~/.local/state/corral/audit.db).
    #[arg(long)]
    store: Option<PathBuf>,
}

/// `corral events` subcommands.
#[derive(clap::Subcommand)]
enum EventsCmd {
    /// Write every matching event, oldest first, one JSON object per line:
    /// corral's own shape (jsonl) or OCSF 1.1.0 (ocsf), for a SIEM.
    Export(ExportArgs),
}

/// `corral events export` arguments.
#[derive(clap::Args)]
struct ExportArgs {
    /// jsonl (corral's event shape, as `--json` prints) or ocsf (OCSF 1.1.0).
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// Write here instead of to standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    filters: Filters,
    /// The store (default: ~/.local/state/corral/audit.db).
    #[arg(long)]
    store: Option<PathBuf>,
}

/// The filter flags of `corral events` and `corral events export`.
#[derive(clap::Args)]
struct Filters {
    /// A session id (`s123` or `123`), or `last`.
    #[arg(long)]
    session: Option<String>,
    /// file, exec, net, http, mcp, process, session, policy or other.
    #[arg(long)]
    kind: Option<String>,
    /// Only the events of one MCP tool call (its id, e.g. `m1#3`, as the
    /// call's own events show it): the call, its response, and what the
    /// wrapped server's processes did while it was in flight.
    #[arg(long, value_name = "ID")]
    mcp_call: Option<String>,
    /// allow, deny or would_deny.
    #[arg(long)]
    decision: Option<String>,
    /// Only events newer than this (`30s`, `10m`, `2h`, `1d`).
    #[arg(long)]
    since: Option<String>,
    /// Only events whose target, executable or policies contain this text.
    #[arg(long)]
    grep: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Jsonl,
    Ocsf,
}

/// `corral sessions` arguments.
#[derive(clap::Args)]
pub struct SessionsArgs {
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// The store (default: ~/.local/state/corral/audit.db).
    #[arg(long)]
    store: Option<PathBuf>,
}

/// Opens the store at `store` (default: the user's), which must exist.
pub(crate) fn open(store: &Option<PathBuf>) -> Result<Store> {
    let path = store.clone().unwrap_or_else(corral_audit::default_path);
    if !path.exists() {
        bail!("no audit store at {} yet (corral run creates it)", path.display());
    }
    Ok(Store::open(&path)?)
}

/// `MM-DD HH:MM:SS.mmm` (UTC) of a wall-clock time in ns.
fn clock(wall_ns: u64) -> String {
    let secs = wall_ns / 1_000_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let (_, month, day) = civil_date(secs / 86400);
    format!(
        "{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{:03}",
        (wall_ns / 1_000_000) % 1000
    )
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's days-to-civil algorithm).
fn civil_date(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn action(w: &What) -> (Cow<'static, str>, String) {
    let (action, target) = match w {
        What::Http {
            stage,
            method,
            scheme,
            host,
            port,
            path,
            ..
        } => {
            return if stage == "connection" {
                ("http conn".into(), export::http::url(scheme, host, *port, ""))
            } else {
                (
                    format!("http {method}").into(),
                    export::http::url(scheme, host, *port, path),
                )
            };
        }
        What::Mcp { .. } => {
            return ("mcp".into(), export::mcp::target(w).unwrap_or_default());
        }
        What::FileOpen { path, access } => (
            match access {
                corral_core::Access::Read => "open r",
                corral_core::Access::Write => "open rw",
                corral_core::Access::Exec => "open x",
            },
            path.clone(),
        ),
        What::Exec { path, argv } => (
            "exec",
            match argv {
                Some(a) => format!("{path} {}", a.join(" ")),
                None => path.clone(),
            },
        ),
        What::Connect { ip, port, transport } => (
            match transport {
                corral_core::Transport::Tcp => "connect tcp",
                corral_core::Transport::Udp => "connect udp",
            },
            format!("{ip}:{port}"),
        ),
        What::Fork { child } => ("fork", format!("pid {child}")),
        What::Exit { code } => ("exit", code.to_string()),
        What::ExecTrace { path, argv } => ("exec (trace)", format!("{path} {}", argv.join(" "))),
        What::Lost { count } => ("lost", format!("{count} events")),
        What::SessionStart { mode, command, .. } => (
            "session start",
            format!("{} ({})", command.join(" "), export::mode_name(*mode)),
        ),
        What::SessionEnd { exit } => ("session end", exit.clone()),
        What::ModeChange { mode } => ("mode", export::mode_name(*mode).to_string()),
        What::PolicyLoad { label, sha256, error } => (
            "policy load",
            match error {
                None => format!("{label} ({})", sha256.get(..12).unwrap_or_default()),
                Some(e) => format!("{label} REFUSED: {e}"),
            },
        ),
    };
    (Cow::Borrowed(action), target)
}

fn decision_text(d: Option<Decision>) -> &'static str {
    match d {
        Some(Decision::Allow) => "allow",
        Some(Decision::Deny) => "DENY",
        Some(Decision::WouldDeny) => "would deny",
        None => "-",
    }
}

fn print_row(s: &corral_audit::Stored, json: bool) -> Result<()> {
    if json {
        // The same shape `corral events export --format jsonl` writes.
        println!("{}", export::jsonl::to_value(s)?);
    } else {
        println!("{}", row(s));
    }
    Ok(())
}

/// One event as one line of the table. An http event adds, after the
/// policies, its outcome (status, bytes, duration, injected header and
/// secret names) and its error.
fn row(s: &corral_audit::Stored) -> String {
    let e = &s.event;
    let (what, target) = action(&e.what);
    let (pid, who) = if export::http::pid_unknown(&e.what) || export::mcp::pid_unknown(e) {
        ("-".to_string(), "-".to_string())
    } else {
        (
            e.proc.pid.to_string(),
            e.proc.exe.clone().unwrap_or_else(|| e.proc.comm.clone()),
        )
    };
    let error = export::http::error(&e.what).or_else(|| export::mcp::error(&e.what));
    let why = e
        .policies
        .iter()
        .zip(s.policy_at.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(id, at)| match at {
            Some(at) if !at.is_empty() => format!("{id} ({at})"),
            _ => id.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let why = if why.is_empty()
        && error.is_none()
        && matches!(e.decision, Some(Decision::Deny | Decision::WouldDeny))
    {
        "no permit (default deny)".to_string()
    } else {
        why
    };
    let mut line = format!(
        "{}  {:<11} {:>7} {:<24} {:<12} {:<40} {:<10} {}",
        clock(s.wall_ns),
        e.session.to_string(),
        pid,
        who,
        what,
        target,
        decision_text(e.decision),
        why
    );
    if let Some(outcome) = export::http::outcome(&e.what).or_else(|| export::mcp::outcome(&e.what)) {
        line = format!("{}  -> {outcome}", line.trim_end());
    }
    if let Some(call) = &e.mcp_call {
        line.push_str(&format!(" [mcp call {call}]"));
    }
    if let Some(err) = error {
        line.push_str(", error: ");
        line.push_str(err);
    }
    // One event, one line: a path or an error may hold a newline.
    export::one_line(&line).into_owned()
}

/// A `--session` value: `last` (the store's newest session), `s123` or `123`.
pub(crate) fn session_arg(store: &Store, s: &str) -> Result<u32> {
    Ok(filters::session_arg(store, s)?)
}

/// `s123` or `123`.
pub(crate) fn parse_session_id(s: &str) -> Result<u32> {
    Ok(filters::session_id(s)?)
}

impl Filters {
    /// The query these flags ask for (no limit):
    /// [`corral_audit::filters`], the parser the control API uses too.
    fn query(&self, store: &Store) -> Result<Query> {
        let f = filters::Filters {
            session: self.session.clone(),
            kind: self.kind.clone(),
            decision: self.decision.clone(),
            since: self.since.clone(),
            grep: self.grep.clone(),
            mcp_call: self.mcp_call.clone(),
        };
        Ok(f.query(store)?)
    }
}

/// Runs `corral events`.
pub fn run(args: EventsArgs) -> Result<ExitCode> {
    if let Some(EventsCmd::Export(e)) = args.command {
        return run_export(e);
    }
    let store = open(&args.store)?;
    let mut q = args.filters.query(&store)?;
    q.limit = (args.limit > 0).then_some(args.limit);
    if !args.json {
        println!(
            "{:<18}  {:<11} {:>7} {:<24} {:<12} {:<40} {:<10} policy",
            "time (UTC)", "session", "pid", "process", "action", "target", "decision"
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let rows = store.query(&q)?;
        for r in &rows {
            print_row(r, args.json)?;
            seen.insert(r.event.session.0);
        }
        if !args.follow {
            break;
        }
        if let Some(last) = rows.iter().filter_map(|r| r.id).max() {
            q.after_id = Some(last);
        }
        q.limit = None;
        std::thread::sleep(Duration::from_millis(200));
    }
    // Events that never reached the store are counts, not rows: say so
    // (on stderr, so JSON output stays clean).
    if let Some(sid) = q.session {
        seen.insert(sid);
    }
    for sid in seen {
        let drops = store.drops(sid)?;
        let total: u64 = drops.iter().map(|(_, n)| n).sum();
        if total > 0 {
            let by = drops
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            eprintln!("corral: session s{sid}: {total} events were not stored ({by})");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `corral events export`: the store read page by page
/// ([`export::PAGE`] events at a time), so memory stays bounded.
fn run_export(args: ExportArgs) -> Result<ExitCode> {
    let store = open(&args.store)?;
    let q = args.filters.query(&store)?;
    let format = match args.format {
        ExportFormat::Jsonl => Format::Jsonl,
        ExportFormat::Ocsf => Format::Ocsf,
    };
    match &args.output {
        None => {
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            match export::export_query(&store, &q, format, export::PAGE, out) {
                // The reader stopped early (`| head`): not an error.
                Err(ExportError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                r => {
                    r?;
                }
            }
        }
        Some(path) => {
            let file =
                std::fs::File::create(path).with_context(|| format!("cannot create `{}`", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let n = export::export_query(&store, &q, format, export::PAGE, &mut out)?;
            out.flush()
                .with_context(|| format!("cannot write `{}`", path.display()))?;
            eprintln!(
                "corral: {n} events written to {} ({})",
                path.display(),
                format.as_str()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `corral sessions`.
pub fn sessions(args: SessionsArgs) -> Result<ExitCode> {
    let store = open(&args.store)?;
    let rows = store.sessions()?;
    let live = corral_runtime::control::running(&super::run::run_root());
    // A session with no end whose supervisor is gone (killed with
    // SIGKILL, a crash) is not running.
    let state = |s: &corral_audit::SessionSummary| match s.ended_ns {
        Some(t) => clock(t),
        None if live.contains(&corral_core::SessionId(s.session.id)) => "running".into(),
        None => "unfinished".into(),
    };
    if args.json {
        for s in &rows {
            println!("{}", serde_json::to_string(s)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<11} {:<14} {:<8} {:<18} {:<18} {:>8} {:>8} {:>10} {:>7}  {:<14} policy",
        "session",
        "principal",
        "mode",
        "started",
        "ended",
        "allowed",
        "denied",
        "would-deny",
        "drops",
        "exit"
    );
    for s in &rows {
        println!(
            "{:<11} {:<14} {:<8} {:<18} {:<18} {:>8} {:>8} {:>10} {:>7}  {:<14} {} ({})",
            format!("s{}", s.session.id),
            s.session.principal,
            s.session.mode,
            clock(s.session.started_ns),
            state(s),
            s.allowed,
            s.denied,
            s.would_deny,
            s.drops,
            s.exit.clone().unwrap_or_default(),
            s.session.policy_label,
            s.session.policy_sha256.get(..12).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use corral_audit::Stored;
    use corral_core::{Decision, Event, Layer, Proc, SessionId, What};

    fn http(pid_known: bool, decision: Decision, policies: &[&str], error: Option<&str>) -> Stored {
        Stored {
            id: Some(1),
            // 2023-11-14T22:13:20.123Z
            wall_ns: 1_700_000_000_123_000_000,
            policy_at: policies.iter().map(|_| "team.cedar:12".to_string()).collect(),
            event: Event {
                session: SessionId(7),
                principal: "Agent::\"claude\"".into(),
                ts_ns: 1,
                proc: if pid_known {
                    Proc {
                        pid: 42,
                        ppid: 1,
                        comm: "curl".into(),
                        exe: Some("/usr/bin/curl".into()),
                    }
                } else {
                    Proc::default()
                },
                what: What::Http {
                    stage: "request".into(),
                    method: "GET".into(),
                    scheme: "https".into(),
                    host: "api.github.com".into(),
                    port: 443,
                    path: "/user".into(),
                    status: Some(403),
                    bytes_in: 0,
                    bytes_out: 57,
                    duration_us: 2_100,
                    injected: vec!["authorization".into()],
                    secrets_used: vec![],
                    secrets_withheld: vec!["GITHUB_TOKEN".into()],
                    error: error.map(str::to_string),
                    pid_known,
                },
                decision: Some(decision),
                layer: Layer::Proxy,
                policies: policies.iter().map(|p| p.to_string()).collect(),
                mcp_call: None,
            },
        }
    }

    #[test]
    fn http_rows_are_one_readable_line() {
        let denied = http(
            true,
            Decision::Deny,
            &["forbid-gh"],
            Some("forbidden by forbid-gh"),
        );
        assert_eq!(
            super::row(&denied),
            "11-14 22:13:20.123  s7               42 /usr/bin/curl            http GET     \
             https://api.github.com:443/user          DENY       forbid-gh (team.cedar:12)  \
             -> 403, in 0 B, out 57 B, 2.1 ms, injected [authorization], \
             secrets withheld [GITHUB_TOKEN], error: forbidden by forbid-gh"
        );
        // The proxy was not told the process; an error without a policy is
        // the reason, not default deny; a newline stays on the line.
        let refused = http(false, Decision::Deny, &[], Some("bad\nrequest"));
        let line = super::row(&refused);
        assert!(
            line.contains("  s7                - -                        http GET"),
            "{line}"
        );
        assert!(line.ends_with(", error: bad\\nrequest"), "{line}");
        assert!(!line.contains("default deny"), "{line}");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_date(0), (1970, 1, 1));
        assert_eq!(super::civil_date(20_784), (2026, 11, 27));
        assert_eq!(super::civil_date(11_016), (2000, 2, 29));
    }
}
