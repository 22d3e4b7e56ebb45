//! `corral events export` (jsonl and OCSF, filters, `--output`, paging
//! through more than one page) and `corral events` next to it, against a
//! store written with the corral-audit API.

// Test code: a panic is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use corral_audit::{Store, Stored};
use corral_core::{Access, Decision, Event, Layer, Proc, SessionId, Transport, What};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

/// A temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("corral-events-export-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn corral(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .output()
        .expect("run corral")
}

fn ok_lines(o: &Output) -> Vec<Value> {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    let out = std::str::from_utf8(&o.stdout).unwrap();
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn event(session: u32, i: usize) -> Event {
    let (what, decision) = match i % 5 {
        0 => (
            What::FileOpen {
                path: format!("/work/f{i}"),
                access: Access::Read,
            },
            Some(Decision::Allow),
        ),
        1 => (
            What::FileOpen {
                path: "/root/.ssh/id_ed25519".into(),
                access: Access::Read,
            },
            Some(Decision::Deny),
        ),
        2 => (
            What::Exec {
                path: "/usr/bin/curl".into(),
                argv: Some(vec!["curl".into(), "example.com".into()]),
            },
            Some(Decision::WouldDeny),
        ),
        3 => (
            What::Connect {
                ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
                port: 443,
                transport: Transport::Tcp,
            },
            Some(Decision::Deny),
        ),
        _ => (
            What::Fork {
                child: 1000 + i as u32,
            },
            None,
        ),
    };
    Event {
        session: SessionId(session),
        principal: "Agent::\"claude\"".into(),
        ts_ns: i as u64,
        proc: Proc {
            pid: 7,
            ppid: 1,
            comm: "node".into(),
            exe: Some("/usr/bin/node".into()),
        },
        what,
        decision,
        layer: Layer::BpfLsm,
        policies: if decision.is_some() {
            vec![format!("policy{}", i % 3)]
        } else {
            vec![]
        },
        mcp_call: None,
    }
}

/// Session 1: `old` events from 1970; session 2: `new` events from now.
fn make_store(path: &Path, old: usize, new: usize) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut store = Store::open(path).unwrap();
    let stored = |session, wall_ns, i| {
        let e = event(session, i);
        Stored {
            id: None,
            wall_ns,
            policy_at: e
                .policies
                .iter()
                .map(|_| format!("team.cedar:{}", 10 + i % 3))
                .collect(),
            event: e,
        }
    };
    let mut all: Vec<Stored> = (0..old).map(|i| stored(1, 1_000_000_000 + i as u64, i)).collect();
    all.extend((0..new).map(|i| stored(2, now - 1_000_000 + i as u64, i)));
    assert_eq!(store.insert(&all).unwrap(), old + new);
}

#[test]
fn export_jsonl_pages_through_everything_and_matches_events_json() {
    let dir = Scratch::new("jsonl");
    let db = dir.0.join("audit.db");
    // More than two 10 000-event pages.
    let (old, new) = (5, 20_500);
    make_store(&db, old, new);
    let store = db.to_str().unwrap();

    let all = ok_lines(&corral(&[
        "events", "export", "--format", "jsonl", "--store", store,
    ]));
    assert_eq!(all.len(), old + new);
    let ids: Vec<i64> = all.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending ids, no repeats");
    assert_eq!((ids[0], ids[ids.len() - 1]), (1, (old + new) as i64));
    let first = &all[0];
    assert_eq!(first["session"], 1);
    assert_eq!(first["wall_ns"], 1_000_000_000u64);
    assert_eq!(
        first["what"],
        json!({"kind": "file_open", "path": "/work/f0", "access": "read"})
    );
    assert_eq!(first["policies"], json!(["policy0"]));
    assert_eq!(first["policy_at"], json!(["team.cedar:10"]));
    assert_eq!(first["decision"], "allow");

    // `corral events --json` prints the very same lines.
    let o = corral(&["events", "--json", "--session", "1", "--store", store]);
    let export = corral(&[
        "events",
        "export",
        "--format",
        "jsonl",
        "--session",
        "s1",
        "--store",
        store,
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&export.stdout)
    );
    assert_eq!(ok_lines(&o).len(), old);

    // `--since` keeps the recent session only; `--kind` and `--decision` filter.
    let recent = ok_lines(&corral(&[
        "events", "export", "--format", "jsonl", "--since", "10m", "--store", store,
    ]));
    assert_eq!(recent.len(), new);
    assert!(recent.iter().all(|v| v["session"] == 2));
    let denied_net = ok_lines(&corral(&[
        "events",
        "export",
        "--format",
        "jsonl",
        "--session",
        "last",
        "--kind",
        "net",
        "--decision",
        "deny",
        "--store",
        store,
    ]));
    assert_eq!(denied_net.len(), new / 5);
    assert!(denied_net
        .iter()
        .all(|v| v["what"]["kind"] == "connect" && v["decision"] == "deny"));

    // The table is still the default.
    let o = corral(&["events", "--session", "1", "--store", store]);
    assert_eq!(o.status.code(), Some(0));
    let table = String::from_utf8_lossy(&o.stdout);
    assert_eq!(table.lines().count(), 1 + old, "{table}");
    assert!(table.lines().next().unwrap().starts_with("time (UTC)"), "{table}");
}

