//! Path tables (file open, exec): exact entries and directory entries,
//! looked up by exact path, then by the deepest listed ancestor directory.

use super::Verdict;
use crate::analyze::{is_canonical_dir, is_canonical_file, Facts};
use crate::eval::Evaluator;
use crate::request::{ancestor_dirs, Request};
use crate::schema::{uid, Action};
use cedar_policy::{Authorizer, RequestBuilder};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Verdicts held by a directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirVerdicts {
    /// The directory itself (`Dir::"/a/"` opened).
    pub itself: Verdict,
    /// Non-directories below it, not covered by a deeper entry.
    pub files: Verdict,
    /// Directories below it, not covered by a deeper entry.
    pub dirs: Verdict,
}

/// One path's entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PathEntry {
    /// `File::"<path>"` exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<Verdict>,
    /// `Dir::"<path>/"` and what lies below.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<DirVerdicts>,
}

impl PathEntry {
    /// All verdicts in this entry.
    pub fn verdicts(&self) -> impl Iterator<Item = &Verdict> {
        self.file
            .iter()
            .chain(self.dir.iter().flat_map(|d| [&d.itself, &d.files, &d.dirs]))
    }
}

/// A path table for one action.
#[derive(Debug, Clone, Serialize)]
pub struct PathTable {
    /// The action decided.
    pub action: Action,
    /// Key: canonical path without trailing slash (`/` for the root).
    /// Serialised in path order.
    #[serde(serialize_with = "sorted")]
    pub entries: HashMap<String, PathEntry>,
    #[serde(skip)]
    fallback: Verdict,
}

fn sorted<S: serde::Serializer>(m: &HashMap<String, PathEntry>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().collect::<BTreeMap<_, _>>())
}

impl PathTable {
    /// Decides a canonical absolute path; `is_dir` when the object opened is
    /// a directory. Cost: one exact lookup plus one lookup per ancestor
    /// directory until the deepest listed one is found.
    pub fn lookup(&self, path: &str, is_dir: bool) -> &Verdict {
        // The root is always a directory.
        let is_dir = is_dir || path == "/";
        if let Some(e) = self.entries.get(path) {
            if is_dir {
                if let Some(d) = &e.dir {
                    return &d.itself;
                }
            } else if let Some(f) = &e.file {
                return f;
            }
        }
        for anc in ancestor_dirs(path) {
            let key = if anc.len() > 1 { &anc[..anc.len() - 1] } else { anc };
            if let Some(d) = self.entries.get(key).and_then(|e| e.dir.as_ref()) {
                return if is_dir { &d.dirs } else { &d.files };
            }
        }
        &self.fallback
    }

    /// Number of (path, verdict) rows.
    pub fn rows(&self) -> usize {
        self.entries.values().map(|e| e.verdicts().count()).sum()
    }
}

pub(super) fn compile(ev: &Evaluator, facts: &[Facts], principal: &str, action: Action) -> PathTable {
    let relevant = facts.iter().filter(|f| f.actions.contains(&action));
    let mut files: BTreeSet<String> = BTreeSet::new();
    let mut dirs: BTreeSet<String> = BTreeSet::from(["/".to_string()]);
    for f in relevant {
        for id in f.entities_of("File") {
            if is_canonical_file(id) {
                files.insert(id.to_string());
            }
        }
        for id in f.entities_of("Dir") {
            if is_canonical_dir(id) {
                dirs.insert(if id == "/" {
                    "/".into()
                } else {
                    id.trim_end_matches('/').to_string()
                });
            }
        }
    }
    let literal_paths: BTreeSet<&str> = files.iter().chain(dirs.iter()).map(String::as_str).collect();
    let decide = |path: &str, is_dir: bool| -> Verdict { decide_rep(ev, principal, action, path, is_dir) };

    let mut entries: HashMap<String, PathEntry> = HashMap::new();
    for f in &files {
        entries.entry(f.clone()).or_default().file = Some(decide(f, false));
    }
    for d in &dirs {
        let fresh = fresh_child(d, &literal_paths);
        entries.entry(d.clone()).or_default().dir = Some(DirVerdicts {
            itself: decide(d, true),
            files: decide(&fresh, false),
            dirs: decide(&fresh, true),
        });
    }
    let mut table = PathTable {
        action,
        entries,
        fallback: Verdict::Deny { by: vec![] },
    };
    compact(&mut table);
    table
}

