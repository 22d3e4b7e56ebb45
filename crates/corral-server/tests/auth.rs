//! Token, cookie, Origin and Host checks.

use crate::util::*;

#[tokio::test]
async fn every_api_route_needs_the_token() {
    let (_dir, store) = fixture();
    let r = start(store).await;
    for (method, path) in corral_server::api_routes() {
        let body = (method == "post").then_some(r#"{"text":""}"#);
        let m = method.to_uppercase();
        let none = request(r.addr, &m, path, &[], body).await;
        assert_eq!(none.status, 401, "{m} {path} without a token: {none:?}");
        assert!(none.json()["error"].as_str().unwrap().contains("no access token"));
        let bad = request(
            r.addr,
            &m,
            path,
            &[("Authorization", "Bearer 0123456789abcdef0123456789abcdef")],
            body,
        )
        .await;
        assert_eq!(bad.status, 401, "{m} {path} with a wrong token: {bad:?}");
        let cookie = request(r.addr, &m, path, &[("Cookie", "corral_token=nope")], body).await;
        assert_eq!(cookie.status, 401, "{m} {path} with a wrong cookie");
    }
    r.stop().await;
}

#[tokio::test]
async fn bearer_token_gets_health() {
    let (_dir, store) = fixture();
    let r = start(store.clone()).await;
    let h = get(&r, "/api/health").await;
    assert_eq!(h.status, 200, "{h:?}");
    let v = h.json();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["store"], store.display().to_string());
    assert!(v["uptime_s"].is_u64());
    // The banner URL carries the token and the bound port.
    assert_eq!(r.url, format!("http://{}/?token={}", r.addr, r.token));
    assert_eq!(r.token.len(), 32);
    r.stop().await;
}

#[tokio::test]
async fn token_url_sets_a_strict_http_only_cookie_that_then_works_alone() {
    let (_dir, store) = fixture();
    let r = start(store).await;
    let path = format!("/?token={}", r.token);
    let first = request(r.addr, "GET", &path, &[], None).await;
    assert_eq!(first.status, 303, "{first:?}");
    assert_eq!(first.header("location"), Some("/"));
    let cookie = first.header("set-cookie").expect("no Set-Cookie");
    let parts: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert_eq!(parts[0], format!("corral_token={}", r.token));
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(parts.contains(&attr), "{attr} missing from {cookie:?}");
    }
    let jar = parts[0];
    let s = request(r.addr, "GET", "/api/sessions", &[("Cookie", jar)], None).await;
    assert_eq!(s.status, 200, "{s:?}");
    assert_eq!(s.json().as_array().unwrap().len(), 2);
    let page = request(r.addr, "GET", "/", &[("Cookie", jar)], None).await;
    assert_eq!(page.status, 200);
    // Nothing is cached or framed, and the token does not leak as Referer.
    for resp in [&first, &s, &page] {
        assert_eq!(resp.header("cache-control"), Some("no-store"), "{resp:?}");
        assert_eq!(resp.header("x-frame-options"), Some("DENY"));
        assert_eq!(resp.header("referrer-policy"), Some("no-referrer"));
    }
    // A wrong token in the URL sets nothing.
    let wrong = request(r.addr, "GET", "/?token=0123456789abcdef", &[], None).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.header("set-cookie"), None);
    let bare = request(r.addr, "GET", "/", &[], None).await;
    assert_eq!(bare.status, 401);
    r.stop().await;
}

#[tokio::test]
async fn foreign_origin_is_refused_even_with_the_token() {
    let (_dir, store) = fixture();
    let r = start(store).await;
    let auth = format!("Bearer {}", r.token);
    let own = format!("http://{}", r.addr);
    let own_name = format!("http://localhost:{}", r.addr.port());
    for (origin, want) in [
        ("http://evil.example", 403),
        ("null", 403),
        (&format!("http://127.0.0.1:{}", r.addr.port() + 1), 403),
        (&format!("https://{}", r.addr), 403),
        (own.as_str(), 200),
        (own_name.as_str(), 200),
    ] {
        let resp = request(
            r.addr,
            "POST",
            "/api/policy/validate",
            &[("Authorization", &auth), ("Origin", origin)],
            Some(r#"{"text":""}"#),
        )
        .await;
        assert_eq!(resp.status, want, "Origin {origin}: {resp:?}");
        if want == 403 {
            assert!(resp.json()["error"].as_str().unwrap().contains("origin"));
        }
    }
    r.stop().await;
}

#[tokio::test]
async fn foreign_host_is_refused_dns_rebinding() {
    let (_dir, store) = fixture();
    let r = start(store).await;
    let auth = format!("Bearer {}", r.token);
    let port = r.addr.port();
    for (host, want) in [
        (format!("evil.example:{port}"), 403),
        ("evil.example".to_string(), 403),
        (format!("127.0.0.1:{}", port + 1), 403),
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
    ] {
        let resp = request(
            r.addr,
            "GET",
            "/api/health",
            &[("Host", &host), ("Authorization", &auth)],
            None,
        )
        .await;
        assert_eq!(resp.status, want, "Host {host}: {resp:?}");
    }
    // The token-to-cookie page is behind the Host check too.
    let path = format!("/?token={}", r.token);
    let resp = request(r.addr, "GET", &path, &[("Host", "evil.example")], None).await;
    assert_eq!(resp.status, 403);
    assert_eq!(resp.header("set-cookie"), None);
    r.stop().await;
}
