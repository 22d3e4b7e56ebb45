//! The control UI's benchmark (docs/BENCHMARKS.md, "Control UI"):
//!
//! 1. Decision → browser: a real bare session makes COUNT denied file
//!    opens; the page (Debian's chromium, ui/tests/latency.mjs) notes on
//!    every frame when each denied row appears; latency = that wall time −
//!    the event's kernel timestamp. Baseline in the same run: when the
//!    same event became readable in the store (this process polls it every
//!    millisecond) — what the UI adds on top of the audit pipeline.
//! 2. Frame time while 5,000 events/s stream in (ui/tests/frames.mjs),
//!    against the same page idle.
//!
//! `cargo bench -p corral-cli --bench ui` (root; chromium, node >= 20 and
//! playwright-core from scripts/deps.sh). Prints one table.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use corral_audit::{SessionRow, Store, Stored};
use corral_core::{Access, Decision, Event, Layer, Proc, SessionId, What};
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const COUNT: usize = 200;
const RATE: u64 = 5_000;
const WINDOW_MS: u64 = 8_000;
/// Session id of the feeder.
const FEED_SESSION: u32 = 4_000_000_000;

struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn corral(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
    c.env("XDG_STATE_HOME", state.join("state"))
        .env("XDG_CONFIG_HOME", state.join("config"))
        .stdin(Stdio::null());
    c
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Runs a driver script, calling `on` for each JSON line; returns them all.
fn drive(node_dir: &Path, script: &str, args: &[String], mut on: impl FnMut(&Value)) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut child = Reap(
        Command::new("node")
            .arg(root.join("ui/tests").join(script))
            .args(args)
            .env("CORRAL_UI_TEST_NODE", node_dir)
            .env(
                "CORRAL_UI_ARTIFACTS",
                std::env::temp_dir().join("corral-uibench-shots"),
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("node"),
    );
    let mut out = Vec::new();
    for line in BufReader::new(child.0.stdout.take().unwrap()).lines() {
        let Ok(v) = serde_json::from_str::<Value>(&line.unwrap()) else {
            continue;
        };
        if v["ok"] == false {
            eprintln!("{script}: {}", v["error"]);
        }
        on(&v);
        out.push(v);
    }
    let _ = child.0.wait();
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list: nothing to list.
    }
    let node_dir = match corral_vmtest::browser::deps() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIP ui bench: {why}");
            return;
        }
    };
    if !corral_vmtest::is_root() {
        eprintln!("SKIP ui bench: needs root (sessions)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("corral-uibench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store_path = dir.join("audit.db");
    let o = corral(&dir)
        .args(["ui", "--listen", "127.0.0.1:0", "--store"])
        .arg(&store_path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let url = String::from_utf8_lossy(&o.stdout).trim().to_string();
    // A page has something to show (the driver waits for a first row).
    {
        let mut store = Store::open(&store_path).unwrap();
        store.insert(&events(0, 2_000)).unwrap();
    }

    // 1. Decision -> browser, with the store as the baseline.
    let target = dir.join("secret.txt");
    std::fs::write(&target, "x").unwrap();
    let policy = dir.join("p.cedar");
    std::fs::write(
        &policy,
        format!(
            "@id(\"read\")\npermit (principal, action == Action::\"FileOpenReadOnly\", resource) when {{ resource in Dir::\"/\" }};\n\
             @id(\"run\")\npermit (principal, action == Action::\"ProcessExec\", resource) when {{ resource in [Dir::\"/usr/bin/\", Dir::\"/bin/\", Dir::\"/usr/lib/\", Dir::\"/lib/\"] }};\n\
             @id(\"dev\")\npermit (principal, action in Action::\"FileOpen\", resource) when {{ resource == File::\"/dev/null\" }};\n\
             @id(\"no\")\nforbid (principal, action in Action::\"FileOpen\", resource) when {{ resource == File::\"{}\" }};\n",
            target.display()
        ),
    )
    .unwrap();
    let mut offset_ns: i128 = 0;
    let mut session: Option<Reap> = None;
    let store_seen: Arc<std::sync::Mutex<Vec<(i64, u64, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (seen, stop, path) = (store_seen.clone(), stop.clone(), store_path.clone());
        std::thread::spawn(move || {
            let store = Store::open(&path).unwrap();
            let mut after = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let rows = store
                    .query(&corral_audit::Query {
                        decision: Some(Decision::Deny),
                        after_id: Some(after),
                        ..Default::default()
                    })
                    .unwrap_or_default();
                let t = now_ns();
                for r in rows {
                    after = after.max(r.id.unwrap_or(0));
                    seen.lock().unwrap().push((r.id.unwrap_or(0), r.event.ts_ns, t));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let lines = drive(
        &node_dir,
        "latency.mjs",
        &[url.clone(), COUNT.to_string(), "90000".into()],
        |v| {
            if v["step"] == "ready" {
                offset_ns = v["offset_ns"].as_str().unwrap().parse().unwrap();
                let script = format!(
                    "for i in $(seq {COUNT}); do cat {} >/dev/null 2>&1; sleep 0.05; done",
                    target.display()
                );
                session = Some(Reap(
                    corral(&dir)
                        .args(["run", "-q", "--no-container", "--policy"])
                        .arg(&policy)
                        .arg("--project")
                        .arg(&dir)
                        .arg("--store")
                        .arg(&store_path)
                        .args(["--", "sh", "-c", &script])
                        .stdout(Stdio::null())
                        .spawn()
                        .unwrap(),
                ));
            }
        },
    );
    if let Some(mut s) = session.take() {
        let _ = s.0.wait();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = poller.join();
    let lat = lines
        .iter()
        .find(|v| v["step"] == "latency")
        .cloned()
        .unwrap_or(Value::Null);
    let browser: Vec<f64> = lat["per_event"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["ms"].as_f64()).collect())
        .unwrap_or_default();
    let store_ms: Vec<f64> = store_seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, ts, seen)| (*seen as i128 - (*ts as i128 + offset_ns)) as f64 / 1e6)
        .collect();

    // 2. Frame time: idle, then while events are stored at RATE per second.
    let frames = |feed: bool| -> Value {
        let stop = Arc::new(AtomicBool::new(false));
        let feeder = feed.then(|| {
            let (stop, path) = (stop.clone(), store_path.clone());
            std::thread::spawn(move || feed_store(&path, &stop))
        });
        let out = drive(
            &node_dir,
            "frames.mjs",
            &[url.clone(), WINDOW_MS.to_string()],
            |_| {},
        );
        stop.store(true, Ordering::Relaxed);
        let fed = feeder.map(|f| f.join().unwrap_or(0)).unwrap_or(0);
        let mut v = out
            .into_iter()
            .find(|v| v["step"] == "frames")
            .unwrap_or(Value::Null);
        v["fed"] = fed.into();
        v
    };
    let idle = frames(false);
    let busy = frames(true);

    let _ = corral(&dir)
        .args(["ui", "stop", "--store"])
        .arg(&store_path)
        .output();
    let _ = std::fs::remove_dir_all(&dir);

    let (bp50, bp99) = (pct(browser.clone(), 0.5), pct(browser.clone(), 0.99));
    let (sp50, sp99) = (pct(store_ms.clone(), 0.5), pct(store_ms.clone(), 0.99));
    println!(
        "control UI benchmark ({} denied events, {RATE} events/s for {WINDOW_MS} ms)",
        browser.len()
    );
    println!("| measure | p50 | p99 | ratio p50 |");
    println!("|---|---|---|---|");
    println!("| decision -> readable in the store (baseline) | {sp50:.1} ms | {sp99:.1} ms | 1.00 |");
    println!(
        "| decision -> row in the browser | {bp50:.1} ms | {bp99:.1} ms | {:.2} |",
        bp50 / sp50
    );
    let f = |v: &Value, k: &str| v["frames"][k].as_f64().unwrap_or(f64::NAN);
    println!(
        "| frame time, page idle (baseline) | {:.1} ms | {:.1} ms | 1.00 |",
        f(&idle, "p50"),
        f(&idle, "p99")
    );
    println!(
        "| frame time, {RATE} events/s streaming ({} stored, {} received) | {:.1} ms | {:.1} ms | {:.2} |",
        busy["fed"],
        busy["received"],
        f(&busy, "p50"),
        f(&busy, "p99"),
        f(&busy, "p50") / f(&idle, "p50")
    );
    println!(
        "(frame max: idle {:.1} ms, streaming {:.1} ms)",
        f(&idle, "max"),
        f(&busy, "max")
    );
}

/// Stores RATE events per second (batches every 10 ms) until `stop`;
/// returns how many.
fn feed_store(path: &Path, stop: &AtomicBool) -> u64 {
    let mut store = Store::open(path).unwrap();
    let session = FEED_SESSION;
    let _ = store.session_started(&SessionRow {
        id: session,
        principal: "Agent::\"feeder\"".into(),
        policy_label: "feed".into(),
        policy_sha256: String::new(),
        mode: "enforce".into(),
        started_ns: now_ns(),
        command: vec!["feed".into()],
    });
    let per_batch = RATE / 100;
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = start.elapsed().as_millis() as u64 * RATE / 1000;
        if n >= due {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let batch = events(n, per_batch);
        if store.insert(&batch).is_err() {
            break;
        }
        n += per_batch;
    }
    n
}

/// `count` allowed file opens of the feeder's session, numbered from `n`.
fn events(n: u64, count: u64) -> Vec<Stored> {
    (0..count)
        .map(|i| Stored {
            id: None,
            wall_ns: now_ns(),
            policy_at: vec!["feed:1".into()],
            event: Event {
                session: SessionId(FEED_SESSION),
                principal: "Agent::\"feeder\"".into(),
                ts_ns: n + i,
                proc: Proc {
                    pid: 1000 + (i as u32 % 50),
                    ppid: 1,
                    comm: "cc1".into(),
                    exe: Some("/usr/bin/cc1".into()),
                },
                what: What::FileOpen {
                    path: format!("/src/file{}.c", (n + i) % 997),
                    access: Access::Read,
                },
                decision: Some(Decision::Allow),
                layer: Layer::Fanotify,
                policies: vec!["read".into()],
                mcp_call: None,
            },
        })
        .collect()
}
