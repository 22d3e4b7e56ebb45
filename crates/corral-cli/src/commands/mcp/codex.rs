//! Codex's `config.toml`: the `[mcp_servers.<name>]` tables, read and
//! rewritten with `toml_edit`, which keeps comments and layout.

use super::edit::{classify, target, Direction, FormatError, Kind, Outcome, Server};
use toml_edit::{Array, DocumentMut, Item, TableLike, Value};

pub fn process(text: &str, direction: Option<Direction>) -> Result<Outcome, FormatError> {
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
