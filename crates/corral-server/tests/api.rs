//! The routes that reach running sessions (through a stand-in control
//! socket), one event in full, stats, and drafting a rule from an event.

use crate::util::*;
use corral_audit::{SessionRow, Store};
use corral_core::{Decision, What};

/// The fixture with session 1 "running" (a fake control socket).
async fn with_s1() -> (tempfile::TempDir, Running, FakeSession) {
    let (dir, store) = fixture();
    let fake = FakeSession::start(&dir.path().join("run"), 1);
    let r = start(store).await;
    (dir, r, fake)
}

#[tokio::test]
async fn sessions_say_which_run_with_their_live_status_and_layers() {
    let (_dir, r, _fake) = with_s1().await;
    let v = get(&r, "/api/sessions").await.json();
    let s = v.as_array().unwrap();
    assert_eq!(s.len(), 2, "{v}");
    assert_eq!(s[0]["id"], 1);
    assert_eq!(s[0]["running"], true, "{v}");
    assert_eq!(s[0]["live"]["mode"], "enforce");
    assert_eq!(s[0]["live"]["policy_sha256"], "11".repeat(32));
    assert_eq!(s[0]["layers"], serde_json::json!(["bpf_lsm"]));
    assert_eq!(s[1]["running"], false);
    assert!(s[1]["live"].is_null());
    r.stop().await;
}

