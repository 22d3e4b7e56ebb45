//! `corral policy suggest` end to end: a workload runs in shadow mode under
//! the default policy in a real podman container, `suggest` turns its
//! would-deny events into rules, and the same workload then runs enforced
//! under the suggested policy without a single denial, while a step outside
//! the suggestion is still denied.
//!
//! Needs root and podman; without them the test records a skip
//! (`CORRAL-SKIP`, counted by scripts/test.sh), never passes silently.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{has, text};
use corral_vmtest::{is_root, skip};
use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Everything the test creates on the host — the workspace under /tmp, the
/// host directory under /var/lib the container writes into — and the
/// sessions' containers: all removed on drop, also when the test fails.
struct Fixture {
    /// The project directory (workspace), with the workload and the store.
    work: PathBuf,
    /// A host directory outside the default policy's writable directories,
    /// mounted at the same path in the container.
    host: PathBuf,
    store: PathBuf,
    sessions: RefCell<Vec<u64>>,
}

impl Fixture {
    fn new() -> Fixture {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let work = std::env::temp_dir().join(format!("corral-suggest-{tag}"));
        let host = PathBuf::from(format!("/var/lib/corral-test-{tag}"));
        let f = Fixture {
            store: work.join("store").join("audit.db"),
            work,
            host,
            sessions: RefCell::new(Vec::new()),
        };
        for d in [
            &f.work,
            &f.host.join("out"),
            &f.host.join("bin"),
            &f.host.join("other"),
        ] {
            std::fs::create_dir_all(d).expect("create test directory");
        }
        // Programs outside every exec directory of the default policy.
        for name in ["tool", "other-tool"] {
            let p = f.host.join("bin").join(name);
            std::fs::copy("/usr/bin/true", &p).expect("copy /usr/bin/true");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        f
    }

    fn write(&self, name: &str, body: &str, mode: u32) -> PathBuf {
        let p = self.work.join(name);
        std::fs::write(&p, body).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    /// `corral` with its state and config in the workspace, run from it.
    fn corral(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
        c.current_dir(&self.work)
            .env("XDG_STATE_HOME", self.work.join("state"))
            .env("XDG_CONFIG_HOME", self.work.join("config"))
            .stdin(Stdio::null());
        c
    }

    /// `corral run` with the host directory mounted; remembers the session.
    fn run(&self, extra: &[&str], command: &[&str]) -> Output {
        let o = self
            .corral()
            .arg("run")
            .arg("--project")
            .arg(&self.work)
            .arg("--store")
            .arg(&self.store)
            .arg("-v")
            .arg(format!("{0}:{0}", self.host.display()))
            .args(extra)
            .arg("--")
            .args(command)
            .output()
            .expect("run corral");
        if let Some(id) = self.last_session() {
            self.sessions.borrow_mut().push(id);
        }
        o
    }

    fn last_session(&self) -> Option<u64> {
        let o = self
            .corral()
            .args(["sessions", "--json", "--store"])
            .arg(&self.store)
            .output()
            .ok()?;
        text(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|r| r["id"].as_u64())
            .max()
    }

    /// The events of the last session with a decision, as JSON.
    fn events(&self, decision: &str) -> Vec<serde_json::Value> {
        let o = self
            .corral()
            .args([
                "events",
                "--session",
                "last",
                "--decision",
                decision,
                "--json",
                "--limit",
                "0",
            ])
            .arg("--store")
            .arg(&self.store)
            .output()
            .expect("corral events");
        assert!(o.status.success(), "corral events: {}", text(&o.stderr));
        text(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for id in self.sessions.borrow().iter() {
            let name = format!("corral-s{id}");
            let exists = Command::new("podman")
                .args(["container", "exists", &name])
                .status()
                .is_ok_and(|s| s.success());
            if exists {
                let _ = Command::new("podman")
                    .args(["rm", "-f", &name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.host);
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

#[test]
fn suggest_from_a_shadow_session_then_enforce_it() {
    let t = "suggest_from_a_shadow_session_then_enforce_it";
    if !is_root() {
        skip(t, "needs root");
        return;
    }
    if !has("podman") || !has("runc") {
        skip(t, "podman and runc are not installed");
        return;
    }
    let f = Fixture::new();
    let host = f.host.display().to_string();
    // Four files written into one directory the default policy does not let
    // the agent write, and a program run from a directory it does not let
    // the agent execute from.
    f.write(
        "workload.sh",
        &format!(
            "#!/bin/sh\nset -e\nfor i in 1 2 3 4; do echo \"$i\" > {host}/out/f$i; done\n{host}/bin/tool\necho workload-done\n"
        ),
        0o755,
    );

    // 1. Shadow: everything runs, the denials are recorded as would_deny.
    let o = f.run(&["--shadow", "-q"], &["./workload.sh"]);
    assert_eq!(o.status.code(), Some(0), "shadow run: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "workload-done\n");
    let would = f.events("would_deny");
    for want in ["/out/f1", "/out/f4", "/bin/tool"] {
        assert!(
            would.iter().any(|e| e["what"]["path"] == format!("{host}{want}")),
            "no would_deny event for {want} in {would:#?}"
        );
    }

    // 2. Suggest.
    let suggested = f.work.join("suggested.cedar");
    let o = f
        .corral()
        .args(["policy", "suggest", "--session", "last", "--store"])
        .arg(&f.store)
        .arg("--output")
        .arg(&suggested)
        .output()
        .expect("corral policy suggest");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "suggest: {err}");
    assert!(
        o.stdout.is_empty(),
        "the policy goes to --output: {}",
        text(&o.stdout)
    );
    let policy = std::fs::read_to_string(&suggested).expect("suggested policy written");
    assert!(err.contains("2 rules added covering"), "summary: {err}");
    assert!(err.contains(", 0 skipped"), "summary: {err}");
    assert!(
        err.contains(&format!("+++ {}", suggested.display())),
        "diff header: {err}"
    );
    assert!(
        policy.contains(&format!("Dir::\"{host}/out/\"")),
        "four files in one directory become a directory rule:\n{policy}"
    );
    assert!(
        policy.contains(&format!("File::\"{host}/bin/tool\"")),
        "one program stays exact:\n{policy}"
    );
    assert!(
        policy.contains("@id(\"suggested-FileOpenReadWrite-1\")"),
        "{policy}"
    );
    assert!(policy.contains("@id(\"suggested-ProcessExec-1\")"), "{policy}");
    assert!(
        policy.contains("// suggested by corral from session s"),
        "{policy}"
    );
    assert!(policy.contains("principal == Agent::\"workload.sh\""), "{policy}");
    assert!(
        policy.contains("@id(\"forbid-secrets\")"),
        "the current policy is kept:\n{policy}"
    );
    let o = f
        .corral()
        .args(["policy", "check", "--deny-warnings"])
        .arg(&suggested)
        .output()
        .expect("corral policy check");
    assert_eq!(
        o.status.code(),
        Some(0),
        "check: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );

    // 3. The same workload, enforced under the suggested policy: no denial.
    let policy_arg = suggested.display().to_string();
    let o = f.run(&["--policy", &policy_arg, "-q"], &["./workload.sh"]);
    assert_eq!(o.status.code(), Some(0), "enforced run: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "workload-done\n");
    let denies = f.events("deny");
    assert!(
        denies.is_empty(),
        "denials under the suggested policy: {denies:#?}"
    );
    assert!(f.events("would_deny").is_empty());

    // 4. Outside the suggestion, still denied: another directory, another
    //    program in the same directory as the permitted one.
    let o = f.run(
        &["--policy", &policy_arg, "--as", "workload.sh", "-q"],
        &["sh", "-c", &format!("echo x > {host}/other/x")],
    );
    let err = text(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "write outside the suggestion: {err}");
    assert!(err.contains("Operation not permitted"), "stderr: {err}");
    // The open is denied after O_CREAT made the inode (both file layers
    // decide at open): at most an empty file, never the data.
    assert_eq!(
        std::fs::read(f.host.join("other/x")).unwrap_or_default(),
        b"",
        "data reached a denied file"
    );
    let denies = f.events("deny");
    assert!(
        denies
            .iter()
            .any(|e| e["what"]["path"] == format!("{host}/other/x") && e["what"]["access"] == "write"),
        "no deny event for the write: {denies:#?}"
    );

    let o = f.run(
        &["--policy", &policy_arg, "--as", "workload.sh", "-q"],
        &[&format!("{host}/bin/other-tool")],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(126), "exec outside the suggestion: {err}");
    assert!(err.contains("Operation not permitted"), "stderr: {err}");
    assert!(f
        .events("deny")
        .iter()
        .any(|e| e["what"]["path"] == format!("{host}/bin/other-tool")));

    // Every session ended and removed its container.
    for id in f.sessions.borrow().iter() {
        let exists = Command::new("podman")
            .args(["container", "exists", &format!("corral-s{id}")])
            .status()
            .is_ok_and(|s| s.success());
        assert!(!exists, "container corral-s{id} left behind");
    }
    assert!(Path::new(&f.host).exists());
}

/// A store written through the audit API (no container, no root): the
/// command's reading, reporting and output choices.
#[test]
fn suggest_reads_the_store_and_lists_what_it_skips() {
    use corral_audit::{SessionRow, Store, Stored};
    use corral_core::{Access, Decision, Event, Layer, Proc, SessionId, Transport, What};

    let dir = std::env::temp_dir().join(format!("corral-suggest-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    struct Gone(PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(dir.clone());
    let store_path = dir.join("audit.db");

    let default = corral_policy::default_policy::render("/work/proj", "/home/dev").expect("render");
    let mut store = Store::open(&store_path).expect("open store");
    let sha = store
        .record_policy("<default policy>", &default)
        .expect("record policy");
    store
        .session_started(&SessionRow {
            id: 5,
            principal: "agent".into(),
            policy_label: "built-in default".into(),
            policy_sha256: sha,
            mode: "shadow".into(),
            started_ns: 1,
            command: vec!["agent".into()],
        })
        .expect("session row");
    let event = |what: What, decision: Decision, policies: &[&str]| Stored {
        id: None,
        wall_ns: 1,
        policy_at: Vec::new(),
        event: Event {
            session: SessionId(5),
            principal: "agent".into(),
            ts_ns: 1,
            proc: Proc::default(),
            what,
            decision: Some(decision),
            layer: Layer::Fanotify,
            policies: policies.iter().map(|p| p.to_string()).collect(),
            mcp_call: None,
        },
    };
    let open = |path: &str, access: Access| What::FileOpen {
        path: path.into(),
        access,
    };
    let events = [
        event(open("/data/out/a", Access::Write), Decision::WouldDeny, &[]),
        event(open("/data/out/b", Access::Write), Decision::WouldDeny, &[]),
        event(open("/data/out/c", Access::Write), Decision::WouldDeny, &[]),
        event(
            open("/home/dev/.ssh/id_rsa", Access::Read),
            Decision::WouldDeny,
            &["forbid-secrets"],
        ),
        event(
            What::Connect {
                ip: "10.1.2.3".parse().expect("ip"),
                port: 5432,
                transport: Transport::Tcp,
            },
            Decision::WouldDeny,
            &[],
        ),
        event(open("/home/dev/.aws/config", Access::Write), Decision::Allow, &[]),
        event(open("/work/proj/src/lib.rs", Access::Write), Decision::Allow, &[]),
    ];
    store.insert(&events).expect("insert events");
    drop(store);

    let suggest = |args: &[&str]| -> (Output, String, String) {
        let o = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["policy", "suggest", "--store"])
            .arg(&store_path)
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("corral policy suggest");
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        (o, out, err)
    };

    // Against the session's own policy: the policy on stdout, the diff and
    // the summary on stderr, the forbidden secret listed with its line.
    let (o, out, err) = suggest(&["--session", "last"]);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.starts_with(&default), "the current policy comes first");
    assert!(out.contains("Dir::\"/data/out/\""), "{out}");
    assert!(out.contains("Host::\"10.1.2.3:5432\""), "{out}");
    assert!(
        err.starts_with("--- <default policy>\n+++ suggested policy\n"),
        "{err}"
    );
    assert!(
        err.contains("corral: 2 rules added covering 4 events, 1 skipped (1 event)"),
        "{err}"
    );
    let line = default
        .lines()
        .position(|l| l.starts_with("forbid"))
        .expect("the default policy has a forbid")
        + 1;
    assert!(
        err.contains(&format!(
            "skipped FileOpenReadOnly /home/dev/.ssh/id_rsa (1 event, principal agent): forbid: denied by `forbid-secrets` at <default policy>:{line}"
        )),
        "{err}"
    );

    // --diff: only the diff on stdout; the policy only to --output.
    let out_file = dir.join("p.cedar");
    let out_arg = out_file.display().to_string();
    let (o, out, err) = suggest(&["--session", "s5", "--diff", "--output", &out_arg]);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        out.starts_with(&format!("--- <default policy>\n+++ {out_arg}\n")),
        "{out}"
    );
    assert!(!err.contains("+++"), "the diff went to stdout only: {err}");
    let written = std::fs::read_to_string(&out_file).expect("--output written");
    assert!(
        written.contains("@id(\"suggested-NetworkConnect-1\")"),
        "{written}"
    );

    // Another policy than the session's: its allowed events are checked
    // too, and a secret without a forbid is skipped as a secret (the home
    // is read from the session's default policy).
    let narrow = dir.join("narrow.cedar");
    std::fs::write(
        &narrow,
        "@id(\"read-usr\")\npermit (principal, action == Action::\"FileOpenReadOnly\", resource in Dir::\"/usr/\");\n",
    )
    .expect("write narrow policy");
    let narrow_arg = narrow.display().to_string();
    let (o, out, err) = suggest(&["--session", "5", "--policy", &narrow_arg]);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("File::\"/work/proj/src/lib.rs\""), "{out}");
    assert!(!out.contains(".aws") && !out.contains(".ssh"), "{out}");
    for want in [
        "skipped FileOpenReadWrite /home/dev/.aws/config (1 event, principal agent): secret: within `Dir::\"/home/dev/.aws/\"`",
        "skipped FileOpenReadOnly /home/dev/.ssh/id_rsa (1 event, principal agent): secret:",
        "--allow-secrets",
        "is not the policy session s5 ran under",
    ] {
        assert!(err.contains(want), "want {want:?} in: {err}");
    }
    let (o, out, err) = suggest(&["--session", "5", "--policy", &narrow_arg, "--allow-secrets"]);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("File::\"/home/dev/.ssh/id_rsa\""), "{out}");

    // Errors name what is missing.
    let (o, _, err) = suggest(&["--session", "s99"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("no policy text for session s99"), "{err}");
    let (o, _, err) = suggest(&["--session", "5", "--min-files-for-dir", "0"]);
    assert_eq!(o.status.code(), Some(2), "{err}");
}
