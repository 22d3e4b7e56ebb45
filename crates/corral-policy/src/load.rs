//! Loading policy files: parse, give every policy an id and a source
//! position, validate against the schema in strict mode, lint.

use crate::analyze::Facts;
use crate::diag::{help_of, primary_span, Diagnostic};
use crate::lint;
use crate::schema::schema;
use crate::source::{split_statements, Source};
use cedar_policy::{Effect, Policy, PolicyId, PolicySet, ValidationMode, Validator};
use std::collections::HashMap;
use std::sync::Arc;

/// Where a policy came from and what it is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyInfo {
    /// Policy id: the `@id("...")` annotation, else `policy<N>` in load order.
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: &'static str,
    /// Source file name.
    pub file: String,
    /// 1-based line of the statement's first token.
    pub line: usize,
    /// 1-based column of the statement's first token.
    pub col: usize,
    /// The statement's text.
    #[serde(skip)]
    pub text: String,
    #[serde(skip)]
    pub(crate) source: usize,
    #[serde(skip)]
    pub(crate) start: usize,
}

impl PolicyInfo {
    /// True for `forbid`.
    pub fn is_forbid(&self) -> bool {
        self.effect == "forbid"
    }
    /// `file:line`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// A validated policy set with source positions.
#[derive(Debug, Clone)]
pub struct PolicyDoc {
    /// The Cedar policy set (ids as in [`PolicyInfo::id`]).
    pub set: PolicySet,
    /// Every policy, in load order.
    pub policies: Vec<PolicyInfo>,
    /// Warnings found while loading (errors make [`load`] fail).
    pub warnings: Vec<Diagnostic>,
    pub(crate) sources: Vec<Arc<Source>>,
    /// What each policy mentions, read once at load (indexed like `policies`).
    pub(crate) facts: Vec<Facts>,
    by_id: HashMap<String, usize>,
}

impl PolicyDoc {
    /// Looks a policy up by id.
    pub fn info(&self, id: &str) -> Option<&PolicyInfo> {
        self.by_id.get(id).and_then(|i| self.policies.get(*i))
    }

    /// Index of a policy by id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// What the policy at an index mentions.
    pub fn facts(&self, idx: usize) -> Option<&Facts> {
        self.facts.get(idx)
    }

    /// The policies at these indices (a decision's determining ones), by
    /// id and `file:line`, for events and error messages.
    pub fn hits(&self, idx: &[usize]) -> Vec<PolicyHit> {
        idx.iter()
            .filter_map(|i| self.policies.get(*i))
            .map(|p| PolicyHit {
                id: p.id.clone(),
                at: p.location(),
            })
            .collect()
    }

    /// The Cedar policy at an index.
    pub fn policy(&self, idx: usize) -> Option<&Policy> {
        let info = self.policies.get(idx)?;
        self.set.policy(&PolicyId::new(&info.id))
    }

    pub(crate) fn source_of(&self, info: &PolicyInfo) -> Option<&Arc<Source>> {
        self.sources.get(info.source)
    }
}

/// A determining policy as events and error bodies name it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyHit {
    /// Policy id.
    pub id: String,
    /// `file:line`.
    pub at: String,
}

