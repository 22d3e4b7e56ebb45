//! The embedded UI: `/` and `/assets/*` behind the token, with the CSP.

use crate::util::*;

/// The `corral_token=...` cookie the banner URL sets.
async fn cookie(r: &Running) -> String {
    let first = request(r.addr, "GET", &format!("/?token={}", r.token), &[], None).await;
    let c = first.header("set-cookie").expect("no Set-Cookie");
    c.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_page_and_its_assets_need_the_token() {
    let (_dir, store) = fixture();
    let r = start(store).await;
    let jar = cookie(&r).await;
    for path in ["/assets/app.js", "/assets/app.css"] {
        let none = request(r.addr, "GET", path, &[], None).await;
        assert_eq!(none.status, 401, "{path}: {none:?}");
        let ok = request(r.addr, "GET", path, &[("Cookie", &jar)], None).await;
        assert_eq!(ok.status, 200, "{path}: {ok:?}");
        assert!(ok.body.len() > 1000, "{path} is nearly empty");
    }
    let js = request(r.addr, "GET", "/assets/app.js", &[("Cookie", &jar)], None).await;
    assert_eq!(js.header("content-type"), Some("text/javascript; charset=utf-8"));
    let css = request(r.addr, "GET", "/assets/app.css", &[("Cookie", &jar)], None).await;
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    let missing = request(r.addr, "GET", "/assets/nope.js", &[("Cookie", &jar)], None).await;
    assert_eq!(missing.status, 404, "{missing:?}");
    // Without the token, `/` explains what to do, as a page.
    let bare = request(r.addr, "GET", "/", &[], None).await;
    assert_eq!(bare.status, 401);
    assert!(bare.header("content-type").unwrap().starts_with("text/html"));
    assert!(bare.body.contains("access token"), "{bare:?}");
    r.stop().await;
}

#[tokio::test]
async fn the_page_has_a_strict_csp_with_a_fresh_style_nonce() {
    let (_dir, store) = fixture();
    let r = start(store).await;
    let jar = cookie(&r).await;
    let mut nonces = Vec::new();
    for _ in 0..2 {
        let page = request(r.addr, "GET", "/", &[("Cookie", &jar)], None).await;
        assert_eq!(page.status, 200, "{page:?}");
        assert!(page.body.contains("/assets/app.js"), "{page:?}");
        let csp = page.header("content-security-policy").unwrap().to_owned();
        for d in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(d), "{d} missing from {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|s| s.split('\'').next())
            .unwrap()
            .to_owned();
        assert!(
            page.body.contains(&format!("content=\"{nonce}\"")),
            "the page lacks its nonce"
        );
        assert!(!page.body.contains("CORRAL_CSP_NONCE"));
        nonces.push(nonce);
    }
    assert_ne!(nonces[0], nonces[1], "the nonce is reused");
    r.stop().await;
}
