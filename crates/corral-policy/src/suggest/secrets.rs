//! The secrets `suggest` never permits on its own: the `File` and `Dir`
//! literals of the default policy's `forbid-secrets` rule, read from the
//! template itself (one list, kept in `policies/default.cedar`).

use super::SuggestError;
use crate::analyze::{is_canonical_dir, is_canonical_file, Facts};
use crate::default_policy::TEMPLATE;
use crate::source::split_statements;
use cedar_policy::Policy;

/// The id of the template's secrets rule.
pub const RULE: &str = "forbid-secrets";

/// The placeholder the template writes for the home directory.
const HOME: &str = "${HOME}";

/// A secret of the default policy, for one home directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Secret {
    /// A file: `File::"/etc/shadow"`.
    File(String),
    /// A directory and everything below it: `Dir::"/root/.ssh/"` (with the
    /// trailing slash).
    Dir(String),
}

impl Secret {
    /// Whether the object at `path` (canonical, no trailing slash; a file or
    /// a directory) is this secret or lies in it.
    pub fn covers(&self, path: &str) -> bool {
        match self {
            Secret::File(f) => f == path,
            Secret::Dir(d) => path.starts_with(d.as_str()) || d.strip_suffix('/') == Some(path),
        }
    }

    /// Whether a rule `resource in Dir::"<dir>"` (`dir` with its trailing
    /// slash) would reach this secret: the secret lies in `dir`, or `dir`
    /// lies in the secret.
    pub fn within(&self, dir: &str) -> bool {
        let me = match self {
            Secret::File(f) | Secret::Dir(f) => f.as_str(),
        };
        me.starts_with(dir) || self.covers(dir.trim_end_matches('/'))
    }

    /// The Cedar literal, as the template writes it.
    pub fn literal(&self) -> String {
        match self {
            Secret::File(p) => format!("File::\"{p}\""),
            Secret::Dir(p) => format!("Dir::\"{p}\""),
        }
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.literal())
    }
}

/// The `File`/`Dir` literals of the policy annotated `@id("forbid-secrets")`
/// in `text`, as `(type, id)`; `None` when there is no such policy.
fn rule_literals(text: &str) -> Option<Vec<(String, String)>> {
    split_statements(text).into_iter().find_map(|st| {
        let stmt = text.get(st.start..st.end)?;
        let policy = Policy::parse(None, stmt).ok()?;
        (policy.annotation("id") == Some(RULE)).then(|| {
            Facts::of(&policy)
                .entities
                .into_iter()
                .filter(|(t, _)| t == "File" || t == "Dir")
                .collect()
        })
    })
}

/// The template's secrets with `${HOME}` resolved to `home` (absolute and
/// canonical, not `/`).
pub fn template_secrets(home: &str) -> Result<Vec<Secret>, SuggestError> {
    let bad = || SuggestError::BadHome(home.to_string());
    if home.contains('"') || home.contains('\\') || home == "/" || !is_canonical_file(home) {
        return Err(bad());
    }
    let literals = rule_literals(TEMPLATE)
        .ok_or_else(|| SuggestError::Template(format!("the default policy has no `{RULE}` rule")))?;
    let mut out = Vec::new();
    for (ty, id) in literals {
        let id = id.replace(HOME, home);
        let secret = match ty.as_str() {
            "Dir" if is_canonical_dir(&id) => Secret::Dir(id),
            "File" if is_canonical_file(&id) => Secret::File(id),
            _ => {
                return Err(SuggestError::Template(format!(
                    "`{ty}::\"{id}\"` is not a canonical path"
                )))
            }
        };
        out.push(secret);
    }
    if out.is_empty() {
        return Err(SuggestError::Template(format!(
            "`{RULE}` names no file or directory"
        )));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The home directory a rendering of the default policy was made for: the
/// one value of `${HOME}` under which every home-relative literal of the
/// template's `forbid-secrets` appears in `text`'s `forbid-secrets`. `None`
/// when `text` has no such rule or it was edited so that no single home fits.
pub fn home_from_policy(text: &str) -> Option<String> {
    let rendered = rule_literals(text)?;
    let template: Vec<(String, String)> = rule_literals(TEMPLATE)?
        .into_iter()
        .filter(|(_, id)| id.starts_with(HOME))
        .collect();
    let (first_ty, first_id) = template.first()?;
    let suffix = first_id.strip_prefix(HOME)?;
    rendered
        .iter()
        .filter(|(ty, _)| ty == first_ty)
        .filter_map(|(_, id)| id.strip_suffix(suffix))
        .filter(|home| !home.is_empty() && template_secrets(home).is_ok())
        .find(|home| {
            template.iter().all(|(ty, id)| {
                let want = (ty.clone(), id.replace(HOME, home));
                rendered.contains(&want)
            })
        })
        .map(str::to_string)
}
