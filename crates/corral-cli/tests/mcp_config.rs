//! `corral mcp config` and `corral mcp wrap` (outside a session), run as
//! the built binary on a temporary home and project.

// Test code: a panic is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temporary `home/` and `home/proj/` (the current directory).
struct Dirs(PathBuf);

impl Dirs {
    fn new() -> Dirs {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("corral-mcp-cli-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home/proj")).unwrap();
        Dirs(dir)
    }

    fn home(&self) -> PathBuf {
        self.0.join("home")
    }

    fn project(&self) -> PathBuf {
        self.0.join("home/proj")
    }

    fn write(&self, path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
        c.args(args)
            .current_dir(self.project())
            .env("HOME", self.home())
            .env_remove("CORRAL_MCP_WRAPPER")
            .stdin(Stdio::null());
        c
    }

    fn corral(&self, args: &[&str]) -> (Output, String, String) {
        let o = self.command(args).output().expect("run corral");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (o, out, err)
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const MCP_JSON: &str = r#"{
  "mcpServers": {
    "everything": {
      "command": "npx",
      "args": [
        "-y",
        "@modelcontextprotocol/server-everything"
      ]
    },
    "docs": {
      "type": "http",
      "url": "https://mcp.example.com/mcp"
    }
  }
}
"#;

const CODEX: &str = r#"# mine
model = "o4-mini"

[mcp_servers.fs]
# the files server
command = "mcp-server-filesystem"
args = ["/srv"]
"#;

const CLAUDE: &str = r#"{
  "numStartups": 3,
  "projects": {
    "/home/u/app": {
      "mcpServers": {
        "db": {
          "type": "stdio",
          "command": "uvx",
          "args": [
            "mcp-server-sqlite"
          ],
          "env": {}
        }
      }
    }
  }
}"#;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn config_shows_writes_is_idempotent_and_unwraps() {
    let d = Dirs::new();
    let mcp = d.project().join(".mcp.json");
    let codex = d.home().join(".codex/config.toml");
    let claude = d.home().join(".claude.json");
    d.write(&mcp, MCP_JSON);
    d.write(&codex, CODEX);
    d.write(&claude, CLAUDE);
    std::fs::set_permissions(&claude, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    // The dry run shows each change and touches nothing.
    let (o, out, err) = d.corral(&["mcp", "config"]);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains(".mcp.json (Claude Code)"), "{out}");
    assert!(out.contains("  everything: npx -y @modelcontextprotocol/server-everything\n    -> corral mcp wrap --name everything -- npx -y @modelcontextprotocol/server-everything\n"), "{out}");
    assert!(
        out.contains("  docs: remote, https://mcp.example.com/mcp: governed by the egress proxy"),
        "{out}"
    );
    assert!(out.contains("~/.codex/config.toml (Codex)"), "{out}");
    assert!(out.contains("~/.claude.json (Claude Code)"), "{out}");
    assert!(
        out.contains(r#"  db in projects["/home/u/app"].mcpServers: uvx mcp-server-sqlite"#),
        "{out}"
    );
    assert!(
        out.contains("3 stdio MCP servers to wrap, in 3 files: `corral mcp config --write`"),
        "{out}"
    );
    assert!(out.contains("To wrap a server by hand"), "{out}");
    assert_eq!(read(&mcp), MCP_JSON);
    assert_eq!(read(&codex), CODEX);
    assert_eq!(read(&claude), CLAUDE);

    // --write: rewritten, with backups of the old files.
    let (o, out, err) = d.corral(&["mcp", "config", "--write"]);
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(
        out.matches("  written (1 changed; the old file is ").count(),
        3,
        "{out}"
    );
    assert_eq!(read(&d.project().join(".mcp.json.corral-bak")), MCP_JSON);
    assert_eq!(read(&d.home().join(".codex/config.toml.corral-bak")), CODEX);
    assert_eq!(read(&d.home().join(".claude.json.corral-bak")), CLAUDE);
    let v: serde_json::Value = serde_json::from_str(&read(&mcp)).unwrap();
    assert_eq!(v["mcpServers"]["everything"]["command"], "corral");
    assert_eq!(v["mcpServers"]["everything"]["args"][3], "everything");
    assert_eq!(v["mcpServers"]["docs"]["url"], "https://mcp.example.com/mcp");
    let toml = read(&codex);
    assert!(
        toml.contains("# mine\n") && toml.contains("# the files server\ncommand = \"corral\"\n"),
        "{toml}"
    );
    assert!(
        toml.contains(r#"args = ["mcp", "wrap", "--name", "fs", "--", "mcp-server-filesystem", "/srv"]"#),
        "{toml}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&claude).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the file keeps its permissions");

    // Again: nothing to do, nothing written.
    let wrapped = (read(&mcp), read(&codex), read(&claude));
    let (o, out, err) = d.corral(&["mcp", "config", "--write"]);
    assert!(o.status.success(), "{out}{err}");
    assert!(!out.contains("written"), "{out}");
    assert!(
        out.contains("  everything: wrapped already: npx -y @modelcontextprotocol/server-everything"),
        "{out}"
    );
    assert_eq!((read(&mcp), read(&codex), read(&claude)), wrapped);
    let (_, out, _) = d.corral(&["mcp", "config"]);
    assert!(out.contains("No stdio MCP server needs wrapping."), "{out}");

    // --unwrap --write gives the originals back.
    let (o, out, err) = d.corral(&["mcp", "config", "--unwrap", "--write"]);
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(read(&mcp), MCP_JSON);
    assert_eq!(read(&codex), CODEX);
    assert_eq!(read(&claude), CLAUDE);
}

#[test]
fn config_names_the_file_and_position_of_a_syntax_error() {
    let d = Dirs::new();
    let bad = d.project().join(".gemini/settings.json");
    let text = "{\n  \"mcpServers\": {\n    \"a\": {\"command\": \"x\",}\n  }\n}\n";
    d.write(&bad, text);
    d.write(&d.project().join(".mcp.json"), MCP_JSON);
    let (o, out, err) = d.corral(&["mcp", "config", "--write"]);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("error: .gemini/settings.json:3:26: invalid JSON: trailing comma"),
        "{err}"
    );
    // The bad file is left alone; the good one is still handled.
    assert_eq!(read(&bad), text);
    assert!(read(&d.project().join(".mcp.json")).contains("\"corral\""));
}

