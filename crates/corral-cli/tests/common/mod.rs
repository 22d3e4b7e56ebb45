//! Helpers shared by the `corral` end-to-end tests: scratch directories,
//! the capability check (root, podman), running the built binary.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use corral_vmtest::{is_root, skip};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Whether `prog` is on PATH.
pub fn has(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Root and podman+runc, or a recorded skip.
pub fn podman_ready(test: &str) -> bool {
    if !is_root() {
        skip(test, "needs root");
        return false;
    }
    if !has("podman") || !has("runc") {
        skip(test, "podman and runc are not installed");
        return false;
    }
    true
}

/// A scratch directory under /tmp, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh `corral-run-<tag>-<pid>` directory.
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("corral-run-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }

    /// Writes `text` to `name` in the directory.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write scratch file");
        p
    }

    /// `corral` with its state and config kept in this directory, run
    /// from it, with no stdin.
    pub fn corral(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
        c.current_dir(&self.0)
            .env("XDG_STATE_HOME", self.0.join("state"))
            .env("XDG_CONFIG_HOME", self.0.join("config"))
            .stdin(Stdio::null());
        c
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A control UI server of a scratch state, as its discovery file and
/// `corral ui` name it.
pub struct Ui {
    /// The URL `corral ui` printed (with the token).
    pub url: String,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its access token.
    pub token: String,
    /// The whole discovery file.
    pub info: serde_json::Value,
}

/// Stops the control UI server of a scratch state and store on drop (also
/// when a test fails), so no server outlives its test.
pub struct StopUi<'a>(pub &'a Scratch, pub PathBuf);

impl Drop for StopUi<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .corral()
            .args(["ui", "stop", "--store"])
            .arg(&self.1)
            .output();
    }
}

impl Scratch {
    /// The discovery file a started control UI server wrote (one per
    /// store; the first found).
    pub fn ui_discovery(&self) -> serde_json::Value {
        let ui = self.0.join("state/corral/ui");
        let f = std::fs::read_dir(&ui)
            .unwrap_or_else(|e| panic!("{}: {e}", ui.display()))
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "json"))
            .expect("a discovery file");
        serde_json::from_str(&std::fs::read_to_string(f).expect("read")).expect("json")
    }

    /// `corral ui` for `store` on a free loopback port: the server it
    /// started (stop it with [`StopUi`]).
    pub fn start_ui(&self, store: &std::path::Path) -> Ui {
        let o = self
            .corral()
            .args(["ui", "--listen", "127.0.0.1:0", "--store"])
            .arg(store)
            .output()
            .expect("corral ui");
        assert!(o.status.success(), "corral ui: {}", text(&o.stderr));
        let info = self.ui_discovery();
        Ui {
            url: text(&o.stdout).trim().to_string(),
            addr: info["addr"].as_str().expect("addr").parse().expect("an address"),
            token: info["token"].as_str().expect("token").to_string(),
            info,
        }
    }
}

/// Lossy UTF-8.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
