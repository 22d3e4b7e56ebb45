//! Agent recipes: what each known agent needs to run in a session — its
//! command, the configuration it keeps under `$HOME`, the API-key variables
//! it reads, and the hosts it talks to.
//!
//! Built-in recipes are data; [`resolve`] merges them with the user's
//! `[recipes.<agent>]` overrides from [`Settings`]. Nothing here mounts,
//! forwards or allows anything: the session decides what to do with a
//! recipe, and the policy decides what is allowed.

use crate::config::{RecipeOverride, Settings};

/// What an agent needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The agent's name (the key in `[recipes.<name>]`).
    pub name: String,
    /// Command line that starts the agent.
    pub command: Vec<String>,
    /// Configuration files and directories, relative to `$HOME`, that the
    /// agent needs (credentials, settings, history).
    pub config_paths: Vec<String>,
    /// Names of host environment variables forwarded into the session.
    pub env: Vec<String>,
    /// `host:port` pairs the agent connects to.
    pub hosts: Vec<String>,
    /// The user's remembered consent to mount `config_paths`; `None`: not
    /// asked yet.
    pub mount_config: Option<bool>,
}

struct Builtin {
    name: &'static str,
    command: &'static [&'static str],
    config_paths: &'static [&'static str],
    env: &'static [&'static str],
    hosts: &'static [&'static str],
}

const NAMES: &[&str] = &["claude", "codex", "gemini", "qwen", "opencode"];

const BUILTINS: &[Builtin] = &[
    // Claude Code (@anthropic-ai/claude-code).
    Builtin {
        name: "claude",
        command: &["claude"],
        config_paths: &[".claude", ".claude.json"],
        env: &[
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "ANTHROPIC_BASE_URL",
            "CLAUDE_CODE_USE_BEDROCK",
            "CLAUDE_CODE_USE_VERTEX",
        ],
        hosts: &[
            "api.anthropic.com:443",
            "statsig.anthropic.com:443",
            "console.anthropic.com:443",
            "claude.ai:443",
            "sentry.io:443",
        ],
    },
    // OpenAI Codex CLI (@openai/codex).
    Builtin {
        name: "codex",
        command: &["codex"],
        config_paths: &[".codex"],
        env: &["OPENAI_API_KEY", "OPENAI_BASE_URL"],
        hosts: &["api.openai.com:443", "chatgpt.com:443", "auth.openai.com:443"],
    },
    // Gemini CLI (@google/gemini-cli).
    Builtin {
        name: "gemini",
        command: &["gemini"],
        config_paths: &[".gemini"],
        env: &[
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "GOOGLE_CLOUD_PROJECT",
            "GOOGLE_GENAI_USE_VERTEXAI",
        ],
        hosts: &[
            "generativelanguage.googleapis.com:443",
            "oauth2.googleapis.com:443",
            "cloudcode-pa.googleapis.com:443",
            "play.googleapis.com:443",
        ],
    },
    // Qwen Code (@qwen-code/qwen-code).
    Builtin {
        name: "qwen",
        command: &["qwen"],
        config_paths: &[".qwen"],
        env: &[
            "DASHSCOPE_API_KEY",
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "OPENAI_MODEL",
        ],
        hosts: &[
            "dashscope.aliyuncs.com:443",
            "dashscope-intl.aliyuncs.com:443",
            "chat.qwen.ai:443",
        ],
    },
    // opencode (opencode-ai): XDG config, data (auth.json) and state.
    Builtin {
        name: "opencode",
        command: &["opencode"],
        config_paths: &[
            ".config/opencode",
            ".local/share/opencode",
            ".local/state/opencode",
        ],
        env: &[
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "OPENROUTER_API_KEY",
            "GEMINI_API_KEY",
        ],
        hosts: &[
            "opencode.ai:443",
            "api.anthropic.com:443",
            "api.openai.com:443",
            "openrouter.ai:443",
            "models.dev:443",
        ],
    },
];

/// Variables recipes name that hold credentials: a session gets a
/// placeholder for each (the egress proxy holds the value and sends it only
/// where the policy's `SecretUse` permits), never the value itself.
pub const SECRET_VARS: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "DASHSCOPE_API_KEY",
    "OPENROUTER_API_KEY",
];

/// Whether a recipe variable is a credential (see [`SECRET_VARS`]).
pub fn is_secret_var(name: &str) -> bool {
    SECRET_VARS.contains(&name)
}

/// Names of the built-in recipes.
pub fn builtin_names() -> &'static [&'static str] {
    NAMES
}

/// The built-in recipe for `name`, without the user's overrides.
pub fn builtin(name: &str) -> Option<Recipe> {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    BUILTINS.iter().find(|b| b.name == name).map(|b| Recipe {
        name: b.name.to_string(),
        command: owned(b.command),
        config_paths: owned(b.config_paths),
        env: owned(b.env),
        hosts: owned(b.hosts),
        mount_config: None,
    })
}

/// The recipe for `name`: the built-in one with `[recipes.<name>]` applied
/// field by field, or, for an agent known only from the configuration, the
/// configured fields (its `command` is required). `None`: not an agent.
pub fn resolve(name: &str, settings: &Settings) -> Option<Recipe> {
    let o = settings.recipes.get(name);
    let mut recipe = match (builtin(name), o) {
        (Some(b), _) => b,
        (None, Some(o)) => Recipe {
            name: name.to_string(),
            command: o.command.as_ref()?.value.clone(),
            config_paths: Vec::new(),
            env: Vec::new(),
            hosts: Vec::new(),
            mount_config: None,
        },
        (None, None) => return None,
    };
    if let Some(o) = o {
        apply(&mut recipe, o);
    }
    Some(recipe)
}

fn apply(r: &mut Recipe, o: &RecipeOverride) {
    let fields = [
        (&mut r.command, &o.command),
        (&mut r.config_paths, &o.config_paths),
        (&mut r.env, &o.env),
        (&mut r.hosts, &o.hosts),
    ];
    for (field, over) in fields {
        if let Some(v) = over {
            field.clone_from(&v.value);
        }
    }
    if let Some(v) = &o.mount_config {
        r.mount_config = Some(v.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_one_builtin() {
        assert_eq!(NAMES.len(), BUILTINS.len());
        for name in NAMES {
            let r = builtin(name);
            assert!(r.as_ref().is_some_and(|r| !r.command.is_empty()), "{name}");
            assert_eq!(r.and_then(|r| r.mount_config), None, "{name}");
        }
        assert_eq!(builtin("nope"), None);
    }

    #[test]
    fn builtin_data_is_well_formed() {
        for b in BUILTINS {
            for p in b.config_paths {
                assert!(!p.starts_with('/') && !p.contains(".."), "{}: {p}", b.name);
            }
            for h in b.hosts {
                let port = h.rsplit_once(':').map(|(_, p)| p.parse::<u16>().is_ok());
                assert_eq!(port, Some(true), "{}: {h}", b.name);
            }
        }
    }
}
