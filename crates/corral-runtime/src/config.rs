//! Configuration: the global file, the project's `corral.toml` and the
//! command-line flags, merged into [`Settings`] in which every value
//! remembers its [`Origin`].
//!
//! Flags override the project file, which overrides the global file, which
//! overrides the built-in defaults. This module reads and validates; it
//! starts nothing. Its one write is [`remember_consent`], which edits the
//! global file in place and keeps the user's comments.

use crate::recipes;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use toml::Spanned;

/// Name of the per-project configuration file, found at the project root.
pub const PROJECT_FILE: &str = "corral.toml";

/// Where the web UI listens unless configured otherwise.
pub const DEFAULT_UI_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 18080));

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// corral's built-in default.
    Default,
    /// The global configuration file, at this line.
    Global {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
    },
    /// The project's `corral.toml`, at this line.
    Project {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
    },
    /// A command-line flag, named with its dashes (`--image`).
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Global { path, line } | Origin::Project { path, line } => {
                write!(f, "{}:{line}", path.display())
            }
            Origin::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

impl Origin {
    /// The origin with its layer named: `global /x/config.toml:3`.
    pub fn label(&self) -> String {
        match self {
            Origin::Global { .. } => format!("global {self}"),
            Origin::Project { .. } => format!("project {self}"),
            _ => self.to_string(),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Val<T> {
    /// The value.
    pub value: T,
    /// Where it was set.
    pub origin: Origin,
}

impl<T> Val<T> {
    /// A value from `origin`.
    pub fn new(value: T, origin: Origin) -> Self {
        Val { value, origin }
    }
}

/// A value that is not acceptable, with the reason, for example
/// ``runtime `lxc` is not supported: expected `podman` or `docker` ``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// The container engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `podman`.
    Podman,
    /// `docker`.
    Docker,
}

impl Engine {
    /// Parses `podman` or `docker`.
    pub fn parse(s: &str) -> Result<Engine, InvalidValue> {
        match s {
            "podman" => Ok(Engine::Podman),
            "docker" => Ok(Engine::Docker),
            _ => Err(InvalidValue(format!(
                "runtime `{s}` is not supported: expected `podman` or `docker`"
            ))),
        }
    }

    /// The engine's command name.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bind mount into the container: `src:dst[:ro|:rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Host path, absolute once parsed.
    pub src: PathBuf,
    /// Container path, always absolute.
    pub dst: PathBuf,
    /// Mounted read-only (`:ro`); the default is read-write.
    pub read_only: bool,
}

impl Volume {
    /// Parses `src:dst[:ro|:rw]`. A relative `src` is taken relative to
    /// `base` (the configuration file's directory, or the current directory
    /// for flags); `~/` at its start means `$HOME`. `dst` must be absolute.
    pub fn parse(spec: &str, base: &Path) -> Result<Volume, InvalidValue> {
        let malformed = || {
            InvalidValue(format!(
                "volume `{spec}` is malformed: expected `src:dst[:ro|:rw]`"
            ))
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (src, dst, read_only) = match parts.as_slice() {
            [src, dst] => (*src, *dst, false),
            [src, dst, "ro"] => (*src, *dst, true),
            [src, dst, "rw"] => (*src, *dst, false),
            [_, _, mode] => {
                return Err(InvalidValue(format!(
                    "volume `{spec}` has mode `{mode}`: expected `ro` or `rw`"
                )))
            }
            _ => return Err(malformed()),
        };
        if src.is_empty() || dst.is_empty() {
            return Err(malformed());
        }
        if !Path::new(dst).is_absolute() {
            return Err(InvalidValue(format!(
                "volume `{spec}`: destination `{dst}` must be an absolute path"
            )));
        }
        Ok(Volume {
            src: resolve_path(base, Path::new(src)),
            dst: normalize(Path::new(dst)),
            read_only,
        })
    }
}

impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if self.read_only { "ro" } else { "rw" };
        write!(f, "{}:{}:{mode}", self.src.display(), self.dst.display())
    }
}

/// The command-line flags that override configuration files.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--policy`.
    pub policy: Option<PathBuf>,
    /// `--image`.
    pub image: Option<String>,
    /// `--runtime`.
    pub runtime: Option<String>,
    /// `--volume`, each `src:dst[:ro|:rw]`.
    pub volumes: Vec<String>,
    /// `--env`, each `NAME=value`.
    pub env: Vec<String>,
    /// `--ui-listen`.
    pub ui_listen: Option<String>,
    /// `--no-ui` (`Some(false)`).
    pub ui_enabled: Option<bool>,
    /// `--shadow`.
    pub shadow: Option<bool>,
    /// `--store`.
    pub store: Option<PathBuf>,
    /// `--upstream-ca`, PEM files.
    pub upstream_ca: Vec<PathBuf>,
    /// `--secret`, each `NAME[=SOURCE]`.
    pub secrets: Vec<String>,
    /// `--add-host`, each `NAME:IP`.
    pub add_hosts: Vec<String>,
}

/// Where a placeholder secret's real value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFrom {
    /// A variable of corral's own environment (`env:NAME`).
    Env(String),
    /// A file's content, without a final newline (`file:/path`).
    File(PathBuf),
}

