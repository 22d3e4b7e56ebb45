//! `corral policy suggest`: reads a session's denials from the audit store
//! and writes the policy that would have allowed them.

use anyhow::{bail, Context as _, Result};
use corral_audit::{Query, SessionSummary, Store};
use corral_core::{Decision, Event};
use corral_policy::suggest::{home_from_policy, suggest, Options, PathKind, Suggestion};
use corral_policy::Source;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Events read from the store per query.
const PAGE: usize = 10_000;

/// `corral policy suggest` arguments.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  corral run --shadow -- make test\n  corral policy suggest --session last --output suggested.cedar\n  corral run --policy suggested.cedar -- make test"
)]
pub struct SuggestArgs {
    /// The session: an id (`s123` or `123`) or `last`.
    #[arg(long)]
    session: String,
    /// The policy to extend (default: the session's own, from the store).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The audit store (default: ~/.local/state/corral/audit.db).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Write the suggested policy here (default: stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Print the diff on stdout (and nothing else there); the policy is
    /// written only with --output.
    #[arg(long)]
    diff: bool,
    /// Also permit the default policy's secrets (~/.ssh, ~/.aws, /etc/shadow, ...).
    #[arg(long)]
    allow_secrets: bool,
    /// From this many distinct objects denied in one directory on, permit
    /// the whole directory (`resource in Dir::"..."`) instead of each one.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    min_files_for_dir: u32,
}

/// Runs `corral policy suggest`.
pub fn run(args: SuggestArgs) -> Result<ExitCode> {
    let store = crate::commands::events::open(&args.store)?;
    let id = crate::commands::events::session_arg(&store, &args.session)?;
    let row = store.sessions()?.into_iter().find(|s| s.session.id == id);
    let stored = match row.as_ref().filter(|r| !r.session.policy_sha256.is_empty()) {
        Some(r) => store.policy_text(&r.session.policy_sha256)?,
        None => None,
    };
    let current = match (&args.policy, &stored) {
        (Some(p), _) => Source::new(
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("cannot read `{}`", p.display()))?,
        ),
        (None, Some((label, text))) => Source::new(label.clone(), text.clone()),
        (None, None) => bail!(
            "the store has no policy text for session s{id}; pass the policy it ran under with --policy FILE"
        ),
    };
    let home = stored
        .as_ref()
        .and_then(|(_, t)| home_from_policy(t))
        .or_else(|| home_from_policy(&current.text))
        .or_else(|| {
            std::env::var("HOME")
                .ok()
                .filter(|h| h.starts_with('/') && h != "/")
        })
        .unwrap_or_else(|| "/root".into());
    // Another policy than the session's may deny what the session's allowed.
    let include_allowed = stored.as_ref().is_none_or(|(_, t)| *t != *current.text);
    let mut decisions = vec![Decision::Deny, Decision::WouldDeny];
    if include_allowed {
        decisions.push(Decision::Allow);
    }
    let events = decisions_of(&store, id, &decisions)?;

    let label = match &args.output {
        Some(o) => o.display().to_string(),
        None => "suggested policy".into(),
    };
    let kind = path_kind;
    let mut opts = Options::new(&home);
    opts.allow_secrets = args.allow_secrets;
    opts.include_allowed = include_allowed;
    opts.min_files_for_dir = args.min_files_for_dir as usize;
    opts.suggested_label = &label;
    opts.path_kind = &kind;
    let s = suggest(&events, &current, &opts).map_err(|e| {
        use corral_policy::suggest::SuggestError as E;
        if let E::Current { diagnostics, .. } | E::Invalid { diagnostics } = &e {
            for d in diagnostics {
                eprint!("{}", d.render());
            }
        }
        anyhow::Error::new(e)
    })?;

    if args.diff {
        emit(&s.diff)?;
    }
    match &args.output {
        Some(o) => std::fs::write(o, &s.policy).with_context(|| format!("cannot write `{}`", o.display()))?,
        None if !args.diff => emit(&s.policy)?,
        None => {}
    }
    if !args.diff {
        eprint!("{}", s.diff);
    }
    summary(&s, id, row.as_ref(), &store)?;
    if include_allowed {
        eprintln!(
            "note: `{}` is not the policy session s{id} ran under: its allowed events were checked against it too",
            current.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What a path is on this host. In default mode the session sees the host's
/// directories (read-only binds), so this is what it opened; a path that is
/// not here (a session-private /tmp, an image) is unknown.
fn path_kind(p: &str) -> PathKind {
    match std::fs::symlink_metadata(Path::new(p)) {
        Ok(m) if m.is_dir() => PathKind::Dir,
        Ok(_) => PathKind::File,
        Err(_) => PathKind::Unknown,
    }
}

/// The events of a session with one of these decisions, oldest first, read
/// in pages.
fn decisions_of(store: &Store, session: u32, decisions: &[Decision]) -> Result<Vec<Event>> {
    let mut out: Vec<(i64, Event)> = Vec::new();
    for decision in decisions.iter().copied() {
        let mut after = 0;
        loop {
            let page = store.query(&Query {
                session: Some(session),
                decision: Some(decision),
                limit: Some(PAGE),
                after_id: Some(after),
                ..Default::default()
            })?;
            let n = page.len();
            for s in page {
                let id = s.id.unwrap_or_default();
                after = after.max(id);
                out.push((id, s.event));
            }
            if n < PAGE {
                break;
            }
        }
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out.into_iter().map(|(_, e)| e).collect())
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// The summary on stderr: rules, events covered, what was skipped and why,
/// and what may be missing from the record.
fn summary(s: &Suggestion, id: u32, row: Option<&SessionSummary>, store: &Store) -> Result<()> {
    let skipped_events: usize = s.skipped.iter().map(|k| k.events).sum();
    eprintln!(
        "corral: {} {} added covering {} {}, {} skipped ({} {})",
        s.added.len(),
        plural(s.added.len(), "rule", "rules"),
        s.covered,
        plural(s.covered, "event", "events"),
        s.skipped.len(),
        skipped_events,
        plural(skipped_events, "event", "events"),
    );
    for k in &s.skipped {
        eprintln!(
            "  skipped {} {} ({} {}, principal {}): {}",
            k.action.map(|a| a.name()).unwrap_or("-"),
            k.target,
            k.events,
            plural(k.events, "event", "events"),
            k.principal,
            k.reason
        );
    }
    if s.skipped.iter().any(|k| k.reason.code() == "secret") {
        eprintln!("  (secrets are never suggested unless --allow-secrets is given)");
    }
    if s.already_allowed > 0 {
        eprintln!(
            "  {} denied {} already allowed by the current policy",
            s.already_allowed,
            plural(s.already_allowed, "event is", "events are")
        );
    }
    let drops: u64 = store.drops(id)?.iter().map(|(_, n)| n).sum();
    let lost = row.and_then(|r| r.lost).unwrap_or(0).max(drops);
    if lost > 0 {
        eprintln!(
            "warning: session s{id} lost {lost} {} before they were stored; the suggestion may not cover everything it did",
            plural(lost as usize, "event", "events")
        );
    }
    if row.is_some_and(|r| r.session.mode == "enforce") && (s.covered > 0 || !s.skipped.is_empty()) {
        eprintln!(
            "note: session s{id} ran in enforce mode: what its denied steps would have led to was never recorded; a --shadow run records it"
        );
    }
    Ok(())
}

/// Writes to stdout; a closed pipe is not an error.
fn emit(s: &str) -> Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(s.as_bytes()).and_then(|_| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
