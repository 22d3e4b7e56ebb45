//! `GET /api/events/stream`: the live events as Server-Sent Events.
//!
//! The source is the store, re-queried with `after_id` whenever its files
//! change ([`crate::watch`]: inotify, shared by every stream) and at least
//! every [`FALLBACK`], not `Pipeline::subscribe`: the server may run in
//! another process than the sessions writing the store (a second `corral
//! run` joins the first one's server), and the store is what every process
//! shares. Each event is one SSE message: `id:` the row id (so a
//! reconnecting client's `Last-Event-ID` resumes without a gap), `event:
//! event`, `data:` the event's JSON (the `corral events --json` shape).
//! Every [`STATS_EVERY`] (and first thing) an `event: stats` message
//! carries `/api/stats` for the stream's `session` filter, without an `id:`
//! (so it does not move `Last-Event-ID`).

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

use crate::watch::FALLBACK;

/// How often a stream sends its stats.
pub(crate) const STATS_EVERY: Duration = Duration::from_secs(1);

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
    let mut changes = st.changes.clone();
    changes.mark_unchanged();
    let stats_query = corral_audit::Query {
        session: query.session,
        ..Default::default()
    };
    let init = Live {
        st,
        query,
        stats_query,
        closing,
        changes,
        queue: std::collections::VecDeque::new(),
        next_stats: tokio::time::Instant::now(),
    };
    let s = stream::unfold(init, |mut l| async move {
        loop {
            if let Some(ev) = l.queue.pop_front() {
                return Some((Ok::<_, Infallible>(ev), l));
            }
            if *l.closing.borrow() {
                return None;
            }
            if tokio::time::Instant::now() >= l.next_stats {
                l.next_stats = tokio::time::Instant::now() + STATS_EVERY;
                let q = l.stats_query.clone();
                match l.st.with_store(move |s| s.stats(&q)).await {
                    Ok(Ok(stats)) => {
                        if let Ok(data) = serde_json::to_string(&stats) {
                            return Some((Ok(Event::default().event("stats").data(data)), l));
                        }
                    }
                    Ok(Err(e)) => return Some((Ok(l.fail(e.to_string())), l)),
                    Err(e) => return Some((Ok(l.fail(e)), l)),
                }
            }
            let q = l.query.clone();
            match l.st.with_store(move |s| s.query(&q)).await {
                Ok(Ok(rows)) => {
                    for r in &rows {
                        let (Some(id), Ok(v)) = (r.id, jsonl::to_value(r)) else {
                            continue;
                        };
                        l.query.after_id = Some(id);
                        l.queue.push_back(
                            Event::default()
                                .id(id.to_string())
                                .event("event")
                                .data(v.to_string()),
                        );
                    }
                    if !l.queue.is_empty() {
                        continue;
                    }
                }
                // A failing store ends the stream with an error message;
                // the client reconnects with Last-Event-ID.
                Ok(Err(e)) => return Some((Ok(l.fail(e.to_string())), l)),
                Err(e) => return Some((Ok(l.fail(e)), l)),
            }
            let wait = FALLBACK.min(
                l.next_stats
                    .saturating_duration_since(tokio::time::Instant::now()),
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // No watcher (inotify unavailable): poll.
                r = l.changes.changed() => if r.is_err() { tokio::time::sleep(wait).await },
                _ = l.closing.changed() => {}
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
}

/// One stream's state between messages.
struct Live {
    st: Arc<AppState>,
    /// The events query (its `after_id` moves forward).
    query: corral_audit::Query,
    /// The stats query (the stream's session, nothing else).
    stats_query: corral_audit::Query,
    closing: tokio::sync::watch::Receiver<bool>,
    changes: tokio::sync::watch::Receiver<u64>,
    queue: std::collections::VecDeque<Event>,
    next_stats: tokio::time::Instant,
}

impl Live {
    /// An `event: error` message; the stream ends after it.
    fn fail(&mut self, msg: String) -> Event {
        self.closing = tokio::sync::watch::Sender::new(true).subscribe();
        Event::default().event("error").data(msg)
    }
}