impl SecretFrom {
    /// Parses `env:NAME` or `file:PATH` (relative paths from `base`).
    pub fn parse(s: &str, base: &Path) -> Result<SecretFrom, InvalidValue> {
        if let Some(v) = s.strip_prefix("env:") {
            check_env_name(v)?;
            Ok(SecretFrom::Env(v.to_string()))
        } else if let Some(p) = s.strip_prefix("file:") {
            non_empty("secret file", p)?;
            Ok(SecretFrom::File(resolve_path(base, Path::new(p))))
        } else {
            Err(InvalidValue(format!(
                "secret source `{s}` is neither `env:VARIABLE` nor `file:PATH` (a value is never written in a command line or a config file)"
            )))
        }
    }

    /// Reads the value.
    pub fn read(&self) -> Result<String, String> {
        let v = match self {
            SecretFrom::Env(n) => std::env::var(n).map_err(|_| format!("the variable {n} is not set"))?,
            SecretFrom::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        };
        if v.is_empty() {
            return Err("the value is empty".into());
        }
        if v.chars().any(|c| c.is_control() && c != '\t') {
            return Err("the value holds a control character (it could split a header)".into());
        }
        Ok(v)
    }
}

impl fmt::Display for SecretFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretFrom::Env(n) => write!(f, "env:{n}"),
            SecretFrom::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// One placeholder secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// Where the value comes from.
    pub from: SecretFrom,
    /// Also replace the placeholder in request bodies.
    pub bodies: bool,
}

/// The `[proxy]` table: the egress proxy's upstream trust, secrets and
/// fixed names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// Extra roots for upstream servers (`upstream_ca = [...]`).
    pub upstream_ca: Vec<Val<PathBuf>>,
    /// Placeholder secrets by variable name (`[proxy.secrets]`).
    pub secrets: BTreeMap<String, Val<SecretSpec>>,
    /// Names the session resolves to fixed addresses (`add_hosts`).
    pub add_hosts: Vec<Val<(String, std::net::IpAddr)>>,
}

/// Parses `NAME:IP` (an IPv6 address after the first colon).
pub fn parse_add_host(s: &str) -> Result<(String, std::net::IpAddr), InvalidValue> {
    let bad = || InvalidValue(format!("`{s}` is not `NAME:IP` (e.g. `api.internal:10.0.0.5`)"));
    let (name, ip) = s.split_once(':').ok_or_else(bad)?;
    let ip: std::net::IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| bad())?;
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !ok {
        return Err(InvalidValue(format!("`{name}` is not a host name")));
    }
    Ok((name.to_ascii_lowercase(), ip))
}

/// Parses `--secret NAME[=SOURCE]` (source `env:NAME` by default).
pub fn parse_secret_flag(s: &str, base: &Path) -> Result<(String, SecretSpec), InvalidValue> {
    let (name, from) = match s.split_once('=') {
        Some((n, f)) => (n, SecretFrom::parse(f, base)?),
        None => (s, SecretFrom::Env(s.to_string())),
    };
    check_env_name(name)?;
    Ok((name.to_string(), SecretSpec { from, bodies: false }))
}

/// The `[audit]` table: where events are stored, and what is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// The store; `None`: `$XDG_STATE_HOME/corral/audit.db`.
    pub store: Option<Val<PathBuf>>,
    /// Events older than this are deleted (`retain = "30d"`); `None`: kept.
    pub retain: Option<Val<std::time::Duration>>,
    /// Past this size the oldest events are deleted (`max_size = "2GiB"`).
    pub max_size: Option<Val<u64>>,
    /// Events the pipeline holds in memory before it sheds load (each
    /// shed event counted): the memory bound under overload.
    pub queue: Val<usize>,
}

/// The `[mcp]` table: how much MCP traffic the MCP layer reads before it
/// refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpSettings {
    /// Largest MCP message (a stdio line, an HTTP body, an SSE event),
    /// bytes (`max_message = "4MiB"`); larger ones are refused with a
    /// JSON-RPC error.
    pub max_message: Val<u64>,
    /// Most messages in one JSON-RPC batch (`max_batch = 128`).
    pub max_batch: Val<usize>,
}

impl Default for McpSettings {
    fn default() -> Self {
        let d = corral_mcp::Limits::default();
        McpSettings {
            max_message: Val::new(d.max_message as u64, Origin::Default),
            max_batch: Val::new(d.max_batch, Origin::Default),
        }
    }
}

impl McpSettings {
    /// The limits the MCP layer applies.
    pub fn limits(&self) -> corral_mcp::Limits {
        corral_mcp::Limits {
            max_message: usize::try_from(self.max_message.value).unwrap_or(usize::MAX),
            max_batch: self.max_batch.value,
        }
    }
}

/// Bounds of `[mcp] max_message`: 1 KiB to 256 MiB.
const MCP_MESSAGE_RANGE: std::ops::RangeInclusive<u64> = (1 << 10)..=(256 << 20);

