//! `GET /api/events/stream`: the live events as Server-Sent Events.
//!
//! The source is the store, polled every [`POLL`] with `after_id`, not
//! `Pipeline::subscribe`: the server may run in another process than the
//! sessions writing the store (a second `corral run` joins the first one's
//! server), and the store is what every process shares. Each event is one
//! SSE message: `id:` the row id (so a reconnecting client's
//! `Last-Event-ID` resumes without a gap), `event: event`, `data:` the
//! event's JSON (the `corral events --json` shape).

use crate::auth::error;
use crate::filters::{EventParams, FilterError};
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use corral_audit::export::jsonl;
use futures_util::stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How often the store is polled.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// At most this many events per poll (the rest come on the next one).
const PAGE: usize = 1000;

pub(crate) async fn events(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(mut p) = match q {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    // Where to start: Last-Event-ID (a reconnect), then after_id, then
    // the newest stored event (only what happens from now on).
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let explicit = resume.or(p.after_id);
    p.limit = Some(PAGE);
    let start = st
        .with_store(move |s| {
            let mut q = p.query(s)?;
            let after = match explicit {
                Some(id) => id,
                None => s
                    .query(&corral_audit::Query {
                        limit: Some(1),
                        ..Default::default()
                    })?
                    .first()
                    .and_then(|r| r.id)
                    .unwrap_or(0),
            };
            q.after_id = Some(after);
            Ok::<_, FilterError>(q)
        })
        .await;
    let query = match start {
        Ok(Ok(q)) => q,
        Ok(Err(FilterError::Store(e))) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let closing = st.closing.subscribe();
    let init = (st, query, closing, std::collections::VecDeque::<Event>::new());
    let s = stream::unfold(init, |(st, mut query, mut closing, mut queue)| async move {
        loop {
            if let Some(ev) = queue.pop_front() {
                return Some((Ok::<_, Infallible>(ev), (st, query, closing, queue)));
            }
            if *closing.borrow() {
                return None;
            }
            let q = query.clone();
            match st.with_store(move |s| s.query(&q)).await {
                Ok(Ok(rows)) => {
                    for r in &rows {
                        let (Some(id), Ok(v)) = (r.id, jsonl::to_value(r)) else {
                            continue;
                        };
                        query.after_id = Some(id);
                        queue.push_back(
                            Event::default()
                                .id(id.to_string())
                                .event("event")
                                .data(v.to_string()),
                        );
                    }
                    if !queue.is_empty() {
                        continue;
                    }
                }
                // A failing store ends the stream with an error message;
                // the client reconnects with Last-Event-ID.
                Ok(Err(e)) => {
                    let ev = Event::default().event("error").data(e.to_string());
                    closing = tokio::sync::watch::Sender::new(true).subscribe();
                    return Some((Ok(ev), (st, query, closing, queue)));
                }
                Err(e) => {
                    let ev = Event::default().event("error").data(e);
                    closing = tokio::sync::watch::Sender::new(true).subscribe();
                    return Some((Ok(ev), (st, query, closing, queue)));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = closing.changed() => {}
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
}
