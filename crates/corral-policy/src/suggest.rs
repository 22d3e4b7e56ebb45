//! `corral policy suggest`: the `permit`s that would have allowed what a
//! session was denied (or, in shadow mode, would have been denied), appended
//! to the current policy, and shown to hold: the result validates in strict
//! mode and the Cedar authorizer allows every request it claims to cover.
//!
//! Input is plain data (the session's events, the current policy text); this
//! module does no IO. Nothing is dropped silently: a request a `forbid`
//! denies, one that touches a secret of the default policy, or one that
//! cannot be written as a Cedar literal is listed in [`Suggestion::skipped`]
//! with its reason.
//!
//! Rules are as narrow as the events allow: exact `File`s, a directory
//! opened itself as `resource == Dir::"..."`, exact `Host::"<ip>:<port>"`
//! per protocol, and `resource in Dir::"..."` only for a directory in which
//! at least [`Options::min_files_for_dir`] objects were denied for the same
//! principal and action (never `/`, never a directory holding a secret).

mod asked;
mod draft;
mod render;
mod secrets;
#[cfg(test)]
mod tests;

pub use draft::{draft, DraftError, Effect};
pub use secrets::{home_from_policy, template_secrets, Secret};

use crate::check::check;
use crate::diag::Diagnostic;
use crate::eval::Evaluator;
use crate::load::load;
use crate::request::{ancestor_dirs, Protocol, Request, RequestError};
use crate::schema::Action;
use crate::source::Source;
use asked::{canonical, collect, forms, known_dirs, literal_safe, Target};
use corral_core::{Event, SessionId};
use std::collections::{BTreeMap, BTreeSet};

/// What a path names, as far as the caller can tell. File-open events do not
/// record it, and a directory opened itself is requested as `Dir::"<p>/"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    /// A file (or any non-directory).
    File,
    /// A directory.
    Dir,
    /// Not known: read opens of it are permitted exactly, in both forms.
    Unknown,
}

/// How to suggest.
pub struct Options<'a> {
    /// The session's home directory (`${HOME}` of the default policy's
    /// secrets).
    pub home: &'a str,
    /// Suggest permits for the default policy's secrets too.
    pub allow_secrets: bool,
    /// Also check the events the session's policy allowed. Set it when the
    /// current policy is not the one the session ran under: what that one
    /// allowed, this one may deny.
    pub include_allowed: bool,
    /// From this many distinct objects denied in one directory (for one
    /// principal and action) on, one rule permits the whole directory.
    pub min_files_for_dir: usize,
    /// Name of the suggested policy in the diff's header.
    pub suggested_label: &'a str,
    /// What a path names (e.g. by looking at the filesystem the session
    /// saw). Paths that are ancestors of other paths in the events are
    /// directories whatever this says.
    pub path_kind: &'a dyn Fn(&str) -> PathKind,
}

impl<'a> Options<'a> {
    /// Defaults: no secrets, directories from 3 objects, kinds unknown.
    pub fn new(home: &'a str) -> Options<'a> {
        Options {
            home,
            allow_secrets: false,
            include_allowed: false,
            min_files_for_dir: 3,
            suggested_label: "suggested policy",
            path_kind: &unknown_kind,
        }
    }
}

fn unknown_kind(_: &str) -> PathKind {
    PathKind::Unknown
}

/// One thing a suggested rule permits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Entry {
    /// `resource in Dir::"<dir>"`: a directory and everything below it
    /// (the id with its trailing slash).
    Tree(String),
    /// `File::"<path>"`.
    File(String),
    /// `resource == Dir::"<dir>"`: the directory itself, not what is in it.
    Dir(String),
    /// `Host::"<ip>:<port>"` (v6 in brackets) over one protocol.
    Host {
        /// `ip:port` as requests present it.
        host_port: String,
        /// TCP or UDP.
        protocol: Protocol,
    },
}

/// One added `permit`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    /// Its `@id`: `suggested-<action>-<n>`.
    pub id: String,
    /// The agent it is restricted to (`principal == Agent::"<name>"`).
    pub principal: String,
    /// The one action it permits.
    pub action: Action,
    /// What it permits, sorted.
    pub entries: Vec<Entry>,
    /// Events it covers.
    pub events: usize,
    /// Sessions those events came from.
    pub sessions: Vec<SessionId>,
    /// The Cedar text, with its comment and annotation.
    pub text: String,
}

/// Why a denied request got no rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    /// A `forbid` denies it: no `permit` can change that.
    Forbid {
        /// The forbid's id.
        id: String,
        /// Its `file:line`.
        at: String,
    },
    /// A secret of the default policy (see [`Options::allow_secrets`]).
    Secret {
        /// The secret's literal, e.g. `Dir::"/root/.ssh/"`.
        secret: String,
    },
    /// The path or principal cannot be written as a plain Cedar literal.
    BadLiteral {
        /// What is wrong.
        why: String,
    },
    /// An event kind no rule is suggested for.
    Unsupported {
        /// The kind.
        what: String,
    },
}