/// The default `[audit] queue`.
pub const DEFAULT_AUDIT_QUEUE: usize = 65_536;

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            store: None,
            retain: None,
            max_size: None,
            queue: Val::new(DEFAULT_AUDIT_QUEUE, Origin::Default),
        }
    }
}

/// The overrides of one agent recipe (`[recipes.<agent>]`), merged per field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipeOverride {
    /// The agent's command line.
    pub command: Option<Val<Vec<String>>>,
    /// Its configuration files and directories, relative to `$HOME`.
    pub config_paths: Option<Val<Vec<String>>>,
    /// Names of host environment variables passed into the session.
    pub env: Option<Val<Vec<String>>>,
    /// `host:port` pairs the agent needs.
    pub hosts: Option<Val<Vec<String>>>,
    /// The user's remembered answer to "mount the agent's configuration?".
    pub mount_config: Option<Val<bool>>,
}

/// The merged configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Policy file; `None`: the built-in default policy.
    pub policy: Option<Val<PathBuf>>,
    /// Container image; `None`: host-filesystem mode.
    pub image: Option<Val<String>>,
    /// Container engine; `None`: not configured.
    pub runtime: Option<Val<Engine>>,
    /// Bind mounts, global first, then project, then flags; at most one per
    /// destination.
    pub volumes: Vec<Val<Volume>>,
    /// Environment passed into the session.
    pub env: BTreeMap<String, Val<String>>,
    /// Where the web UI listens.
    pub ui_listen: Val<SocketAddr>,
    /// Whether `corral run` starts (or joins) the control UI server.
    pub ui_enabled: Val<bool>,
    /// Shadow mode.
    pub shadow: Val<bool>,
    /// The audit store and what it keeps (`[audit]`).
    pub audit: AuditSettings,
    /// The egress proxy (`[proxy]`).
    pub proxy: ProxySettings,
    /// The MCP layer (`[mcp]`).
    pub mcp: McpSettings,
    /// Recipe overrides by agent name.
    pub recipes: BTreeMap<String, RecipeOverride>,
    /// The global file, if one was read.
    pub global_file: Option<PathBuf>,
    /// The project file, if one was read.
    pub project_file: Option<PathBuf>,
}

impl Default for Settings {
    /// The built-in defaults.
    fn default() -> Self {
        Settings {
            policy: None,
            image: None,
            runtime: None,
            volumes: Vec::new(),
            env: BTreeMap::new(),
            ui_listen: Val::new(DEFAULT_UI_LISTEN, Origin::Default),
            ui_enabled: Val::new(true, Origin::Default),
            shadow: Val::new(false, Origin::Default),
            audit: AuditSettings::default(),
            proxy: ProxySettings::default(),
            mcp: McpSettings::default(),
            recipes: BTreeMap::new(),
            global_file: None,
            project_file: None,
        }
    }
}

/// Errors reading, validating or writing configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file exists but cannot be read.
    #[error("cannot read `{}`: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A syntax error, an unknown key, or a bad value in a file.
    #[error("{}:{line}:{col}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        col: usize,
        /// What is wrong, with the value.
        message: String,
    },
    /// A bad command-line value.
    #[error("flag `{flag}`: {message}")]
    Flag {
        /// The flag, with its dashes.
        flag: String,
        /// What is wrong, with the value.
        message: String,
    },
    /// An agent name that cannot be a recipe.
    #[error("{0}")]
    Agent(InvalidValue),
    /// The global file's structure prevents the edit.
    #[error("cannot update `{}`: {message}", path.display())]
    Edit {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A file or directory cannot be written.
    #[error("cannot write `{}`: {error}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// Relative flag paths need the current directory.
    #[error("cannot read the current directory: {0}")]
    CurrentDir(io::Error),
}

/// The global file: `$XDG_CONFIG_HOME/corral/config.toml`, else
/// `$HOME/.config/corral/config.toml`; `None` if neither variable is set.
pub fn global_path() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".config"))
        })?;
    Some(base.join("corral").join("config.toml"))
}

/// The project root: the nearest of `start` and its ancestors that holds a
/// `corral.toml` file.
pub fn find_project(start: &Path) -> Option<PathBuf> {
    let start = match std::env::current_dir() {
        Ok(cwd) if start.is_relative() => cwd.join(start),
        _ => start.to_path_buf(),
    };
    start
        .ancestors()
        .find(|dir| dir.join(PROJECT_FILE).is_file())
        .map(Path::to_path_buf)
}

/// Loads the global file, then the project file (`corral.toml` itself), then
/// `flags`. A missing file counts as empty; an unreadable one is an error.
pub fn load(global: Option<&Path>, project: Option<&Path>, flags: &Flags) -> Result<Settings, ConfigError> {
    let mut settings = Settings::default();
    for (path, project) in [(global, false), (project, true)] {
        let Some(path) = path else { continue };
        let path = absolute(path)?;
        let Some(text) = read_optional(&path)? else {
            continue;
        };
        let file = File {
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            path: &path,
            text: &text,
            project,
        };
        file.apply(&mut settings)?;
        if project {
            settings.project_file = Some(path);
        } else {
            settings.global_file = Some(path);
        }
    }
    apply_flags(&mut settings, flags)?;
    Ok(settings)
}

