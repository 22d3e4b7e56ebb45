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

/// Lossy UTF-8.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
