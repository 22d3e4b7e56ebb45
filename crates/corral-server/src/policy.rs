//! The policy routes: the policy a session runs (`GET /api/policy`),
//! checking a text without applying it (`POST /api/policy/validate`),
//! drafting a rule from an event (`POST /api/policy/suggest`) and applying
//! a text to running sessions through their control sockets
//! (`POST /api/policy/apply`).

use crate::auth::error;
use crate::filters::session_id;
use crate::routes::{bad_query, internal};
use crate::state::AppState;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_audit::{Kind, Store};
use corral_control::{ControlError, Request};
use corral_core::{SessionId, What};
use corral_policy::suggest::Effect;
use serde::Deserialize;
use std::sync::Arc;

/// `GET /api/policy`'s query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyParams {
    /// `s123`, `123` or `last` (the default).
    session: Option<String>,
}

/// Why there is no policy to show.
pub(crate) enum Missing {
    /// A bad parameter (400).
    Bad(String),
    /// No such session or policy text (404).
    NotFound(String),
    /// The store failed (500).
    Store(corral_audit::AuditError),
}

impl From<corral_audit::AuditError> for Missing {
    fn from(e: corral_audit::AuditError) -> Self {
        Missing::Store(e)
    }
}

/// The session's policy now: the newest policy load it accepted (a reload
/// the session refused does not count), else the one it started with.
fn current_policy(store: &Store, session: Option<&str>) -> Result<serde_json::Value, Missing> {
    let id = match session.unwrap_or("last") {
        "last" => store
            .last_session()?
            .ok_or_else(|| Missing::NotFound("no session recorded yet".into()))?,
        s => session_id(s).map_err(|e| Missing::Bad(e.to_string()))?,
    };
    let sha = policy_sha_at(store, id, None)?
        .ok_or_else(|| Missing::NotFound(format!("no session s{id} in the store")))?;
    let (label, text) = store.policy_text(&sha)?.ok_or_else(|| {
        Missing::NotFound(format!(
            "session s{id}: the text of policy {sha} was not recorded"
        ))
    })?;
    Ok(serde_json::json!({
        "session": id,
        "label": label,
        "sha256": sha,
        "text": text,
    }))
}

/// The SHA-256 of the policy session `id` ran under just after event
/// `at` (`None`: now): its newest accepted policy load up to there, else
/// the one it started with. `None` when the store does not know the
/// session.
pub(crate) fn policy_sha_at(store: &Store, id: u32, at: Option<i64>) -> Result<Option<String>, Missing> {
    let Some(row) = store.sessions()?.into_iter().find(|r| r.session.id == id) else {
        return Ok(None);
    };
    let loads = store.query(&corral_audit::Query {
        session: Some(id),
        kind: Some(Kind::Policy),
        ..Default::default()
    })?;
    let reloaded = loads
        .iter()
        .rev()
        .filter(|s| at.is_none_or(|at| s.id.is_some_and(|i| i <= at)))
        .find_map(|s| match &s.event.what {
            What::PolicyLoad {
                sha256, error: None, ..
            } => Some(sha256.clone()),
            _ => None,
        });
    Ok(Some(reloaded.unwrap_or(row.session.policy_sha256)))
}

/// `GET /api/policy?session=`.
pub(crate) async fn current(
    State(st): State<Arc<AppState>>,
    q: Result<Query<PolicyParams>, QueryRejection>,
) -> Response {
    let Query(p) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    match st
        .with_store(move |s| current_policy(s, p.session.as_deref()))
        .await
    {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(Missing::Bad(m))) => error(StatusCode::BAD_REQUEST, m),
        Ok(Err(Missing::NotFound(m))) => error(StatusCode::NOT_FOUND, m),
        Ok(Err(Missing::Store(e))) => internal(e),
        Err(e) => internal(e),
    }
}

/// `POST /api/policy/validate`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidateBody {
    /// The policy text.
    text: String,
    /// The name diagnostics give the text (default `policy.cedar`).
    #[serde(default)]
    name: Option<String>,
}

/// `POST /api/policy/validate`.
pub(crate) async fn validate(body: Result<Json<ValidateBody>, JsonRejection>) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let name = b.name.unwrap_or_else(|| "policy.cedar".into());
    // Compiling a policy is CPU work: off the async threads.
    let checked = tokio::task::spawn_blocking(move || {
        let c = corral_policy::check(vec![corral_policy::Source::new(name, b.text)]);
        (c.ok(), c.diagnostics)
    })
    .await;
    match checked {
        Ok((ok, diagnostics)) => {
            Json(serde_json::json!({ "ok": ok, "diagnostics": diagnostics })).into_response()
        }
        Err(e) => internal(e),
    }
}

