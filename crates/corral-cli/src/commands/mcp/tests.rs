//! `corral mcp config`'s reading and rewriting, one format at a time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::edit::{self, process, Direction, Format, Kind};
use super::files;

fn words(ws: &[&str]) -> Vec<String> {
    ws.iter().map(|s| s.to_string()).collect()
}

fn kinds(format: Format, text: &str) -> Vec<(String, Kind)> {
    process(format, text, None)
        .unwrap()
        .servers
        .into_iter()
        .map(|s| (s.name, s.kind))
        .collect()
}

fn wrap(format: Format, text: &str) -> String {
    process(format, text, Some(Direction::Wrap))
        .unwrap()
        .text
        .expect("something to wrap")
}

fn unwrap(format: Format, text: &str) -> String {
    process(format, text, Some(Direction::Unwrap))
        .unwrap()
        .text
        .expect("something to unwrap")
}

/// Wrapping twice changes nothing the second time; unwrapping gives the
/// original back, byte for byte.
fn round_trip(format: Format, original: &str) -> String {
    let wrapped = wrap(format, original);
    assert_ne!(wrapped, original);
    let again = process(format, &wrapped, Some(Direction::Wrap)).unwrap();
    assert_eq!(again.text, None, "wrapping is idempotent");
    assert!(again.servers.iter().all(|s| !matches!(s.kind, Kind::Stdio(_))));
    assert_eq!(unwrap(format, &wrapped), original, "unwrap restores the original");
    assert_eq!(
        process(format, original, Some(Direction::Unwrap)).unwrap().text,
        None,
        "nothing to unwrap in the original"
    );
    wrapped
}

const CLAUDE_PROJECT: &str = r#"{
  "mcpServers": {
    "fs": {
      "type": "stdio",
      "command": "npx",
      "args": [
        "-y",
        "@modelcontextprotocol/server-filesystem",
        "/srv/data"
      ],
      "env": {
        "DEBUG": "1"
      }
    },
    "bare": {
      "command": "/usr/local/bin/my-server"
    },
    "docs": {
      "type": "http",
      "url": "https://mcp.example.com/mcp",
      "headers": {
        "Authorization": "Bearer ${TOKEN}"
      }
    },
    "old": {
      "type": "sse",
      "url": "https://sse.example.com/sse"
    }
  }
}
"#;

#[test]
fn claude_project_kinds() {
    assert_eq!(
        kinds(Format::McpServers, CLAUDE_PROJECT),
        vec![
            (
                "fs".into(),
                Kind::Stdio(words(&[
                    "npx",
                    "-y",
                    "@modelcontextprotocol/server-filesystem",
                    "/srv/data"
                ]))
            ),
            ("bare".into(), Kind::Stdio(words(&["/usr/local/bin/my-server"]))),
            ("docs".into(), Kind::Remote("https://mcp.example.com/mcp".into())),
            ("old".into(), Kind::Remote("https://sse.example.com/sse".into())),
        ]
    );
}

#[test]
fn claude_project_wraps_stdio_only_and_keeps_the_rest() {
    let wrapped = round_trip(Format::McpServers, CLAUDE_PROJECT);
    let v: serde_json::Value = serde_json::from_str(&wrapped).unwrap();
    let fs = &v["mcpServers"]["fs"];
    assert_eq!(fs["command"], "corral");
    assert_eq!(
        fs["args"],
        serde_json::json!([
            "mcp",
            "wrap",
            "--name",
            "fs",
            "--",
            "npx",
            "-y",
            "@modelcontextprotocol/server-filesystem",
            "/srv/data"
        ])
    );
    assert_eq!(fs["env"]["DEBUG"], "1");
    assert_eq!(fs["type"], "stdio");
    // Key order as it was; `args` appears right after `command`.
    let keys: Vec<&String> = fs.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["type", "command", "args", "env"]);
    let bare: Vec<&String> = v["mcpServers"]["bare"].as_object().unwrap().keys().collect();
    assert_eq!(bare, ["command", "args"]);
    assert_eq!(
        v["mcpServers"]["docs"],
        serde_json::from_str::<serde_json::Value>(CLAUDE_PROJECT).unwrap()["mcpServers"]["docs"]
    );
    let servers: Vec<&String> = v["mcpServers"].as_object().unwrap().keys().collect();
    assert_eq!(servers, ["fs", "bare", "docs", "old"]);
    assert!(wrapped.ends_with("}\n"));
}

