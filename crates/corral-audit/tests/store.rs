//! Store: round trip through every filter, reopen, sessions, schema version.

use crate::util::{event, http_refused, http_request, mcp_denied_call, one_of_each, stored, temp_store};
use corral_audit::{kind_of, AuditError, Kind, Query, SessionRow, Store, Stored};
use corral_core::{Access, Decision, Event, What};

fn events_of(v: &[Stored]) -> Vec<Event> {
    v.iter().map(|s| s.event.clone()).collect()
}

/// Session 1's events at wall times 100.., then session 2's at 200...
fn fixture() -> (tempfile::TempDir, Store, Vec<Stored>) {
    let (dir, mut store) = temp_store();
    let mut all = Vec::new();
    for (i, e) in one_of_each(1).into_iter().enumerate() {
        all.push(stored(100 + i as u64, e));
    }
    for (i, e) in one_of_each(2).into_iter().enumerate() {
        all.push(stored(200 + i as u64, e));
    }
    assert_eq!(store.insert(&all).unwrap(), all.len());
    (dir, store, all)
}

#[test]
fn round_trip_every_field() {
    let (_dir, store, all) = fixture();
    let got = store.query(&Query::default()).unwrap();
    assert_eq!(got.len(), all.len());
    for (g, w) in got.iter().zip(&all) {
        assert!(g.id.is_some());
        assert_eq!(g.wall_ns, w.wall_ns);
        assert_eq!(g.policy_at, w.policy_at);
        assert_eq!(g.event, w.event);
    }
    let ids: Vec<i64> = got.iter().map(|s| s.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending ids");
}

#[test]
fn filter_by_session_kind_decision() {
    let (_dir, store, all) = fixture();
    let q = |q: Query| events_of(&store.query(&q).unwrap());
    let want =
        |f: &dyn Fn(&Stored) -> bool| events_of(&all.iter().filter(|s| f(s)).cloned().collect::<Vec<_>>());

    assert_eq!(
        q(Query {
            session: Some(2),
            ..Default::default()
        }),
        want(&|s| s.event.session.0 == 2)
    );
    for kind in [Kind::File, Kind::Exec, Kind::Net, Kind::Process, Kind::Other] {
        let got = q(Query {
            kind: Some(kind),
            ..Default::default()
        });
        assert!(!got.is_empty(), "{kind}");
        assert_eq!(got, want(&|s| kind_of(&s.event.what) == kind), "{kind}");
    }
    for d in [Decision::Allow, Decision::Deny, Decision::WouldDeny] {
        let got = q(Query {
            decision: Some(d),
            session: Some(1),
            ..Default::default()
        });
        assert!(!got.is_empty());
        assert_eq!(
            got,
            want(&|s| s.event.decision == Some(d) && s.event.session.0 == 1)
        );
    }
}

#[test]
fn filter_by_since_grep_after_id_limit() {
    let (_dir, store, all) = fixture();
    let q = |q: Query| store.query(&q).unwrap();

    let since = q(Query {
        since_wall_ns: Some(203),
        ..Default::default()
    });
    assert_eq!(
        events_of(&since),
        events_of(
            &all.iter()
                .filter(|s| s.wall_ns >= 203)
                .cloned()
                .collect::<Vec<_>>()
        )
    );

    // grep: target path, ip:port, policy id, exe.
    let ssh = q(Query {
        grep: Some(".ssh".into()),
        ..Default::default()
    });
    assert_eq!(ssh.len(), 2);
    assert!(ssh.iter().all(|s| matches!(&s.event.what,
        What::FileOpen { path, access: Access::Write } if path.contains(".ssh"))));
    let net = q(Query {
        grep: Some("[::1]:53".into()),
        session: Some(1),
        ..Default::default()
    });
    assert_eq!(net.len(), 1);
    let by_policy = q(Query {
        grep: Some("read-tmp".into()),
        ..Default::default()
    });
    assert_eq!(
        by_policy.len(),
        all.iter().filter(|s| s.event.decision.is_some()).count()
    );
    let by_exe = q(Query {
        grep: Some("/usr/bin/bash".into()),
        ..Default::default()
    });
    assert_eq!(by_exe.len(), all.len());
    assert!(q(Query {
        grep: Some("nothing-like-this".into()),
        ..Default::default()
    })
    .is_empty());

    // after_id pages forward; limit alone is a tail.
    let every = q(Query::default());
    let third = every[2].id;
    let page = q(Query {
        after_id: third,
        limit: Some(4),
        ..Default::default()
    });
    assert_eq!(events_of(&page), events_of(&every[3..7]));
    let tail = q(Query {
        limit: Some(3),
        ..Default::default()
    });
    assert_eq!(events_of(&tail), events_of(&every[every.len() - 3..]));
    let rest = q(Query {
        after_id: every.last().unwrap().id,
        ..Default::default()
    });
    assert!(rest.is_empty());
}

#[test]
fn http_events_round_trip_as_kind_http_with_a_url_target() {
    let (dir, mut store) = temp_store();
    let mut all: Vec<Stored> = one_of_each(1).into_iter().map(|e| stored(100, e)).collect();
    let http = [http_request(1), http_refused(1), http_request(2)];
    all.extend(http.iter().cloned().map(|e| stored(200, e)));
    store.insert(&all).unwrap();

    // `--kind http`: those three, whole, and nothing else.
    let q = |q: Query| events_of(&store.query(&q).unwrap());
    let got = q(Query {
        kind: Some(Kind::Http),
        ..Default::default()
    });
    assert_eq!(got, http.to_vec());
    assert_eq!("http".parse::<Kind>().ok(), Some(Kind::Http));
    assert_eq!(
        q(Query {
            kind: Some(Kind::Http),
            decision: Some(Decision::Deny),
            ..Default::default()
        }),
        vec![http[1].clone()]
    );

    // The target column: METHOD url, or the url of a refused connection;
    // layer `proxy`; the deciding policies like any other event.
    let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    let rows: Vec<(String, String, String, i64, String)> = conn
        .prepare("SELECT kind, target, layer, pid, policies FROM events WHERE kind = 'http' ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let row = |target: &str, pid: i64, policies: &str| {
        (
            "http".to_string(),
            target.to_string(),
            "proxy".to_string(),
            pid,
            policies.to_string(),
        )
    };
    assert_eq!(
        rows,
        [
            row(
                "POST https://api.anthropic.com:443/v1/messages",
                42,
                "policy0\nread-tmp"
            ),
            row("https://evil.example:443", 0, ""),
            row(
                "POST https://api.anthropic.com:443/v1/messages",
                42,
                "policy0\nread-tmp"
            ),
        ]
    );

    // --grep finds them by URL.
    let by_url = q(Query {
        grep: Some("POST https://api.anthropic.com:443/v1".into()),
        ..Default::default()
    });
    assert_eq!(by_url, vec![http[0].clone(), http[2].clone()]);
    assert_eq!(
        q(Query {
            grep: Some("evil.example:443".into()),
            ..Default::default()
        }),
        vec![http[1].clone()]
    );

    // Their decisions count with the session's others.
    let s1 = store
        .sessions()
        .unwrap()
        .into_iter()
        .find(|s| s.session.id == 1)
        .unwrap();
    assert_eq!((s1.allowed, s1.denied, s1.would_deny), (2 + 1, 2 + 1, 1));
}

#[test]
fn mcp_events_are_kind_mcp_and_a_call_finds_what_its_server_did() {
    let (dir, mut store) = temp_store();
    let denied = mcp_denied_call(1);
    let mut call = mcp_denied_call(1);
    call.decision = Some(Decision::Allow);
    call.mcp_call = Some("m1#1".into());
    if let What::Mcp { tool, error, .. } = &mut call.what {
        *tool = Some("read_text_file".into());
        error.take();
    }
    // A file the wrapped server opened while the call was in flight, and
    // one while two calls were.
    let mut read = one_of_each(1).remove(0);
    read.mcp_call = Some("m1#1".into());
    let mut both = one_of_each(1).remove(0);
    both.mcp_call = Some("m1#2,m1#1".into());
    let other = one_of_each(1).remove(0);
    let all = [denied.clone(), call.clone(), read.clone(), both.clone(), other];
    store
        .insert(&all.iter().cloned().map(|e| stored(5, e)).collect::<Vec<_>>())
        .unwrap();
    let q = |q: Query| events_of(&store.query(&q).unwrap());
    assert_eq!(
        q(Query {
            kind: Some(Kind::Mcp),
            ..Default::default()
        }),
        vec![denied.clone(), call.clone()]
    );
    assert_eq!(
        q(Query {
            mcp_call: Some("m1#1".into()),
            ..Default::default()
        }),
        vec![call, read, both.clone()]
    );
    assert_eq!(
        q(Query {
            mcp_call: Some("m1#2".into()),
            ..Default::default()
        }),
        vec![both]
    );
    assert_eq!(
        q(Query {
            grep: Some("everything: tools/call printEnv".into()),
            ..Default::default()
        }),
        vec![denied]
    );
    let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    let (layer, kind): (String, String) = conn
        .query_row("SELECT layer, kind FROM events ORDER BY id LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((layer.as_str(), kind.as_str()), ("mcp", "mcp"));
}

#[test]
fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("audit.db");
    let mut store = Store::open(&path).unwrap();
    let batch: Vec<Stored> = one_of_each(9).into_iter().map(|e| stored(5, e)).collect();
    store.insert(&batch).unwrap();
    let before = store.query(&Query::default()).unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.query(&Query::default()).unwrap(), before);
    assert_eq!(store.integrity_check().unwrap(), vec!["ok".to_string()]);
}