/// `POST /api/policy/suggest`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuggestBody {
    /// The event's row id.
    event: i64,
    /// `permit` or `forbid`.
    effect: Effect,
}

/// `POST /api/policy/suggest`: one rule permitting or forbidding exactly
/// what the event asked (`corral_policy::suggest::draft`).
pub(crate) async fn suggest(
    State(st): State<Arc<AppState>>,
    body: Result<Json<SuggestBody>, JsonRejection>,
) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if b.event <= 0 {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`event` {}: expected a positive event id", b.event),
        );
    }
    let id = b.event;
    let ev = match st.with_store(move |s| crate::detail::event_by_id(s, id)).await {
        Ok(Ok(Some(ev))) => ev,
        Ok(Ok(None)) => return error(StatusCode::NOT_FOUND, format!("no event {id} in the store")),
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    let verb = match b.effect {
        Effect::Permit => "permit",
        Effect::Forbid => "forbid",
    };
    let rule_id = format!("ui-{verb}-{id}");
    let origin = format!("event {id} of {}", ev.event.session);
    match corral_policy::suggest::draft(&ev.event, b.effect, &rule_id, &origin) {
        Ok(text) => Json(serde_json::json!({ "text": text })).into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, format!("event {id}: {e}")),
    }
}

/// A session named in `POST /api/policy/apply`: `3` or `"s3"`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum SessionRef {
    /// The number.
    Num(u32),
    /// `s3` or `3`.
    Text(String),
}

/// `POST /api/policy/apply`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyBody {
    /// The policy text.
    text: String,
    /// Its label in the sessions and the audit trail (default `ui`).
    #[serde(default)]
    label: Option<String>,
    /// The running sessions to load it into.
    sessions: Vec<SessionRef>,
}

/// `POST /api/policy/apply`: validates the text (any error: 422 with the
/// diagnostics, nothing applied), then reloads it into each session and
/// answers each one's result.
pub(crate) async fn apply(
    State(st): State<Arc<AppState>>,
    body: Result<Json<ApplyBody>, JsonRejection>,
) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let mut ids = Vec::with_capacity(b.sessions.len());
    for s in &b.sessions {
        match s {
            SessionRef::Num(n) => ids.push(SessionId(*n)),
            SessionRef::Text(t) => match session_id(t) {
                Ok(n) => ids.push(SessionId(n)),
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("`sessions`: {e}")),
            },
        }
    }
    ids.dedup();
    let label = b
        .label
        .filter(|l| !l.trim().is_empty())
        .unwrap_or_else(|| "ui".into());
    let (name, text) = (label.clone(), b.text.clone());
    let checked = tokio::task::spawn_blocking(move || {
        let c = corral_policy::check(vec![corral_policy::Source::new(name, text)]);
        (c.ok(), c.diagnostics)
    })
    .await;
    let diagnostics = match checked {
        Ok((true, _)) => None,
        Ok((false, d)) => Some(d),
        Err(e) => return internal(e),
    };
    if let Some(diagnostics) = diagnostics {
        let n = diagnostics.iter().filter(|d| d.is_error()).count();
        let first = diagnostics
            .iter()
            .find(|d| d.is_error())
            .map(|d| match d.line {
                Some(l) => format!(": line {l}: {}", d.message),
                None => format!(": {}", d.message),
            })
            .unwrap_or_default();
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "error": format!("the policy has {n} error(s){first}; nothing was applied"),
                "diagnostics": diagnostics,
            })),
        )
            .into_response();
    }
    let (text, l) = (b.text, label);
    let results = st
        .blocking(move |root| {
            ids.into_iter()
                .map(|id| {
                    let req = Request::Reload {
                        label: l.clone(),
                        text: text.clone(),
                    };
                    match corral_control::request(root, id, &req) {
                        Ok(r) if r.ok => serde_json::json!({
                            "session": id.0, "ok": true, "policy_sha256": r.policy_sha256,
                        }),
                        Ok(r) => serde_json::json!({
                            "session": id.0, "ok": false,
                            "error": r.error.unwrap_or_else(|| "the session refused the policy".into()),
                            "policy_sha256": r.policy_sha256,
                        }),
                        Err(ControlError::NotRunning { .. }) => serde_json::json!({
                            "session": id.0, "ok": false,
                            "error": format!("session {id} is not running on this host"),
                        }),
                        Err(e) => serde_json::json!({
                            "session": id.0, "ok": false, "error": e.to_string(),
                        }),
                    }
                })
                .collect::<Vec<_>>()
        })
        .await;
    match results {
        Ok(results) => Json(serde_json::json!({ "results": results })).into_response(),
        Err(e) => internal(e),
    }
}
