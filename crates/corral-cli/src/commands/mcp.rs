//! `corral mcp ...`: routing agents' stdio MCP servers through corral.
//!
//! `corral mcp config` finds the agents' MCP server lists and shows (or
//! makes) the change that starts each stdio server through
//! `corral mcp wrap`; `corral mcp wrap` hands over to the session's relay.
//! Remote servers need nothing: their traffic goes through the egress proxy.

mod codex;
mod edit;
mod files;
mod json;
#[cfg(test)]
mod tests;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use edit::{Direction, Kind};
use files::ConfigFile;
use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `corral mcp` subcommands.
#[derive(Subcommand)]
pub enum McpCmd {
    /// Find the agents' MCP configurations (Claude Code, Codex, Gemini CLI,
    /// Qwen Code, Cursor, opencode) in this directory and in your home, and
    /// show the change that starts each stdio server through `corral mcp
    /// wrap`; --write makes it.
    Config(ConfigArgs),
    /// Start a stdio MCP server through the session's relay, which decides
    /// each message with the policy. Only inside a `corral run` session:
    /// elsewhere the server is not started (exit 125).
    Wrap(WrapArgs),
}

/// `corral mcp config` arguments.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  corral mcp config\n  corral mcp config --write\n  corral mcp config --unwrap --write --file .mcp.json"
)]
pub struct ConfigArgs {
    /// Rewrite the files in place (each is first copied to
    /// `<file>.corral-bak`).
    #[arg(long)]
    write: bool,
    /// The other way: give wrapped servers their own command back.
    #[arg(long)]
    unwrap: bool,
    /// Only this file, instead of the usual places (repeatable); its format
    /// is told by its name: `*.toml` Codex, `.claude.json`, `opencode*.json`,
    /// else a JSON file with `mcpServers`.
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
}

