//! From events to the distinct requests they asked: which need a rule,
//! which cannot get one, and the forms (entry and request) each stands for.

use super::{Entry, Options, PathKind, SkipReason, Skipped};
use crate::load::PolicyDoc;
use crate::request::{ancestor_dirs, host_port, ip_text, Protocol, Request};
use crate::schema::Action;
use corral_core::{Access, Decision, Event, SessionId, Transport, What};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// What a request is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Target {
    Path(String),
    Net {
        ip: IpAddr,
        port: u16,
        protocol: Protocol,
    },
}

impl Target {
    pub(super) fn text(&self) -> String {
        match self {
            Target::Path(p) => p.clone(),
            Target::Net { ip, port, protocol } => {
                format!("{} ({})", host_port(&ip_text(*ip), *port), protocol.as_str())
            }
        }
    }
}

/// The distinct denied requests of the events, with their counts.
#[derive(Debug, Default)]
pub(super) struct Asked {
    pub(super) events: usize,
    /// Of which denied (the rest were allowed by the session's policy).
    pub(super) denied: usize,
    pub(super) sessions: BTreeSet<SessionId>,
    /// The first determining policy the events name that is a forbid in
    /// the current policy.
    pub(super) forbid: Option<String>,
    argv: Option<Vec<String>>,
}

/// A distinct request: who asked, what, about what.
pub(super) type Key = (String, Action, Target);

/// Distinct denied requests, and the events no rule can be suggested for.
pub(super) fn collect(
    events: &[Event],
    doc: &PolicyDoc,
    include_allowed: bool,
) -> (BTreeMap<Key, Asked>, Vec<Skipped>) {
    let mut asked: BTreeMap<Key, Asked> = BTreeMap::new();
    let mut unsupported: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in events {
        let denied = match e.decision {
            Some(Decision::Deny | Decision::WouldDeny) => true,
            Some(Decision::Allow) if include_allowed => false,
            _ => continue,
        };
        let mut argv = None;
        let keys: Vec<(Action, Target)> = match &e.what {
            What::FileOpen { path, access } => {
                let t = Target::Path(path.clone());
                match access {
                    Access::Read => vec![(Action::FileOpenReadOnly, t)],
                    Access::Write => vec![(Action::FileOpenReadWrite, t)],
                    // Decided against both tables (as the fanotify layer does).
                    Access::Exec => vec![
                        (Action::FileOpenReadOnly, t.clone()),
                        (Action::FileOpenReadWrite, t),
                    ],
                }
            }
            What::Exec { path, argv: a } => {
                argv = a.clone();
                vec![(Action::ProcessExec, Target::Path(path.clone()))]
            }
            What::Connect { ip, port, transport } => vec![(
                Action::NetworkConnect,
                Target::Net {
                    ip: ip.to_canonical(),
                    port: *port,
                    protocol: match transport {
                        Transport::Tcp => Protocol::Tcp,
                        Transport::Udp => Protocol::Udp,
                    },
                },
            )],
            _ if !denied => continue,
            other => {
                let kind = serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
                    .unwrap_or_else(|| "this event kind".into());
                *unsupported.entry((e.principal.clone(), kind)).or_default() += 1;
                continue;
            }
        };
        let forbid = e
            .policies
            .iter()
            .find(|id| doc.info(id).is_some_and(|i| i.is_forbid()))
            .cloned();
        for (action, target) in keys {
            let a = asked.entry((e.principal.clone(), action, target)).or_default();
            a.events += 1;
            a.denied += usize::from(denied);
            a.sessions.insert(e.session);
            a.forbid = a.forbid.take().or_else(|| forbid.clone());
            if a.argv.is_none() {
                a.argv = argv.clone();
            }
        }
    }
    let skipped = unsupported
        .into_iter()
        .map(|((principal, what), events)| Skipped {
            principal,
            action: None,
            target: what.clone(),
            events,
            reason: SkipReason::Unsupported {
                what: format!("`{what}` events"),
            },
        })
        .collect();
    (asked, skipped)
}

/// Paths that are proper ancestors of a path in the events: directories.
pub(super) fn known_dirs(events: &[Event]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in events {
        let path = match &e.what {
            What::FileOpen { path, .. } | What::Exec { path, .. } | What::ExecTrace { path, .. } => path,
            _ => continue,
        };
        for d in ancestor_dirs(path) {
            let d = d.strip_suffix('/').filter(|d| !d.is_empty()).unwrap_or("/");
            if !out.insert(d.to_string()) {
                break;
            }
        }
    }
    out
}

/// The entries and requests that stand for one denied request: one, or for
/// a read open of a path of unknown kind both the file and the directory.
pub(super) fn forms(
    principal: &str,
    action: Action,
    target: &Target,
    a: &Asked,
    dirs: &BTreeSet<String>,
    opts: &Options<'_>,
) -> Vec<(Entry, Request)> {
    let principal = principal.to_string();
    match target {
        Target::Net { ip, port, protocol } => vec![(
            Entry::Host {
                host_port: host_port(&ip_text(*ip), *port),
                protocol: *protocol,
            },
            Request::Net {
                principal,
                hostname: None,
                ip: *ip,
                port: *port,
                protocol: *protocol,
            },
        )],
        Target::Path(path) if action == Action::ProcessExec => vec![(
            Entry::File(path.clone()),
            Request::Exec {
                principal,
                path: path.clone(),
                argv: a.argv.clone().unwrap_or_else(|| vec![path.clone()]),
            },
        )],
        Target::Path(path) => {
            let write = action == Action::FileOpenReadWrite;
            // Opening a directory for writing fails before any decision.
            let kind = if path == "/" || dirs.contains(path) {
                PathKind::Dir
            } else if write {
                PathKind::File
            } else {
                (opts.path_kind)(path)
            };
            let file = || {
                (
                    Entry::File(path.clone()),
                    Request::File {
                        principal: principal.clone(),
                        write,
                        path: path.clone(),
                        is_dir: false,
                    },
                )
            };
            let dir = || {
                (
                    Entry::Dir(dir_id(path)),
                    Request::File {
                        principal: principal.clone(),
                        write,
                        path: path.clone(),
                        is_dir: true,
                    },
                )
            };
            match kind {
                PathKind::File => vec![file()],
                PathKind::Dir => vec![dir()],
                PathKind::Unknown => vec![file(), dir()],
            }
        }
    }
}

/// `Dir` id of a canonical path: `/a` → `/a/`, `/` → `/`.
fn dir_id(path: &str) -> String {
    if path == "/" {
        "/".into()
    } else {
        format!("{path}/")
    }
}

/// Whether `s` can be written between `"`s as it is.
pub(super) fn literal_safe(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if let Some(c) = s.chars().find(|c| *c == '"' || *c == '\\' || c.is_control()) {
        return Err(format!(
            "the {what} `{}` contains {c:?}, which corral does not write into policies",
            s.escape_debug()
        ));
    }
    Ok(())
}

/// Whether a path is absolute and canonical, as requests carry it.
pub(super) fn canonical(path: &str) -> Result<(), String> {
    match crate::request::check_path(path) {
        Ok(p) if p == path => Ok(()),
        _ => Err(format!(
            "the path `{path}` is not absolute and canonical (no `//`, `.`, `..` or trailing `/`)"
        )),
    }
}