/// Loads, validates (strict) and lints a set of policy sources.
///
/// On failure returns every diagnostic found (errors and warnings).
pub fn load(sources: Vec<Source>) -> Result<PolicyDoc, Vec<Diagnostic>> {
    let sources: Vec<Arc<Source>> = sources.into_iter().map(Arc::new).collect();
    let mut diags = Vec::new();
    let mut policies = Vec::new();
    let mut infos: Vec<PolicyInfo> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();

    for (si, src) in sources.iter().enumerate() {
        for st in split_statements(&src.text) {
            let text = &src.text[st.start..st.end];
            let provisional = format!("policy{}", infos.len());
            let parsed = match Policy::parse(Some(PolicyId::new(&provisional)), text) {
                Ok(p) => p,
                // Each statement is parsed once, on its own; spans are
                // relative to it.
                Err(errs) => {
                    for e in errs.iter() {
                        let (off, len) = primary_span(e).unwrap_or((0, 0));
                        let mut d = Diagnostic::error("parse", lower_first(&e.to_string())).at(
                            src,
                            st.start + off,
                            len,
                        );
                        if let Some(h) = help_of(e) {
                            d = d.help(h);
                        }
                        diags.push(d);
                    }
                    continue;
                }
            };
            let id = parsed.annotation("id").map(str::to_string).unwrap_or(provisional);
            let (line, col) = src.line_col(st.start + crate::source::effect_offset(text));
            if let Some(prev) = by_id.get(&id).and_then(|i| infos.get(*i)) {
                diags.push(
                    Diagnostic::error("duplicate-id", format!("policy id `{id}` is used twice"))
                        .at(src, st.start, 1)
                        .help(format!("first used at {}:{}", prev.file, prev.line)),
                );
                continue;
            }
            let policy = parsed.new_id(PolicyId::new(&id));
            by_id.insert(id.clone(), infos.len());
            infos.push(PolicyInfo {
                id,
                effect: match policy.effect() {
                    Effect::Permit => "permit",
                    Effect::Forbid => "forbid",
                },
                file: src.name.clone(),
                line,
                col,
                text: text.to_string(),
                source: si,
                start: st.start,
            });
            policies.push(policy);
        }
    }

    let mut set = PolicySet::new();
    for p in policies {
        if let Err(e) = set.add(p) {
            diags.push(Diagnostic::error("policy-set", lower_first(&e.to_string())));
        }
    }

    // Ties a diagnostic to the policy a Cedar diagnostic is about, at the
    // Cedar span (relative to the policy's statement).
    let place = |d: Diagnostic, id: &PolicyId, cedar: &dyn miette::Diagnostic| -> Diagnostic {
        let d = d.policy(id.to_string());
        let Some(info) = by_id.get(AsRef::<str>::as_ref(id)).and_then(|i| infos.get(*i)) else {
            return d;
        };
        let Some(src) = sources.get(info.source) else {
            return d;
        };
        let (off, len) = primary_span(cedar).unwrap_or((0, 1));
        d.at(src, info.start + off, len)
    };

    let validator = Validator::new(schema().clone());
    let result = validator.validate(&set, ValidationMode::Strict);
    // Leash policies mix `Dir` and `File` in one set (`resource in [Dir::"/a/",
    // File::"/b"]`). Strict mode rejects such sets although evaluating them
    // is well defined; a policy whose only strict errors are these is
    // accepted when it validates permissively, with a warning.
    let mixed_only: std::collections::HashSet<String> = {
        let mut mixed: HashMap<String, bool> = HashMap::new();
        for e in result.validation_errors() {
            let ok = is_file_dir_mix(e);
            let entry = mixed.entry(e.policy_id().to_string()).or_insert(true);
            *entry &= ok;
        }
        mixed
            .into_iter()
            .filter(|(id, only)| {
                *only && {
                    let mut one = PolicySet::new();
                    set.policy(&PolicyId::new(id))
                        .is_some_and(|p| one.add(p.clone()).is_ok())
                        && validator
                            .validate(&one, ValidationMode::Permissive)
                            .validation_passed()
                }
            })
            .map(|(id, _)| id)
            .collect()
    };
    for e in result.validation_errors() {
        if mixed_only.contains(e.policy_id().as_ref() as &str) {
            let d = Diagnostic::warning(
                "mixed-set",
                "this set mixes `Dir` and `File` entities, which Cedar's strict validation rejects; corral accepts it for Leash compatibility",
            )
            .help("to be strict-clean, split it: `resource in [Dir::...] || resource in [File::...]`");
            diags.push(place(d, e.policy_id(), e));
            continue;
        }
        let mut d = Diagnostic::error("validation", lower_first(&strip_policy_prefix(&e.to_string())));
        d = place(d, e.policy_id(), e);
        if let Some(h) = help_of(e) {
            d = d.help(h);
        }
        diags.push(d);
    }
    let mut impossible_forbids: std::collections::HashSet<String> = std::collections::HashSet::new();
    for w in result.validation_warnings() {
        let msg = strip_policy_prefix(&w.to_string());
        let impossible = matches!(
            w,
            cedar_policy::ValidationWarning::ImpossiblePolicy(_)
                | cedar_policy::ValidationWarning::InvalidActionApplication(_)
        );
        let is_forbid = by_id
            .get(AsRef::<str>::as_ref(w.policy_id()))
            .and_then(|i| infos.get(*i))
            .is_some_and(PolicyInfo::is_forbid);
        if impossible && is_forbid {
            // A forbid that can never apply silently voids the author's
            // protection: that is an error, reported once per policy.
            if !impossible_forbids.insert(w.policy_id().to_string()) {
                continue;
            }
            let d = Diagnostic::error(
                "forbid-never-applies",
                format!("this forbid can never apply: {}", lower_first(&msg)),
            )
            .help("check that the resource's entity type fits the action (`FileOpen*` take `File`/`Dir`, `ProcessExec` takes `File`, `NetworkConnect`/`Http*`/`SecretUse` take `Host`, `McpCall` takes `MCP::Tool`/`MCP::Server`)");
            diags.push(place(d, w.policy_id(), w));
            continue;
        }
        // Impossible-policy warnings are explained by our own lints, which
        // know why (e.g. `action == Action::"FileOpen"`); keep Cedar's text
        // only when we have nothing better.
        let mut d = Diagnostic::warning("cedar-warning", lower_first(&msg));
        d = place(d, w.policy_id(), w);
        if let Some(h) = help_of(w) {
            d = d.help(h);
        }
        diags.push(d);
    }

    let facts = infos
        .iter()
        .map(|i| {
            set.policy(&PolicyId::new(&i.id))
                .map(Facts::of)
                .unwrap_or_default()
        })
        .collect();
    let mut doc = PolicyDoc {
        facts,
        set,
        policies: infos,
        warnings: Vec::new(),
        sources,
        by_id,
    };
    let lints = lint::lint(&doc);
    // Replace Cedar's generic "impossible policy" warnings where a lint explains the cause.
    let explained: std::collections::HashSet<String> = lints
        .iter()
        .filter(|d| d.code == "never-applies")
        .filter_map(|d| d.policy.clone())
        .collect();
    diags.retain(|d| {
        !((d.code == "cedar-warning" || d.code == "forbid-never-applies")
            && d.policy.as_ref().is_some_and(|p| explained.contains(p)))
    });
    diags.extend(lints);
    // Cedar's "impossible policy" notes add nothing next to an error in the same policy.
    let errored: std::collections::HashSet<String> = diags
        .iter()
        .filter(|d| d.is_error())
        .filter_map(|d| d.policy.clone())
        .collect();
    diags.retain(|d| !(d.code == "cedar-warning" && d.policy.as_ref().is_some_and(|p| errored.contains(p))));

    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    doc.warnings = diags;
    Ok(doc)
}

