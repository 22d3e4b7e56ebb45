//! The routes: one table ([`api_routes`]) that the router is built from and
//! that the OpenAPI test checks against `openapi.json`, and the handlers.

use crate::auth::{self, error};
use crate::filters::EventParams;
use crate::state::AppState;
use crate::{detail, policy, sessions, start, stream};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use corral_audit::export::jsonl;
use std::sync::Arc;

/// The OpenAPI document, served as is.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// Every `/api` route: (method, path, handler). The router is built from
/// this table and nothing else, so a test over it covers the router.
pub(crate) fn api_routes() -> Vec<(&'static str, &'static str, MethodRouter<Arc<AppState>>)> {
    vec![
        ("get", "/api/health", get(health)),
        ("get", "/api/sessions", get(sessions::list)),
        ("post", "/api/sessions", post(start::start)),
        ("post", "/api/sessions/{id}/mode", post(sessions::mode)),
        ("post", "/api/sessions/{id}/stop", post(sessions::stop)),
        ("get", "/api/events", get(events)),
        ("get", "/api/events/stream", get(stream::events)),
        ("get", "/api/events/{id}", get(detail::event)),
        ("get", "/api/stats", get(detail::stats)),
        ("get", "/api/policy", get(policy::current)),
        ("post", "/api/policy/validate", post(policy::validate)),
        ("post", "/api/policy/suggest", post(policy::suggest)),
        ("post", "/api/policy/apply", post(policy::apply)),
        ("get", "/api/openapi.json", get(openapi)),
    ]
}

/// The whole application: `/` (token to cookie) and the `/api` routes
/// behind the token, everything behind the Host/Origin check and with the
/// [`auth::hardening`] headers.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let api = api_routes()
        .into_iter()
        .fold(Router::new(), |r, (_, path, mr)| r.route(path, mr));
    Router::new()
        .route("/", get(auth::root))
        .route("/assets/{file}", get(crate::assets::asset))
        .merge(api)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        // Layers run bottom-up: Host/Origin first, then the token (on every
        // `/api` path, unknown ones included, so the 404 says nothing to a
        // caller without the token), then the handler.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token_assets,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::same_origin,
        ))
        .layer(axum::middleware::map_response(auth::hardening))
        .with_state(state)
}

/// Maps a store failure to a 500 with its message.
pub(crate) fn internal(msg: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, msg.to_string())
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "store": st.store_path.display().to_string(),
        "uptime_s": st.started.elapsed().as_secs(),
    }))
    .into_response()
}

/// A query string that does not parse (an unknown parameter, a limit that
/// is not a number) is a 400 with serde's message, which names the field.
pub(crate) fn bad_query(e: axum::extract::rejection::QueryRejection) -> Response {
    error(StatusCode::BAD_REQUEST, e.body_text())
}

async fn events(
    State(st): State<Arc<AppState>>,
    q: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let res = st
        .with_store(move |s| {
            let q = p.query(s)?;
            Ok::<_, crate::filters::FilterError>(s.query(&q)?)
        })
        .await;
    let rows = match res {
        Ok(Ok(rows)) => rows,
        Ok(Err(crate::filters::FilterError::Store(e))) => return internal(e),
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return internal(e),
    };
    let last_id = rows.iter().filter_map(|r| r.id).max();
    let events: Result<Vec<_>, _> = rows.iter().map(jsonl::to_value).collect();
    match events {
        Ok(events) => Json(serde_json::json!({ "events": events, "last_id": last_id })).into_response(),
        Err(e) => internal(e),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
