//! Who may talk to the server: the Host and Origin checks (every route) and
//! the token check (every `/api/*` route), and `GET /?token=`, which trades
//! the token in the banner's URL for a cookie.
//!
//! Nothing here reads the store or a session; it only lets a request
//! through or answers it with an error.

use crate::state::AppState;
use crate::token;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

/// The cookie that carries the token after `GET /?token=`.
pub const COOKIE: &str = "corral_token";

/// A JSON error body: `{"error": "..."}`.
pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

/// Refuses a request whose Host is not the server's own (a DNS-rebinding
/// page reaches us under its own name) or whose Origin is another site's
/// (a page elsewhere posting to us).
pub(crate) async fn same_origin(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match host {
        Some(h) if st.hosts.iter().any(|a| a.eq_ignore_ascii_case(h)) => {}
        Some(h) => {
            return error(
                StatusCode::FORBIDDEN,
                format!("host `{h}` is not this server's address"),
            )
        }
        None => return error(StatusCode::FORBIDDEN, "the request has no Host header"),
    }
    if let Some(o) = headers.get(header::ORIGIN) {
        let o = o.to_str().unwrap_or("");
        if !st.origins.iter().any(|a| a.eq_ignore_ascii_case(o)) {
            return error(
                StatusCode::FORBIDDEN,
                format!("origin `{o}` may not use this server"),
            );
        }
    }
    next.run(req).await
}

/// Headers on every response: nothing is cached (answers carry the audit
/// trail; the redirect carries the cookie), no page may frame ours, no
/// content sniffing, no Referer (the first URL has the token).
pub(crate) async fn hardening(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The UI's pages and assets bring their own (stricter) policy.
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static("frame-ancestors 'none'"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// The token a request carries: `Authorization: Bearer <t>` first, then
/// the `corral_token` cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(a) = headers.get(header::AUTHORIZATION) {
        return a.to_str().ok()?.strip_prefix("Bearer ").map(str::trim);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE).then_some(v)
        })
}

/// True for the paths behind the token: `/api` and everything under it.
fn needs_token(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// Lets through only requests that carry the token (on `/api` paths; `/`
/// checks the token itself).
pub(crate) async fn require_token(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !needs_token(req.uri().path()) {
        return next.run(req).await;
    }
    match presented(req.headers()) {
        Some(t) if token::matches(t.as_bytes(), st.token.as_bytes()) => next.run(req).await,
        Some(_) => error(StatusCode::UNAUTHORIZED, "wrong access token"),
        None => error(
            StatusCode::UNAUTHORIZED,
            "no access token: open the URL corral printed, or send `Authorization: Bearer <token>`",
        ),
    }
}

/// `GET /`'s query.
#[derive(Deserialize)]
pub(crate) struct RootParams {
    token: Option<String>,
}

/// `GET /?token=<t>`: sets the cookie and redirects to `/` (so the token
/// leaves the address bar and the history). `GET /` with the cookie: the
/// UI; without: a 401 page saying to open the banner's URL.
pub(crate) async fn root(
    State(st): State<Arc<AppState>>,
    Query(p): Query<RootParams>,
    headers: HeaderMap,
) -> Response {
    if let Some(t) = p.token {
        if !token::matches(t.as_bytes(), st.token.as_bytes()) {
            return error(StatusCode::UNAUTHORIZED, "wrong access token");
        }
        let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", st.token);
        let Ok(cookie) = HeaderValue::from_str(&cookie) else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "unusable token");
        };
        let mut r = StatusCode::SEE_OTHER.into_response();
        r.headers_mut().insert(header::SET_COOKIE, cookie);
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/"));
        return r;
    }
    match presented(&headers) {
        Some(t) if token::matches(t.as_bytes(), st.token.as_bytes()) => crate::assets::index(),
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            crate::assets::NO_TOKEN_PAGE,
        )
            .into_response(),
    }
}

/// Lets through only requests that carry the token (on `/assets/` paths:
/// the UI's files need the cookie like the API does).
pub(crate) async fn require_token_assets(
    State(st): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if !req.uri().path().starts_with("/assets/") {
        return next.run(req).await;
    }
    match presented(req.headers()) {
        Some(t) if token::matches(t.as_bytes(), st.token.as_bytes()) => next.run(req).await,
        _ => error(
            StatusCode::UNAUTHORIZED,
            "no access token: open the URL corral printed",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                k.clone(),
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        m
    }

    #[test]
    fn token_paths() {
        assert!(needs_token("/api"));
        assert!(needs_token("/api/events"));
        assert!(needs_token("/api/nope/deeper"));
        assert!(!needs_token("/"));
        assert!(!needs_token("/apix"));
    }

    #[test]
    fn bearer_then_cookie() {
        assert_eq!(
            presented(&h(&[(header::AUTHORIZATION, "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(presented(&h(&[(header::AUTHORIZATION, "Basic abc")])), None);
        assert_eq!(
            presented(&h(&[(header::COOKIE, "a=b; corral_token=xyz; c=d")])),
            Some("xyz")
        );
        assert_eq!(presented(&h(&[(header::COOKIE, "xcorral_token=xyz")])), None);
        assert_eq!(presented(&HeaderMap::new()), None);
    }
}