/// Records the user's answer to "mount `agent`'s configuration?" as
/// `[recipes.<agent>] mount_config` in the global file, creating the file
/// (mode 0600) and its directories (0700) if needed. The rest of the file,
/// comments included, is kept as it was.
pub fn remember_consent(global: &Path, agent: &str, mount_config: bool) -> Result<(), ConfigError> {
    check_agent_name(agent).map_err(ConfigError::Agent)?;
    // Edit a symlinked file (dotfile managers) where it lives.
    let path = match std::fs::canonicalize(global) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => absolute(global)?,
        Err(error) => {
            return Err(ConfigError::Read {
                path: global.to_path_buf(),
                error,
            })
        }
    };
    let text = read_optional(&path)?.unwrap_or_default();
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        invalid(&path, &text, e.span().unwrap_or(0..0), one_line(e.message()))
    })?;
    set_consent(&mut doc, agent, mount_config).map_err(|message| ConfigError::Edit {
        path: path.clone(),
        message,
    })?;
    write_atomic(&path, &doc.to_string())
}

impl Settings {
    /// Every effective key with its value and origin, one per line, in
    /// aligned columns (`corral config show`).
    pub fn show(&self) -> String {
        let mut rows: Vec<(String, String, String)> = Vec::new();
        let mut row = |key: &str, value: String, origin: &Origin| {
            rows.push((key.to_string(), value, origin.label()));
        };
        let unset = || "(unset)".to_string();
        match &self.policy {
            Some(v) => row("policy", v.value.display().to_string(), &v.origin),
            None => row("policy", unset(), &Origin::Default),
        }
        match &self.image {
            Some(v) => row("image", v.value.clone(), &v.origin),
            None => row("image", unset(), &Origin::Default),
        }
        match &self.runtime {
            Some(v) => row("runtime", v.value.to_string(), &v.origin),
            None => row("runtime", unset(), &Origin::Default),
        }
        if self.volumes.is_empty() {
            row("volumes", "[]".into(), &Origin::Default);
        }
        for v in &self.volumes {
            row("volumes", v.value.to_string(), &v.origin);
        }
        row("shadow", self.shadow.value.to_string(), &self.shadow.origin);
        match &self.audit.store {
            Some(v) => row("audit.store", v.value.display().to_string(), &v.origin),
            None => row("audit.store", "(default)".into(), &Origin::Default),
        }
        match &self.audit.retain {
            Some(v) => row("audit.retain", format!("{}s", v.value.as_secs()), &v.origin),
            None => row("audit.retain", "(forever)".into(), &Origin::Default),
        }
        match &self.audit.max_size {
            Some(v) => row("audit.max_size", format!("{} bytes", v.value), &v.origin),
            None => row("audit.max_size", "(unlimited)".into(), &Origin::Default),
        }
        row(
            "audit.queue",
            self.audit.queue.value.to_string(),
            &self.audit.queue.origin,
        );
        for v in &self.proxy.upstream_ca {
            row("proxy.upstream_ca", v.value.display().to_string(), &v.origin);
        }
        for (k, v) in &self.proxy.secrets {
            let body = if v.value.bodies {
                " (headers and bodies)"
            } else {
                ""
            };
            row(
                &format!("proxy.secrets.{k}"),
                format!("{}{body}", v.value.from),
                &v.origin,
            );
        }
        for v in &self.proxy.add_hosts {
            row(
                "proxy.add_hosts",
                format!("{}:{}", v.value.0, v.value.1),
                &v.origin,
            );
        }
        row(
            "mcp.max_message",
            format!("{} bytes", self.mcp.max_message.value),
            &self.mcp.max_message.origin,
        );
        row(
            "mcp.max_batch",
            self.mcp.max_batch.value.to_string(),
            &self.mcp.max_batch.origin,
        );
        if self.env.is_empty() {
            row("env", "{}".into(), &Origin::Default);
        }
        for (k, v) in &self.env {
            // Escaped, so that a newline in a value cannot fake a row.
            row(&format!("env.{k}"), v.value.escape_debug().to_string(), &v.origin);
        }
        row(
            "ui.listen",
            self.ui_listen.value.to_string(),
            &self.ui_listen.origin,
        );
        row(
            "ui.enabled",
            self.ui_enabled.value.to_string(),
            &self.ui_enabled.origin,
        );
        for (name, r) in &self.recipes {
            let key = |field: &str| format!("recipes.{name}.{field}");
            let lists = [
                ("command", &r.command),
                ("config_paths", &r.config_paths),
                ("env", &r.env),
                ("hosts", &r.hosts),
            ];
            for (field, v) in lists {
                if let Some(v) = v {
                    row(&key(field), format!("{:?}", v.value), &v.origin);
                }
            }
            if let Some(v) = &r.mount_config {
                row(&key("mount_config"), v.value.to_string(), &v.origin);
            }
        }
        let kw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let vw = rows
            .iter()
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(0)
            .min(40);
        rows.iter()
            .map(|(k, v, o)| format!("{k:<kw$}  {v:<vw$}  ({o})\n"))
            .collect()
    }
}