/// Loads files from disk.
pub fn load_files(paths: &[std::path::PathBuf]) -> Result<PolicyDoc, Vec<Diagnostic>> {
    let mut sources = Vec::new();
    let mut diags = Vec::new();
    for p in paths {
        match std::fs::read_to_string(p) {
            Ok(text) => sources.push(Source::new(p.display().to_string(), text)),
            Err(e) => diags.push(Diagnostic::error(
                "io",
                format!("cannot read `{}`: {e}", p.display()),
            )),
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    load(sources)
}

fn is_file_dir_mix(e: &cedar_policy::ValidationError) -> bool {
    if !matches!(e, cedar_policy::ValidationError::IncompatibleTypes(_)) {
        return false;
    }
    let m = e.to_string();
    m.contains("types Dir and File") || m.contains("types File and Dir")
}

fn strip_policy_prefix(s: &str) -> String {
    // Cedar prefixes validation messages with "for policy `id`, ".
    if let Some(rest) = s.strip_prefix("for policy `") {
        if let Some(i) = rest.find("`, ") {
            return rest[i + 3..].to_string();
        }
    }
    s.to_string()
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) if f.is_uppercase() && c.clone().next().is_some_and(|n| n.is_lowercase()) => {
            f.to_lowercase().collect::<String>() + c.as_str()
        }
        _ => s.to_string(),
    }
}
