//! schemathesis (PyPI; installed by scripts/deps.sh `corral_ui_api_deps`)
//! fuzzes every route of `/api/openapi.json` against a server over a store
//! seeded with real-looking sessions and events. Checks: no 5xx, status
//! codes, content types and response bodies as documented. The live stream
//! never ends, so it is left out (tests/events.rs covers it).

use crate::util::*;
use corral_audit::{SessionRow, Store, Stored};
use corral_core::{Access, Decision, Layer, Mode, Transport, What};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCHEMATHESIS: &str = "/var/cache/corral/ui-test/venv/bin/schemathesis";

const POLICY: &str = "// seeded\n@id(\"read-all\")\npermit (principal, action == Action::\"FileOpenReadOnly\", resource)\nwhen { resource in Dir::\"/\" };\n\n@id(\"no-shadow\")\nforbid (principal, action in Action::\"FileOpen\", resource)\nwhen { resource == File::\"/etc/shadow\" };\n\n@id(\"api\")\npermit (principal, action == Action::\"HttpRequest\", resource in Host::\"api.example.com:443\");\n";

fn decided(mut s: Stored, policy: &str, line: u32, pid: u32, ppid: u32, comm: &str) -> Stored {
    s.event.policies = vec![policy.into()];
    s.policy_at = vec![format!("seeded.cedar:{line}")];
    s.event.proc.pid = pid;
    s.event.proc.ppid = ppid;
    s.event.proc.comm = comm.into();
    s.event.proc.exe = Some(format!("/usr/bin/{comm}"));
    s
}

/// Sessions 1 (ended) and 2 (enforce), with file, exec, exec trace, fork,
/// connect, HTTP, MCP, session and policy events, drops, and the texts.
fn seed(path: &Path) {
    let mut store = Store::open(path).unwrap();
    let sha = store.record_policy("seeded.cedar", POLICY).unwrap();
    for id in [1, 2] {
        store
            .session_started(&SessionRow {
                id,
                principal: "Agent::\"claude\"".into(),
                policy_label: "seeded.cedar".into(),
                policy_sha256: sha.clone(),
                mode: "enforce".into(),
                started_ns: now_ns(),
                command: vec!["claude".into(), "--print".into()],
            })
            .unwrap();
    }
    let mut evs = Vec::new();
    for s in [1u32, 2] {
        let mut start = event(
            s,
            What::SessionStart {
                mode: Mode::Enforce,
                policy_sha256: sha.clone(),
                command: vec!["claude".into()],
            },
            None,
        );
        start.event.layer = Layer::Userspace;
        evs.push(start);
        evs.push(decided(
            event(
                s,
                What::ExecTrace {
                    path: "/bin/sh".into(),
                    argv: vec!["sh".into(), "-c".into(), "make".into()],
                },
                None,
            ),
            "read-all",
            3,
            100,
            1,
            "sh",
        ));
        evs.push(decided(
            event(s, What::Fork { child: 101 }, None),
            "read-all",
            3,
            100,
            1,
            "sh",
        ));
        evs.push(decided(
            open("/etc/passwd", s, Decision::Allow),
            "read-all",
            3,
            101,
            100,
            "cat",
        ));
        evs.push(decided(
            open("/etc/shadow", s, Decision::Deny),
            "no-shadow",
            7,
            101,
            100,
            "cat",
        ));
        let mut w = event(
            s,
            What::FileOpen {
                path: "/etc/hosts".into(),
                access: Access::Write,
            },
            Some(Decision::WouldDeny),
        );
        w.event.layer = Layer::Fanotify;
        evs.push(decided(w, "no-shadow", 7, 101, 100, "tee"));
        evs.push(decided(
            event(
                s,
                What::Exec {
                    path: "/usr/bin/git".into(),
                    argv: Some(vec!["git".into(), "push".into()]),
                },
                Some(Decision::Allow),
            ),
            "read-all",
            3,
            102,
            100,
            "git",
        ));
        let mut c = event(
            s,
            What::Connect {
                ip: "93.184.216.34".parse().unwrap(),
                port: 443,
                transport: Transport::Tcp,
            },
            Some(Decision::Deny),
        );
        c.event.layer = Layer::CgroupBpf;
        evs.push(decided(c, "no-shadow", 7, 102, 100, "git"));
        let mut h = event(
            s,
            What::Http {
                stage: "request".into(),
                method: "GET".into(),
                scheme: "https".into(),
                host: "api.example.com".into(),
                port: 443,
                path: "/v1/messages".into(),
                status: Some(200),
                bytes_in: 10,
                bytes_out: 2048,
                duration_us: 15_000,
                injected: vec!["authorization".into()],
                secrets_used: vec![],
                secrets_withheld: vec![],
                error: None,
                pid_known: true,
            },
            Some(Decision::Allow),
        );
        h.event.layer = Layer::Proxy;
        evs.push(decided(h, "api", 11, 102, 100, "curl"));
        let mut m = event(
            s,
            What::Mcp {
                transport: "stdio".into(),
                server: "everything".into(),
                direction: "to_server".into(),
                stage: "request".into(),
                method: "tools/call".into(),
                rpc_id: Some("3".into()),
                tool: Some("echo".into()),
                args: Some("{\"message\":\"hi\"}".into()),
                args_truncated: false,
                hidden: vec![],
                error: None,
                duration_us: None,
                conversation: "m1".into(),
                session_id: None,
                bytes: 80,
            },
            Some(Decision::Allow),
        );
        m.event.layer = Layer::Mcp;
        m.event.mcp_call = Some("m1#3".into());
        evs.push(decided(m, "read-all", 3, 103, 100, "node"));
        evs.push(event(
            s,
            What::PolicyLoad {
                label: "ui".into(),
                sha256: sha.clone(),
                error: None,
            },
            None,
        ));
    }
    evs.push(event(
        1,
        What::SessionEnd {
            exit: "exit 0".into(),
        },
        None,
    ));
    store.insert_assign(&mut evs).unwrap();
    store.add_drops(2, "queue_full", 3).unwrap();
    store.session_ended(1, now_ns(), "exit 0", 0, 40).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let test = "schemathesis_finds_nothing";
    if !Path::new(SCHEMATHESIS).exists() {
        corral_vmtest::skip(
            test,
            "SKIP: schemathesis not installed (run scripts/deps.sh's corral_ui_api_deps)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store: PathBuf = dir.path().join("audit.db");
    seed(&store);
    let r = start(store).await;
    let url = format!("http://{}/api/openapi.json", r.addr);
    let auth = format!("Authorization: Bearer {}", r.token);
    let report = dir.path().join("report");
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(SCHEMATHESIS)
            .args(["run", &url, "-H", &auth])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--exclude-path",
                "/api/events/stream",
                // Generated cases per operation (examples, fuzzing). Not
                // `coverage`: schemathesis 4.32.5 fails there with a KeyError
                // inside its own schema walker (its bug, not a finding
                // against us); not `stateful`: it hung once in ~10 runs
                // past the deadline.
                "--phases",
                "examples,fuzzing",
                "--max-examples",
                "50",
                "--workers",
                "2",
                "--seed",
                "8",
                "--request-timeout",
                "10",
                "--suppress-health-check",
                "all",
                "--report-dir",
            ])
            .arg(&report)
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Bounded: the run must finish within 150 s (about 60 on 2 cores).
        let deadline = Instant::now() + Duration::from_secs(150);
        loop {
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "schemathesis found problems (exit {:?})",
        out.status.code()
    );
    r.stop().await;
}
