//! `corral mode`, `corral reload` and `corral stop`: control a running session through its
//! control socket (corral_runtime::control).

use anyhow::{bail, Context as _, Result};
use corral_core::{Mode, SessionId};
use corral_runtime::control::{self, Reply, Request};
use std::path::PathBuf;
use std::process::ExitCode;

/// `corral mode` arguments.
#[derive(clap::Args)]
pub struct ModeArgs {
    /// `enforce` or `shadow`; omitted: show the current mode.
    mode: Option<String>,
    /// The running session (`s123` or `123`); default: the only one running.
    #[arg(long)]
    session: Option<String>,
}

/// `corral reload` arguments.
#[derive(clap::Args)]
pub struct ReloadArgs {
    /// The new policy file (validated and compiled by the session; on any
    /// error the policy in force stays, unchanged).
    policy: PathBuf,
    /// The running session (`s123` or `123`); default: the only one running.
    #[arg(long)]
    session: Option<String>,
}

/// `corral stop` arguments.
#[derive(clap::Args)]
pub struct StopArgs {
    /// The running session (`s123` or `123`); default: the only one running.
    session: Option<String>,
}

/// The session named, or the only one running.
fn pick(flag: Option<&str>) -> Result<SessionId> {
    if let Some(s) = flag {
        return Ok(SessionId(super::events::parse_session_id(s)?));
    }
    let running = control::running(&super::run::run_root());
    match running.as_slice() {
        [one] => Ok(*one),
        [] => bail!("no session is running on this host"),
        many => bail!(
            "{} sessions are running ({}); name one with --session",
            many.len(),
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn show(r: &Reply) {
    println!(
        "session {} · principal {} · mode {} · policy {} ({})",
        r.session,
        r.principal,
        match r.mode {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        },
        r.policy_label,
        r.policy_sha256.get(..12).unwrap_or_default()
    );
}

fn send(id: SessionId, req: &Request) -> Result<ExitCode> {
    let r = control::request(&super::run::run_root(), id, req)?;
    if let Some(e) = &r.error {
        eprint!("{e}");
        if !e.ends_with('\n') {
            eprintln!();
        }
        bail!("session {id}: refused");
    }
    show(&r);
    Ok(ExitCode::SUCCESS)
}

/// Runs `corral mode`.
pub fn mode(args: ModeArgs) -> Result<ExitCode> {
    let id = pick(args.session.as_deref())?;
    let req = match args.mode.as_deref() {
        None => Request::Status,
        Some("enforce") => Request::Mode { mode: Mode::Enforce },
        Some("shadow") => Request::Mode { mode: Mode::Shadow },
        Some(m) => bail!("mode {m:?}: expected enforce or shadow"),
    };
    send(id, &req)
}

/// Runs `corral reload`.
pub fn reload(args: ReloadArgs) -> Result<ExitCode> {
    let id = pick(args.session.as_deref())?;
    let text = std::fs::read_to_string(&args.policy)
        .with_context(|| format!("cannot read the policy {}", args.policy.display()))?;
    send(
        id,
        &Request::Reload {
            label: args.policy.display().to_string(),
            text,
        },
    )
}

/// Runs `corral stop`: asks the session to end and returns once it has
/// accepted (the command ends within the grace period).
pub fn stop(args: StopArgs) -> Result<ExitCode> {
    let id = pick(args.session.as_deref())?;
    send(id, &Request::Stop)
}
