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