// ---- files ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    policy: Option<Spanned<String>>,
    image: Option<Spanned<String>>,
    runtime: Option<Spanned<String>>,
    volumes: Option<Vec<Spanned<String>>>,
    shadow: Option<Spanned<bool>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    ui: Option<RawUi>,
    audit: Option<RawAudit>,
    proxy: Option<RawProxy>,
    mcp: Option<RawMcp>,
    #[serde(default)]
    recipes: BTreeMap<Spanned<String>, RawRecipe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMcp {
    max_message: Option<Spanned<String>>,
    max_batch: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    upstream_ca: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    secrets: BTreeMap<Spanned<String>, Spanned<RawSecret>>,
    add_hosts: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSecret {
    From(String),
    Table {
        from: String,
        #[serde(default)]
        bodies: bool,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    store: Option<Spanned<String>>,
    retain: Option<Spanned<String>>,
    max_size: Option<Spanned<String>>,
    queue: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUi {
    listen: Option<Spanned<String>>,
    enabled: Option<Spanned<bool>>,
}

type RawList = Option<Spanned<Vec<Spanned<String>>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    command: RawList,
    config_paths: RawList,
    env: RawList,
    hosts: RawList,
    mount_config: Option<Spanned<bool>>,
}

/// One configuration file being applied.
struct File<'a> {
    path: &'a Path,
    text: &'a str,
    dir: PathBuf,
    project: bool,
}

impl File<'_> {
    fn origin(&self, span: Range<usize>) -> Origin {
        let (line, _) = line_col(self.text, span.start);
        let path = self.path.to_path_buf();
        if self.project {
            Origin::Project { path, line }
        } else {
            Origin::Global { path, line }
        }
    }

    fn error(&self, span: Range<usize>, message: String) -> ConfigError {
        invalid(self.path, self.text, span, message)
    }

    /// Validates `v` with `check`, returning it with its origin.
    fn val<T, U>(
        &self,
        v: Spanned<T>,
        check: impl FnOnce(&T) -> Result<U, InvalidValue>,
    ) -> Result<Val<U>, ConfigError> {
        let span = v.span();
        match check(v.get_ref()) {
            Ok(u) => Ok(Val::new(u, self.origin(span))),
            Err(e) => Err(self.error(span, e.0)),
        }
    }

    fn apply(&self, s: &mut Settings) -> Result<(), ConfigError> {
        let raw: RawFile = toml::from_str(self.text)
            .map_err(|e| self.error(e.span().unwrap_or(0..0), one_line(e.message())))?;
        if let Some(v) = raw.policy {
            s.policy = Some(self.val(v, |p| {
                non_empty("policy", p).map(|p| resolve_path(&self.dir, Path::new(p)))
            })?);
        }
        if let Some(v) = raw.image {
            s.image = Some(self.val(v, |i| non_empty("image", i).map(str::to_string))?);
        }
        if let Some(v) = raw.runtime {
            s.runtime = Some(self.val(v, |r| Engine::parse(r))?);
        }
        for v in raw.volumes.into_iter().flatten() {
            add_volume(&mut s.volumes, self.val(v, |v| Volume::parse(v, &self.dir))?);
        }
        if let Some(v) = raw.shadow {
            s.shadow = self.val(v, |b| Ok(*b))?;
        }
        for (name, v) in raw.env {
            let name = self.val(name, |n| check_env_name(n).map(|()| n.clone()))?;
            s.env.insert(name.value, self.val(v, |v| Ok(v.clone()))?);
        }
        if let Some(ui) = raw.ui {
            if let Some(v) = ui.listen {
                s.ui_listen = self.val(v, |a| parse_listen(a))?;
            }
            if let Some(v) = ui.enabled {
                s.ui_enabled = self.val(v, |b| Ok(*b))?;
            }
        }
        if let Some(a) = raw.audit {
            if let Some(v) = a.store {
                s.audit.store = Some(self.val(v, |p| {
                    non_empty("audit.store", p).map(|p| resolve_path(&self.dir, Path::new(p)))
                })?);
            }
            if let Some(v) = a.retain {
                s.audit.retain = Some(self.val(v, |d| parse_age("audit.retain", d))?);
            }
            if let Some(v) = a.max_size {
                s.audit.max_size = Some(self.val(v, |d| parse_size("audit.max_size", d))?);
            }
            if let Some(v) = a.queue {
                s.audit.queue = self.val(v, |q| {
                    usize::try_from(*q)
                        .ok()
                        .filter(|q| (1..=1 << 24).contains(q))
                        .ok_or_else(|| InvalidValue(format!("audit.queue {q} is not between 1 and 16777216")))
                })?;
            }
        }
        if let Some(p) = raw.proxy {
            for v in p.upstream_ca.into_iter().flatten() {
                let v = self.val(v, |p| {
                    non_empty("proxy.upstream_ca", p).map(|p| resolve_path(&self.dir, Path::new(p)))
                })?;
                if !s.proxy.upstream_ca.iter().any(|x| x.value == v.value) {
                    s.proxy.upstream_ca.push(v);
                }
            }
            for (name, v) in p.secrets {
                let name = self.val(name, |n| check_env_name(n).map(|()| n.clone()))?;
                let spec = self.val(v, |r| {
                    let (from, bodies) = match r {
                        RawSecret::From(f) => (f.as_str(), false),
                        RawSecret::Table { from, bodies } => (from.as_str(), *bodies),
                    };
                    Ok(SecretSpec {
                        from: SecretFrom::parse(from, &self.dir)?,
                        bodies,
                    })
                })?;
                s.proxy.secrets.insert(name.value, spec);
            }
            for v in p.add_hosts.into_iter().flatten() {
                let v = self.val(v, |h| parse_add_host(h))?;
                s.proxy.add_hosts.retain(|x| x.value.0 != v.value.0);
                s.proxy.add_hosts.push(v);
            }
        }
        if let Some(m) = raw.mcp {
            if let Some(v) = m.max_message {
                s.mcp.max_message = self.val(v, |d| {
                    parse_size("mcp.max_message", d).and_then(|n| {
                        if MCP_MESSAGE_RANGE.contains(&n) {
                            Ok(n)
                        } else {
                            Err(InvalidValue(format!(
                                "mcp.max_message `{d}` is not between 1KiB and 256MiB"
                            )))
                        }
                    })
                })?;
            }
            if let Some(v) = m.max_batch {
                s.mcp.max_batch = self.val(v, |n| {
                    usize::try_from(*n)
                        .ok()
                        .filter(|n| (1..=10_000).contains(n))
                        .ok_or_else(|| InvalidValue(format!("mcp.max_batch {n} is not between 1 and 10000")))
                })?;
            }
        }
        for (name, r) in raw.recipes {
            self.apply_recipe(s, name, r)?;
        }
        Ok(())
    }

    fn apply_recipe(&self, s: &mut Settings, name: Spanned<String>, r: RawRecipe) -> Result<(), ConfigError> {
        let span = name.span();
        let name = name.into_inner();
        check_agent_name(&name).map_err(|e| self.error(span.clone(), e.0))?;
        let list = |v: RawList, field: &str, check: fn(&str) -> Result<(), InvalidValue>| {
            let Some(v) = v else { return Ok(None) };
            let whole = v.span();
            let mut items = Vec::new();
            for item in v.into_inner() {
                let at = item.span();
                let item = item.into_inner();
                check(&item).map_err(|e| self.error(at, format!("recipes.{name}.{field}: {e}")))?;
                items.push(item);
            }
            if field == "command" && items.is_empty() {
                return Err(self.error(whole, format!("recipes.{name}.command is empty")));
            }
            Ok(Some(Val::new(items, self.origin(whole))))
        };
        let command = list(r.command, "command", check_command_word)?;
        let config_paths = list(r.config_paths, "config_paths", check_config_path)?;
        let env = list(r.env, "env", check_env_name)?;
        let hosts = list(r.hosts, "hosts", check_host)?;
        let mount_config = r.mount_config.map(|v| {
            let span = v.span();
            Val::new(v.into_inner(), self.origin(span))
        });
        let o = s.recipes.entry(name.clone()).or_default();
        o.command = command.or(o.command.take());
        o.config_paths = config_paths.or(o.config_paths.take());
        o.env = env.or(o.env.take());
        o.hosts = hosts.or(o.hosts.take());
        o.mount_config = mount_config.or(o.mount_config.take());
        if o.command.is_none() && recipes::builtin(&name).is_none() {
            return Err(self.error(
                span,
                format!(
                    "recipes.{name}: `{name}` is not a built-in agent ({}), so it needs a `command`",
                    recipes::builtin_names().join(", ")
                ),
            ));
        }
        Ok(())
    }
}

