//! The compiled plan: per-layer tables the enforcement layers load, each
//! entry tagged with the policies that determine it.
//!
//! How kernel tables stay exact: for the file, exec and network layers every
//! policy is a function of the request's relation to the literals the policy
//! set mentions (equality with and membership in `File`/`Dir`/`Host`
//! literals, `ip(...)` ranges, integer bounds on the port, the principal).
//! Those literals cut request space into finitely many classes — for paths,
//! "deepest mentioned directory" plus exact files; for addresses, "longest
//! mentioned prefix" per port interval — on which every policy is constant.
//! The compiler asks the real Cedar authorizer once per class, with a
//! representative request, and stores the answer under the class's key. A
//! kernel lookup (exact path, then deepest directory; or LPM per port class)
//! finds the class of any request, so the table decides as Cedar does. Where
//! an answer depends on context the kernel does not have (exec arguments),
//! Cedar's partial evaluation says so and the entry reads `userspace`.

mod net;
mod path;
mod proxy;

pub use net::{host_literal, NetEntry, NetTable, PortRange};
pub use path::{DirVerdicts, PathEntry, PathTable};
pub use proxy::{HostRule, ProxyPlan, RewriteRule};

use crate::analyze::Facts;
use crate::diag::Diagnostic;
use crate::eval::Evaluator;
use crate::load::PolicyDoc;
use crate::request::Protocol;
use crate::schema::Action;
use serde::Serialize;
use std::collections::BTreeSet;

/// A table entry's decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Verdict {
    /// Allowed by these permits.
    Allow {
        /// Determining permits (policy indices).
        by: Vec<usize>,
    },
    /// Denied by these forbids (empty: nothing permits).
    Deny {
        /// Determining forbids (policy indices).
        by: Vec<usize>,
    },
    /// Depends on context the kernel does not see; ask the Cedar authorizer.
    Userspace {
        /// Policies that may be determining.
        policies: Vec<usize>,
    },
}

impl Verdict {
    /// `Some(true)` allow, `Some(false)` deny, `None` userspace.
    pub fn allowed(&self) -> Option<bool> {
        match self {
            Verdict::Allow { .. } => Some(true),
            Verdict::Deny { .. } => Some(false),
            Verdict::Userspace { .. } => None,
        }
    }

    /// Policy indices named by this verdict.
    pub fn policies(&self) -> &[usize] {
        match self {
            Verdict::Allow { by } | Verdict::Deny { by } => by,
            Verdict::Userspace { policies } => policies,
        }
    }

    fn from_decision(d: crate::eval::Decision) -> Verdict {
        if d.allowed {
            Verdict::Allow { by: d.determining }
        } else {
            Verdict::Deny { by: d.determining }
        }
    }
}

/// Which principals a set of tables is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum PrincipalClass {
    /// `Agent::"<name>"`, named in the policy set.
    Named(String),
    /// Any agent the policy set does not name.
    Other,
}

impl std::fmt::Display for PrincipalClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrincipalClass::Named(n) => write!(f, "Agent::{n:?}"),
            PrincipalClass::Other => write!(f, "any other agent"),
        }
    }
}

/// The kernel tables for one principal class.
#[derive(Debug, Clone, Serialize)]
pub struct PrincipalPlan {
    /// Who these tables are for.
    pub principal: PrincipalClass,
    /// `FileOpenReadOnly` table.
    pub file_read: PathTable,
    /// `FileOpenReadWrite` table.
    pub file_write: PathTable,
    /// `ProcessExec` table.
    pub exec: PathTable,
    /// `NetworkConnect` tables for direct (by-address) connections, TCP and UDP.
    pub net: Vec<NetTable>,
}

/// A part of the policy decided in userspace, and why.
#[derive(Debug, Clone, Serialize)]
pub struct UserspacePart {
    /// Layer: `exec`, `http`, `rewrite`, `secret`, `mcp`, `net-proxy`.
    pub layer: &'static str,
    /// Policy index.
    pub policy: usize,
    /// Why no kernel table can hold it.
    pub reason: String,
}

/// A reference to a policy, for display.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRef {
    /// Policy id.
    pub id: String,
    /// `permit`/`forbid`.
    pub effect: &'static str,
    /// `file:line`.
    pub at: String,
}