#[test]
fn config_with_file_works_on_that_file_only() {
    let d = Dirs::new();
    d.write(&d.project().join(".mcp.json"), MCP_JSON);
    let other = d.0.join("elsewhere/servers.json");
    d.write(&other, MCP_JSON);
    let (o, out, err) = d.corral(&["mcp", "config", "--write", "--file", other.to_str().unwrap()]);
    assert!(o.status.success(), "{out}{err}");
    assert!(read(&other).contains("\"corral\""));
    assert_eq!(read(&d.project().join(".mcp.json")), MCP_JSON);
    let (o, _, err) = d.corral(&["mcp", "config", "--file", "/nonexistent/x.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("error: /nonexistent/x.json: cannot read it"),
        "{err}"
    );
}

#[test]
fn config_without_any_file() {
    let d = Dirs::new();
    let (o, out, _) = d.corral(&["mcp", "config"]);
    assert!(o.status.success());
    assert!(out.starts_with("No MCP configuration found here"), "{out}");
}

#[test]
fn wrap_outside_a_session_refuses_and_starts_nothing() {
    let d = Dirs::new();
    let marker = d.0.join("started");
    let (o, out, err) = d.corral(&[
        "mcp",
        "wrap",
        "--name",
        "t",
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(out.is_empty(), "nothing on stdout, the MCP stream: {out}");
    assert!(err.contains("the MCP server t (touch "), "{err}");
    assert!(err.contains("was not started"), "{err}");
    assert!(!marker.exists());

    // A named relay that does not exist: refused the same way.
    let o = d
        .command(&["mcp", "wrap", "--", "touch", marker.to_str().unwrap()])
        .env("CORRAL_MCP_WRAPPER", d.0.join("no-relay"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("CORRAL_MCP_WRAPPER names"));
    assert!(!marker.exists());
}

#[test]
fn wrap_hands_over_to_the_relay_with_stdio() {
    use std::io::Write as _;
    let d = Dirs::new();
    // A stand-in relay: prints its arguments, then echoes one line of stdin.
    let relay = d.0.join("relay.sh");
    d.write(
        &relay,
        "#!/bin/sh\nprintf '%s|' \"$@\"; echo\nread line; echo \"got $line\"\n",
    );
    std::fs::set_permissions(&relay, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut child = d
        .command(&["mcp", "wrap", "--name", "fs", "--", "srv", "--flag", "a b"])
        .env("CORRAL_MCP_WRAPPER", &relay)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"jsonrpc\":\"2.0\"}\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "mcp|wrap|--name|fs|--|srv|--flag|a b|\ngot {\"jsonrpc\":\"2.0\"}\n"
    );
}

#[test]
fn wrap_execs_the_relay_as_corral() {
    // busybox picks its applet by argv[0]: "corral" is none of them, and
    // it says so with that name.
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        eprintln!("SKIP wrap_execs_the_relay_as_corral: no busybox");
        return;
    };
    let d = Dirs::new();
    let o = d
        .command(&["mcp", "wrap", "--name", "x", "--", "true"])
        .env("CORRAL_MCP_WRAPPER", busybox)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("corral: applet not found"), "{err}");
}
