//! Where agents keep their MCP server lists, and writing one back safely.

use super::edit::Format;
use std::io;
use std::path::{Path, PathBuf};

/// A configuration file that lists MCP servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFile {
    /// Its path.
    pub path: PathBuf,
    /// How to show it: relative to the project, `~/` for the home.
    pub shown: String,
    /// The agent that reads it.
    pub agent: &'static str,
    /// Its shape.
    pub format: Format,
}

/// Project scope, relative to the project directory.
const PROJECT: &[(&str, &str, Format)] = &[
    (".mcp.json", "Claude Code", Format::McpServers),
    (".gemini/settings.json", "Gemini CLI", Format::McpServers),
    (".qwen/settings.json", "Qwen Code", Format::McpServers),
    (".cursor/mcp.json", "Cursor", Format::McpServers),
    ("opencode.json", "opencode", Format::OpenCode),
    (".opencode/opencode.json", "opencode", Format::OpenCode),
    (".codex/config.toml", "Codex", Format::Codex),
];

/// User scope, relative to the home directory.
const USER: &[(&str, &str, Format)] = &[
    (".claude.json", "Claude Code", Format::ClaudeUser),
    (".gemini/settings.json", "Gemini CLI", Format::McpServers),
    (".qwen/settings.json", "Qwen Code", Format::McpServers),
    (".cursor/mcp.json", "Cursor", Format::McpServers),
    (".codex/config.toml", "Codex", Format::Codex),
    (".config/opencode/opencode.json", "opencode", Format::OpenCode),
];

/// The files (that exist) in the project's and the user's usual places;
/// a file reached both ways (the project is the home) is listed once.
pub fn discover(project: &Path, home: Option<&Path>) -> Vec<ConfigFile> {
    let mut found: Vec<ConfigFile> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let scopes = [(Some(project), PROJECT, ""), (home, USER, "~/")];
    for (dir, list, prefix) in scopes {
        let Some(dir) = dir else { continue };
        for (rel, agent, format) in list {
            let path = dir.join(rel);
            if !path.is_file() {
                continue;
            }
            let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if seen.contains(&real) {
                continue;
            }
            seen.push(real);
            found.push(ConfigFile {
                path,
                shown: format!("{prefix}{rel}"),
                agent,
                format: *format,
            });
        }
    }
    found
}

/// A file named with `--file`: its format told by its name.
pub fn given(path: &Path) -> ConfigFile {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (agent, format) = if name.ends_with(".toml") {
        ("Codex", Format::Codex)
    } else if name == ".claude.json" {
        ("Claude Code", Format::ClaudeUser)
    } else if name.starts_with("opencode") {
        ("opencode", Format::OpenCode)
    } else {
        ("mcpServers", Format::McpServers)
    };
    ConfigFile {
        path: path.to_path_buf(),
        shown: path.display().to_string(),
        agent,
        format,
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `text` over `path`: first a copy of the old file to
/// `<file>.corral-bak`, then the new text to a temporary file beside it
/// with the old one's permissions (and owner, when allowed), renamed over
/// it. A symlink is followed: the file it points to is replaced.
pub fn replace(path: &Path, text: &str) -> io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let real = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&real)?;
    let backup = with_suffix(&real, ".corral-bak");
    std::fs::copy(&real, &backup)?;
    let tmp = with_suffix(&real, ".corral-tmp");
    let written = (|| {
        std::fs::write(&tmp, text)?;
        std::fs::set_permissions(&tmp, meta.permissions())?;
        // Only root may give a file away; a user's own file keeps its owner anyway.
        let _ = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()));
        std::fs::rename(&tmp, &real)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| backup)
}
