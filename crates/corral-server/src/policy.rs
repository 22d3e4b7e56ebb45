//! The policy routes: the policy a session runs (`GET /api/policy`) and
//! checking a text without applying it (`POST /api/policy/validate`).
//! Applying a policy and switching modes go through the sessions' control
//! sockets and are not here yet.

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
use corral_core::What;
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
enum Missing {
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
    let row = store
        .sessions()?
        .into_iter()
        .find(|r| r.session.id == id)
        .ok_or_else(|| Missing::NotFound(format!("no session s{id} in the store")))?;
    let loads = store.query(&corral_audit::Query {
        session: Some(id),
        kind: Some(Kind::Policy),
        ..Default::default()
    })?;
    let reloaded = loads.iter().rev().find_map(|s| match &s.event.what {
        What::PolicyLoad {
            sha256, error: None, ..
        } => Some(sha256.clone()),
        _ => None,
    });
    let sha = reloaded.unwrap_or(row.session.policy_sha256);
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
