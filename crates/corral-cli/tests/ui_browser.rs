//! The control UI against a real session, in real Chromium (the issue's
//! browser acceptance): load the UI with the token; a denied file read by
//! a running session appears live within 1 s; its detail shows the forbid
//! at its line; the policy edited to allow it and applied (hot reload);
//! the same read, repeated by the session, is allowed and shows up; a typo
//! shows an error at its line and Apply is refused (button and API).
//!
//! ui/tests/session.mjs drives the browser and reports JSON lines; this
//! test runs the session, tells it when to act, and asserts. Screenshots
//! of each step: `<target>/ui-artifacts/ui_browser/NN-step.png`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{text, Scratch, StopUi};
use corral_vmtest::{is_root, skip};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills a child on drop (a failing test leaves nothing running).
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn artifacts(test: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("ui-artifacts").join(test)
}

/// The session's policy: read the system, write the scratch dir, run
/// system tools — and never open `target`. Returns (policy, the forbid's
/// first line, the policy without the forbid).
fn policies(dir: &Path, target: &Path) -> (String, usize, String) {
    let base = format!(
        "// The browser acceptance test's policy.\n\
@id(\"read-system\")\n\
permit (principal, action == Action::\"FileOpenReadOnly\", resource)\n\
when {{ resource in Dir::\"/\" }};\n\
\n\
@id(\"write-scratch\")\n\
permit (principal, action in Action::\"FileOpen\", resource)\n\
when {{ resource in Dir::\"{d}/\" || resource == File::\"/dev/null\" }};\n\
\n\
@id(\"run-tools\")\n\
permit (principal, action == Action::\"ProcessExec\", resource)\n\
when {{ resource in [Dir::\"/usr/bin/\", Dir::\"/bin/\", Dir::\"/usr/lib/\", Dir::\"/lib/\"] }};\n",
        d = dir.display()
    );
    let forbid = format!(
        "\n@id(\"keep-notes-private\")\n\
forbid (principal, action in Action::\"FileOpen\", resource)\n\
when {{ resource == File::\"{}\" }};\n",
        target.display()
    );
    let line = base.lines().count() + 3;
    (format!("{base}{forbid}"), line, base)
}