#[test]
fn export_ocsf_to_stdout_and_to_a_file() {
    let dir = Scratch::new("ocsf");
    let db = dir.0.join("audit.db");
    make_store(&db, 10, 25);
    let store = db.to_str().unwrap();

    let v = ok_lines(&corral(&[
        "events",
        "export",
        "--format",
        "ocsf",
        "--session",
        "1",
        "--store",
        store,
    ]));
    assert_eq!(v.len(), 10);
    for (i, e) in v.iter().enumerate() {
        let (class, activity, disposition) = match i % 5 {
            0 => (1001, 14, Some(1)),
            1 => (1001, 14, Some(2)),
            2 => (1007, 1, Some(1)),
            3 => (4001, 1, Some(2)),
            _ => (1007, 1, None),
        };
        assert_eq!(e["class_uid"], class, "{e}");
        assert_eq!(e["activity_id"], activity, "{e}");
        assert_eq!(e["type_uid"], class * 100 + activity, "{e}");
        assert_eq!(e["disposition_id"].as_u64(), disposition, "{e}");
        assert_eq!(e["time"], 1_000, "{e}");
        assert_eq!(e["metadata"]["version"], "1.1.0", "{e}");
        assert_eq!(e["metadata"]["product"]["name"], "corral", "{e}");
        assert_eq!(e["metadata"]["uid"], (i + 1).to_string(), "{e}");
        assert_eq!(e["actor"]["process"]["pid"], 7, "{e}");
        assert_eq!(e["actor"]["process"]["file"]["path"], "/usr/bin/node", "{e}");
    }
    assert_eq!(v[2]["status_detail"], "would deny (shadow mode)");
    assert_eq!(v[2]["process"]["cmd_line"], "curl example.com");
    assert_eq!(v[3]["dst_endpoint"], json!({"ip": "10.1.2.3", "port": 443}));
    assert_eq!(v[3]["connection_info"]["protocol_name"], "tcp");
    assert_eq!(
        v[1]["authorizations"][0]["policy"],
        json!({"uid": "policy1", "name": "policy1", "desc": "team.cedar:11"})
    );

    // --output: nothing on stdout, a count on stderr, the lines in the file.
    let file = dir.0.join("out/ocsf.jsonl");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let o = corral(&[
        "events",
        "export",
        "--format",
        "ocsf",
        "--decision",
        "deny",
        "--output",
        file.to_str().unwrap(),
        "--store",
        store,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("14 events written"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Denials: 2 of every 5 events, in both sessions (10 + 25 events).
    assert_eq!(lines.len(), 4 + 10);
    assert!(lines
        .iter()
        .all(|e| e["disposition_id"] == 2 && e["action_id"] == 2));

    // Bad input is refused clearly.
    let o = corral(&["events", "export", "--format", "xml", "--store", store]);
    assert_eq!(o.status.code(), Some(2));
    let o = corral(&[
        "events", "export", "--format", "ocsf", "--kind", "files", "--store", store,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`kind` \"files\": expected file, exec"));
    let o = corral(&["events", "--json", "export", "--format", "ocsf", "--store", store]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "filters of `events` do not mix with `export`"
    );
}

/// An http event as the proxy reports it.
fn http_event(session: u32, pid_known: bool, ok: bool) -> Stored {
    let what = What::Http {
        stage: if ok { "request" } else { "connection" }.into(),
        method: if ok { "POST" } else { "" }.into(),
        scheme: "https".into(),
        host: if ok { "api.anthropic.com" } else { "evil.example" }.into(),
        port: 443,
        path: if ok { "/v1/messages" } else { "" }.into(),
        status: ok.then_some(200),
        bytes_in: if ok { 2_048 } else { 0 },
        bytes_out: if ok { 512 } else { 0 },
        duration_us: if ok { 45_600 } else { 0 },
        injected: if ok { vec!["x-api-key".into()] } else { vec![] },
        secrets_used: if ok {
            vec!["ANTHROPIC_API_KEY".into()]
        } else {
            vec![]
        },
        secrets_withheld: vec![],
        error: (!ok).then(|| "SNI `evil.example` does not match the destination".into()),
        pid_known,
    };
    let policies: Vec<String> = if ok {
        vec!["allow-anthropic".into()]
    } else {
        vec![]
    };
    Stored {
        id: None,
        wall_ns: 2_000_000_000,
        policy_at: policies.iter().map(|_| "team.cedar:4".to_string()).collect(),
        event: Event {
            session: SessionId(session),
            principal: "Agent::\"claude\"".into(),
            ts_ns: 1,
            proc: if pid_known {
                Proc {
                    pid: 7,
                    ppid: 1,
                    comm: "node".into(),
                    exe: Some("/usr/bin/node".into()),
                }
            } else {
                Proc::default()
            },
            what,
            decision: Some(if ok { Decision::Allow } else { Decision::Deny }),
            layer: Layer::Proxy,
            policies,
            mcp_call: None,
        },
    }
}

#[test]
fn events_kind_http_shows_each_request_on_one_line() {
    let dir = Scratch::new("http");
    let db = dir.0.join("audit.db");
    make_store(&db, 5, 0);
    let mut store = Store::open(&db).unwrap();
    store
        .insert(&[http_event(1, true, true), http_event(1, false, false)])
        .unwrap();
    drop(store);
    let store = db.to_str().unwrap();

    let o = corral(&["events", "--kind", "http", "--store", store]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let ok = lines[1];
    for part in [
        " s1 ",
        " 7 /usr/bin/node ",
        "http POST",
        "https://api.anthropic.com:443/v1/messages",
        " allow ",
        "allow-anthropic (team.cedar:4)",
        "-> 200, in 2.0 KiB, out 512 B, 45.6 ms, injected [x-api-key], secrets used [ANTHROPIC_API_KEY]",
    ] {
        assert!(ok.contains(part), "{part:?} not in {ok:?}");
    }
    let refused = lines[2];
    for part in [
        " - - ",
        "http conn",
        "https://evil.example:443",
        " DENY ",
        "-> no response, error: SNI `evil.example` does not match the destination",
    ] {
        assert!(refused.contains(part), "{part:?} not in {refused:?}");
    }
    assert!(!refused.contains("default deny"), "{refused}");

    // The same two as JSON and as OCSF HTTP Activity; --grep finds the URL.
    let json = ok_lines(&corral(&["events", "--kind", "http", "--json", "--store", store]));
    assert_eq!(json.len(), 2);
    assert!(json
        .iter()
        .all(|v| v["what"]["kind"] == "http" && v["layer"] == "proxy"));
    let ocsf = ok_lines(&corral(&[
        "events", "export", "--format", "ocsf", "--kind", "http", "--store", store,
    ]));
    assert_eq!(
        ocsf.iter().map(|v| v["class_uid"].clone()).collect::<Vec<_>>(),
        [json!(4002), json!(4002)]
    );
    assert_eq!(
        ocsf[0]["http_request"]["url"]["url_string"],
        "https://api.anthropic.com:443/v1/messages"
    );
    let grep = ok_lines(&corral(&[
        "events",
        "--json",
        "--grep",
        "POST https://api.anthropic.com",
        "--store",
        store,
    ]));
    assert_eq!(grep.len(), 1);
}
