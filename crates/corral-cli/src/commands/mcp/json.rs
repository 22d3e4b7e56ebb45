//! The JSON formats (Claude Code, Gemini CLI, Qwen Code, Cursor, opencode):
//! read with serde_json keeping key order (`preserve_order`), written back
//! with the original's indentation and final newline.

use super::edit::{classify, target, Direction, Format, FormatError, Kind, Outcome, Server};
use serde::Serialize as _;
use serde_json::{Map, Value};
use std::fmt;

/// How a JSON section's entries spell their command.
#[derive(Clone, Copy)]
enum Style {
    /// `command` (a string) and `args` (a list).
    CommandArgs,
    /// opencode: `command`, one list.
    OpenCode,
}

pub fn process(format: Format, text: &str, direction: Option<Direction>) -> Result<Outcome, FormatError> {
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
