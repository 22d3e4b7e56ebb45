//! The MCP server entries of agents' configuration files, text in and text
//! out (no IO): which entries start a stdio server, which already start it
//! through `corral mcp wrap`, which are remote, and the rewritten text that
//! routes the stdio ones through corral (or back). Everything else in a
//! file is kept: JSON key order (serde_json's `preserve_order`) and
//! indentation, TOML comments and layout (`toml_edit`).

use serde::Serialize as _;
use serde_json::{Map, Value};
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
    fn new(message: impl Into<String>) -> FormatError {
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

fn classify(words: Vec<String>) -> Kind {
    match unwrap_words(&words) {
        Some(Ok(inner)) => Kind::Wrapped(inner),
        Some(Err(why)) => Kind::Unreadable(why),
        None => Kind::Stdio(words),
    }
}

/// Reads `text` as `format`; with a direction, also rewrites it.
pub fn process(format: Format, text: &str, direction: Option<Direction>) -> Result<Outcome, FormatError> {
    match format {
        Format::Codex => toml::process(text, direction),
        _ => process_json(format, text, direction),
    }
}

/// The words to put in place of an entry's command, if it changes.
fn target(name: &str, kind: &Kind, direction: Option<Direction>) -> Option<Vec<String>> {
    match (direction?, kind) {
        (Direction::Wrap, Kind::Stdio(cmd)) => Some(wrap_words(name, cmd)),
        (Direction::Unwrap, Kind::Wrapped(inner)) => Some(inner.clone()),
        _ => None,
    }
}

// ---- JSON -------------------------------------------------------------

/// How a JSON section's entries spell their command.
#[derive(Clone, Copy)]
enum Style {
    /// `command` (a string) and `args` (a list).
    CommandArgs,
    /// opencode: `command`, one list.
    OpenCode,
}

fn process_json(format: Format, text: &str, direction: Option<Direction>) -> Result<Outcome, FormatError> {
    let mut root: Value = serde_json::from_str(text).map_err(|e| json_error(text, &e))?;
    let Value::Object(obj) = &mut root else {
        return Err(FormatError::new("the file is not a JSON object"));
    };
    let mut servers = Vec::new();
    let mut changed = false;
    let mut run = |obj: &mut Map<String, Value>, key: &str, shown: String, style: Style| {
        section(obj, key, shown, style, direction, &mut servers, &mut changed)
    };
    match format {
        Format::McpServers => run(obj, "mcpServers", "mcpServers".into(), Style::CommandArgs)?,
        Format::ClaudeUser => {
            run(obj, "mcpServers", "mcpServers".into(), Style::CommandArgs)?;
            match obj.get_mut("projects") {
                None | Some(Value::Null) => {}
                Some(Value::Object(projects)) => {
                    for (dir, project) in projects.iter_mut() {
                        if let Value::Object(p) = project {
                            let shown = format!("projects[{}].mcpServers", json_str(dir));
                            run(p, "mcpServers", shown, Style::CommandArgs)?;
                        }
                    }
                }
                Some(_) => return Err(FormatError::new("`projects` is not an object")),
            }
        }
        Format::OpenCode => {
            // Newer opencode nests the servers one level down, in
            // `mcp.servers` (which is no server: it has no `type`).
            let nested = obj
                .get("mcp")
                .and_then(|m| m.get("servers"))
                .is_some_and(|s| s.is_object() && s.get("type").is_none());
            match (nested, obj.get_mut("mcp")) {
                (true, Some(Value::Object(mcp))) => {
                    run(mcp, "servers", "mcp.servers".into(), Style::OpenCode)?
                }
                _ => run(obj, "mcp", "mcp".into(), Style::OpenCode)?,
            }
        }
        Format::Codex => return Err(FormatError::new("not a JSON format")),
    }
    let text = if changed {
        Some(render_json(&root, text)?)
    } else {
        None
    };
    Ok(Outcome { servers, text })
}

#[allow(clippy::too_many_arguments)]
fn section(
    obj: &mut Map<String, Value>,
    key: &str,
    shown: String,
    style: Style,
    direction: Option<Direction>,
    servers: &mut Vec<Server>,
    changed: &mut bool,
) -> Result<(), FormatError> {
    let entries = match obj.get_mut(key) {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(FormatError::new(format!("`{shown}` is not an object"))),
    };
    for (name, entry) in entries.iter_mut() {
        let kind = match style {
            Style::CommandArgs => read_command_args(entry),
            Style::OpenCode => read_opencode(entry),
        };
        if let (Some(words), Value::Object(m)) = (target(name, &kind, direction), &mut *entry) {
            match style {
                Style::CommandArgs => set_command_args(m, &words),
                Style::OpenCode => {
                    m.insert("command".into(), strings_value(&words));
                }
            }
            *changed = true;
        }
        servers.push(Server {
            section: shown.clone(),
            name: name.clone(),
            kind,
        });
    }
    Ok(())
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn strings_value(words: &[String]) -> Value {
    Value::Array(words.iter().map(|w| Value::String(w.clone())).collect())
}

fn read_command_args(entry: &Value) -> Kind {
    let Value::Object(m) = entry else {
        return Kind::Unreadable("not an object".into());
    };
    for key in ["httpUrl", "url", "serverUrl"] {
        if let Some(url) = m.get(key).and_then(Value::as_str) {
            return Kind::Remote(url.to_string());
        }
    }
    if let Some(t) = m.get("type").and_then(Value::as_str) {
        if t != "stdio" {
            return Kind::Unreadable(format!("`type` is `{t}` but there is no `url`"));
        }
    }
    let command = match m.get("command") {
        None => return Kind::Unreadable("neither `command` nor `url`".into()),
        Some(Value::String(c)) if !c.is_empty() => c.clone(),
        Some(_) => return Kind::Unreadable("`command` is not a non-empty string".into()),
    };
    let args = match m.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(a) => match strings(a) {
            Some(a) => a,
            None => return Kind::Unreadable("`args` is not a list of strings".into()),
        },
    };
    if args.is_empty() && command.trim().contains(char::is_whitespace) {
        // Some agents run such a `command` through a shell: wrapped, it
        // would be one program name with spaces in it.
        return Kind::Unreadable(
            "`command` has spaces and there are no `args`: split it into `command` and `args` first".into(),
        );
    }
    let mut words = vec![command];
    words.extend(args);
    classify(words)
}

/// Sets `command` and `args`; `args` goes right after `command` when it is
/// new, and goes away when the command has no arguments.
fn set_command_args(m: &mut Map<String, Value>, words: &[String]) {
    let Some((program, args)) = words.split_first() else {
        return;
    };
    m.insert("command".into(), Value::String(program.clone()));
    if args.is_empty() {
        m.shift_remove("args");
    } else if let Some(a) = m.get_mut("args") {
        *a = strings_value(args);
    } else {
        let at = m.keys().position(|k| k == "command").map_or(m.len(), |i| i + 1);
        m.shift_insert(at, "args".into(), strings_value(args));
    }
}

fn read_opencode(entry: &Value) -> Kind {
    let Value::Object(m) = entry else {
        return Kind::Unreadable("not an object".into());
    };
    match m.get("type").and_then(Value::as_str) {
        Some("remote") => match m.get("url").and_then(Value::as_str) {
            Some(url) => Kind::Remote(url.to_string()),
            None => Kind::Unreadable("`type` is `remote` but there is no `url`".into()),
        },
        Some("local") => match m.get("command").and_then(strings) {
            Some(words) if !words.is_empty() => classify(words),
            _ => Kind::Unreadable("`command` is not a non-empty list of strings".into()),
        },
        _ => Kind::Unreadable("`type` is neither `local` nor `remote`".into()),
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

fn json_error(text: &str, e: &serde_json::Error) -> FormatError {
    let full = e.to_string();
    // serde_json appends " at line L column C": the position goes first.
    let mut message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full.clone(),
    };
    let (line, col) = (e.line(), e.column());
    let here = text
        .lines()
        .nth(line.saturating_sub(1))
        .and_then(|l| l.chars().nth(col.saturating_sub(1)));
    if here == Some('/') {
        message.push_str(" (a comment: corral rewrites plain JSON only; wrap this file's servers by hand)");
    }
    FormatError {
        at: (line > 0).then_some((line, col)),
        message: format!("invalid JSON: {message}"),
    }
}

/// The indentation of the original's first indented line: one level.
fn indent_of(text: &str) -> Option<&str> {
    text.lines().skip(1).find_map(|l| {
        let n = l.len() - l.trim_start_matches([' ', '\t']).len();
        (n > 0 && n < l.len()).then(|| &l[..n])
    })
}

/// `v` as JSON laid out like `original`: compact if it was on one line,
/// else pretty with its indentation; its final newline kept.
fn render_json(v: &Value, original: &str) -> Result<String, FormatError> {
    let err = |e: &dyn fmt::Display| FormatError::new(format!("cannot write JSON: {e}"));
    let mut out = if original.trim().contains('\n') {
        let indent = indent_of(original).unwrap_or("  ");
        let fmt = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
        let mut ser = serde_json::Serializer::with_formatter(Vec::new(), fmt);
        v.serialize(&mut ser).map_err(|e| err(&e))?;
        String::from_utf8(ser.into_inner()).map_err(|e| err(&e))?
    } else {
        serde_json::to_string(v).map_err(|e| err(&e))?
    };
    if original.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

// ---- TOML (Codex) -----------------------------------------------------

mod toml {
    use super::{classify, target, Direction, FormatError, Kind, Outcome, Server};
    use toml_edit::{Array, DocumentMut, Item, TableLike, Value};

    pub(super) fn process(text: &str, direction: Option<Direction>) -> Result<Outcome, FormatError> {
        let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| FormatError {
            at: e.span().map(|s| line_col(text, s.start)),
            message: format!("invalid TOML: {}", e.message().trim_end()),
        })?;
        let mut servers = Vec::new();
        let mut changed = false;
        if let Some(item) = doc.get_mut("mcp_servers") {
            let Some(table) = item.as_table_like_mut() else {
                return Err(FormatError::new("`mcp_servers` is not a table"));
            };
            for (name, entry) in table.iter_mut() {
                let name = name.get().to_string();
                let kind = match entry.as_table_like() {
                    Some(t) => read(t),
                    None => Kind::Unreadable("not a table".into()),
                };
                if let (Some(words), Some(t)) = (target(&name, &kind, direction), entry.as_table_like_mut()) {
                    set(t, &words);
                    changed = true;
                }
                servers.push(Server {
                    section: "mcp_servers".into(),
                    name,
                    kind,
                });
            }
        }
        Ok(Outcome {
            servers,
            text: changed.then(|| doc.to_string()),
        })
    }

    fn read(t: &dyn TableLike) -> Kind {
        if let Some(url) = t.get("url").and_then(Item::as_str) {
            return Kind::Remote(url.to_string());
        }
        let command = match t.get("command") {
            None => return Kind::Unreadable("neither `command` nor `url`".into()),
            Some(c) => match c.as_str() {
                Some(c) if !c.is_empty() => c.to_string(),
                _ => return Kind::Unreadable("`command` is not a non-empty string".into()),
            },
        };
        let mut words = vec![command];
        if let Some(args) = t.get("args") {
            let list: Option<Vec<String>> = args
                .as_array()
                .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect());
            match list {
                Some(list) => words.extend(list),
                None => return Kind::Unreadable("`args` is not a list of strings".into()),
            }
        }
        classify(words)
    }

    /// Replaces a value, keeping the comments and spacing around it.
    fn replace(t: &mut dyn TableLike, key: &str, new: Value) {
        match t.get_mut(key).and_then(Item::as_value_mut) {
            Some(old) => {
                let decor = old.decor().clone();
                *old = new;
                *old.decor_mut() = decor;
            }
            None => {
                t.insert(key, Item::Value(new));
            }
        }
    }

    fn set(t: &mut dyn TableLike, words: &[String]) {
        let Some((program, args)) = words.split_first() else {
            return;
        };
        replace(t, "command", Value::from(program.as_str()));
        if args.is_empty() {
            t.remove("args");
        } else {
            replace(
                t,
                "args",
                Value::Array(args.iter().map(String::as_str).collect::<Array>()),
            );
        }
    }

    fn line_col(text: &str, offset: usize) -> (usize, usize) {
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}
