//! Shared by the kernel crate's integration tests: capability checks that
//! print and record a skip (never silent). `scripts/test.sh` counts the
//! lines appended to `$CORRAL_SKIP_LOG`.
#![allow(dead_code)]

/// Records a skip: prints `CORRAL-SKIP <test>: <reason>` to stderr and
/// appends it to `$CORRAL_SKIP_LOG` when set.
pub fn skip(test: &str, reason: &str) {
    corral_vmtest::skip(test, reason);
}

/// True when running as root; otherwise records a skip for `test`.
pub fn require_root(test: &str) -> bool {
    if corral_vmtest::is_root() {
        true
    } else {
        skip(test, "needs root");
        false
    }
}

/// Compiles Cedar text into a plan; panics with the diagnostics if it has errors.
pub fn plan(text: &str) -> corral_policy::Plan {
    plan_and_judge(text).0
}

/// A unique cgroup name for a test.
pub fn cgroup_name(test: &str) -> String {
    format!("corral-test-{test}-{}", std::process::id())
}

/// Runs the test agent with one action inside (or, with `None`, outside)
/// a cgroup; returns (exit code, output line).
pub fn kt(cg: Option<&corral_kernel::cgroup::Cgroup>, action: &str) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_corral-kt"));
    cmd.args(action.split_whitespace());
    if let Some(cg) = cg {
        cg.place(&mut cmd).expect("place in cgroup");
    }
    let out = cmd.output().expect("run corral-kt");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// A long-running `corral-kt serve` inside a cgroup: one action per
/// [`Served::ask`], answered with its output line. Killed on drop.
pub struct Served {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Served {
    /// Starts the agent in `cg`.
    pub fn start(cg: &corral_kernel::cgroup::Cgroup) -> Served {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_corral-kt"));
        cmd.arg("serve")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        cg.place(&mut cmd).expect("place in cgroup");
        let mut child = cmd.spawn().expect("start corral-kt serve");
        let stdin = child.stdin.take().expect("stdin");
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        Served { child, stdin, out }
    }

    /// Runs one action in the same process; returns its output line.
    pub fn ask(&mut self, line: &str) -> String {
        use std::io::{BufRead as _, Write as _};
        writeln!(self.stdin, "{line}").expect("write to corral-kt");
        let mut s = String::new();
        self.out.read_line(&mut s).expect("read from corral-kt");
        s.trim().to_string()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tmpfs mounted on a fresh temp dir; unmounted and removed on drop.
pub struct Tmpfs {
    /// The mount point.
    pub path: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts a new tmpfs.
    pub fn new(tag: &str) -> Tmpfs {
        let path = std::env::temp_dir().join(format!("corral-{tag}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&path);
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "corral-test"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {}", path.display());
        Tmpfs { path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A session config for `claude` with the file layer off (network and
/// telemetry tests; their plans permit no file access).
pub fn net_only(id: u32, cgroup: &std::path::Path) -> corral_kernel::session::SessionConfig {
    let mut c = corral_kernel::session::SessionConfig::new(id, "claude", cgroup);
    c.file_layer = corral_kernel::session::FileLayer::Off;
    c
}

/// A plan and the exec judge from the same policy text.
pub fn plan_and_judge(text: &str) -> (corral_policy::Plan, corral_kernel::session::JudgeRef) {
    let checked = corral_policy::check(vec![corral_policy::Source::new("test.cedar", text.to_string())]);
    let errors: Vec<String> = checked
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{d:?}"))
        .collect();
    assert!(errors.is_empty(), "policy errors: {errors:#?}");
    let doc = checked.doc.expect("doc");
    let judge = corral_kernel::argv::CedarJudge::new(&doc);
    (
        checked.plan.expect("plan"),
        corral_kernel::session::JudgeRef(std::sync::Arc::new(judge)),
    )
}

/// A one-worker tokio runtime for a test.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
