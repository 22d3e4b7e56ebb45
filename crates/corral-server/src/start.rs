//! `POST /api/sessions`: start a session from the UI — `corral run` with
//! the given command, project, policy and mode, recording to this server's
//! store, detached from the server (its own process group; the server only
//! reaps it), its output in a log file.
//!
//! Only a server that knows the corral binary does this
//! ([`crate::ServerConfig::start`]; `corral ui serve` sets it); any other
//! answers 403. The
//! session is governed like any other: the policy decides what it may do.
//! Whoever holds the token is the user (as with Jupyter's token): starting
//! a governed command as the user gives them nothing they do not have.

use crate::auth::error;
use crate::state::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the route waits for the session's banner (its id).
const BANNER_TIMEOUT: Duration = Duration::from_secs(20);

/// What starting sessions needs.
#[derive(Debug, Clone)]
pub struct StartConfig {
    /// The `corral` binary.
    pub exe: PathBuf,
    /// Where each started session's output goes (`<dir>/<time>-<pid>.log`).
    pub log_dir: PathBuf,
}

/// `POST /api/sessions`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    /// The command and its arguments.
    command: Vec<String>,
    /// The project directory (absolute, existing).
    project: String,
    /// A policy file (absolute); default: the project's configuration.
    #[serde(default)]
    policy: Option<String>,
    /// Shadow mode.
    #[serde(default)]
    shadow: bool,
    /// The principal's name (`--as`).
    #[serde(default)]
    principal: Option<String>,
}

/// Checks the body: what is wrong, in words, or the arguments of `corral run`.
fn arguments(b: &StartBody, store: &Path) -> Result<Vec<String>, String> {
    if b.command.is_empty() || b.command[0].trim().is_empty() {
        return Err("`command` must name a program".into());
    }
    let project = Path::new(&b.project);
    if !project.is_absolute() || !project.is_dir() {
        return Err(format!(
            "`project` {:?} is not an absolute path to a directory",
            b.project
        ));
    }
    let mut args = vec!["run".to_string(), "--project".into(), b.project.clone()];
    args.push("--store".into());
    args.push(store.display().to_string());
    if let Some(p) = &b.policy {
        let path = Path::new(p);
        if !path.is_absolute() || !path.is_file() {
            return Err(format!("`policy` {p:?} is not an absolute path to a file"));
        }
        args.push("--policy".into());
        args.push(p.clone());
    }
    if b.shadow {
        args.push("--shadow".into());
    }
    if let Some(name) = &b.principal {
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err("`principal` must be 1-128 characters, no control characters".into());
        }
        args.push("--as".into());
        args.push(name.clone());
    }
    args.push("--".into());
    args.extend(b.command.iter().cloned());
    Ok(args)
}

/// The session id in a banner line (`corral: session s123 · ...`).
fn banner_id(log: &str) -> Option<u32> {
    log.lines().find_map(|l| {
        l.strip_prefix("corral: session s")?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// `POST /api/sessions`: 201 `{session, pid, log}` once the session has
/// started (its banner names it), 422 with the log's last lines when
/// `corral run` refused to start it, 400 for a bad body, 403 when this
/// server does not start sessions.
pub(crate) async fn start(
    State(st): State<Arc<AppState>>,
    body: Result<Json<StartBody>, JsonRejection>,
) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Some(cfg) = st.start.clone() else {
        // Refused by this server's configuration (a library user that
        // gave no StartConfig), not a server fault.
        return error(
            StatusCode::FORBIDDEN,
            "this server does not start sessions (it was not given the corral binary)",
        );
    };
    let args = match arguments(&b, &st.store_path) {
        Ok(a) => a,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    if let Err(e) = std::fs::create_dir_all(&cfg.log_dir) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot create {}: {e}", cfg.log_dir.display()),
        );
    }
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let log_path = cfg.log_dir.join(format!("{stamp}-{}.log", std::process::id()));
    let log = match std::fs::File::create(&log_path) {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot create {}: {e}", log_path.display()),
            )
        }
    };
    let err_log = match log.try_clone() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut cmd = tokio::process::Command::new(&cfg.exe);
    cmd.args(&args)
        .current_dir(&b.project)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        // Its own process group: a signal to the server is not one to it.
        .process_group(0)
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start {}: {e}", cfg.exe.display()),
            )
        }
    };
    let pid = child.id().unwrap_or(0);
    let deadline = Instant::now() + BANNER_TIMEOUT;
    loop {
        let text = tokio::fs::read_to_string(&log_path).await.unwrap_or_default();
        if let Some(id) = banner_id(&text) {
            // The server reaps it when it ends (no zombie), nothing more.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            return (
                StatusCode::CREATED,
                Json(serde_json::json!({
                    "session": id,
                    "pid": pid,
                    "log": log_path.display().to_string(),
                })),
            )
                .into_response();
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "corral run ended before the session started ({status}): {}",
                    tail.join("\n")
                ),
            );
        }
        if Instant::now() > deadline {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the session did not start within {} s (pid {pid}, log {})",
                    BANNER_TIMEOUT.as_secs(),
                    log_path.display()
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_id_reads_the_session() {
        assert_eq!(
            banner_id("x\ncorral: session s42 · principal sh · policy p\n"),
            Some(42)
        );
        assert_eq!(banner_id("corral: control UI http://x\n"), None);
    }
}