fn session(id: u32, started_ns: u64) -> SessionRow {
    SessionRow {
        id,
        principal: format!("Agent::\"a{id}\""),
        policy_label: "policy.cedar".into(),
        policy_sha256: "ab".repeat(32),
        mode: "shadow".into(),
        started_ns,
        command: vec!["claude".into(), "--yes".into()],
    }
}

#[test]
fn sessions_count_decisions_and_drops() {
    let (_dir, mut store, _all) = fixture();
    store.session_started(&session(1, 10)).unwrap();
    store.session_started(&session(2, 20)).unwrap();
    assert!(matches!(
        store.session_started(&session(2, 30)),
        Err(AuditError::DuplicateSession { id: 2, .. })
    ));
    store.session_ended(1, 99, "exited 0", 3, 10).unwrap();
    // More events for session 2 in a second batch.
    let more: Vec<Stored> = (0..5)
        .map(|i| {
            stored(
                300,
                event(
                    2,
                    What::FileOpen {
                        path: format!("/tmp/{i}"),
                        access: Access::Read,
                    },
                    Some(Decision::Deny),
                ),
            )
        })
        .collect();
    store.insert(&more).unwrap();
    store.add_drops(2, "pipeline_full", 4).unwrap();
    store.add_drops(2, "pipeline_full", 6).unwrap();
    store.add_drops(2, "kernel_ring", 1).unwrap();
    store.add_drops(77, "kernel_ring", 2).unwrap();

    let s = store.sessions().unwrap();
    assert_eq!(s.len(), 3);
    let s1 = s.iter().find(|s| s.session.id == 1).unwrap();
    assert_eq!((s1.allowed, s1.denied, s1.would_deny, s1.drops), (2, 2, 1, 0));
    assert_eq!(s1.ended_ns, Some(99));
    assert_eq!(s1.exit.as_deref(), Some("exited 0"));
    assert_eq!(s1.lost, Some(3));
    assert_eq!(s1.session.command, vec!["claude", "--yes"]);
    assert_eq!(s1.session.mode, "shadow");
    let s2 = s.iter().find(|s| s.session.id == 2).unwrap();
    assert_eq!((s2.allowed, s2.denied, s2.would_deny, s2.drops), (2, 7, 1, 11));
    assert_eq!(s2.ended_ns, None);
    let s77 = s.iter().find(|s| s.session.id == 77).unwrap();
    assert_eq!((s77.session.principal.as_str(), s77.drops), ("", 2));
    assert_eq!(
        store.drops(2).unwrap(),
        vec![("kernel_ring".to_string(), 1), ("pipeline_full".to_string(), 10)]
    );
    assert_eq!(store.last_session().unwrap(), Some(2));
}

#[test]
fn last_session_of_empty_and_unrecorded() {
    let (_dir, mut store) = temp_store();
    assert_eq!(store.last_session().unwrap(), None);
    store.insert(&[stored(1, one_of_each(5).remove(0))]).unwrap();
    assert_eq!(store.last_session().unwrap(), Some(5));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    drop(Store::open(&path).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, AuditError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("audit.db"), "{err}");
}

#[test]
fn garbage_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = Store::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("not a database"), "{msg}");
}

#[test]
fn locked_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let mut store = Store::open(&path).unwrap();
    store
        .set_busy_timeout(std::time::Duration::from_millis(50))
        .unwrap();
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = store.insert(&[stored(1, one_of_each(1).remove(0))]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("audit.db") && msg.contains("locked"), "{msg}");
    holder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(store.insert(&[stored(1, one_of_each(1).remove(0))]).unwrap(), 1);
}