#[test]
fn ui_shows_a_live_denial_and_applies_a_policy_that_allows_it() {
    let t = "ui_shows_a_live_denial_and_applies_a_policy_that_allows_it";
    if !is_root() {
        skip(t, "needs root (sessions attach cgroup programs)");
        return;
    }
    let node_dir = match corral_vmtest::browser::deps() {
        Ok(d) => d,
        Err(why) => return skip(t, &why),
    };
    let dir = Scratch::new("ui-browser");
    let store = dir.0.join("audit.db");
    std::fs::create_dir_all(dir.0.join("private")).unwrap();
    let target = dir.file("private/notes.txt", "private notes\n");
    let (policy, forbid_line, allowed) = policies(&dir.0, &target);
    let policy_path = dir.file("policy.cedar", &policy);
    let allowed_path = dir.file("allowed.cedar", &allowed);
    assert!(policy.lines().nth(forbid_line - 1).unwrap().starts_with("forbid"));

    // The UI server for this store, on a free port; stopped at the end.
    let _stop = StopUi(&dir, store.clone());
    let url = dir.start_ui(&store).url;

    // The session: reads the target each time a trigger file appears,
    // noting whether it could; ends when `stop` appears.
    let d = dir.0.display();
    let script = dir.file(
        "agent.sh",
        &format!(
            "echo started > {d}/started\nn=0\nwhile [ ! -e {d}/stop ]; do\n  \
             if [ -e {d}/trigger-$n ]; then\n    \
             if cat {tgt} > /dev/null 2>&1; then echo \"$n allowed\" >> {d}/out; \
             else echo \"$n denied\" >> {d}/out; fi\n    n=$((n+1))\n  fi\n  sleep 0.2\ndone\n",
            tgt = target.display()
        ),
    );
    let run_err = dir.0.join("run.stderr");
    let session = dir
        .corral()
        .args(["run", "--no-container", "--policy"])
        .arg(&policy_path)
        .arg("--project")
        .arg(&dir.0)
        .arg("--store")
        .arg(&store)
        .args(["--", "sh"])
        .arg(&script)
        .stderr(std::fs::File::create(&run_err).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut session = Reap(session);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.0.join("started").exists() {
        assert!(
            Instant::now() < deadline,
            "the session did not start: {}",
            std::fs::read_to_string(&run_err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The browser.
    let shots = artifacts("ui_browser");
    let _ = std::fs::remove_dir_all(&shots);
    eprintln!("screenshots: {}", shots.display());
    let typo = "permt (principal, action, resource);";
    let driver = Command::new("node")
        .arg(root().join("ui/tests/session.mjs"))
        .arg(&url)
        .arg(target.to_str().unwrap())
        .arg(forbid_line.to_string())
        .arg(&allowed_path)
        .arg(typo)
        .env("CORRAL_UI_TEST_NODE", &node_dir)
        .env("CORRAL_UI_ARTIFACTS", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut driver = Reap(driver);
    let mut to_driver = Some(driver.0.stdin.take().unwrap());
    let from_driver = BufReader::new(driver.0.stdout.take().unwrap());
    let mut steps: BTreeMap<String, Value> = BTreeMap::new();
    let mut trigger = 0;
    for line in from_driver.lines() {
        let line = line.unwrap();
        eprintln!("driver: {line}");
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let step = v["step"].as_str().unwrap_or("").to_string();
        if step == "ready" || step == "applied" {
            std::fs::write(dir.0.join(format!("trigger-{trigger}")), "").unwrap();
            trigger += 1;
            if let Some(w) = to_driver.as_mut() {
                writeln!(w, "go").unwrap();
            }
            if step == "applied" {
                // The last turn: the driver reads no more.
                to_driver = None;
            }
        }
        if step == "error" {
            panic!("driver failed: {}", v["error"]);
        }
        steps.insert(step, v);
    }
    let status = driver.0.wait().unwrap();
    std::fs::write(dir.0.join("stop"), "").unwrap();
    let ended = session.0.wait().unwrap();
    let run_stderr = std::fs::read_to_string(&run_err).unwrap_or_default();
    assert!(status.success(), "driver exit {status}; steps {steps:?}");
    assert!(ended.success(), "session: {run_stderr}");

    // What the session itself saw: denied, then (after Apply) allowed.
    let out = std::fs::read_to_string(dir.0.join("out")).unwrap_or_default();
    assert_eq!(out, "0 denied\n1 allowed\n", "session's reads; {run_stderr}");

    // Live: the denied event was in the page within 1 s of its decision.
    let live = &steps["live"];
    let latency = live["latency_ms"].as_f64().expect("latency");
    eprintln!(
        "decision -> browser: {latency} ms (denied), {} ms (allowed)",
        steps["allowed"]["latency_ms"]
    );
    assert!(latency < 1000.0, "denied event took {latency} ms to appear");
    assert!(steps["allowed"]["latency_ms"].as_f64().expect("latency") < 1000.0);

    // Detail: the forbid, highlighted at its line, in view.
    let detail = &steps["detail"];
    assert_eq!(
        detail["decision"].as_str().map(str::trim),
        Some("deny"),
        "{detail}"
    );
    assert_eq!(
        detail["deciding_line"].as_u64(),
        Some(forbid_line as u64),
        "{detail}"
    );
    assert!(
        detail["deciding_text"]
            .as_str()
            .unwrap_or("")
            .starts_with("forbid"),
        "{detail}"
    );
    assert_eq!(detail["deciding_line_in_view"], true, "{detail}");
    assert!(
        detail["target"].as_str().unwrap_or("").contains("notes.txt"),
        "{detail}"
    );
    assert!(
        !detail["process_rows"]
            .as_array()
            .map(Vec::is_empty)
            .unwrap_or(true),
        "no process chain: {detail}"
    );

    // Apply: clicked, one session, applied.
    let apply = &steps["apply"];
    assert_eq!(apply["clicked"], true, "{apply}");
    let results = apply["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{apply}");
    assert_eq!(results[0]["ok"], true, "{apply}");

    // The typo: an error at the typed line; Apply off; the API says 422
    // with the same line.
    let typo = &steps["typo"];
    let line = typo["typed_line"].as_u64().expect("typed line");
    let errors: Vec<u64> = typo["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["line"].as_u64())
        .collect();
    assert!(
        errors.contains(&line),
        "errors {errors:?} not at line {line}: {typo}"
    );
    assert_eq!(typo["apply_disabled"], true, "{typo}");
    assert_eq!(typo["api_status"], 422, "{typo}");
    assert!(
        typo["api_error_lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_u64() == Some(line)),
        "{typo}"
    );

    // A session started from the form: named, and it ran (its log).
    let msg = steps["started"]["msg"].as_str().unwrap_or("").to_string();
    assert!(msg.contains(": started"), "{msg}");
    let log = msg
        .split("output in ")
        .nth(1)
        .map(|l| l.trim_end_matches(')').to_string())
        .expect("log path");
    let ran = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("from-the-ui-form"))
    });
    assert!(ran, "the started session's output: {log}");

    // Nothing the page should not do.
    let h = &steps["hygiene"];
    for k in ["csp_violations", "foreign_requests"] {
        assert_eq!(h[k].as_array().map(Vec::len), Some(0), "{k}: {h}");
    }
    // The driver's own refused apply (422) is the one expected console error.
    let errors: Vec<&Value> = h["console_errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e.as_str().unwrap_or("").contains("status of 422"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    // Screenshots of each step exist.
    let n = std::fs::read_dir(&shots).map(|d| d.count()).unwrap_or(0);
    assert!(n >= 6, "only {n} screenshots in {}", shots.display());

    // The store agrees: one denied and one allowed open of the target, and
    // the reload recorded.
    let o = dir
        .corral()
        .args(["events", "--store"])
        .arg(&store)
        .args(["--kind", "file", "--grep", "notes.txt", "--json"])
        .output()
        .unwrap();
    let decisions: Vec<String> = text(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["decision"].as_str().map(str::to_string))
        .collect();
    assert!(decisions.contains(&"deny".to_string()), "{decisions:?}");
    assert!(decisions.contains(&"allow".to_string()), "{decisions:?}");
}
