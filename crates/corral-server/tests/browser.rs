//! The control UI in a real browser: Debian's chromium driven by
//! playwright-core (ui/tests/smoke.mjs) against a server over a seeded
//! store of 100,000 events. The driver reports each step as a JSON line;
//! the assertions are here. Screenshots of each step go to
//! `<target>/ui-artifacts/browser_smoke/NN-step.png` (the path is printed).
//! Without chromium, node or playwright-core (scripts/deps.sh
//! `corral_ui_browser_deps`) the test records a skip (`CORRAL-SKIP`).

use crate::util::*;
use corral_audit::{SessionRow, Store, Stored};
use corral_core::{Access, Decision, Event, Layer, Proc, SessionId, What};
use corral_vmtest::browser::deps as browser_deps;
use corral_vmtest::skip;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The policy the seeded sessions run; line 7 is the forbid that denies
/// `/etc/shadow`.
const POLICY: &str = "// seeded by the browser test\n\
@id(\"read-all\")\n\
permit (principal, action == Action::\"FileOpenReadOnly\", resource)\n\
when { resource in Dir::\"/\" };\n\
\n\
@id(\"forbid-secrets\")\n\
forbid (principal, action == Action::\"FileOpenReadOnly\", resource == File::\"/etc/shadow\");\n\
\n\
@id(\"run-git\")\n\
permit (principal, action == Action::\"ProcessExec\", resource == File::\"/usr/bin/git\");\n";
const FORBID_LINE: u64 = 7;

/// The workspace root (for ui/tests).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where screenshots go: `<target dir>/ui-artifacts/<test>`.
fn artifacts(test: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("ui-artifacts").join(test)
}

/// How many events of each sort the seeded store holds.
#[derive(Default, Debug)]
struct Seeded {
    total: usize,
    deny: usize,
    exec_git: usize,
    session2: usize,
}

fn ev(session: u32, pid: u32, what: What, decision: Option<Decision>, policy: Option<(&str, u64)>) -> Stored {
    Stored {
        id: None,
        wall_ns: now_ns(),
        policy_at: policy
            .map(|(_, l)| vec![format!("policy.cedar:{l}")])
            .unwrap_or_default(),
        event: Event {
            session: SessionId(session),
            principal: format!("Agent::\"a{session}\""),
            ts_ns: 1_000 + u64::from(pid),
            proc: Proc {
                pid,
                ppid: 100,
                comm: "bash".into(),
                exe: Some("/usr/bin/bash".into()),
            },
            what,
            decision,
            layer: Layer::Fanotify,
            policies: policy.map(|(p, _)| vec![p.to_owned()]).unwrap_or_default(),
            mcp_call: None,
        },
    }
}

/// A store with sessions 1 and 2 running [`POLICY`] and `n` events: most
/// allowed reads, every 97th a denied `/etc/shadow`, every 89th an exec of
/// git, every 10th in session 2.
fn seed(n: usize) -> (tempfile::TempDir, PathBuf, Seeded) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let mut store = Store::open(&path).unwrap();
    let sha = store.record_policy("policy.cedar", POLICY).unwrap();
    for id in [1, 2] {
        store
            .session_started(&SessionRow {
                id,
                principal: format!("Agent::\"a{id}\""),
                policy_label: "policy.cedar".into(),
                policy_sha256: sha.clone(),
                mode: "enforce".into(),
                started_ns: now_ns(),
                command: vec!["bash".into(), "agent.sh".into()],
            })
            .unwrap();
    }
    let mut counts = Seeded::default();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let session = if i % 10 == 9 { 2 } else { 1 };
        let pid = 1000 + (i % 50) as u32;
        let e = if i % 97 == 0 {
            counts.deny += 1;
            ev(
                session,
                pid,
                What::FileOpen {
                    path: "/etc/shadow".into(),
                    access: Access::Read,
                },
                Some(Decision::Deny),
                Some(("forbid-secrets", FORBID_LINE)),
            )
        } else if i % 89 == 0 {
            counts.exec_git += 1;
            ev(
                session,
                pid,
                What::Exec {
                    path: "/usr/bin/git".into(),
                    argv: Some(vec!["git".into(), "status".into()]),
                },
                Some(Decision::Allow),
                Some(("run-git", 10)),
            )
        } else {
            ev(
                session,
                pid,
                What::FileOpen {
                    path: format!("/work/src/file{i}.rs"),
                    access: Access::Read,
                },
                Some(Decision::Allow),
                Some(("read-all", 3)),
            )
        };
        if session == 2 {
            counts.session2 += 1;
        }
        batch.push(e);
        if batch.len() == 10_000 {
            store.insert_assign(&mut batch).unwrap();
            batch.clear();
        }
    }
    store.insert_assign(&mut batch).unwrap();
    counts.total = n;
    (dir, path, counts)
}

