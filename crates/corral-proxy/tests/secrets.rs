//! Placeholder secrets end to end: a real HTTPS upstream on 127.0.0.1, the
//! proxy in front of it, and a TLS client sending placeholders. What the
//! upstream echoes back is what it received.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use bytes::Bytes;
use corral_core::Decision;
use corral_proxy::{placeholder, HttpEvent, Limits, Redacted, Secret};
use http_body_util::Full;
use hyper::Request;
use std::time::Duration;
use util::*;

/// A real value with a space, double quotes and non-ASCII characters.
const VALUE: &str = "sk live \"q\" ünï-7";
/// The value of the body secret.
const BODY_VALUE: &str = "body \"value\" ü";

fn secret(name: &str, value: &str, bodies: bool) -> Secret {
    Secret {
        name: name.into(),
        placeholder: placeholder(),
        value: Redacted::new(value),
        bodies,
    }
}

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_millis(800),
        ..Limits::default()
    }
}

/// The test policy plus `extra`.
fn with(extra: &str) -> String {
    format!("{POLICY}\n{extra}")
}

const KEY_TO_UPSTREAM: &str = r#"
@id("key-to-upstream")
permit (principal, action == Action::"SecretUse", resource in Host::"upstream.test")
  when { context.secret == "API_KEY" || context.secret == "BODY_KEY" || context.secret == "PLAIN_KEY" };
"#;

/// Asserts that neither the serialized events nor their `Debug` carry a
/// real value (or a recognisable part of it).
fn assert_no_value(events: &[HttpEvent]) {
    let text = serde_json::to_string(events).unwrap();
    let debug = format!("{events:?}");
    for needle in [VALUE, BODY_VALUE, "sk live", "ünï", "body \"value\""] {
        assert!(!text.contains(needle), "value in events: {text}");
        assert!(!debug.contains(needle), "value in events: {debug}");
    }
}

