//! The MCP server entries of agents' configuration files, text in and text
//! out (no IO): which entries start a stdio server, which already start it
//! through `corral mcp wrap`, which are remote, and the rewritten text that
//! routes the stdio ones through corral (or back). The formats themselves
//! are in `json.rs` and `codex.rs`; everything else in a file is kept.

use std::fmt;

/// The shape of a file's MCP section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON with `mcpServers.<name>`: `{command, args, env, ...}` for a
    /// stdio server, `{url}`, `{httpUrl}` or `{type: "http"|"sse", url}`
    /// for a remote one. Claude Code's `.mcp.json`, Gemini CLI's and Qwen
    /// Code's `settings.json`, Cursor's `mcp.json`.
    McpServers,
    /// Claude Code's `~/.claude.json`: `mcpServers` at the top (user
    /// scope) and in each `projects.<dir>` (local scope).
    ClaudeUser,
    /// opencode's `opencode.json`: `mcp.<name>` (or `mcp.servers.<name>`)
    /// with `{type: "local", command: [..]}` or `{type: "remote", url}`.
    OpenCode,
    /// Codex's `config.toml`: `[mcp_servers.<name>]` with `command` and
    /// `args`, or `url`.
    Codex,
}

/// Which way to rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Route stdio servers through `corral mcp wrap`.
    Wrap,
    /// Give wrapped servers their own command back.
    Unwrap,
}

/// What one entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A stdio server that corral does not see: its command line.
    Stdio(Vec<String>),
    /// A stdio server started through `corral mcp wrap`: the server's own
    /// command line.
    Wrapped(Vec<String>),
    /// A remote server (streamable HTTP or SSE): its URL.
    Remote(String),
    /// An entry corral cannot read, and why; it is left alone.
    Unreadable(String),
}

/// One server entry of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// Where in the file, e.g. `mcpServers` or `projects["/p"].mcpServers`.
    pub section: String,
    /// The server's name (its key).
    pub name: String,
    /// What it was before any rewriting.
    pub kind: Kind,
}

/// What [`process`] found, and the new text if anything changed.
#[derive(Debug)]
pub struct Outcome {
    /// Every server entry, in file order.
    pub servers: Vec<Server>,
    /// The rewritten file, when the rewrite changed something.
    pub text: Option<String>,
}

/// A file that cannot be read as its format, with the position when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// 1-based line and column.
    pub at: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl FormatError {
    pub(super) fn new(message: impl Into<String>) -> FormatError {
        FormatError {
            at: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, col)) => write!(f, "{line}:{col}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The program name a wrapped entry starts.
pub const CORRAL: &str = "corral";

/// `corral mcp wrap --name NAME -- COMMAND...` as words.
pub fn wrap_words(name: &str, command: &[String]) -> Vec<String> {
    let mut w: Vec<String> = [CORRAL, "mcp", "wrap", "--name", name, "--"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    w.extend(command.iter().cloned());
    w
}

/// The server's own command from `corral mcp wrap [--name N] -- CMD...`;
/// `None` when the words are not a `corral mcp wrap` command at all.
pub fn unwrap_words(words: &[String]) -> Option<Result<Vec<String>, String>> {
    let program = words.first()?;
    let base = program.rsplit('/').next().unwrap_or(program);
    if base != CORRAL || words.get(1)? != "mcp" || words.get(2)? != "wrap" {
        return None;
    }
    let mut rest = words.iter().skip(3);
    while let Some(w) = rest.next() {
        match w.as_str() {
            "--" => {
                let inner: Vec<String> = rest.cloned().collect();
                if inner.is_empty() {
                    return Some(Err("`corral mcp wrap` with no command after `--`".into()));
                }
                return Some(Ok(inner));
            }
            "--name" => {
                rest.next();
            }
            w if w.starts_with("--name=") => {}
            other => return Some(Err(format!("`corral mcp wrap` with `{other}` before `--`"))),
        }
    }
    Some(Err("`corral mcp wrap` without `--` before the command".into()))
}

pub(super) fn classify(words: Vec<String>) -> Kind {
    match unwrap_words(&words) {
        Some(Ok(inner)) => Kind::Wrapped(inner),
        Some(Err(why)) => Kind::Unreadable(why),
        None => Kind::Stdio(words),
    }
}

/// Reads `text` as `format`; with a direction, also rewrites it.
pub fn process(format: Format, text: &str, direction: Option<Direction>) -> Result<Outcome, FormatError> {
    match format {
        Format::Codex => super::codex::process(text, direction),
        _ => super::json::process(format, text, direction),
    }
}

/// The words to put in place of an entry's command, if it changes.
pub(super) fn target(name: &str, kind: &Kind, direction: Option<Direction>) -> Option<Vec<String>> {
    match (direction?, kind) {
        (Direction::Wrap, Kind::Stdio(cmd)) => Some(wrap_words(name, cmd)),
        (Direction::Unwrap, Kind::Wrapped(inner)) => Some(inner.clone()),
        _ => None,
    }
}
