//! The embedded control UI: `GET /` (index.html, with the cookie) and
//! `GET /assets/<file>` (app.js, app.css, ... with the cookie too: assets
//! hold no data, but one rule — everything but `/?token=` needs the token —
//! is easier to check than two). The files are built by `build.rs`
//! (`scripts/ui.sh`) and embedded with `include_bytes!`.
//!
//! The page carries a strict Content-Security-Policy: scripts, styles and
//! connections only from this server, no inline script; the one inline
//! allowance is `<style>` elements with the page's random nonce (CodeMirror
//! inserts its theme that way; the nonce is in a `<meta>` it reads).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The placeholder in index.html that each response replaces with its nonce.
const NONCE_SLOT: &str = "CORRAL_CSP_NONCE";

/// The UI's Content-Security-Policy, with the page's style nonce if any.
pub(crate) fn csp(nonce: Option<&str>) -> String {
    let nonce = nonce.map(|n| format!(" 'nonce-{n}'")).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'{nonce}; \
         img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'"
    )
}

/// The embedded file `name`: (content type, bytes).
pub(crate) fn file(name: &str) -> Option<(&'static str, &'static [u8])> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, b)| (*t, *b))
}

/// A file as a response, with the UI's CSP (no nonce: assets add no styles).
pub(crate) fn serve(name: &str) -> Response {
    let Some((ctype, bytes)) = file(name) else {
        return crate::auth::error(StatusCode::NOT_FOUND, format!("no asset `{name}`"));
    };
    with_csp(
        ([(header::CONTENT_TYPE, ctype)], bytes).into_response(),
        &csp(None),
    )
}

/// index.html with a fresh style nonce in its `<meta>` and its CSP.
pub(crate) fn index() -> Response {
    let Some((ctype, bytes)) = file("index.html") else {
        return crate::auth::error(StatusCode::NOT_FOUND, "the UI has no index.html");
    };
    let nonce = match crate::token::generate() {
        Ok(n) => n,
        Err(e) => return crate::routes::internal(e),
    };
    let page = String::from_utf8_lossy(bytes).replace(NONCE_SLOT, &nonce);
    with_csp(
        ([(header::CONTENT_TYPE, ctype)], page).into_response(),
        &csp(Some(&nonce)),
    )
}

fn with_csp(mut r: Response, csp: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(csp) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

/// `GET /assets/{file}` (the token was checked by the middleware).
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    serve(&name)
}

/// The page `GET /` shows without a valid token: what to do instead.
pub(crate) const NO_TOKEN_PAGE: &str = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
<title>corral: access token needed</title><h1>corral: access token needed</h1>\
<p data-testid=\"no-token\">This is corral's control UI. It needs the access token: open the URL \
that <code>corral run</code> printed in its banner (it ends in <code>/?token=…</code>). \
The token then stays in a cookie for this browser.</p></html>";
