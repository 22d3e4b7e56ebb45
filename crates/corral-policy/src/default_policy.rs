//! The built-in default policy (`corral policy default`).

/// The template; `${WORKSPACE}` and `${HOME}` are substituted.
pub const TEMPLATE: &str = include_str!("../policies/default.cedar");

/// Why the default policy cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DefaultPolicyError {
    /// Paths must be absolute, canonical, and free of `"` and `\`.
    #[error("{what} `{path}` must be an absolute, canonical path without `\"` or `\\`")]
    BadPath {
        /// `workspace` or `home`.
        what: &'static str,
        /// The path given.
        path: String,
    },
}

/// Renders the default policy for a workspace and home directory.
pub fn render(workspace: &str, home: &str) -> Result<String, DefaultPolicyError> {
    let clean = |what: &'static str, p: &str| -> Result<String, DefaultPolicyError> {
        let bad = || DefaultPolicyError::BadPath {
            what,
            path: p.to_string(),
        };
        if p.contains('"') || p.contains('\\') {
            return Err(bad());
        }
        let c = crate::request::check_path(p).map_err(|_| bad())?;
        if c == "/" {
            // `Dir::"//"` would be malformed; the root needs no prefix.
            return Err(bad());
        }
        Ok(c)
    };
    let ws = clean("workspace", workspace)?;
    let home = clean("home", home)?;
    Ok(TEMPLATE.replace("${WORKSPACE}", &ws).replace("${HOME}", &home))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load, Evaluator, Request, Source};

    fn secret(host: &str, port: u16, name: &str) -> Request {
        Request::Secret {
            principal: "claude".into(),
            host: host.into(),
            port,
            secret: name.into(),
        }
    }

    #[test]
    fn agent_keys_go_only_to_their_provider() {
        let doc = load(vec![Source::new(
            "<default policy>",
            render("/work/proj", "/home/dev").unwrap(),
        )])
        .unwrap();
        let ev = Evaluator::new(&doc);
        let rule = doc
            .policies
            .iter()
            .position(|p| p.id == "secret-agent-keys")
            .expect("the default policy has secret-agent-keys");
        let allowed = |host: &str, port: u16, name: &str| {
            let d = ev.decide(&secret(host, port, name)).unwrap();
            if d.allowed {
                assert_eq!(d.determining, [rule]);
            }
            d.allowed
        };
        assert!(allowed("api.anthropic.com", 443, "ANTHROPIC_API_KEY"));
        assert!(!allowed("api.openai.com", 443, "ANTHROPIC_API_KEY"));
        for (name, hosts) in [
            ("ANTHROPIC_API_KEY", &["api.anthropic.com"][..]),
            ("ANTHROPIC_AUTH_TOKEN", &["api.anthropic.com"]),
            ("OPENAI_API_KEY", &["api.openai.com"]),
            ("GEMINI_API_KEY", &["generativelanguage.googleapis.com"]),
            ("GOOGLE_API_KEY", &["generativelanguage.googleapis.com"]),
            (
                "DASHSCOPE_API_KEY",
                &["dashscope.aliyuncs.com", "dashscope-intl.aliyuncs.com"],
            ),
            ("OPENROUTER_API_KEY", &["openrouter.ai"]),
        ] {
            for h in hosts {
                assert!(allowed(h, 443, name), "{name} to {h}");
                // Only on 443.
                assert!(!allowed(h, 80, name), "{name} to {h}:80");
            }
            // Never to another provider, a look-alike or a subdomain.
            for other in [
                "api.anthropic.com",
                "api.openai.com",
                "generativelanguage.googleapis.com",
                "openrouter.ai",
                "evil.example",
                "api.anthropic.com.evil.example",
            ] {
                if !hosts.contains(&other) {
                    assert!(!allowed(other, 443, name), "{name} to {other}");
                }
            }
        }
        // A secret the default policy does not know goes nowhere.
        assert!(!allowed("api.anthropic.com", 443, "GITHUB_TOKEN"));
    }
}