#[tokio::test]
async fn mode_switch_reaches_the_session_and_bad_input_does_not() {
    let (_dir, r, fake) = with_s1().await;
    let resp = post(&r, "/api/sessions/s1/mode", r#"{"mode":"shadow"}"#).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let v = resp.json();
    assert_eq!(
        (v["ok"].clone(), v["mode"].clone()),
        (true.into(), "shadow".into()),
        "{v}"
    );
    assert_eq!(v["session"], 1);
    assert_eq!(
        fake.requests.lock().unwrap().as_slice(),
        [serde_json::json!({"op": "mode", "mode": "shadow"})]
    );
    for (path, body, status, says) in [
        ("/api/sessions/2/mode", r#"{"mode":"shadow"}"#, 404, "not running"),
        (
            "/api/sessions/x1/mode",
            r#"{"mode":"shadow"}"#,
            400,
            "`session` \"x1\"",
        ),
        ("/api/sessions/1/mode", "{", 400, "EOF"),
        ("/api/sessions/1/mode", r#"{"mode":"off"}"#, 400, "off"),
        ("/api/sessions/1/mode", r#"{"mode":"shadow","x":1}"#, 400, "x"),
    ] {
        let resp = post(&r, path, body).await;
        assert_eq!(resp.status, status, "{path} {body}: {resp:?}");
        let msg = resp.json()["error"].as_str().unwrap().to_owned();
        assert!(msg.contains(says), "{path} {body}: {msg}");
    }
    assert_eq!(
        fake.requests.lock().unwrap().len(),
        1,
        "bad requests reached the session"
    );
    r.stop().await;
}

#[tokio::test]
async fn stop_reaches_the_session() {
    let (_dir, r, fake) = with_s1().await;
    let resp = post(&r, "/api/sessions/1/stop", "").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["ok"], true);
    assert_eq!(
        fake.requests.lock().unwrap().as_slice(),
        [serde_json::json!({"op": "stop"})]
    );
    assert_eq!(post(&r, "/api/sessions/s2/stop", "").await.status, 404);
    assert_eq!(post(&r, "/api/sessions/-1/stop", "").await.status, 400);
    r.stop().await;
}

const POLICY: &str = "// v1\n@id(\"read-all\")\npermit (principal, action == Action::\"FileOpenReadOnly\", resource)\nwhen { resource in Dir::\"/\" };\n\n@id(\"no-shadow\")\nforbid (principal, action == Action::\"FileOpenReadOnly\", resource)\nwhen { resource == File::\"/etc/shadow\" };\n";

/// Session 3: `sh -c` (pid 10, child of 5) runs `cat /etc/shadow` (pid
/// 20), denied at POLICY's line 7; then a reload to another text.
fn detail_fixture() -> (tempfile::TempDir, std::path::PathBuf, Vec<i64>) {
    let (dir, path) = fixture();
    let mut store = Store::open(&path).unwrap();
    let sha = store.record_policy("p.cedar", POLICY).unwrap();
    let later = store.record_policy("ui", "// v2\n").unwrap();
    store
        .session_started(&SessionRow {
            id: 3,
            principal: "Agent::\"a3\"".into(),
            policy_label: "p.cedar".into(),
            policy_sha256: sha,
            mode: "enforce".into(),
            started_ns: now_ns(),
            command: vec!["sh".into()],
        })
        .unwrap();
    let with_proc = |mut s: corral_audit::Stored, pid: u32, ppid: u32, comm: &str, exe: &str| {
        s.event.proc.pid = pid;
        s.event.proc.ppid = ppid;
        s.event.proc.comm = comm.into();
        s.event.proc.exe = Some(exe.into());
        s
    };
    let mut denied = open("/etc/shadow", 3, Decision::Deny);
    denied.policy_at = vec!["p.cedar:7".into()];
    denied.event.policies = vec!["no-shadow".into()];
    let mut evs = vec![
        with_proc(
            event(
                3,
                What::ExecTrace {
                    path: "/bin/sh".into(),
                    argv: vec!["sh".into(), "-c".into(), "cat /etc/shadow".into()],
                },
                None,
            ),
            10,
            5,
            "sh",
            "/bin/sh",
        ),
        with_proc(
            event(
                3,
                What::Exec {
                    path: "/usr/bin/cat".into(),
                    argv: Some(vec!["cat".into(), "/etc/shadow".into()]),
                },
                Some(Decision::Allow),
            ),
            20,
            10,
            "cat",
            "/usr/bin/cat",
        ),
        with_proc(denied, 20, 10, "cat", "/usr/bin/cat"),
        event(
            3,
            What::PolicyLoad {
                label: "ui".into(),
                sha256: later,
                error: None,
            },
            None,
        ),
    ];
    store.insert_assign(&mut evs).unwrap();
    store.add_drops(3, "queue_full", 5).unwrap();
    let ids = evs.iter().map(|e| e.id.unwrap()).collect();
    (dir, path, ids)
}

#[tokio::test]
async fn an_event_in_full_has_its_process_chain_and_the_policy_then_in_force() {
    let (_dir, path, ids) = detail_fixture();
    let r = start(path).await;
    let resp = get(&r, &format!("/api/events/{}", ids[2])).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let v = resp.json();
    assert_eq!(v["event"]["id"], ids[2]);
    assert_eq!(v["event"]["what"]["path"], "/etc/shadow");
    let chain: Vec<(u64, Option<Vec<String>>)> = v["process"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pid"].as_u64().unwrap(),
                serde_json::from_value(p["argv"].clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        chain,
        [
            (20, Some(vec!["cat".into(), "/etc/shadow".into()])),
            (10, Some(vec!["sh".into(), "-c".into(), "cat /etc/shadow".into()])),
        ],
        "{v}"
    );
    // The policy of the time (the reload came later), with the line.
    assert_eq!(v["policy"]["label"], "p.cedar", "{v}");
    assert_eq!(v["policy"]["text"], POLICY);
    assert_eq!(v["policy"]["lines"], serde_json::json!([7]));
    assert!(POLICY.lines().nth(6).unwrap().starts_with("forbid"));
    // After the reload, the reloaded text is in force.
    let v = get(&r, &format!("/api/events/{}", ids[3])).await.json();
    assert_eq!(v["policy"]["label"], "ui", "{v}");
    // Session 1's policy text was never recorded.
    let v = get(&r, "/api/events/1").await.json();
    assert!(v["policy"].is_null(), "{v}");
    for (id, status) in [("abc", 400), ("0", 400), ("-3", 400), ("999999", 404)] {
        let resp = get(&r, &format!("/api/events/{id}")).await;
        assert_eq!(resp.status, status, "{id}: {resp:?}");
        assert!(resp.json()["error"].is_string());
    }
    r.stop().await;
}

#[tokio::test]
async fn stats_count_per_kind_and_decision_with_drops() {
    let (_dir, path, _) = detail_fixture();
    let r = start(path).await;
    let v = get(&r, "/api/stats?session=1").await.json();
    assert_eq!(v["total"], 3, "{v}");
    assert_eq!(v["by_kind"], serde_json::json!({"file": 2, "exec": 1}));
    assert_eq!(
        v["by_decision"],
        serde_json::json!({"allow": 2, "deny": 1, "would_deny": 0, "none": 0})
    );
    assert_eq!(v["drops"], serde_json::json!({}));
    let v = get(&r, "/api/stats?session=s3&since=1h").await.json();
    assert_eq!(v["total"], 4, "{v}");
    assert_eq!(v["by_decision"]["none"], 2);
    assert_eq!(v["drops"], serde_json::json!({"queue_full": 5}));
    let all = get(&r, "/api/stats").await.json();
    assert_eq!(all["total"], 8, "{all}");
    for q in ["session=x", "since=10y", "kind=file"] {
        let resp = get(&r, &format!("/api/stats?{q}")).await;
        assert_eq!(resp.status, 400, "{q}: {resp:?}");
    }
    r.stop().await;
}

#[tokio::test]
async fn a_drafted_rule_names_the_event_and_validates() {
    let (_dir, path, ids) = detail_fixture();
    let r = start(path).await;
    for effect in ["permit", "forbid"] {
        let body = serde_json::json!({"event": ids[2], "effect": effect}).to_string();
        let resp = post(&r, "/api/policy/suggest", &body).await;
        assert_eq!(resp.status, 200, "{resp:?}");
        let text = resp.json()["text"].as_str().unwrap().to_owned();
        assert!(
            text.contains(&format!(
                "{effect} (principal == Agent::\"a3\", action == Action::\"FileOpenReadOnly\", resource)"
            )) && text.contains("File::\"/etc/shadow\"")
                && text.contains(&format!("@id(\"ui-{effect}-{}\")", ids[2])),
            "{text}"
        );
        let v = post(
            &r,
            "/api/policy/validate",
            &serde_json::json!({ "text": text }).to_string(),
        )
        .await
        .json();
        assert_eq!(v["ok"], true, "{text}: {v}");
    }
    for (body, status, says) in [
        (
            format!(r#"{{"event":{},"effect":"permit"}}"#, ids[3]),
            422,
            "policy_load",
        ),
        (
            r#"{"event":999999,"effect":"permit"}"#.to_string(),
            404,
            "no event 999999",
        ),
        (r#"{"event":1,"effect":"maybe"}"#.to_string(), 400, "maybe"),
        (r#"{"event":0,"effect":"permit"}"#.to_string(), 400, "`event`"),
        (r#"{"event":1}"#.to_string(), 400, "effect"),
        ("nope".to_string(), 400, "expected"),
    ] {
        let resp = post(&r, "/api/policy/suggest", &body).await;
        assert_eq!(resp.status, status, "{body}: {resp:?}");
        let msg = resp.json()["error"].as_str().unwrap().to_owned();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    r.stop().await;
}

#[tokio::test]
async fn apply_validates_the_whole_text_first_then_reloads_each_session() {
    let (_dir, r, fake) = with_s1().await;
    // Line 4 has the error: nothing is sent to any session.
    let broken = "@id(\"a\")\npermit (principal, action, resource);\n\npermit (principal, action == Action::\"Nope\", resource);\n";
    let body = serde_json::json!({"text": broken, "sessions": [1]}).to_string();
    let resp = post(&r, "/api/policy/apply", &body).await;
    assert_eq!(resp.status, 422, "{resp:?}");
    let v = resp.json();
    assert!(
        v["error"].as_str().unwrap().contains("nothing was applied"),
        "{v}"
    );
    let lines: Vec<u64> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "error")
        .map(|d| d["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4], "{v}");
    assert!(fake.requests.lock().unwrap().is_empty());
    // A good text: session 1 takes it, session 2 is not running.
    let good = "@id(\"a\")\npermit (principal, action == Action::\"FileOpenReadOnly\", resource);\n";
    let body = serde_json::json!({"text": good, "label": "edited.cedar", "sessions": [1, "s2"]}).to_string();
    let resp = post(&r, "/api/policy/apply", &body).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let res = resp.json()["results"].clone();
    assert_eq!(res[0]["session"], 1);
    assert_eq!(res[0]["ok"], true, "{res}");
    assert_eq!(res[0]["policy_sha256"], "22".repeat(32));
    assert_eq!(res[1]["session"], 2);
    assert_eq!(res[1]["ok"], false);
    assert!(res[1]["error"].as_str().unwrap().contains("not running"), "{res}");
    assert_eq!(
        fake.requests.lock().unwrap().as_slice(),
        [serde_json::json!({"op": "reload", "label": "edited.cedar", "text": good})]
    );
    // A session that refuses says so in its result (still a 200).
    let body = serde_json::json!({"text": format!("// REFUSE\n{good}"), "sessions": [1]}).to_string();
    let res = post(&r, "/api/policy/apply", &body).await.json()["results"].clone();
    assert_eq!(res[0]["ok"], false, "{res}");
    assert!(
        res[0]["error"].as_str().unwrap().contains("refused by the fake"),
        "{res}"
    );
    for (body, says) in [
        ("not json", "expected"),
        (r#"{"text":"","sessions":[],"extra":1}"#, "extra"),
        (r#"{"text":""}"#, "sessions"),
        (r#"{"text":"","sessions":["x"]}"#, "`session` \"x\""),
    ] {
        let resp = post(&r, "/api/policy/apply", body).await;
        assert_eq!(resp.status, 400, "{body}: {resp:?}");
        let msg = resp.json()["error"].as_str().unwrap().to_owned();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    r.stop().await;
}
