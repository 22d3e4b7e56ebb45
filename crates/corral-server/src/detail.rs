//! One event in full (`GET /api/events/{id}`: the event, its process's
//! parent chain with arguments, the policy in force when it happened and
//! the lines that decided it) and the counts over a filter
//! (`GET /api/stats`).

use crate::auth::error;
use crate::filters::{EventParams, FilterError};
use crate::policy::{policy_sha_at, Missing};
use crate::routes::{bad_query, internal};
use crate::state::AppState;
use axum::extract::rejection::PathRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_audit::export::jsonl;
use corral_audit::{Store, Stored};
use serde::Deserialize;
use std::sync::Arc;

/// The stored event with row id `id`.
pub(crate) fn event_by_id(store: &Store, id: i64) -> Result<Option<Stored>, corral_audit::AuditError> {
    let rows = store.query(&corral_audit::Query {
        after_id: Some(id.saturating_sub(1)),
        limit: Some(1),
        ..Default::default()
    })?;
    Ok(rows.into_iter().find(|r| r.id == Some(id)))
}

/// A row id from the path: a positive integer (else the 400's message).
pub(crate) fn parse_event_id(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("event id `{s}`: expected a positive integer (an event's `id`)"))
}

/// The 1-based lines of `label`'s policies among `policy_at` (`label:line`).
fn lines_of(policy_at: &[String], label: &str) -> Vec<u32> {
    let mut lines: Vec<u32> = policy_at
        .iter()
        .filter_map(|at| {
            let (l, n) = at.rsplit_once(':')?;
            (l == label).then(|| n.parse().ok()).flatten()
        })
        .collect();
    lines.sort_unstable();
    lines.dedup();
    lines
}

fn detail(store: &Store, id: i64) -> Result<serde_json::Value, Missing> {
    let ev =
        event_by_id(store, id)?.ok_or_else(|| Missing::NotFound(format!("no event {id} in the store")))?;
    let process = store.process_chain(&ev.event, id)?;
    let session = ev.event.session.0;
    let policy = match policy_sha_at(store, session, Some(id))? {
        Some(sha) if !sha.is_empty() => store.policy_text(&sha)?.map(|(label, text)| {
            serde_json::json!({
                "lines": lines_of(&ev.policy_at, &label),
                "label": label,
                "sha256": sha,
                "text": text,
            })
        }),
        _ => None,
    };
    let event = jsonl::to_value(&ev).map_err(|e| Missing::Bad(format!("event {id}: {e}")))?;
    Ok(serde_json::json!({
        "event": event,
        "process": process,
        "policy": policy,
    }))
}

/// `GET /api/events/{id}`.
pub(crate) async fn event(
    State(st): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match id {
        Ok(Path(id)) => parse_event_id(&id),
        Err(e) => Err(e.body_text()),
    };
    let id = match id {
        Ok(id) => id,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match st.with_store(move |s| detail(s, id)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(Missing::NotFound(m))) => error(StatusCode::NOT_FOUND, m),
        // Only an event the store cannot encode gets here.
        Ok(Err(Missing::Bad(m))) => internal(m),
        Ok(Err(Missing::Store(e))) => internal(e),
        Err(e) => internal(e),
    }
}

/// `GET /api/stats`'s query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsParams {
    /// `s123`, `123` or `last`.
    session: Option<String>,
    /// `30s`, `10m`, `2h`, `1d`, `1w` or a number of seconds.
    since: Option<String>,
}

/// `GET /api/stats?session=&since=`: counts per kind and decision, drops.
pub(crate) async fn stats(
    State(st): State<Arc<AppState>>,
    q: Result<Query<StatsParams>, QueryRejection>,
) -> Response {
    let Query(p) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let params = EventParams {
        session: p.session,
        since: p.since,
        ..Default::default()
    };
    let res = st
        .with_store(move |s| {
            let q = params.filters().query(s)?;
            Ok::<_, FilterError>(s.stats(&q)?)
        })
        .await;
    match res {
        Ok(Ok(stats)) => Json(stats).into_response(),
        Ok(Err(FilterError::Store(e))) => internal(e),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_the_labels_own() {
        let at = vec![
            "p.cedar:3".to_string(),
            "other:9".into(),
            "p.cedar:12".into(),
            "p.cedar:3".into(),
        ];
        assert_eq!(lines_of(&at, "p.cedar"), vec![3, 12]);
        assert_eq!(
            lines_of(&["<default policy>:36".to_string()], "<default policy>"),
            vec![36]
        );
        assert!(lines_of(&at, "x").is_empty());
    }
}