fn post(path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method("POST")
        .uri(path)
        .header("host", HOST)
        .header("x-echo-body", "1");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

/// A request whose Host names the upstream's port.
async fn send(p: &TestProxy, up: &Upstream, mut req: Request<Full<Bytes>>) -> Reply {
    req.headers_mut()
        .insert("host", format!("{HOST}:{}", up.port).parse().unwrap());
    send_h1(p, req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_in_a_header_reaches_the_allowed_host_as_the_exact_value() {
    let up = start_upstream().await;
    let key = secret("API_KEY", VALUE, false);
    let ph = key.placeholder.clone();
    let p = start_proxy_with(
        &up,
        Setup {
            policy: &with(KEY_TO_UPSTREAM),
            limits: limits(),
            secrets: vec![key],
            ..Setup::default()
        },
    )
    .await;
    let twice = format!("a {ph} b {ph}");
    let r = send(
        &p,
        &up,
        post("/v1/messages", &[("x-api-key", &ph), ("x-both", &twice)], "{}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Byte-exact: spaces, quotes and UTF-8 intact; every occurrence replaced.
    assert!(r.body.contains(&format!("\nx-api-key: {VALUE}\n")), "{}", r.body);
    assert!(
        r.body.contains(&format!("\nx-both: a {VALUE} b {VALUE}\n")),
        "{}",
        r.body
    );
    assert!(
        !r.body.contains(&ph),
        "placeholder reached the allowed host: {}",
        r.body
    );
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].decision, Decision::Allow);
    assert_eq!(ev[0].secrets_used, ["API_KEY"]);
    assert!(ev[0].secrets_withheld.is_empty(), "{:?}", ev[0]);
    assert_no_value(&ev);
    assert!(!format!("{:?}", p.proxy).contains("sk live"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_to_a_host_the_policy_does_not_allow_goes_out_unchanged() {
    let up = start_upstream().await;
    let key = secret("API_KEY", VALUE, false);
    let ph = key.placeholder.clone();
    // SecretUse is permitted for another host only.
    let p = start_proxy_with(
        &up,
        Setup {
            policy: &with(
                r#"@id("key-elsewhere")
permit (principal, action == Action::"SecretUse", resource in Host::"api.elsewhere.test")
  when { context.secret == "API_KEY" };"#,
            ),
            limits: limits(),
            secrets: vec![key],
            ..Setup::default()
        },
    )
    .await;
    let r = send(&p, &up, post("/v1", &[("x-api-key", &ph)], "")).await;
    // The request itself is allowed; only the value is withheld.
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(&format!("\nx-api-key: {ph}\n")), "{}", r.body);
    assert!(!r.body.contains("sk live"), "{}", r.body);
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].decision, Decision::Allow);
    assert!(ev[0].secrets_used.is_empty());
    assert_eq!(ev[0].secrets_withheld, ["API_KEY"]);
    assert_no_value(&ev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbid_on_secret_use_beats_the_permit() {
    let up = start_upstream().await;
    let key = secret("API_KEY", VALUE, false);
    let ph = key.placeholder.clone();
    let p = start_proxy_with(
        &up,
        Setup {
            policy: &with(&format!(
                r#"{KEY_TO_UPSTREAM}
@id("no-secrets-for-claude")
forbid (principal == Agent::"claude", action == Action::"SecretUse", resource);"#
            )),
            limits: limits(),
            secrets: vec![key],
            ..Setup::default()
        },
    )
    .await;
    let r = send(&p, &up, post("/v1", &[("x-api-key", &ph)], "")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(&format!("\nx-api-key: {ph}\n")), "{}", r.body);
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].secrets_withheld, ["API_KEY"]);
    assert!(ev[0].secrets_used.is_empty());
    assert_no_value(&ev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_placeholders_are_substituted_only_for_secrets_marked_bodies() {
    let up = start_upstream().await;
    let body_key = secret("BODY_KEY", BODY_VALUE, true);
    let plain_key = secret("PLAIN_KEY", VALUE, false);
    let (bph, pph) = (body_key.placeholder.clone(), plain_key.placeholder.clone());
    let p = start_proxy_with(
        &up,
        Setup {
            policy: &with(KEY_TO_UPSTREAM),
            limits: limits(),
            secrets: vec![body_key, plain_key],
            ..Setup::default()
        },
    )
    .await;
    let body = format!("{{\"key\":\"{bph}\",\"again\":\"{bph}\",\"plain\":\"{pph}\"}}");
    let r = send(&p, &up, post("/v1", &[], body.clone())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // `bodies` on: replaced everywhere; off: the placeholder is sent.
    let want = format!("{{\"key\":\"{BODY_VALUE}\",\"again\":\"{BODY_VALUE}\",\"plain\":\"{pph}\"}}");
    assert!(r.body.contains(&format!("\nbody: {want}\n")), "{}", r.body);
    // The length the upstream was told is the substituted body's.
    assert!(
        r.body.contains(&format!("\nbody-bytes: {}\n", want.len())),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(&format!("\ncontent-length: {}\n", want.len())),
        "{}",
        r.body
    );
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].secrets_used, ["BODY_KEY"]);
    assert!(ev[0].secrets_withheld.is_empty(), "{:?}", ev[0]);
    assert_eq!(ev[0].bytes_in, body.len() as u64);
    assert_no_value(&ev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_placeholder_to_a_host_not_allowed_streams_through_and_is_withheld() {
    let up = start_upstream().await;
    let body_key = secret("OTHER_BODY_KEY", BODY_VALUE, true);
    let ph = body_key.placeholder.clone();
    let p = start_proxy_with(
        &up,
        Setup {
            policy: &with(KEY_TO_UPSTREAM),
            limits: Limits {
                // Not buffered, so not bound by the rewrite limit.
                max_rewrite_body: 16,
                ..limits()
            },
            secrets: vec![body_key],
            ..Setup::default()
        },
    )
    .await;
    let body = format!("{}{ph}{}", "x".repeat(100_000), "y".repeat(1000));
    let r = send(&p, &up, post("/v1", &[], body.clone())).await;
    assert_eq!(r.status, 200, "{}", &r.body[..200.min(r.body.len())]);
    assert!(
        r.body.contains(&format!("\nbody-bytes: {}\n", body.len())),
        "body changed"
    );
    assert!(r.body.contains(&ph));
    let ev = p.wait_events(1).await;
    assert!(ev[0].secrets_used.is_empty());
    assert_eq!(ev[0].secrets_withheld, ["OTHER_BODY_KEY"]);
    assert_no_value(&ev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_rewrite_limit_is_refused_with_413() {
    let up = start_upstream().await;
    let body_key = secret("BODY_KEY", BODY_VALUE, true);
    let ph = body_key.placeholder.clone();
    let p = start_proxy_with(
        &up,
        Setup {
            policy: &with(KEY_TO_UPSTREAM),
            limits: Limits {
                max_rewrite_body: 1024,
                ..limits()
            },
            secrets: vec![body_key],
            ..Setup::default()
        },
    )
    .await;
    // Declared too large (Content-Length).
    let r = send(&p, &up, post("/v1", &[], format!("{ph}{}", "x".repeat(2000)))).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("`max_rewrite_body` (1024 bytes)"),
        "{v}"
    );
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].status, Some(413));
    assert_eq!(ev[0].decision, Decision::Deny);
    assert!(ev[0].error.as_deref().unwrap().contains("max_rewrite_body"));

    // Too large without a declared length (chunked): found while reading.
    let chunk = "z".repeat(2000);
    let raw = format!(
        "POST /v1 HTTP/1.1\r\nhost: {HOST}:{}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        up.port,
        chunk.len()
    );
    let (out, _) = raw_tls(&p, raw.as_bytes(), Duration::from_millis(1500)).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    let ev = p.wait_events(2).await;
    assert_eq!(ev[1].status, Some(413));
    assert!(
        up.seen.lock().unwrap().is_empty(),
        "an oversized body was forwarded"
    );

    // Within the limit it passes, substituted.
    let r = send(&p, &up, post("/v1", &[], format!("k={ph}"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(&format!("\nbody: k={BODY_VALUE}\n")),
        "{}",
        r.body
    );
    assert_no_value(&p.wait_events(3).await);
}