/// The compiled plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The policies, indexed by the numbers the tables use.
    pub policies: Vec<PolicyRef>,
    /// Kernel tables per principal class.
    pub principals: Vec<PrincipalPlan>,
    /// Proxy rules (host names, header rewrites).
    pub proxy: ProxyPlan,
    /// What is evaluated by the Cedar authorizer in userspace.
    pub userspace: Vec<UserspacePart>,
    /// Which questions the userspace layers ask.
    pub asks: Asks,
    /// Warnings found while compiling.
    pub warnings: Vec<Diagnostic>,
}

/// Which optional questions the proxy and MCP layers ask. A layer asks
/// `HttpRequest` (or `McpCall`) only when some policy names that action in
/// its scope; otherwise HTTP is governed by `NetworkConnect` alone (and MCP
/// is observed, not decided), so a Leash policy file, which has neither,
/// keeps working under default deny.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Asks {
    /// The proxy decides each HTTP request with `HttpRequest`.
    pub http_request: bool,
    /// The MCP layer decides each call with `McpCall`.
    pub mcp_call: bool,
}

impl Plan {
    /// Tables for a principal name (the class that covers it).
    pub fn for_principal(&self, name: &str) -> Option<&PrincipalPlan> {
        self.principals
            .iter()
            .find(|p| p.principal == PrincipalClass::Named(name.to_string()))
            .or_else(|| {
                self.principals
                    .iter()
                    .find(|p| p.principal == PrincipalClass::Other)
            })
    }

    /// `id (file:line)` of a policy index, for display.
    pub fn policy_label(&self, idx: usize) -> String {
        self.policies
            .get(idx)
            .map(|p| format!("{} ({})", p.id, p.at))
            .unwrap_or_default()
    }

    /// Policy ids and locations named by a verdict, for display.
    pub fn describe(&self, v: &Verdict) -> String {
        v.policies()
            .iter()
            .filter_map(|i| self.policies.get(*i))
            .map(|p| format!("{} ({})", p.id, p.at))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Which optional questions a policy makes the proxy and MCP layers ask:
/// an action is asked when some policy's scope constrains the action and
/// includes it (a scope of every action names none of them).
pub fn asks(doc: &PolicyDoc) -> Asks {
    let names = |a: Action| {
        doc.facts
            .iter()
            .any(|f| f.actions.len() < Action::ALL.len() && f.actions.contains(&a))
    };
    Asks {
        http_request: names(Action::HttpRequest),
        mcp_call: names(Action::McpCall),
    }
}

/// Options for [`compile`].
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Compile only the tables for this agent (its class).
    pub principal: Option<String>,
}

/// Compiles a loaded policy document into a plan.
pub fn compile(doc: &PolicyDoc, opts: &CompileOptions) -> Result<Plan, Vec<Diagnostic>> {
    let ev = Evaluator::new(doc);
    let facts: &[Facts] = &doc.facts;
    let mut diags = Vec::new();
    let mut userspace = Vec::new();

    // Network policies must be expressible as prefix/port classes.
    for (i, f) in facts.iter().enumerate() {
        if f.actions.contains(&Action::NetworkConnect) && f.arithmetic {
            diags.push(clause_diag(
                doc,
                i,
                "kernel-unsupported",
                "arithmetic in a `NetworkConnect` condition cannot be compiled to the kernel network table",
                "compare `context.port` with integer literals (`==`, `<`, `<=`, `>`, `>=`) instead of computing on it",
                &["+", "-", "*"],
            ));
        }
    }

    let proxy = proxy::compile(doc, &ev, facts, &mut diags, &mut userspace);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }

    for a in [Action::HttpRequest, Action::McpCall] {
        let named_by = |forbid: bool| {
            facts.iter().enumerate().find(|(i, f)| {
                f.actions.len() < Action::ALL.len()
                    && f.actions.contains(&a)
                    && doc.policies.get(*i).is_some_and(|p| p.is_forbid() == forbid)
            })
        };
        if let (Some((i, _)), None) = (named_by(true), named_by(false)) {
            let mut d = clause_diag(
                doc,
                i,
                "denies-everything",
                &format!("no permit names `{}`, so under default deny every such request is denied, not only what this forbid names", a.name()),
                &format!("add `permit (principal, action == Action::\"{}\", resource);` to allow the rest", a.name()),
                &["forbid"],
            );
            d.severity = crate::diag::Severity::Warning;
            diags.push(d);
        }
    }
    let classes = principal_classes(facts, opts.principal.as_deref());
    let permits: Vec<bool> = doc.policies.iter().map(|p| !p.is_forbid()).collect();
    // An agent that no policy of an action names decides that action
    // exactly as any other unnamed agent: share the "other" class's table.
    let named_for = |a: Action| -> BTreeSet<&str> {
        facts
            .iter()
            .filter(|f| f.actions.contains(&a))
            .flat_map(|f| f.entities_of("Agent"))
            .collect()
    };
    let other_name = classes
        .iter()
        .find(|(c, _)| *c == PrincipalClass::Other)
        .map(|(_, n)| n.clone());
    let mut shared: std::collections::HashMap<Action, PathTable> = std::collections::HashMap::new();
    let mut shared_net: Option<Vec<NetTable>> = None;
    let mut path_for = |name: &str, a: Action| -> PathTable {
        let own = other_name.is_none() || named_for(a).contains(name);
        if own {
            return path::compile(&ev, facts, name, a);
        }
        shared
            .entry(a)
            .or_insert_with(|| path::compile(&ev, facts, other_name.as_deref().unwrap_or(name), a))
            .clone()
    };
    let mut principals = Vec::new();
    for (class, name) in &classes {
        let file_read = path_for(name, Action::FileOpenReadOnly);
        let file_write = path_for(name, Action::FileOpenReadWrite);
        let exec = path_for(name, Action::ProcessExec);
        let net_of = |n: &str| -> Vec<NetTable> {
            [Protocol::Tcp, Protocol::Udp]
                .into_iter()
                .map(|proto| net::compile(&ev, facts, &permits, n, proto))
                .collect()
        };
        let net = if other_name.is_none() || named_for(Action::NetworkConnect).contains(name.as_str()) {
            net_of(name)
        } else {
            shared_net
                .get_or_insert_with(|| net_of(other_name.as_deref().unwrap_or(name)))
                .clone()
        };
        principals.push(PrincipalPlan {
            principal: class.clone(),
            file_read,
            file_write,
            exec,
            net,
        });
    }

    // Exec entries that need argv are decided in userspace.
    let mut exec_user: BTreeSet<usize> = BTreeSet::new();
    for p in &principals {
        for e in p.exec.entries.values() {
            for v in e.verdicts() {
                if let Verdict::Userspace { policies } = v {
                    exec_user.extend(policies.iter().copied());
                }
            }
        }
    }
    for i in exec_user {
        if facts.get(i).is_some_and(|f| !f.context_attrs.is_empty()) {
            userspace.push(UserspacePart {
                layer: "exec",
                policy: i,
                reason: "reads exec arguments (`context`): decided with argv in hand at exec".into(),
            });
        }
    }

    Ok(Plan {
        policies: doc
            .policies
            .iter()
            .map(|p| PolicyRef {
                id: p.id.clone(),
                effect: p.effect,
                at: p.location(),
            })
            .collect(),
        principals,
        proxy,
        userspace,
        asks: asks(doc),
        warnings: diags,
    })
}

/// The principal classes to compile, with a representative agent name each.
fn principal_classes(facts: &[Facts], only: Option<&str>) -> Vec<(PrincipalClass, String)> {
    let named: BTreeSet<&str> = facts.iter().flat_map(|f| f.entities_of("Agent")).collect();
    if let Some(n) = only {
        if named.contains(n) {
            return vec![(PrincipalClass::Named(n.to_string()), n.to_string())];
        }
        return vec![(PrincipalClass::Other, n.to_string())];
    }
    let mut out: Vec<(PrincipalClass, String)> = named
        .iter()
        .map(|n| (PrincipalClass::Named(n.to_string()), n.to_string()))
        .collect();
    let mut other = "corral~other-agent".to_string();
    while named.contains(other.as_str()) {
        other.push('~');
    }
    out.push((PrincipalClass::Other, other));
    out
}

/// A diagnostic pointing at the first of `needles` inside policy `i`'s text.
pub(crate) fn clause_diag(
    doc: &PolicyDoc,
    i: usize,
    code: &'static str,
    msg: &str,
    help: &str,
    needles: &[&str],
) -> Diagnostic {
    let Some(info) = doc.policies.get(i) else {
        return Diagnostic::error(code, msg).help(help);
    };
    let cond_start = info
        .text
        .find("when")
        .or_else(|| info.text.find("unless"))
        .unwrap_or(0);
    let (off, len) = needles
        .iter()
        .filter_map(|n| info.text[cond_start..].find(n).map(|o| (cond_start + o, n.len())))
        .min()
        .unwrap_or((0, 1));
    let mut d = Diagnostic::error(code, msg).help(help).policy(info.id.clone());
    if let Some(src) = doc.source_of(info) {
        d = d.at(src, info.start + off, len);
    }
    d
}