const CLAUDE_USER: &str = r#"{
    "numStartups": 12,
    "theme": "dark",
    "mcpServers": {
        "everything": {
            "type": "stdio",
            "command": "npx",
            "args": [
                "-y",
                "@modelcontextprotocol/server-everything"
            ],
            "env": {}
        }
    },
    "projects": {
        "/home/u/app": {
            "allowedTools": [],
            "mcpServers": {
                "db": {
                    "type": "stdio",
                    "command": "uvx",
                    "args": [
                        "mcp-server-sqlite",
                        "--db-path",
                        "app.db"
                    ]
                },
                "api": {
                    "type": "http",
                    "url": "http://127.0.0.1:8080/mcp"
                }
            }
        },
        "/home/u/other": {
            "history": []
        }
    }
}"#;

#[test]
fn claude_user_reads_top_level_and_projects() {
    let out = process(Format::ClaudeUser, CLAUDE_USER, None).unwrap();
    let got: Vec<(&str, &str, &Kind)> = out
        .servers
        .iter()
        .map(|s| (s.section.as_str(), s.name.as_str(), &s.kind))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "mcpServers",
                "everything",
                &Kind::Stdio(words(&["npx", "-y", "@modelcontextprotocol/server-everything"]))
            ),
            (
                r#"projects["/home/u/app"].mcpServers"#,
                "db",
                &Kind::Stdio(words(&["uvx", "mcp-server-sqlite", "--db-path", "app.db"]))
            ),
            (
                r#"projects["/home/u/app"].mcpServers"#,
                "api",
                &Kind::Remote("http://127.0.0.1:8080/mcp".into())
            ),
        ]
    );
}

#[test]
fn claude_user_round_trip_keeps_indentation_and_other_settings() {
    let wrapped = round_trip(Format::ClaudeUser, CLAUDE_USER);
    // Four spaces, as the original; no final newline, as the original.
    assert!(wrapped.contains("\n    \"numStartups\": 12,\n"));
    assert!(!wrapped.ends_with('\n'));
    let v: serde_json::Value = serde_json::from_str(&wrapped).unwrap();
    assert_eq!(v["projects"]["/home/u/app"]["mcpServers"]["db"]["args"][4], "--");
    assert_eq!(v["projects"]["/home/u/app"]["mcpServers"]["db"]["args"][3], "db");
    assert_eq!(v["theme"], "dark");
}

const GEMINI: &str = r#"{
  "theme": "GitHub",
  "mcp": {
    "allowed": [
      "py"
    ]
  },
  "mcpServers": {
    "py": {
      "command": "python3",
      "args": [
        "-m",
        "my_server"
      ],
      "cwd": "./srv",
      "timeout": 30000,
      "trust": false
    },
    "remote-http": {
      "httpUrl": "https://api.example.com/mcp",
      "headers": {
        "X-Key": "k"
      }
    },
    "remote-sse": {
      "url": "http://localhost:8081/sse"
    }
  }
}
"#;

#[test]
fn gemini_and_qwen_settings() {
    assert_eq!(
        kinds(Format::McpServers, GEMINI),
        vec![
            ("py".into(), Kind::Stdio(words(&["python3", "-m", "my_server"]))),
            (
                "remote-http".into(),
                Kind::Remote("https://api.example.com/mcp".into())
            ),
            (
                "remote-sse".into(),
                Kind::Remote("http://localhost:8081/sse".into())
            ),
        ]
    );
    let wrapped = round_trip(Format::McpServers, GEMINI);
    let v: serde_json::Value = serde_json::from_str(&wrapped).unwrap();
    assert_eq!(v["mcpServers"]["py"]["cwd"], "./srv");
    assert_eq!(v["mcp"]["allowed"][0], "py");
}

