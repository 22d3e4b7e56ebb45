//! End-to-end tests of the proxy on 127.0.0.1: a real HTTPS upstream with
//! its own CA, the proxy's `serve_connection` behind a TcpListener with a
//! fixed destination, and TLS clients trusting corral's CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use bytes::Bytes;
use corral_core::Decision;
use corral_proxy::Limits;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use util::*;

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_millis(800),
        ..Limits::default()
    }
}

/// Asserts that no serialised event contains the injected value (or a
/// recognisable part of it).
fn assert_no_secret(events: &[corral_proxy::HttpEvent]) {
    let text = serde_json::to_string(events).unwrap();
    let debug = format!("{events:?}");
    for needle in [SECRET, "ünï", "Bearer a b"] {
        assert!(!text.contains(needle), "secret in events: {text}");
        assert!(!debug.contains(needle), "secret in events: {debug}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_get_over_http1_reaches_upstream_with_injected_header() {
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    let r = get_h1(&p, &up, HOST, "/v1/models?x=1", Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The pooled client speaks h2 to this upstream: the request line is in
    // absolute form, the authority is the destination.
    let line = r.body.lines().next().unwrap();
    assert_eq!(
        line,
        format!("GET https://{HOST}:{}/v1/models?x=1 HTTP/2.0", up.port)
    );
    // The exact value, spaces, quotes and UTF-8 intact, once.
    assert!(
        r.body.contains(&format!("\nauthorization: {SECRET}\n")),
        "{}",
        r.body
    );
    assert_eq!(r.body.matches("authorization:").count(), 1, "{}", r.body);
    let ev = p.wait_events(1).await;
    assert_eq!(ev.len(), 1);
    let e = &ev[0];
    assert_eq!(
        (
            e.method.as_str(),
            e.scheme.as_str(),
            e.host.as_str(),
            e.path.as_str()
        ),
        ("GET", "https", HOST, "/v1/models")
    );
    assert_eq!(e.status, Some(200));
    assert_eq!(e.decision, Decision::Allow);
    assert_eq!(e.policies, ["net", "http"]);
    assert_eq!(e.policy_at, ["test.cedar:3", "test.cedar:5"]);
    assert_eq!(e.injected_headers, ["Authorization"]);
    assert_eq!(e.bytes_out, r.body.len() as u64);
    assert_no_secret(&ev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_get_over_http2_reaches_upstream() {
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    let r = get_h2(&p, &up, "/h2/path").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The upstream also speaks h2 (ALPN on the pooled client).
    assert!(
        r.body
            .starts_with(&format!("GET https://{HOST}:{}/h2/path HTTP/2.0", up.port)),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(&format!("authorization: {SECRET}\n")),
        "{}",
        r.body
    );
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].decision, Decision::Allow);
    assert_no_secret(&ev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_path_gets_403_naming_the_forbid() {
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    let r = get_h1(&p, &up, HOST, "/admin/users", Bytes::new()).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"], "denied by corral policy");
    assert_eq!(
        v["request"],
        format!("GET https://{HOST}:{}/admin/users", up.port)
    );
    assert_eq!(
        v["policies"],
        serde_json::json!([{"id": "no-admin", "at": "test.cedar:7"}])
    );
    assert!(
        up.seen.lock().unwrap().is_empty(),
        "a denied request reached upstream"
    );
    let ev = p.wait_events(1).await;
    // Spellings many servers read as /admin are decided as /admin.
    for sneaky in ["/%61dmin/users", "/v1/../admin", "//admin", "/%2e%2e/admin"] {
        let r = get_h1(&p, &up, HOST, sneaky, Bytes::new()).await;
        assert_eq!(r.status, 403, "{sneaky}: {}", r.body);
    }
    assert!(up.seen.lock().unwrap().is_empty());
    assert_eq!(ev[0].decision, Decision::Deny);
    assert_eq!(ev[0].status, Some(403));
    assert_eq!(ev[0].policies, ["no-admin"]);
    assert!(ev[0].injected_headers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_no_policy_permits_is_denied_by_default() {
    let up = start_upstream().await;
    let p = start_proxy(&up, "other.test", limits()).await;
    let tls = tls_connect(&p, "other.test", &[b"http/1.1"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/")
        .header("host", format!("other.test:{}", up.port))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let r = reply(send.send_request(req).await.unwrap()).await;
    assert_eq!(r.status, 403);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["policies"], serde_json::json!([]));
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("no policy permits NetworkConnect"),
        "{v}"
    );
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].decision, Decision::Deny);
    assert!(ev[0].policies.is_empty());
    assert!(up.seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_other_than_sni_is_refused() {
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    let r = get_h1(&p, &up, "evil.test", "/", Bytes::new()).await;
    assert_eq!(r.status, 421, "{}", r.body);
    assert!(
        r.body.contains("the Host must name the destination"),
        "{}",
        r.body
    );
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].decision, Decision::Deny);
    assert!(up.seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_other_than_destination_is_refused() {
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    // corral's CA would sign `evil.test` too: the refusal is the SNI check.
    assert!(tls_connect(&p, "evil.test", &[b"http/1.1"]).await.is_err());
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].kind, "connection");
    assert_eq!(ev[0].decision, Decision::Deny);
    assert!(
        ev[0]
            .error
            .as_deref()
            .unwrap()
            .contains("SNI `evil.test` does not match"),
        "{:?}",
        ev[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_client_hello_is_refused_and_proxy_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    for junk in [
        &b"\x16\x03\x01\x00\x08garbage!garbage!"[..],
        &b"\x00\xffnot tls at all"[..],
    ] {
        let mut tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        tcp.write_all(junk).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the proxy should close the connection")
            .unwrap_or(0);
        // Closed, possibly after a TLS alert; never an HTTP answer.
        assert!(!String::from_utf8_lossy(&buf[..n]).contains("HTTP/"));
    }
    let ev = p.wait_events(2).await;
    assert!(
        ev[0].error.as_deref().unwrap().contains("bad TLS ClientHello"),
        "{:?}",
        ev[0]
    );
    assert!(
        ev[1]
            .error
            .as_deref()
            .unwrap()
            .contains("neither a TLS ClientHello nor HTTP"),
        "{:?}",
        ev[1]
    );
    let r = get_h1(&p, &up, HOST, "/after", Bytes::new()).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_refused_and_not_forwarded() {
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: {HOST}:{}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {HOST}:{}\r\n\r\n",
        up.port, up.port
    );
    let (out, closed) = raw_tls(&p, req.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("possible request smuggling"), "{out}");
    assert!(closed, "the connection stays open after a smuggling attempt");
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        up.seen.lock().unwrap().is_empty(),
        "upstream saw {:?}",
        up.seen.lock().unwrap()
    );
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].status, Some(400));
    assert_eq!(ev[0].decision, Decision::Deny);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_is_refused() {
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    let big = "a".repeat(100 * 1024);
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {HOST}:{}\r\nX-Big: {big}\r\n\r\n",
        up.port
    );
    let (out, closed) = raw_tls(&p, req.as_bytes(), Duration::from_secs(3)).await;
    assert!(
        out.starts_with("HTTP/1.1 431") || out.starts_with("HTTP/1.1 400"),
        "{}",
        &out[..out.len().min(200)]
    );
    assert!(closed);
    assert!(up.seen.lock().unwrap().is_empty());
    let ev = p.wait_events(1).await;
    assert!(
        ev[0].error.as_deref().unwrap().contains("too large"),
        "{:?}",
        ev[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabyte_upload_passes() {
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    let body = Bytes::from(vec![b'x'; 10 * 1024 * 1024]);
    let r = get_h1(&p, &up, HOST, "/upload", body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("body-bytes: 10485760\n"), "{}", r.body);
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].bytes_in, 10_485_760);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_is_cut_off_after_the_timeout() {
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    let t = Instant::now();
    let partial = format!("GET / HTTP/1.1\r\nHost: {HOST}:{}\r\nX-Slow: ", up.port);
    let (out, closed) = raw_tls(&p, partial.as_bytes(), Duration::from_secs(5)).await;
    let took = t.elapsed();
    assert!(closed, "a slow client kept its connection");
    assert!(took >= Duration::from_millis(700), "closed too early: {took:?}");
    assert!(took < Duration::from_secs(4), "closed too late: {took:?}");
    assert!(!out.contains("200"), "{out}");
    assert!(up.seen.lock().unwrap().is_empty());
    let ev = p.wait_events(1).await;
    assert!(
        ev[0].error.as_deref().unwrap().contains("timed out"),
        "{:?}",
        ev[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_spliced_through() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    let tls = tls_connect(&p, HOST, &[b"http/1.1"]).await.unwrap();
    let url = format!("wss://{HOST}:{}/ws", up.port);
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    for text in ["hello", "wörld with spaces"] {
        ws.send(Message::text(text)).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].status, Some(101));
    assert_eq!(ev[0].decision, Decision::Allow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_path_is_the_decided_path() {
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    let r = get_h1(&p, &up, HOST, "/v1/./x/../%6dodels?q=%2F", Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let line = r.body.lines().next().unwrap();
    assert_eq!(
        line,
        format!("GET https://{HOST}:{}/v1/models?q=%2F HTTP/2.0", up.port)
    );
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].path, "/v1/models");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    for path in ["/one", "/two", "/three"] {
        let r = get_h1(&p, &up, HOST, path, Bytes::new()).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(up.seen.lock().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_proxy() {
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    let out = tokio::process::Command::new("curl")
        .arg("-sS")
        .arg("--cacert")
        .arg(&p.ca_pem)
        .arg("--connect-to")
        .arg(format!("{HOST}:{}:127.0.0.1:{}", up.port, p.addr.port()))
        .arg("-w")
        .arg("\nstatus=%{http_code} version=%{http_version}")
        .arg(format!("https://{HOST}:{}/curl?q=1", up.port))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("status=200"), "{text}");
    assert!(text.contains("/curl?q=1"), "{text}");
    assert!(text.contains(&format!("authorization: {SECRET}\n")), "{text}");
    let forbidden = tokio::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&p.ca_pem)
        .arg("--connect-to")
        .arg(format!("{HOST}:{}:127.0.0.1:{}", up.port, p.addr.port()))
        .arg(format!("https://{HOST}:{}/admin", up.port))
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&forbidden.stdout), "403");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnel_is_decided_and_served_as_an_intercepted_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    // Not permitted: 127.0.0.2 (only 127.0.0.1 is).
    let mut tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let denied = format!(
        "CONNECT 127.0.0.2:{0} HTTP/1.1\r\nHost: 127.0.0.2:{0}\r\n\r\n",
        up.port
    );
    tcp.write_all(denied.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("no policy permits NetworkConnect"), "{head}");

    let mut tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let req = format!(
        "CONNECT 127.0.0.1:{0} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n\r\n",
        up.port
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let n = tcp.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "{head}");
    // Inside the tunnel: TLS to upstream.test, intercepted by corral's CA.
    let tls = tls_over(&p, tcp, HOST, &[b"http/1.1"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/through-connect")
        .header("host", format!("{HOST}:{}", up.port))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let r = reply(send.send_request(req).await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("/through-connect"), "{}", r.body);
    assert!(
        r.body.contains(&format!("authorization: {SECRET}\n")),
        "{}",
        r.body
    );
    let ev = p.wait_events(3).await;
    let kinds: Vec<(&str, Option<u16>, Decision)> =
        ev.iter().map(|e| (e.kind, e.status, e.decision)).collect();
    assert_eq!(
        kinds,
        [
            ("connect", Some(403), Decision::Deny),
            ("connect", Some(200), Decision::Allow),
            ("request", Some(200), Decision::Allow)
        ]
    );
    assert_eq!(ev[1].policies, ["loopback"]);
    assert_eq!(ev[2].host, HOST);
    assert_no_secret(&ev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_sni_gets_a_leaf_for_the_destination_address() {
    let up = start_upstream().await;
    let p = start_proxy_to(&up, None, limits()).await;
    // rustls sends no SNI for an IP address; the leaf must carry the IP.
    let tls = tls_connect(&p, "127.0.0.1", &[b"http/1.1"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/by-address")
        .header("host", format!("127.0.0.1:{}", up.port))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let r = reply(send.send_request(req).await.unwrap()).await;
    // NetworkConnect to 127.0.0.1 is permitted, HttpRequest is not.
    assert_eq!(r.status, 403, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("no policy permits HttpRequest"),
        "{v}"
    );
    assert_eq!(
        v["request"],
        format!("GET https://127.0.0.1:{}/by-address", up.port)
    );
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].host, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_forwards_what_the_policy_denies_and_records_would_deny() {
    let up = start_upstream().await;
    let p = start_proxy_with(
        &up,
        Setup {
            limits: limits(),
            mode: corral_core::Mode::Shadow,
            ..Setup::default()
        },
    )
    .await;
    let r = get_h1(&p, &up, HOST, "/admin/users", Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .starts_with(&format!("GET https://{HOST}:{}/admin/users", up.port)),
        "{}",
        r.body
    );
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].decision, Decision::WouldDeny);
    assert_eq!(ev[0].policies, ["no-admin"]);
    assert_eq!(ev[0].policy_at, ["test.cedar:7"]);
    assert_eq!(ev[0].status, Some(200));
    // Allowed requests stay `allow`.
    let r = get_h1(&p, &up, HOST, "/v1", Bytes::new()).await;
    assert_eq!(r.status, 200);
    assert_eq!(p.wait_events(2).await[1].decision, Decision::Allow);
    // Back to enforcing: the next request is refused.
    p.proxy.set_mode(corral_core::Mode::Enforce);
    assert_eq!(p.proxy.mode(), corral_core::Mode::Enforce);
    let r = get_h1(&p, &up, HOST, "/admin/users", Bytes::new()).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let ev = p.wait_events(3).await;
    assert_eq!(ev[2].decision, Decision::Deny);
    assert_eq!(up.seen.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_lets_a_denied_connect_tunnel_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = start_upstream().await;
    // The proxy's plain-HTTP side, CONNECT to a host no policy permits.
    let p = start_proxy_with(
        &up,
        Setup {
            dest_host: None,
            policy: "@id(\"net\") permit (principal, action == Action::\"NetworkConnect\", resource == Host::\"upstream.test\");",
            limits: limits(),
            mode: corral_core::Mode::Shadow,
            ..Setup::default()
        },
    )
    .await;
    let mut tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    tcp.write_all(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nhost: 127.0.0.1:9\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let ev = p.wait_events(1).await;
    assert_eq!(ev[0].kind, "connect");
    assert_eq!(ev[0].decision, Decision::WouldDeny);
    assert!(ev[0].policies.is_empty(), "{:?}", ev[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_policy_takes_effect_for_the_next_request_and_spares_the_one_in_flight() {
    use http_body_util::BodyExt;
    let up = start_upstream().await;
    let p = start_proxy(&up, HOST, limits()).await;
    assert_eq!(get_h1(&p, &up, HOST, "/v1", Bytes::new()).await.status, 200);

    // A request in flight: decided and forwarded, its body still coming.
    let tls = tls_connect(&p, HOST, &[b"http/1.1"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, hyper::Error>::new(4);
    let req = http::Request::builder()
        .method("POST")
        .uri("/v1/upload")
        .header("host", format!("{HOST}:{}", up.port))
        .body(body.boxed())
        .unwrap();
    let pending = tokio::spawn(async move { send.send_request(req).await });
    tx.send_data(Bytes::from_static(b"first part ")).await.unwrap();
    for _ in 0..200 {
        if up.seen.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        up.seen.lock().unwrap().len(),
        2,
        "the upload never reached upstream"
    );

    // Nothing is allowed any more.
    p.proxy
        .set_policy(policy("@id(\"nothing\") forbid (principal, action, resource);"));
    tx.send_data(Bytes::from_static(b"second part")).await.unwrap();
    drop(tx);
    let r = reply(pending.await.unwrap().unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("body-bytes: 22\n"), "{}", r.body);
    let ev = p.wait_events(2).await;
    assert_eq!(ev[1].decision, Decision::Allow);
    assert_eq!(ev[1].policies, ["net", "http"]);

    // The next request is decided with the new policy.
    let r = get_h1(&p, &up, HOST, "/v1", Bytes::new()).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["policies"][0]["id"], "nothing");
    assert_eq!(up.seen.lock().unwrap().len(), 2);
}