impl SkipReason {
    /// Short code: `forbid`, `secret`, `bad-literal`, `unsupported`.
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::Forbid { .. } => "forbid",
            SkipReason::Secret { .. } => "secret",
            SkipReason::BadLiteral { .. } => "bad-literal",
            SkipReason::Unsupported { .. } => "unsupported",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Forbid { id, at } => {
                write!(
                    f,
                    "forbid: denied by `{id}` at {at}; a permit cannot override a forbid"
                )
            }
            SkipReason::Secret { secret } => write!(
                f,
                "secret: within `{secret}` of the default policy's `{}` list",
                secrets::RULE
            ),
            SkipReason::BadLiteral { why } => write!(f, "bad-literal: {why}"),
            SkipReason::Unsupported { what } => write!(f, "unsupported: no rule is suggested for {what}"),
        }
    }
}

/// A denied request (and how many events asked it) that got no rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The agent.
    pub principal: String,
    /// The action, when the event maps to one.
    pub action: Option<Action>,
    /// The path, `ip:port`, or event kind.
    pub target: String,
    /// How many events.
    pub events: usize,
    /// Why.
    pub reason: SkipReason,
}

/// The result of [`suggest`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Suggestion {
    /// The current policy with the new rules appended (unchanged when none).
    pub policy: String,
    /// The added rules.
    pub added: Vec<Rule>,
    /// Denied requests left without a rule, with the reason.
    pub skipped: Vec<Skipped>,
    /// Unified diff, current → suggested.
    pub diff: String,
    /// Events the added rules cover.
    pub covered: usize,
    /// Denied events the current policy allows (it is not the one that
    /// denied them).
    pub already_allowed: usize,
}

/// Why no suggestion could be made.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    /// The current policy does not load.
    #[error("the current policy `{name}` does not load ({} errors)", diagnostics.iter().filter(|d| d.is_error()).count())]
    Current {
        /// Its name.
        name: String,
        /// What is wrong.
        diagnostics: Vec<Diagnostic>,
    },
    /// The home directory is not a usable path.
    #[error("home `{0}` must be an absolute, canonical path other than `/`, without `\"` or `\\`")]
    BadHome(String),
    /// The default policy template's secrets rule cannot be read.
    #[error("cannot read the default policy's secrets: {0}")]
    Template(String),
    /// A request could not be built.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Internal error: the suggested policy does not validate cleanly.
    #[error("internal error: the suggested policy does not validate; it was not written")]
    Invalid {
        /// What is wrong with it.
        diagnostics: Vec<Diagnostic>,
    },
    /// Internal error: a request the suggestion claims to cover is still denied.
    #[error("internal error: the suggested policy still denies `{request}` ({why}); it was not written")]
    NotCovered {
        /// The request.
        request: String,
        /// What Cedar said.
        why: String,
    },
}

/// A denied request that needs a rule.
#[derive(Debug)]
struct Need {
    path: Option<String>,
    entries: Vec<Entry>,
    requests: Vec<Request>,
    events: usize,
    sessions: BTreeSet<SessionId>,
}