#[test]
fn cursor_mcp_json() {
    let cursor = r#"{"mcpServers":{"server-name":{"command":"npx","args":["-y","mcp-server"],"env":{"API_KEY":"value"}},"web":{"url":"https://x.example/mcp"}}}"#;
    let wrapped = round_trip(Format::McpServers, cursor);
    // Compact stays compact.
    assert!(!wrapped.contains('\n'));
    assert!(wrapped.starts_with(r#"{"mcpServers":{"server-name":{"command":"corral","args":["mcp","wrap","--name","server-name","--","npx","-y","mcp-server"],"env""#));
}

const OPENCODE: &str = r#"{
  "$schema": "https://opencode.ai/config.json",
  "mcp": {
    "everything": {
      "type": "local",
      "command": [
        "npx",
        "-y",
        "@modelcontextprotocol/server-everything"
      ],
      "enabled": true,
      "environment": {
        "MY_ENV_VAR": "value"
      }
    },
    "remote": {
      "type": "remote",
      "url": "https://my-mcp-server.com",
      "enabled": true
    },
    "odd": {
      "enabled": false
    }
  }
}
"#;

#[test]
fn opencode_local_and_remote() {
    assert_eq!(
        kinds(Format::OpenCode, OPENCODE),
        vec![
            (
                "everything".into(),
                Kind::Stdio(words(&["npx", "-y", "@modelcontextprotocol/server-everything"]))
            ),
            ("remote".into(), Kind::Remote("https://my-mcp-server.com".into())),
            (
                "odd".into(),
                Kind::Unreadable("`type` is neither `local` nor `remote`".into())
            ),
        ]
    );
    let wrapped = round_trip(Format::OpenCode, OPENCODE);
    let v: serde_json::Value = serde_json::from_str(&wrapped).unwrap();
    assert_eq!(
        v["mcp"]["everything"]["command"],
        serde_json::json!([
            "corral",
            "mcp",
            "wrap",
            "--name",
            "everything",
            "--",
            "npx",
            "-y",
            "@modelcontextprotocol/server-everything"
        ])
    );
    assert_eq!(v["mcp"]["everything"]["environment"]["MY_ENV_VAR"], "value");
}

#[test]
fn opencode_nested_servers() {
    let text = r#"{"mcp":{"servers":{"s":{"type":"local","command":["srv"]}}}}"#;
    let out = process(Format::OpenCode, text, None).unwrap();
    assert_eq!(out.servers[0].section, "mcp.servers");
    assert_eq!(out.servers[0].kind, Kind::Stdio(words(&["srv"])));
    round_trip(Format::OpenCode, text);
}

const CODEX: &str = r#"# Codex configuration
model = "o4-mini"

# The docs server, over stdio.
[mcp_servers.docs]
command = "npx"   # via npm
args = ["-y", "mcp-server"]
env = { "API_KEY" = "value" }

[mcp_servers.remote]
url = "https://mcp.example.com/mcp"
bearer_token_env_var = "TOKEN"

[mcp_servers.plain]
command = "my-server"

[profiles.fast]
model = "o3"
"#;

#[test]
fn codex_kinds() {
    assert_eq!(
        kinds(Format::Codex, CODEX),
        vec![
            ("docs".into(), Kind::Stdio(words(&["npx", "-y", "mcp-server"]))),
            (
                "remote".into(),
                Kind::Remote("https://mcp.example.com/mcp".into())
            ),
            ("plain".into(), Kind::Stdio(words(&["my-server"]))),
        ]
    );
}

#[test]
fn codex_keeps_comments() {
    let wrapped = round_trip(Format::Codex, CODEX);
    assert!(wrapped.starts_with(
        "# Codex configuration\nmodel = \"o4-mini\"\n\n# The docs server, over stdio.\n[mcp_servers.docs]\n"
    ));
    assert!(
        wrapped.contains("command = \"corral\"   # via npm\n"),
        "{wrapped}"
    );
    assert!(wrapped.contains(r#"args = ["mcp", "wrap", "--name", "docs", "--", "npx", "-y", "mcp-server"]"#));
    assert!(wrapped.contains(r#"args = ["mcp", "wrap", "--name", "plain", "--", "my-server"]"#));
    assert!(wrapped.contains("[profiles.fast]\nmodel = \"o3\"\n"));
}

#[test]
fn codex_inline_tables() {
    let text = "mcp_servers = { a = { command = \"srv\", args = [\"x\"] } }\n";
    assert_eq!(
        kinds(Format::Codex, text),
        vec![("a".into(), Kind::Stdio(words(&["srv", "x"])))]
    );
    round_trip(Format::Codex, text);
}

#[test]
fn wrapped_entries_are_recognised() {
    let text = r#"{"mcpServers": {
        "a": {"command": "corral", "args": ["mcp", "wrap", "--name", "a", "--", "srv", "--flag"]},
        "b": {"command": "/usr/local/bin/corral", "args": ["mcp", "wrap", "--", "srv"]},
        "c": {"command": "corral", "args": ["mcp", "wrap", "--name", "c"]},
        "d": {"command": "corral", "args": ["run", "--", "srv"]}
    }}"#;
    assert_eq!(
        kinds(Format::McpServers, text),
        vec![
            ("a".into(), Kind::Wrapped(words(&["srv", "--flag"]))),
            ("b".into(), Kind::Wrapped(words(&["srv"]))),
            (
                "c".into(),
                Kind::Unreadable("`corral mcp wrap` without `--` before the command".into())
            ),
            ("d".into(), Kind::Stdio(words(&["corral", "run", "--", "srv"]))),
        ]
    );
    assert_eq!(
        edit::unwrap_words(&edit::wrap_words("n", &words(&["x", "--", "y"]))),
        Some(Ok(words(&["x", "--", "y"])))
    );
}

#[test]
fn unreadable_entries_are_left_alone() {
    let text = r#"{"mcpServers": {
        "str": "npx foo",
        "spaces": {"command": "npx -y foo"},
        "badargs": {"command": "srv", "args": "-x"},
        "nothing": {"env": {}},
        "ok": {"command": "srv"}
    }}"#;
    let got = kinds(Format::McpServers, text);
    assert!(matches!(&got[0].1, Kind::Unreadable(w) if w == "not an object"));
    assert!(matches!(&got[1].1, Kind::Unreadable(w) if w.contains("spaces")));
    assert!(matches!(&got[2].1, Kind::Unreadable(w) if w.contains("`args`")));
    assert!(matches!(&got[3].1, Kind::Unreadable(w) if w.contains("neither")));
    let wrapped = wrap(Format::McpServers, text);
    let v: serde_json::Value = serde_json::from_str(&wrapped).unwrap();
    assert_eq!(v["mcpServers"]["str"], "npx foo");
    assert_eq!(v["mcpServers"]["spaces"]["command"], "npx -y foo");
    assert_eq!(v["mcpServers"]["ok"]["command"], "corral");
}

#[test]
fn no_servers_no_change() {
    for (format, text) in [
        (Format::McpServers, "{\"theme\": \"x\"}\n"),
        (Format::ClaudeUser, "{\"projects\": {\"/p\": {}}}"),
        (Format::OpenCode, "{}"),
        (Format::Codex, "model = \"x\"\n"),
    ] {
        let out = process(format, text, Some(Direction::Wrap)).unwrap();
        assert!(out.servers.is_empty());
        assert_eq!(out.text, None);
    }
}

#[test]
fn errors_say_where() {
    let e = process(
        Format::McpServers,
        "{\n  \"mcpServers\": {\n    \"a\": {,}\n  }\n}\n",
        None,
    )
    .unwrap_err();
    assert_eq!(e.at, Some((3, 11)));
    assert!(e.to_string().starts_with("3:11: invalid JSON: "), "{e}");

    let e = process(
        Format::McpServers,
        "{\n  // mine\n  \"mcpServers\": {}\n}\n",
        None,
    )
    .unwrap_err();
    assert_eq!(e.at.map(|a| a.0), Some(2));
    assert!(e.message.contains("comment"), "{e}");

    let e = process(
        Format::Codex,
        "model = \"x\"\n[mcp_servers.a\ncommand = \"y\"\n",
        None,
    )
    .unwrap_err();
    assert_eq!(e.at.map(|a| a.0), Some(2), "{e}");
    assert!(e.message.starts_with("invalid TOML"), "{e}");

    let e = process(Format::McpServers, "[1, 2]", None).unwrap_err();
    assert_eq!(e.to_string(), "the file is not a JSON object");
    let e = process(Format::McpServers, "{\"mcpServers\": [1]}", None).unwrap_err();
    assert_eq!(e.to_string(), "`mcpServers` is not an object");
    let e = process(Format::Codex, "mcp_servers = 3\n", None).unwrap_err();
    assert_eq!(e.to_string(), "`mcp_servers` is not a table");
}

#[test]
fn discover_finds_project_and_user_files_once() {
    let dir = std::env::temp_dir().join(format!("corral-mcp-discover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (project, home) = (dir.join("proj"), dir.join("home"));
    for p in [
        project.join(".mcp.json"),
        project.join(".codex/config.toml"),
        home.join(".claude.json"),
        home.join(".config/opencode/opencode.json"),
    ] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "{}").unwrap();
    }
    let found = files::discover(&project, Some(&home));
    let shown: Vec<(&str, &str, Format)> = found
        .iter()
        .map(|f| (f.shown.as_str(), f.agent, f.format))
        .collect();
    assert_eq!(
        shown,
        vec![
            (".mcp.json", "Claude Code", Format::McpServers),
            (".codex/config.toml", "Codex", Format::Codex),
            ("~/.claude.json", "Claude Code", Format::ClaudeUser),
            ("~/.config/opencode/opencode.json", "opencode", Format::OpenCode),
        ]
    );
    // The project is the home: each file once.
    assert_eq!(files::discover(&home, Some(&home)).len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn given_files_get_their_format_from_the_name() {
    use std::path::Path;
    assert_eq!(files::given(Path::new("/x/config.toml")).format, Format::Codex);
    assert_eq!(
        files::given(Path::new("/x/.claude.json")).format,
        Format::ClaudeUser
    );
    assert_eq!(files::given(Path::new("opencode.json")).format, Format::OpenCode);
    assert_eq!(files::given(Path::new(".mcp.json")).format, Format::McpServers);
}

#[test]
fn shell_words_quote_what_a_shell_would_split() {
    assert_eq!(
        super::shell_words(&words(&["npx", "-y", "a b", "it's", ""])),
        r#"npx -y 'a b' 'it'\''s' ''"#
    );
}

#[test]
fn notice_counts_unwrapped_stdio_servers() {
    let dir = std::env::temp_dir().join(format!("corral-mcp-notice-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (project, home) = (dir.join("proj"), dir.join("home"));
    std::fs::create_dir_all(&project).unwrap();
    std::fs::create_dir_all(home.join(".codex")).unwrap();
    assert_eq!(super::unwrapped_notice(&project, &home), None, "no files");
    std::fs::write(
        project.join(".mcp.json"),
        r#"{"mcpServers": {"a": {"command": "x"}, "b": {"command": "y"}, "r": {"url": "http://h/mcp"},
            "w": {"command": "corral", "args": ["mcp", "wrap", "--", "z"]}}}"#,
    )
    .unwrap();
    std::fs::write(
        home.join(".codex/config.toml"),
        "[mcp_servers.c]\ncommand = \"x\"\n",
    )
    .unwrap();
    std::fs::write(home.join(".claude.json"), "{ not json").unwrap();
    let notice = super::unwrapped_notice(&project, &home).unwrap();
    assert!(
        notice.starts_with("corral: 3 stdio MCP servers are not wrapped (.mcp.json, ~/.codex/config.toml): "),
        "{notice}"
    );
    assert!(notice.contains("`corral mcp config --write` (in "), "{notice}");
    assert!(!notice.contains('\n'));
    std::fs::write(
        project.join(".mcp.json"),
        r#"{"mcpServers": {"r": {"url": "http://h/mcp"}}}"#,
    )
    .unwrap();
    std::fs::write(home.join(".codex/config.toml"), "").unwrap();
    assert_eq!(
        super::unwrapped_notice(&project, &home),
        None,
        "nothing unwrapped"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn new_args_go_right_after_command() {
    let text = "{\"mcpServers\":{\"s\":{\"command\":\"srv\",\"env\":{\"A\":\"1\"}}}}";
    let wrapped = round_trip(Format::McpServers, text);
    assert_eq!(
        wrapped,
        "{\"mcpServers\":{\"s\":{\"command\":\"corral\",\"args\":[\"mcp\",\"wrap\",\"--name\",\"s\",\"--\",\"srv\"],\"env\":{\"A\":\"1\"}}}}"
    );
}