fn apply_flags(s: &mut Settings, f: &Flags) -> Result<(), ConfigError> {
    let flag = |name: &str| Origin::Flag(name.to_string());
    let bad = |name: &str, e: InvalidValue| ConfigError::Flag {
        flag: name.to_string(),
        message: e.0,
    };
    let cwd = if f.policy.is_some() || !f.volumes.is_empty() {
        std::env::current_dir().map_err(ConfigError::CurrentDir)?
    } else {
        PathBuf::new()
    };
    if let Some(p) = &f.policy {
        non_empty("policy", &p.to_string_lossy()).map_err(|e| bad("--policy", e))?;
        s.policy = Some(Val::new(resolve_path(&cwd, p), flag("--policy")));
    }
    if let Some(i) = &f.image {
        non_empty("image", i).map_err(|e| bad("--image", e))?;
        s.image = Some(Val::new(i.clone(), flag("--image")));
    }
    if let Some(r) = &f.runtime {
        let e = Engine::parse(r).map_err(|e| bad("--runtime", e))?;
        s.runtime = Some(Val::new(e, flag("--runtime")));
    }
    for v in &f.volumes {
        let v = Volume::parse(v, &cwd).map_err(|e| bad("--volume", e))?;
        add_volume(&mut s.volumes, Val::new(v, flag("--volume")));
    }
    for kv in &f.env {
        let Some((k, v)) = kv.split_once('=') else {
            let e = InvalidValue(format!("`{kv}` is not `NAME=value`"));
            return Err(bad("--env", e));
        };
        check_env_name(k).map_err(|e| bad("--env", e))?;
        s.env
            .insert(k.to_string(), Val::new(v.to_string(), flag("--env")));
    }
    if let Some(a) = &f.ui_listen {
        s.ui_listen = Val::new(
            parse_listen(a).map_err(|e| bad("--ui-listen", e))?,
            flag("--ui-listen"),
        );
    }
    if let Some(b) = f.ui_enabled {
        s.ui_enabled = Val::new(b, flag("--no-ui"));
    }
    if let Some(b) = f.shadow {
        s.shadow = Val::new(b, flag("--shadow"));
    }
    if let Some(p) = &f.store {
        let cwd = std::env::current_dir().map_err(ConfigError::CurrentDir)?;
        s.audit.store = Some(Val::new(resolve_path(&cwd, p), flag("--store")));
    }
    if !f.upstream_ca.is_empty() || !f.secrets.is_empty() {
        let cwd = std::env::current_dir().map_err(ConfigError::CurrentDir)?;
        for p in &f.upstream_ca {
            let p = resolve_path(&cwd, p);
            if !s.proxy.upstream_ca.iter().any(|x| x.value == p) {
                s.proxy.upstream_ca.push(Val::new(p, flag("--upstream-ca")));
            }
        }
        for v in &f.secrets {
            let (name, spec) = parse_secret_flag(v, &cwd).map_err(|e| bad("--secret", e))?;
            // A flag names the source; `bodies` stays as configured.
            let bodies = s
                .proxy
                .secrets
                .get(&name)
                .map(|x| x.value.bodies)
                .unwrap_or(false);
            s.proxy
                .secrets
                .insert(name, Val::new(SecretSpec { bodies, ..spec }, flag("--secret")));
        }
    }
    for v in &f.add_hosts {
        let v = parse_add_host(v).map_err(|e| bad("--add-host", e))?;
        s.proxy.add_hosts.retain(|x| x.value.0 != v.0);
        s.proxy.add_hosts.push(Val::new(v, flag("--add-host")));
    }
    Ok(())
}