/// Suggests rules that would have allowed what `events` record as denied
/// (`deny` or `would_deny`; with [`Options::include_allowed`] every
/// decision), on top of `current`.
pub fn suggest(events: &[Event], current: &Source, opts: &Options<'_>) -> Result<Suggestion, SuggestError> {
    let doc = load(vec![current.clone()]).map_err(|diagnostics| SuggestError::Current {
        name: current.name.clone(),
        diagnostics,
    })?;
    let secrets = if opts.allow_secrets {
        Vec::new()
    } else {
        template_secrets(opts.home)?
    };
    let evaluator = Evaluator::new(&doc);
    let dirs = known_dirs(events);
    let (asked, mut skipped) = collect(events, &doc, opts.include_allowed);

    let mut needs: BTreeMap<(String, Action), Vec<Need>> = BTreeMap::new();
    let mut already_allowed = 0;
    for ((principal, action, target), a) in asked {
        let skip = |reason: SkipReason| Skipped {
            principal: principal.clone(),
            action: Some(action),
            target: target.text(),
            events: a.events,
            reason,
        };
        if let Err(why) = literal_safe("principal", &principal) {
            skipped.push(skip(SkipReason::BadLiteral { why }));
            continue;
        }
        if let Target::Path(p) = &target {
            if let Err(why) = literal_safe("path", p).and_then(|()| canonical(p)) {
                skipped.push(skip(SkipReason::BadLiteral { why }));
                continue;
            }
        }
        if let Some(id) = &a.forbid {
            let at = doc.info(id).map(|i| i.location()).unwrap_or_default();
            skipped.push(skip(SkipReason::Forbid { id: id.clone(), at }));
            continue;
        }
        let forms = forms(&principal, action, &target, &a, &dirs, opts);
        let mut needed = Vec::new();
        let mut forbidden = None;
        let mut allowed = false;
        for (entry, req) in forms {
            let d = evaluator.decide(&req)?;
            if d.allowed {
                allowed = true;
            } else if let Some(i) = d.determining.first() {
                forbidden = forbidden.or_else(|| doc.policies.get(*i));
            } else {
                needed.push((entry, req));
            }
        }
        if needed.is_empty() {
            match forbidden {
                Some(info) if !allowed => skipped.push(skip(SkipReason::Forbid {
                    id: info.id.clone(),
                    at: info.location(),
                })),
                _ => already_allowed += a.denied,
            }
            continue;
        }
        if let Target::Path(p) = &target {
            if let Some(s) = secrets.iter().find(|s| s.covers(p)) {
                skipped.push(skip(SkipReason::Secret { secret: s.literal() }));
                continue;
            }
        }
        let (entries, requests) = needed.into_iter().unzip();
        needs.entry((principal.clone(), action)).or_default().push(Need {
            path: match &target {
                Target::Path(p) => Some(p.clone()),
                Target::Net { .. } => None,
            },
            entries,
            requests,
            events: a.events,
            sessions: a.sessions,
        });
    }

    let mut taken: BTreeSet<String> = doc.policies.iter().map(|p| p.id.clone()).collect();
    let mut added = Vec::new();
    let mut claims: Vec<Request> = Vec::new();
    for ((principal, action), group) in needs {
        let entries = group_entries(&group, &secrets, opts.min_files_for_dir.max(1));
        let id = (1..)
            .map(|n| format!("suggested-{}-{n}", action.name()))
            .find(|id| !taken.contains(id))
            .unwrap_or_default();
        taken.insert(id.clone());
        let sessions: BTreeSet<SessionId> = group.iter().flat_map(|n| n.sessions.iter().copied()).collect();
        let events = group.iter().map(|n| n.events).sum();
        let sessions: Vec<SessionId> = sessions.into_iter().collect();
        let text = render::rule(&id, &principal, action, &entries, &sessions, events);
        claims.extend(group.into_iter().flat_map(|n| n.requests));
        added.push(Rule {
            id,
            principal,
            action,
            entries,
            events,
            sessions,
            text,
        });
    }

    let policy = render::policy(&current.text, &added);
    verify(&policy, current, &added, &claims)?;
    skipped.sort_by(|a, b| (&a.principal, a.action, &a.target).cmp(&(&b.principal, b.action, &b.target)));
    Ok(Suggestion {
        diff: render::diff(&current.text, &policy, &current.name, opts.suggested_label),
        covered: added.iter().map(|r| r.events).sum(),
        policy,
        added,
        skipped,
        already_allowed,
    })
}

/// The entries of one (principal, action) rule: a directory tree where at
/// least `min` distinct objects directly in it were denied, exact entries
/// for the rest.
fn group_entries(group: &[Need], secrets: &[Secret], min: usize) -> Vec<Entry> {
    let mut per_dir: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for n in group {
        if let Some(p) = &n.path {
            if let Some(parent) = ancestor_dirs(p).next() {
                per_dir.entry(parent).or_default().insert(p);
            }
        }
    }
    let candidates: Vec<&str> = per_dir
        .into_iter()
        .filter(|(dir, objs)| objs.len() >= min && *dir != "/" && !secrets.iter().any(|s| s.within(dir)))
        .map(|(dir, _)| dir)
        .collect();
    // Keep the outermost: a tree inside another adds nothing.
    let trees: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|d| !candidates.iter().any(|o| o != d && d.starts_with(o)))
        .collect();
    let mut out: BTreeSet<Entry> = trees.iter().map(|d| Entry::Tree((*d).to_string())).collect();
    for n in group {
        let inside = n.path.as_deref().is_some_and(|p| {
            trees
                .iter()
                .any(|t| p.starts_with(t) || t.strip_suffix('/') == Some(p))
        });
        if !inside {
            out.extend(n.entries.iter().cloned());
        }
    }
    out.into_iter().collect()
}

/// Checks the suggested policy (strict validation, no finding on the added
/// rules) and that it allows every request the rules claim to cover.
fn verify(policy: &str, current: &Source, added: &[Rule], claims: &[Request]) -> Result<(), SuggestError> {
    let checked = check(vec![Source::new(current.name.clone(), policy.to_string())]);
    let ours: BTreeSet<&str> = added.iter().map(|r| r.id.as_str()).collect();
    let bad: Vec<Diagnostic> = checked
        .diagnostics
        .iter()
        .filter(|d| d.is_error() || d.policy.as_deref().is_some_and(|p| ours.contains(p)))
        .cloned()
        .collect();
    let doc = match checked.doc {
        Some(doc) if bad.is_empty() && checked.plan.is_some() => doc,
        _ => return Err(SuggestError::Invalid { diagnostics: bad }),
    };
    let ev = Evaluator::new(&doc);
    for req in claims {
        let d = ev.decide(req)?;
        if !d.allowed {
            let why = match d.determining.first().and_then(|i| doc.policies.get(*i)) {
                Some(p) => format!("denied by `{}` at {}", p.id, p.location()),
                None => "no permit matches".to_string(),
            };
            let request = match req.resource_uid() {
                Ok(uid) => format!("{} {uid}", req.action().name()),
                Err(_) => req.action().name().to_string(),
            };
            return Err(SuggestError::NotCovered { request, why });
        }
    }
    Ok(())
}
