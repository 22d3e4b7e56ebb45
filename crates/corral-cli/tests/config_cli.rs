//! `corral config show` and `corral config path` against temporary global
//! and project files.

// Test code: a panic is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temporary home with `xdg/` (global config) and `proj/` (a project).
struct Home(PathBuf);

impl Home {
    fn new() -> Home {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("corral-config-cli-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("proj/sub")).unwrap();
        Home(dir)
    }

    fn global(&self) -> PathBuf {
        self.0.join("xdg/corral/config.toml")
    }

    fn project(&self) -> PathBuf {
        self.0.join("proj/corral.toml")
    }

    fn write(&self, path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Runs `corral` in `proj/sub` with this home.
    fn corral(&self, args: &[&str]) -> (Output, String, String) {
        let o = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(args)
            .current_dir(self.0.join("proj/sub"))
            .env("HOME", &self.0)
            .env("XDG_CONFIG_HOME", self.0.join("xdg"))
            .output()
            .expect("run corral");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (o, out, err)
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The whitespace-separated words of the line whose first word is `key`.
fn row<'a>(out: &'a str, key: &str) -> Vec<&'a str> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&key))
        .unwrap_or_else(|| panic!("no `{key}` row in\n{out}"))
}

#[test]
fn show_prints_values_with_their_origins() {
    let h = Home::new();
    h.write(
        &h.global(),
        "# global\nruntime = \"docker\"\nimage = \"global/img\"\n\n[recipes.claude]\nmount_config = true\n",
    );
    h.write(
        &h.project(),
        "image = \"localhost/x\"\npolicy = \"corral.cedar\"\n",
    );
    let (o, out, err) = h.corral(&[
        "config",
        "show",
        "--runtime",
        "podman",
        "-v",
        "../data:/data:ro",
        "-e",
        "K=V",
    ]);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");

    let g = h.global().display().to_string();
    let p = h.project().display().to_string();
    let proj = h.0.join("proj").display().to_string();
    assert_eq!(
        row(&out, "image"),
        ["image", "localhost/x", "(project", &format!("{p}:1)")]
    );
    assert_eq!(
        row(&out, "policy"),
        [
            "policy",
            &format!("{proj}/corral.cedar"),
            "(project",
            &format!("{p}:2)")
        ]
    );
    assert_eq!(row(&out, "runtime"), ["runtime", "podman", "(flag", "--runtime)"]);
    assert_eq!(
        row(&out, "volumes"),
        [
            "volumes",
            &format!("{proj}/sub/../data:/data:ro"),
            "(flag",
            "--volume)"
        ]
    );
    assert_eq!(row(&out, "env.K"), ["env.K", "V", "(flag", "--env)"]);
    assert_eq!(
        row(&out, "ui.listen"),
        ["ui.listen", "127.0.0.1:18080", "(default)"]
    );
    assert_eq!(
        row(&out, "recipes.claude.mount_config"),
        [
            "recipes.claude.mount_config",
            "true",
            "(global",
            &format!("{g}:6)")
        ]
    );
    // The overridden recipe, resolved.
    assert!(
        out.contains("recipe claude (built-in, with overrides)\n"),
        "{out}"
    );
    assert_eq!(row(&out, "mount_config"), ["mount_config", "yes"]);
    assert_eq!(
        row(&out, "config_paths"),
        ["config_paths", "~/.claude", "~/.claude.json"]
    );
}

#[test]
fn show_reports_file_line_col_and_exits_1() {
    let h = Home::new();
    h.write(
        &h.project(),
        "image = \"x\"\n[ui]\nlisten = \"127.0.0.1:1\"\nlsiten = 2\n",
    );
    let (o, out, err) = h.corral(&["config", "show"]);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let want = format!("error: {}:4:1: unknown field `lsiten`", h.project().display());
    assert!(err.starts_with(&want), "want {want}\ngot {err}");
    assert_eq!(out, "");

    let (o, _, err) = h.corral(&["config", "show", "--runtime", "lxc"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("4:1"), "the file error comes first: {err}");
}

#[test]
fn bad_flag_values_exit_1() {
    let h = Home::new();
    let (o, _, err) = h.corral(&["config", "show", "-e", "1X=2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.starts_with("error: flag `--env`: environment variable name `1X` is invalid"),
        "{err}"
    );
}

#[test]
fn path_prints_both_files_and_whether_they_exist() {
    let h = Home::new();
    let (o, out, _) = h.corral(&["config", "path"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        row(&out, "global"),
        ["global", &h.global().display().to_string(), "(missing)"]
    );
    assert_eq!(row(&out, "project")[..2], ["project", "(none:"]);

    h.write(&h.global(), "");
    h.write(&h.project(), "");
    let (_, out, _) = h.corral(&["config", "path"]);
    assert_eq!(
        row(&out, "global"),
        ["global", &h.global().display().to_string(), "(exists)"]
    );
    assert_eq!(
        row(&out, "project"),
        ["project", &h.project().display().to_string(), "(exists)"]
    );
}

#[test]
fn project_flag_names_the_project_directory() {
    let h = Home::new();
    h.write(&h.0.join("other/corral.toml"), "image = \"other/img\"\n");
    h.write(&h.project(), "image = \"proj/img\"\n");
    let other = h.0.join("other");
    let (o, out, err) = h.corral(&["config", "show", "--project", &other.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let file = other.join("corral.toml").display().to_string();
    assert_eq!(
        row(&out, "image"),
        ["image", "other/img", "(project", &format!("{file}:1)")]
    );
    let (_, out, _) = h.corral(&["config", "path", "--project", &other.display().to_string()]);
    assert_eq!(row(&out, "project"), ["project", &file, "(exists)"]);
}