/// Asks Cedar about one representative request.
fn decide_rep(ev: &Evaluator, principal: &str, action: Action, path: &str, is_dir: bool) -> Verdict {
    match action {
        Action::ProcessExec => {
            if is_dir {
                // Directories are never executed; exec requests are `File`s.
                return Verdict::Deny { by: vec![] };
            }
            decide_exec(ev, principal, path)
        }
        _ => {
            let req = Request::File {
                principal: principal.to_string(),
                write: action == Action::FileOpenReadWrite,
                path: path.to_string(),
                is_dir,
            };
            match ev.decide(&req) {
                Ok(d) => Verdict::from_decision(d),
                // Representatives are canonical by construction.
                Err(_) => Verdict::Deny { by: vec![] },
            }
        }
    }
}

/// Exec with unknown arguments: Cedar's partial evaluation tells whether the
/// answer holds for every argv or needs the arguments.
fn decide_exec(ev: &Evaluator, principal: &str, path: &str) -> Verdict {
    let Some(set) = ev.slice(Action::ProcessExec) else {
        return Verdict::Deny { by: vec![] };
    };
    let probe = Request::Exec {
        principal: principal.to_string(),
        path: path.to_string(),
        argv: vec![],
    };
    let Ok((_, entities)) = probe.to_cedar() else {
        return Verdict::Deny { by: vec![] };
    };
    let Ok(resource) = probe.resource_uid() else {
        return Verdict::Deny { by: vec![] };
    };
    let req = RequestBuilder::default()
        .principal(uid("Agent", principal))
        .action(Action::ProcessExec.uid())
        .resource(resource)
        .build();
    let resp = Authorizer::new().is_authorized_partial(&req, set, &entities);
    let idx = |p: cedar_policy::Policy| ev.index_of(p.id().as_ref());
    match resp.decision() {
        Some(cedar_policy::Decision::Allow) => {
            let mut by: Vec<usize> = resp
                .definitely_satisfied()
                .filter(|p| p.effect() == cedar_policy::Effect::Permit)
                .filter_map(idx)
                .collect();
            by.sort_unstable();
            Verdict::Allow { by }
        }
        Some(cedar_policy::Decision::Deny) => {
            let mut by: Vec<usize> = resp
                .definitely_satisfied()
                .filter(|p| p.effect() == cedar_policy::Effect::Forbid)
                .filter_map(idx)
                .collect();
            by.sort_unstable();
            Verdict::Deny { by }
        }
        None => {
            let mut policies: Vec<usize> = resp.may_be_determining().filter_map(idx).collect();
            policies.sort_unstable();
            Verdict::Userspace { policies }
        }
    }
}

/// A child name of `dir` that is no literal and has no literal below it.
fn fresh_child(dir: &str, literals: &BTreeSet<&str>) -> String {
    let base = if dir == "/" {
        String::new()
    } else {
        dir.to_string()
    };
    let mut n = 0u32;
    loop {
        let cand = format!("{base}/corral~rep{n}");
        let below = format!("{cand}/");
        let taken = literals.contains(cand.as_str())
            || literals
                .range::<str, _>((
                    std::ops::Bound::Excluded(cand.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .next()
                .is_some_and(|l| l.starts_with(&below));
        if !taken {
            return cand;
        }
        n += 1;
    }
}

/// Drops entries that decide exactly as the entry a lookup would fall back to.
fn compact(table: &mut PathTable) {
    let mut keys: Vec<String> = table.entries.keys().cloned().collect();
    keys.sort_by_key(|k| (k.matches('/').count(), k.clone()));
    for k in keys {
        if k == "/" {
            continue;
        }
        let parent = ancestor_dirs(&k)
            .map(|a| if a.len() > 1 { &a[..a.len() - 1] } else { a })
            .find_map(|a| table.entries.get(a).and_then(|e| e.dir.clone()));
        let Some(parent) = parent else { continue };
        let Some(entry) = table.entries.get_mut(&k) else {
            continue;
        };
        if entry
            .dir
            .as_ref()
            .is_some_and(|d| d.itself == parent.dirs && d.files == parent.files && d.dirs == parent.dirs)
        {
            entry.dir = None;
        }
        if entry.file.as_ref().is_some_and(|f| *f == parent.files) {
            entry.file = None;
        }
        if entry.file.is_none() && entry.dir.is_none() {
            table.entries.remove(&k);
        }
    }
}