/// Runs `node <script> <url>` with `env`; calls `on_signal` with each
/// `signal-*` step the driver prints (it waits for the caller to act);
/// returns its stdout as JSON lines.
fn drive(
    script: &str,
    url: &str,
    node_dir: &Path,
    env: &[(&str, String)],
    out: &Path,
    mut on_signal: impl FnMut(&str),
) -> Vec<Value> {
    let log = out.join("driver.jsonl");
    let stdout = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(root().join("ui/tests").join(script))
        .arg(url)
        .env("CORRAL_UI_TEST_NODE", node_dir)
        .env("CORRAL_UI_ARTIFACTS", out)
        .stdout(stdout)
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = 0;
    let mut signals = |text: &str| {
        // Only complete lines count: the driver may be mid-write.
        let done = text.rfind('\n').map_or(0, |i| i + 1);
        for line in text[..done].lines().skip(seen) {
            seen += 1;
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            if let Some(sig) = v["step"].as_str().filter(|s| s.starts_with("signal-")) {
                on_signal(sig);
            }
        }
    };
    let status = loop {
        signals(&std::fs::read_to_string(&log).unwrap());
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser driver did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "driver failed ({status}):\n{text}");
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("driver printed a non-JSON line ({e}): {l}"))
        })
        .collect()
}

/// Stores `n` allowed reads of `/live/<tag>-<i>` in session 1 (a second
/// connection to the store, like a session's pipeline).
fn store_live(path: &Path, tag: &str, n: usize) {
    let mut store = Store::open(path).unwrap();
    let mut evs: Vec<Stored> = (0..n)
        .map(|i| {
            ev(
                1,
                4242,
                What::FileOpen {
                    path: format!("/live/{tag}-{i}"),
                    access: Access::Read,
                },
                Some(Decision::Allow),
                Some(("read-all", 3)),
            )
        })
        .collect();
    store.insert_assign(&mut evs).unwrap();
}

fn step<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    let s = lines
        .iter()
        .find(|l| l["step"] == name)
        .unwrap_or_else(|| panic!("the driver reported no step `{name}`"));
    assert_eq!(s["ok"], true, "step `{name}` failed in the browser: {s}");
    s
}