/// `30s`, `10m`, `12h`, `30d`, `2w`.
pub fn parse_age(key: &str, s: &str) -> Result<std::time::Duration, InvalidValue> {
    let bad = || {
        InvalidValue(format!(
            "{key} `{s}` is not a duration such as `30d`, `12h` or `90m`"
        ))
    };
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .map(std::time::Duration::from_secs)
        .ok_or_else(bad)
}

/// `500MB`, `2GiB`, `1048576` (bytes; KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024).
pub fn parse_size(key: &str, s: &str) -> Result<u64, InvalidValue> {
    let bad = || InvalidValue(format!("{key} `{s}` is not a size such as `500MB` or `2GiB`"));
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|&v| v > 0).ok_or_else(bad)
}

/// Adds `v`, replacing in place an earlier volume with the same destination.
fn add_volume(volumes: &mut Vec<Val<Volume>>, v: Val<Volume>) {
    match volumes.iter_mut().find(|old| old.value.dst == v.value.dst) {
        Some(old) => *old = v,
        None => volumes.push(v),
    }
}

// ---- values ----

fn non_empty<'a>(key: &str, v: &'a str) -> Result<&'a str, InvalidValue> {
    if v.trim().is_empty() {
        Err(InvalidValue(format!("{key} `{v}` is empty")))
    } else {
        Ok(v)
    }
}

fn parse_listen(a: &str) -> Result<SocketAddr, InvalidValue> {
    a.parse().map_err(|_| {
        InvalidValue(format!(
            "ui.listen `{a}` is not an address and port such as `127.0.0.1:18080`"
        ))
    })
}

fn check_env_name(n: &str) -> Result<(), InvalidValue> {
    let mut chars = n.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(InvalidValue(format!(
            "environment variable name `{n}` is invalid: expected [A-Za-z_][A-Za-z0-9_]*"
        )))
    }
}

/// Agent names: letters, digits, `-`, `_` and `.`, starting with a letter or digit.
fn check_agent_name(n: &str) -> Result<(), InvalidValue> {
    let first_ok = n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        Ok(())
    } else {
        Err(InvalidValue(format!(
            "agent name `{n}` is invalid: expected letters, digits, `-`, `_` or `.`"
        )))
    }
}

fn check_command_word(w: &str) -> Result<(), InvalidValue> {
    if w.is_empty() {
        Err(InvalidValue("command word `` is empty".into()))
    } else {
        Ok(())
    }
}

