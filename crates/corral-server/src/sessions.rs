//! The session routes: the list (store rows, with the live status of the
//! running ones from their control sockets and the layers their events
//! came from), and the mode switch and stop of a running session.
//!
//! Control-socket calls block (a Unix socket, one JSON line each way):
//! they run on the blocking pool.

use crate::auth::error;
use crate::filters::session_id;
use crate::routes::internal;
use crate::state::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_control::{ControlError, Reply, Request};
use corral_core::{Mode, SessionId};
use serde::Deserialize;
use std::sync::Arc;

/// `GET /api/sessions`: the store's sessions, each with `running`, `live`
/// (the control socket's status, when running) and `layers`.
pub(crate) async fn list(State(st): State<Arc<AppState>>) -> Response {
    let rows = st
        .with_store(|s| Ok::<_, corral_audit::AuditError>((s.sessions()?, s.layers()?)))
        .await;
    let (rows, layers) = match rows {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    let live = st
        .blocking(|root| {
            corral_control::running(root)
                .into_iter()
                .filter_map(|id| {
                    // A session ending between the two calls is not running.
                    corral_control::request(root, id, &Request::Status)
                        .ok()
                        .map(|r| (id.0, r))
                })
                .collect::<std::collections::BTreeMap<u32, Reply>>()
        })
        .await;
    let live = match live {
        Ok(l) => l,
        Err(e) => return internal(e),
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.session.id;
        let mut v = match serde_json::to_value(&row) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => return internal("a session row is not an object"),
            Err(e) => return internal(e),
        };
        let status = live.get(&id);
        v.insert("running".into(), status.is_some().into());
        v.insert(
            "live".into(),
            match status {
                Some(r) => serde_json::json!({
                    "mode": r.mode,
                    "policy_label": r.policy_label,
                    "policy_sha256": r.policy_sha256,
                }),
                None => serde_json::Value::Null,
            },
        );
        v.insert(
            "layers".into(),
            serde_json::json!(layers.get(&id).cloned().unwrap_or_default()),
        );
        out.push(serde_json::Value::Object(v));
    }
    Json(out).into_response()
}

/// A `{id}` path segment: `s123` or `123` (else the 400's message).
fn path_session(id: Result<Path<String>, PathRejection>) -> Result<SessionId, String> {
    let Path(id) = id.map_err(|e| e.body_text())?;
    session_id(&id).map(SessionId).map_err(|e| e.to_string())
}

/// Sends `req` to session `id`: its reply (200, or 409 when it refused),
/// 404 when it is not running.
pub(crate) async fn control(st: &AppState, id: SessionId, req: Request) -> Response {
    let res = st
        .blocking(move |root| corral_control::request(root, id, &req))
        .await;
    match res {
        Ok(Ok(r)) if r.ok => Json(r).into_response(),
        Ok(Ok(r)) => (StatusCode::CONFLICT, Json(refused(r))).into_response(),
        Ok(Err(ControlError::NotRunning { .. })) => error(
            StatusCode::NOT_FOUND,
            format!("session {id} is not running on this host"),
        ),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// A refusal always says why.
fn refused(mut r: Reply) -> Reply {
    if r.error.is_none() {
        r.error = Some("the session refused the request".into());
    }
    r
}

/// `POST /api/sessions/{id}/mode`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModeBody {
    /// `enforce` or `shadow`.
    mode: Mode,
}

/// `POST /api/sessions/{id}/mode`.
pub(crate) async fn mode(
    State(st): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<ModeBody>, JsonRejection>,
) -> Response {
    let id = match path_session(id) {
        Ok(id) => id,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    control(&st, id, Request::Mode { mode: b.mode }).await
}

/// `POST /api/sessions/{id}/stop`: SIGTERM to the command, SIGKILL after
/// the grace period; answers at once with the session's status.
pub(crate) async fn stop(
    State(st): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match path_session(id) {
        Ok(id) => id,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    control(&st, id, Request::Stop).await
}