fn rows(s: &Value) -> &Vec<Value> {
    s["rows"].as_array().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_smoke() {
    let node_dir = match browser_deps() {
        Ok(d) => d,
        Err(why) => return skip("browser_smoke", &why),
    };
    let t0 = Instant::now();
    let (_dir, store, seeded) = tokio::task::spawn_blocking(|| seed(100_000)).await.unwrap();
    eprintln!("seeded {seeded:?} in {:?}", t0.elapsed());
    let r = start(store.clone()).await;
    let out = artifacts("browser_smoke");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    eprintln!("screenshots: {}", out.display());
    let url = r.url.clone();
    // CORRAL_UI_HOLD_SECS=N: serve the seeded store for N s first (open
    // the printed URL by hand, or run another driver against it).
    if let Some(secs) = std::env::var("CORRAL_UI_HOLD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        eprintln!("holding {secs} s: {url}");
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    const LIVE: usize = 5;
    let env = vec![
        ("CORRAL_UI_EXPECT", seeded.total.to_string()),
        ("CORRAL_UI_LIVE", LIVE.to_string()),
    ];
    let out2 = out.clone();
    let lines = tokio::task::spawn_blocking(move || {
        drive("smoke.mjs", &url, &node_dir, &env, &out2, |sig| {
            store_live(&store, sig, LIVE)
        })
    })
    .await
    .unwrap();
    // The two live batches come after the seeded events.
    let total = seeded.total + 2 * LIVE;
    for l in &lines {
        eprintln!("{l}");
    }

    // Without the token: the page says what to do; the API answers 401.
    let s = step(&lines, "no-token");
    assert_eq!(s["status"], 401, "{s}");
    assert_eq!(s["says_token"], true, "{s}");
    assert_eq!(s["api_status"], 401, "{s}");

    // With it: all 100,000 events load, few rows are in the DOM.
    let s = step(&lines, "load");
    assert_eq!(s["loaded"], seeded.total, "{s}");
    assert!(s["rows_in_dom"].as_u64().unwrap() < 200, "not virtualised: {s}");
    eprintln!("load: {} ms (fetch {} ms)", s["load_ms"], s["fetch_ms"]);

    // Events stored now arrive in the list (one store poll, 250 ms, plus
    // the browser), and the list follows them to the end.
    let s = step(&lines, "live");
    assert_eq!(s["after"], seeded.total + LIVE, "{s}");
    assert!(s["arrived_ms"].as_u64().unwrap() < 2000, "{s}");
    assert_eq!(
        s["last_visible_id"].as_u64(),
        Some((seeded.total + LIVE) as u64),
        "{s}"
    );
    eprintln!("live: stored -> in the list: {} ms", s["arrived_ms"]);
    // Paused: the list holds still, the button counts what waits.
    let s = step(&lines, "pause");
    assert_eq!(s["paused"]["loaded"], seeded.total + LIVE, "{s}");
    assert_eq!(s["paused"]["buffered"], LIVE, "{s}");
    assert!(
        s["paused"]["button"]
            .as_str()
            .unwrap()
            .contains(&format!("{LIVE} new")),
        "{s}"
    );
    assert_eq!(s["resumed"]["loaded"], total, "{s}");
    assert_eq!(s["resumed"]["buffered"], 0, "{s}");

    // Scrolling top to bottom over 3 s: smooth, and the end is reached.
    let s = step(&lines, "scroll");
    let f = &s["frames"];
    eprintln!("scroll frame times (ms): {f}");
    assert!(f["n"].as_u64().unwrap() > 30, "too few frames: {s}");
    assert!(f["p95"].as_f64().unwrap() < 50.0, "scrolling is not smooth: {s}");
    assert_eq!(s["last_visible_id"].as_u64(), Some(total as u64), "{s}");

    // Filters.
    let s = step(&lines, "filter-deny");
    assert_eq!(s["shown"], seeded.deny, "{s}");
    assert!(
        !rows(s).is_empty() && rows(s).iter().all(|r| r["decision"] == "deny"),
        "{s}"
    );
    let s = step(&lines, "filter-kind-text");
    assert_eq!(s["shown"], seeded.exec_git, "{s}");
    assert!(
        !rows(s).is_empty()
            && rows(s)
                .iter()
                .all(|r| r["kind"] == "exec" && r["target"].as_str().unwrap().contains("git")),
        "{s}"
    );
    let s = step(&lines, "filter-session");
    assert_eq!(s["shown"], seeded.session2, "{s}");
    let s = step(&lines, "filter-clear");
    assert_eq!(s["shown"], total, "{s}");

    // The detail of a denied event shows the forbid at its line, in view.
    let s = step(&lines, "detail");
    assert_eq!(s["decision"], "deny", "{s}");
    assert_eq!(s["tab"], "detail", "{s}");
    assert_eq!(s["deciding_line"].as_u64(), Some(FORBID_LINE), "{s}");
    assert!(s["deciding_text"].as_str().unwrap().starts_with("forbid"), "{s}");
    assert_eq!(s["deciding_line_in_view"], true, "{s}");
    assert!(!s["process_rows"].as_array().unwrap().is_empty(), "{s}");
    assert!(s["target"].as_str().unwrap().contains("/etc/shadow"), "{s}");

    // A typo: an error at the typed line, marked in the editor; Apply refused.
    let s = step(&lines, "editor-typo");
    let typed = s["typed_line"].as_u64().unwrap();
    assert_eq!(typed, s["lines_before"].as_u64().unwrap() + 1, "{s}");
    let errors = s["errors"].as_array().unwrap();
    assert!(!errors.is_empty(), "no error shown: {s}");
    assert_eq!(errors[0]["line"].as_u64(), Some(typed), "{s}");
    assert!(s["lint_marks"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["apply_disabled"], true, "{s}");
    assert!(s["apply_reason"].as_str().unwrap().contains("error"), "{s}");

    // A 400 px window: the stream is still there, nothing overflows sideways.
    let s = step(&lines, "narrow");
    assert!(s["list"]["w"].as_u64().unwrap() >= 300, "{s}");
    assert!(s["list"]["h"].as_u64().unwrap() >= 100, "{s}");
    assert!(s["rows_visible"].as_u64().unwrap() > 3, "{s}");
    assert!(s["page_width"].as_u64().unwrap() <= 400, "{s}");

    // Keyboard: Tab reaches the list, Enter opens, Esc closes.
    let s = step(&lines, "keyboard");
    assert_eq!(s["on_list"], true, "{s}");
    assert_eq!(s["focus_outline"], true, "{s}");
    assert!(s["active_id"].as_u64().is_some(), "{s}");
    assert_eq!(s["opened"]["tab"], "detail", "{s}");
    assert!(s["opened"]["detail"].is_string(), "{s}");
    assert_eq!(s["closed"]["tab"], "policy", "{s}");
    assert!(s["closed"]["detail"].is_null(), "{s}");
    assert_eq!(s["closed"]["focus"], "event-list", "{s}");

    // Nothing blocked by the CSP, nothing fetched elsewhere, no script errors.
    let s = step(&lines, "hygiene");
    assert_clean(s);
    eprintln!("screenshots: {}", out.display());
    r.stop().await;
}

/// The UI's side of the newer routes (sessions' live status, suggest,
/// apply, mode, stop), answered by the driver's request interception with
/// the API contract's shapes (ui/tests/contract.mjs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_contract() {
    let node_dir = match browser_deps() {
        Ok(d) => d,
        Err(why) => return skip("browser_contract", &why),
    };
    let (_dir, store, seeded) = tokio::task::spawn_blocking(|| seed(2_000)).await.unwrap();
    let r = start(store).await;
    let out = artifacts("browser_contract");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    eprintln!("screenshots: {}", out.display());
    let url = r.url.clone();
    let env = vec![("CORRAL_UI_EXPECT", seeded.total.to_string())];
    let out2 = out.clone();
    let lines =
        tokio::task::spawn_blocking(move || drive("contract.mjs", &url, &node_dir, &env, &out2, |_| {}))
            .await
            .unwrap();
    for l in &lines {
        eprintln!("{l}");
    }
    step(&lines, "load");
    // s1 runs (live status from the server), s2 has ended: no actions.
    let s = step(&lines, "sessions");
    assert_eq!(s["s1_status"], "running", "{s}");
    assert!(s["s1_layers"].as_str().unwrap().contains("fanotify"), "{s}");
    assert_eq!(s["s2_actions"], false, "{s}");
    // Selecting s1 filters the stream and loads its policy; nothing to apply yet.
    let s = step(&lines, "select-session");
    assert_eq!(s["filter_session"], "1", "{s}");
    assert!(s["policy_info"].as_str().unwrap().contains("s1"), "{s}");
    assert_eq!(s["apply_reason"], "no changes", "{s}");
    // "Allow this" asks for a rule for that event and appends it; it
    // validates, so Apply is offered for s1.
    let s = step(&lines, "suggest");
    let id = s["event_id"].as_u64().unwrap();
    assert_eq!(
        s["requests"][0],
        serde_json::json!({"event": id, "effect": "permit"}),
        "{s}"
    );
    let tail: Vec<&str> = s["editor_tail"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tail.iter().any(|l| l.contains("@id(\"allow-shadow\")")), "{s}");
    assert_eq!(s["apply_disabled"], false, "{s}");
    assert_eq!(s["apply_reason"], "applies to s1", "{s}");
    // The diff against the running policy shows the added lines.
    let s = step(&lines, "diff");
    assert!(s["inserted"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(s["pressed"], "true", "{s}");
    // Apply sends the text to s1 and shows each session's result.
    let s = step(&lines, "apply");
    assert_eq!(s["clicked"], true, "{s}");
    let req = &s["requests"][0];
    assert_eq!(req["sessions"], serde_json::json!([1]), "{s}");
    assert_eq!(req["label"], "policy.cedar", "{s}");
    assert!(req["text"].as_str().unwrap().contains("allow-shadow"), "{s}");
    assert_eq!(s["results"][0]["ok"], true, "{s}");
    assert!(s["text"].as_str().unwrap().contains("s1: applied"), "{s}");
    // The mode switch and stop post to the session and show the reply.
    let s = step(&lines, "mode");
    assert_eq!(
        s["requests"][0]["body"],
        serde_json::json!({"mode": "shadow"}),
        "{s}"
    );
    assert!(
        s["requests"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/api/sessions/1/mode"),
        "{s}"
    );
    assert!(s["msg"].as_str().unwrap().contains("now shadow"), "{s}");
    let s = step(&lines, "stop");
    assert!(
        s["requests"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/api/sessions/1/stop"),
        "{s}"
    );
    assert!(
        s["msg"]
            .as_str()
            .unwrap()
            .contains("not stopped: the session is already ending"),
        "{s}"
    );
    let s = step(&lines, "hygiene");
    assert_clean(s);
    r.stop().await;
}

/// The page had nothing blocked by the CSP, fetched nothing elsewhere,
/// logged no script error and no failed request (a driver `hygiene` line).
fn assert_clean(s: &Value) {
    for k in [
        "csp_violations",
        "foreign_requests",
        "console_errors",
        "failed_requests",
    ] {
        assert_eq!(s[k].as_array().map(Vec::len), Some(0), "{k}: {s}");
    }
}