fn check_config_path(p: &str) -> Result<(), InvalidValue> {
    let path = Path::new(p);
    if p.is_empty() || path.is_absolute() || p.starts_with('~') {
        return Err(InvalidValue(format!(
            "config path `{p}` must be relative to $HOME (like `.claude`)"
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(InvalidValue(format!("config path `{p}` must not contain `..`")));
    }
    Ok(())
}

fn check_host(h: &str) -> Result<(), InvalidValue> {
    if h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/') {
        Err(InvalidValue(format!(
            "host `{h}` is invalid: expected `name[:port]`"
        )))
    } else {
        Ok(())
    }
}

// ---- paths and text ----

/// `p` made absolute against `base`, with `~/` meaning `$HOME`, and `.`
/// components dropped.
fn resolve_path(base: &Path, p: &Path) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let joined = match (p.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => base.join(p),
    };
    normalize(&joined)
}

fn normalize(p: &Path) -> PathBuf {
    p.components().collect()
}

fn absolute(p: &Path) -> Result<PathBuf, ConfigError> {
    if p.is_absolute() {
        return Ok(normalize(p));
    }
    let cwd = std::env::current_dir().map_err(ConfigError::CurrentDir)?;
    Ok(normalize(&cwd.join(p)))
}

/// The file's text, or `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            error,
        }),
    }
}

fn invalid(path: &Path, text: &str, span: Range<usize>, message: String) -> ConfigError {
    let (line, col) = line_col(text, span.start);
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        col,
        message,
    }
}

/// A parser message on one line: `invalid array: expected `]``.
fn one_line(message: &str) -> String {
    message.trim_end().replace('\n', ": ")
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = text.get(..at).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (line, col)
}

// ---- consent ----

fn set_consent(doc: &mut toml_edit::DocumentMut, agent: &str, b: bool) -> Result<(), String> {
    use toml_edit::{InlineTable, Item, Table, Value};
    let recipes = doc.entry("recipes").or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        Item::Table(t)
    });
    let not_table = |key: String| format!("`{key}` is not a table");
    match recipes {
        Item::Table(t) => match t.get_mut(agent) {
            None => {
                let mut new = Table::new();
                new.insert("mount_config", toml_edit::value(b));
                t.insert(agent, Item::Table(new));
            }
            Some(Item::Table(a)) => set_bool(a.entry("mount_config"), b),
            Some(Item::Value(Value::InlineTable(a))) => set_inline_bool(a, b),
            Some(_) => return Err(not_table(format!("recipes.{agent}"))),
        },
        Item::Value(Value::InlineTable(t)) => match t.get_mut(agent) {
            None => {
                let mut new = InlineTable::new();
                new.insert("mount_config", b.into());
                t.insert(agent, Value::InlineTable(new));
            }
            Some(Value::InlineTable(a)) => set_inline_bool(a, b),
            Some(_) => return Err(not_table(format!("recipes.{agent}"))),
        },
        _ => return Err(not_table("recipes".into())),
    }
    Ok(())
}

/// Sets the entry to `b`, keeping an existing value's comments and spacing.
fn set_bool(entry: toml_edit::Entry<'_>, b: bool) {
    match entry {
        toml_edit::Entry::Occupied(mut o) => match o.get_mut().as_value_mut() {
            Some(v) => replace_keeping_decor(v, b),
            None => {
                o.insert(toml_edit::value(b));
            }
        },
        toml_edit::Entry::Vacant(v) => {
            v.insert(toml_edit::value(b));
        }
    }
}

fn set_inline_bool(t: &mut toml_edit::InlineTable, b: bool) {
    match t.get_mut("mount_config") {
        Some(v) => replace_keeping_decor(v, b),
        None => {
            t.insert("mount_config", b.into());
        }
    }
}

fn replace_keeping_decor(v: &mut toml_edit::Value, b: bool) {
    let decor = v.decor().clone();
    *v = b.into();
    *v.decor_mut() = decor;
}

/// Writes `text` to `path` through a temporary file and a rename, keeping
/// the existing file's permissions (0600 for a new file).
fn write_atomic(path: &Path, text: &str) -> Result<(), ConfigError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |error| ConfigError::Write { path, error }
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err(dir))?;
    let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(path)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let t = "a = 1\nbé = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, t.find('=').unwrap_or(0)), (1, 3));
        assert_eq!(line_col(t, 10), (2, 4)); // after "bé " (é is 2 bytes)
        assert_eq!(line_col(t, 8), (2, 2)); // inside é: rounds down
        assert_eq!(line_col(t, 999), (3, 1));
    }

    #[test]
    fn volume_forms() {
        let base = Path::new("/p");
        let v = Volume::parse("./c:/cache", base);
        assert_eq!(
            v,
            Ok(Volume {
                src: "/p/c".into(),
                dst: "/cache".into(),
                read_only: false
            })
        );
        assert_eq!(
            Volume::parse("/d:/d/:ro", base).map(|v| (v.read_only, v.dst)),
            Ok((true, "/d".into()))
        );
        assert!(Volume::parse("/d:/d:rx", base).is_err());
        assert!(Volume::parse("/d", base).is_err());
        assert!(Volume::parse(":/d", base).is_err());
        assert!(Volume::parse("/a:b", base).is_err());
        assert!(Volume::parse("/a:/b:ro:x", base).is_err());
    }

    #[test]
    fn names() {
        assert!(check_env_name("_A1").is_ok());
        assert!(check_env_name("1A").is_err());
        assert!(check_env_name("A-B").is_err());
        assert!(check_env_name("").is_err());
        assert!(check_agent_name("my-agent.2").is_ok());
        assert!(check_agent_name("-x").is_err());
        assert!(check_agent_name("a b").is_err());
    }
}