/// `corral mcp wrap` arguments.
#[derive(Args)]
pub struct WrapArgs {
    /// The server's name, as the agent's configuration calls it (the
    /// policy's `MCP::Server::"NAME"`).
    #[arg(long)]
    name: Option<String>,
    /// The server's command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// Exit status when `corral mcp wrap` refuses to start the server.
const REFUSED: u8 = 125;

/// Runs `corral mcp ...`.
pub fn run(cmd: McpCmd) -> Result<ExitCode> {
    match cmd {
        McpCmd::Config(args) => config(args),
        McpCmd::Wrap(args) => Ok(wrap(args)),
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// One command line as a shell would read it back.
fn shell_words(words: &[String]) -> String {
    let quote = |w: &String| {
        let plain = !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
        if plain {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    words.iter().map(quote).collect::<Vec<_>>().join(" ")
}

fn config(args: ConfigArgs) -> Result<ExitCode> {
    let direction = if args.unwrap {
        Direction::Unwrap
    } else {
        Direction::Wrap
    };
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let home = home();
    let list: Vec<ConfigFile> = if args.files.is_empty() {
        files::discover(&cwd, home.as_deref())
    } else {
        args.files.iter().map(|p| files::given(p)).collect()
    };
    if list.is_empty() {
        println!(
            "No MCP configuration found here ({}) or in your home.",
            cwd.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0usize;
    let mut pending = 0usize;
    let mut pending_files = 0usize;
    for file in &list {
        let text = match std::fs::read_to_string(&file.path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {}: cannot read it: {e}", file.shown);
                failed += 1;
                continue;
            }
        };
        let outcome = match edit::process(file.format, &text, Some(direction)) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {}:{e}", file.shown);
                failed += 1;
                continue;
            }
        };
        println!("{} ({})", file.shown, file.agent);
        if outcome.servers.is_empty() {
            println!("  no MCP servers");
        }
        let mut changes = 0usize;
        for s in &outcome.servers {
            let name = if s.section.starts_with("projects[") {
                format!("{} in {}", s.name, s.section)
            } else {
                s.name.clone()
            };
            match (&s.kind, direction) {
                (Kind::Stdio(cmd), Direction::Wrap) => {
                    changes += 1;
                    println!("  {name}: {}", shell_words(cmd));
                    println!("    -> {}", shell_words(&edit::wrap_words(&s.name, cmd)));
                }
                (Kind::Stdio(cmd), Direction::Unwrap) => {
                    println!("  {name}: not wrapped: {}", shell_words(cmd))
                }
                (Kind::Wrapped(inner), Direction::Unwrap) => {
                    changes += 1;
                    println!("  {name}: {}", shell_words(&edit::wrap_words(&s.name, inner)));
                    println!("    -> {}", shell_words(inner));
                }
                (Kind::Wrapped(inner), Direction::Wrap) => {
                    println!("  {name}: wrapped already: {}", shell_words(inner))
                }
                (Kind::Remote(url), _) => {
                    println!("  {name}: remote, {url}: governed by the egress proxy")
                }
                (Kind::Unreadable(why), _) => println!("  {name}: left alone: {why}"),
            }
        }
        match (&outcome.text, args.write) {
            (Some(new), true) => match files::replace(&file.path, new) {
                Ok(backup) => println!(
                    "  written ({changes} changed; the old file is {})",
                    backup.display()
                ),
                Err(e) => {
                    eprintln!("error: {}: cannot rewrite it: {e}", file.shown);
                    failed += 1;
                }
            },
            (Some(_), false) => {
                pending += changes;
                pending_files += 1;
            }
            (None, _) => {}
        }
    }
    if !args.write {
        println!();
        print!("{}", advice(direction, pending, pending_files));
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// How to wrap by hand, after the dry run.
const BY_HAND: &str = r#"
To wrap a server by hand, keep its entry and put `corral mcp wrap --name NAME --`
in front of its command: corral's relay in the session then starts the server and
decides each of its messages with the policy. Remote (HTTP) servers need nothing.
For example, in .mcp.json (Claude Code; Gemini CLI, Qwen Code and Cursor alike):
  "fs": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "."]}
becomes
  "fs": {"command": "corral", "args": ["mcp", "wrap", "--name", "fs", "--",
         "npx", "-y", "@modelcontextprotocol/server-filesystem", "."]}
See docs/MCP.md for the other agents.
"#;

/// What the dry run ends with: what --write would do, and how to do it by
/// hand.
fn advice(direction: Direction, pending: usize, pending_files: usize) -> String {
    let servers = plural(pending, "stdio MCP server", "stdio MCP servers");
    let in_files = plural(pending_files, "file", "files");
    match direction {
        Direction::Unwrap if pending == 0 => "Nothing to unwrap.\n".into(),
        Direction::Unwrap => format!(
            "{servers} to unwrap, in {in_files}: `corral mcp config --unwrap --write` does it \
             (each file is copied to <file>.corral-bak first).\n"
        ),
        Direction::Wrap => {
            let head = if pending == 0 {
                "No stdio MCP server needs wrapping.\n".to_string()
            } else {
                format!(
                    "{servers} to wrap, in {in_files}: `corral mcp config --write` does it \
                     (each file is copied to <file>.corral-bak first).\n"
                )
            };
            head + BY_HAND
        }
    }
}

/// How many stdio MCP servers the agents' configurations for `project`
/// and `home` start without `corral mcp wrap`, in which files, and the
/// command that fixes it; one line, or `None` when there are none.
/// Unreadable files are passed over (`corral mcp config` reports them).
pub fn unwrapped_notice(project: &Path, home: &Path) -> Option<String> {
    let mut count = 0usize;
    let mut shown = Vec::new();
    for file in files::discover(project, Some(home)) {
        let Ok(text) = std::fs::read_to_string(&file.path) else {
            continue;
        };
        let Ok(outcome) = edit::process(file.format, &text, None) else {
            continue;
        };
        let n = outcome
            .servers
            .iter()
            .filter(|s| matches!(s.kind, Kind::Stdio(_)))
            .count();
        if n > 0 {
            count += n;
            shown.push(file.shown);
        }
    }
    if count == 0 {
        return None;
    }
    let servers = plural(count, "stdio MCP server is", "stdio MCP servers are");
    let place = match std::env::current_dir() {
        Ok(cwd) if cwd == project => String::new(),
        _ => format!(" (in {})", project.display()),
    };
    Some(format!(
        "corral: {servers} not wrapped ({}): the policy does not see their tool calls; \
         `corral mcp config --write`{place} wraps them",
        shown.join(", ")
    ))
}

/// The session's relay: `$CORRAL_MCP_WRAPPER`, else `/run/corral/init`.
fn relay() -> Result<PathBuf, String> {
    if let Some(v) = std::env::var_os("CORRAL_MCP_WRAPPER").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "CORRAL_MCP_WRAPPER names {}, which is not a file",
                p.display()
            ))
        };
    }
    let p = PathBuf::from("/run/corral/init");
    if p.is_file() {
        Ok(p)
    } else {
        Err("this is not a corral session (there is no /run/corral/init)".into())
    }
}

/// Hands over to the relay (`exec`, as `corral mcp wrap ...`), or refuses.
/// Nothing may reach stdout here: it is the MCP stream.
fn wrap(args: WrapArgs) -> ExitCode {
    let name = args.name.as_deref().unwrap_or("(unnamed)");
    let shown = args
        .command
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    let relay = match relay() {
        Ok(p) => p,
        Err(why) => {
            eprintln!(
                "corral mcp wrap: {why}: the MCP server {name} ({}) was not started, since its \
                 calls could not be governed; run the agent with `corral run`",
                shell_words(&shown)
            );
            return ExitCode::from(REFUSED);
        }
    };
    let mut cmd = std::process::Command::new(&relay);
    cmd.arg0(edit::CORRAL).args(["mcp", "wrap"]);
    if let Some(n) = &args.name {
        cmd.arg("--name").arg(n);
    }
    cmd.arg("--").args(&args.command);
    let err = cmd.exec();
    eprintln!(
        "corral mcp wrap: cannot start the relay {}: {err}",
        relay.display()
    );
    ExitCode::from(REFUSED)
}
