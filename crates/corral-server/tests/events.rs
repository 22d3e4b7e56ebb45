//! `GET /api/events` filters and the live stream.

use crate::util::*;
use corral_audit::Store;
use corral_core::Decision;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `what.path` (or exec path) of each event of a page.
fn paths(resp: &Resp) -> Vec<String> {
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"]["path"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn filters_mean_what_corral_events_means() {
    let (_dir, store) = fixture();
    let r = start(store).await;
    let all = get(&r, "/api/events").await;
    assert_eq!(
        paths(&all),
        ["/etc/passwd", "/etc/shadow", "/usr/bin/git", "/tmp/x"]
    );
    let last_id = all.json()["last_id"].as_i64().unwrap();
    for (q, want) in [
        ("session=1", &["/etc/passwd", "/etc/shadow", "/usr/bin/git"][..]),
        ("session=s2", &["/tmp/x"]),
        ("session=last", &["/tmp/x"]),
        ("decision=deny", &["/etc/shadow"]),
        ("decision=would_deny", &["/tmp/x"]),
        ("kind=exec", &["/usr/bin/git"]),
        ("kind=file&session=1&decision=allow", &["/etc/passwd"]),
        ("grep=shadow", &["/etc/shadow"]),
        (
            "since=1h",
            &["/etc/passwd", "/etc/shadow", "/usr/bin/git", "/tmp/x"],
        ),
        ("limit=2", &["/usr/bin/git", "/tmp/x"]),
        (
            "limit=0",
            &["/etc/passwd", "/etc/shadow", "/usr/bin/git", "/tmp/x"],
        ),
        ("mcp_call=m1%233", &[]),
    ] {
        assert_eq!(paths(&get(&r, &format!("/api/events?{q}")).await), want, "{q}");
    }
    // Paging forward from an id.
    let first = get(&r, "/api/events?limit=1&session=1").await;
    assert_eq!(paths(&first), ["/usr/bin/git"]);
    let after = format!("/api/events?after_id={}", last_id - 2);
    assert_eq!(paths(&get(&r, &after).await), ["/usr/bin/git", "/tmp/x"]);
    r.stop().await;
}

#[tokio::test]
async fn bad_filters_are_400s_that_name_the_parameter() {
    let (_dir, store) = fixture();
    let r = start(store).await;
    for (q, says) in [
        ("kind=files", "`kind` \"files\""),
        ("decision=maybe", "`decision` \"maybe\""),
        ("session=x1", "`session` \"x1\""),
        ("since=10y", "`since` \"10y\""),
        ("limit=-1", "limit"),
        ("color=red", "color"),
    ] {
        let resp = get(&r, &format!("/api/events?{q}")).await;
        assert_eq!(resp.status, 400, "{q}: {resp:?}");
        let msg = resp.json()["error"].as_str().unwrap().to_owned();
        assert!(msg.contains(says), "{q}: {msg}");
    }
    r.stop().await;
}

/// Reads from `s` until `buf` contains `needle` or `deadline` passes.
async fn read_until(
    s: &mut tokio::net::TcpStream,
    buf: &mut String,
    needle: &str,
    deadline: Instant,
) -> bool {
    let mut chunk = [0u8; 4096];
    while !buf.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
        }
    }
    true
}

#[tokio::test]
async fn the_stream_delivers_an_event_stored_after_connecting() {
    let (_dir, store_path) = fixture();
    let r = start(store_path.clone()).await;
    let mut s = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let auth = format!("Bearer {}", r.token);
    s.write_all(&request_bytes(
        r.addr,
        "GET",
        "/api/events/stream?session=1",
        &[("Authorization", &auth)],
        None,
    ))
    .await
    .unwrap();
    let mut buf = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    assert!(
        read_until(&mut s, &mut buf, "\r\n\r\n", deadline).await,
        "no head: {buf:?}"
    );
    let (status, headers) = parse_head(buf.split("\r\n\r\n").next().unwrap());
    assert_eq!(status, 200, "{buf}");
    assert!(headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v == "text/event-stream"));
    // Stored after connecting: one for session 2 (filtered out), then one
    // for session 1.
    let mut store = Store::open(&store_path).unwrap();
    let mut evs = vec![
        open("/srv/other-session", 2, Decision::Allow),
        open("/srv/live-marker", 1, Decision::Deny),
    ];
    store.insert_assign(&mut evs).unwrap();
    let t0 = Instant::now();
    assert!(
        read_until(&mut s, &mut buf, "live-marker", deadline).await,
        "the new event did not arrive: {buf:?}"
    );
    let latency = t0.elapsed();
    eprintln!("stream latency (store insert -> SSE bytes): {latency:?}");
    // inotify wakes the stream: well under the 1 s fallback poll.
    assert!(latency < Duration::from_millis(500), "{latency:?}");
    // The old events were not replayed, the other session's was filtered,
    // and the message carries its id.
    assert!(
        !buf.contains("/etc/passwd") && !buf.contains("other-session"),
        "{buf}"
    );
    let id = evs[1].id.unwrap();
    assert!(
        buf.contains(&format!("id: {id}")) || buf.contains(&format!("id:{id}")),
        "{buf}"
    );
    assert!(
        buf.contains("event: event") || buf.contains("event:event"),
        "{buf}"
    );
    // The stats message came first thing, for session 1 only (3 events
    // then; the other session's are not counted).
    assert!(
        buf.contains("event: stats") || buf.contains("event:stats"),
        "{buf}"
    );
    assert!(buf.contains("\"total\":3"), "{buf}");
    // More wake-ups and a fallback poll: the event is not sent twice.
    let more = Instant::now() + Duration::from_millis(1500);
    read_until(&mut s, &mut buf, "never-sent", more).await;
    assert_eq!(buf.matches("live-marker").count(), 1, "{buf}");
    // The server stops even with the stream open, and the stream ends.
    r.stop().await;
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(end.is_ok(), "the stream stayed open after the server stopped");
}

#[tokio::test]
async fn the_stream_resumes_after_last_event_id() {
    let (_dir, store_path) = fixture();
    let r = start(store_path).await;
    let all = get(&r, "/api/events").await.json();
    let ids: Vec<i64> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let mut s = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let auth = format!("Bearer {}", r.token);
    let resume = ids[1].to_string();
    s.write_all(&request_bytes(
        r.addr,
        "GET",
        "/api/events/stream",
        &[("Authorization", &auth), ("Last-Event-ID", &resume)],
        None,
    ))
    .await
    .unwrap();
    let mut buf = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    assert!(read_until(&mut s, &mut buf, "/tmp/x", deadline).await, "{buf}");
    assert!(buf.contains("/usr/bin/git"), "{buf}");
    assert!(
        !buf.contains("/etc/shadow") && !buf.contains("/etc/passwd"),
        "{buf}"
    );
    r.stop().await;
}
