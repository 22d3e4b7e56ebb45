//! Userspace decisions with the real Cedar authorizer.
//!
//! Cedar evaluates every policy of a set on every request, at about 1 µs a
//! policy. To stay fast with thousands of policies the evaluator only hands
//! Cedar the policies that *can* be satisfied by a request:
//!
//! * per action: a policy whose scope cannot apply to the action is skipped;
//! * per resource: a policy that requires `resource in E` / `resource == E`
//!   (in its scope, or in a conjunct of a `when` clause, or in every branch
//!   of a disjunction) is indexed under those entities, and looked up by the
//!   request's resource and its ancestors;
//! * per string attribute: a policy that requires `context.a == "s"` or
//!   `context.a like "lit*..."` is indexed under that literal prefix.
//!
//! Each bucket is its own Cedar policy set; the decision over the union is
//! assembled with Cedar's own rule (allow iff some satisfied permit and no
//! satisfied forbid), which is per-policy and so unaffected by the split.
//! Pruning only drops policies that are false for the request; the
//! differential tests compare every decision and its reasons with plain
//! `Authorizer::is_authorized` over the whole set.

use crate::load::PolicyDoc;
use crate::request::{Request, RequestError};
use crate::schema::Action;
use cedar_policy::{Authorizer, Policy, PolicySet};
use ipnet::IpNet;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// Allowed?
    pub allowed: bool,
    /// Indices (into [`PolicyDoc::policies`]) of the determining policies:
    /// satisfied permits when allowed, satisfied forbids when denied
    /// (empty: denied by default, nothing permits).
    pub determining: Vec<usize>,
    /// Policies that raised an evaluation error (Cedar skips them).
    pub errors: Vec<String>,
}

/// One way a request can meet a policy's requirement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    /// The resource is in (or equal to) this entity (`Type\0id`).
    Resource(String),
    /// `context.<attr>` starts with this literal.
    Attr(String, String),
    /// `context.ip` lies in this range.
    Ip(IpNet),
    /// `context.port` equals this.
    Port(i64),
}

impl Key {
    /// How selective a key is (higher: fewer requests match it).
    fn quality(&self) -> u8 {
        match self {
            Key::Resource(_) => 4,
            Key::Ip(n) if n.prefix_len() >= 8 => 3,
            Key::Ip(_) => 0,
            Key::Port(_) => 2,
            Key::Attr(_, p) if p.len() >= 3 => 2,
            Key::Attr(..) => 1,
        }
    }
}

/// What a policy requires of every request that satisfies it: at least one
/// of these keys matches the request.
#[derive(Debug, Clone, PartialEq)]
struct Requirement(BTreeSet<Key>);

impl Requirement {
    fn one(k: Key) -> Requirement {
        Requirement(BTreeSet::from([k]))
    }
    fn quality(&self) -> u8 {
        self.0.iter().map(Key::quality).min().unwrap_or(0)
    }
    /// Orders requirements by selectivity: key kind, then the shortest
    /// literal prefix (longer is rarer), then fewer keys.
    fn rank(&self) -> (u8, usize, std::cmp::Reverse<usize>) {
        let shortest = self
            .0
            .iter()
            .map(|k| match k {
                Key::Attr(_, p) => p.len(),
                _ => usize::MAX,
            })
            .min()
            .unwrap_or(0);
        (self.quality(), shortest, std::cmp::Reverse(self.0.len()))
    }
}

#[derive(Debug, Clone, Default)]
struct AttrIndex {
    buckets: HashMap<String, PolicySet>,
    lengths: BTreeSet<usize>,
}

#[derive(Debug, Clone, Default)]
struct Slice {
    /// Every policy of the slice (for [`Evaluator::slice`]).
    all: PolicySet,
    /// Policies with no usable requirement.
    always: PolicySet,
    by_resource: HashMap<String, PolicySet>,
    by_attr: HashMap<String, AttrIndex>,
    by_ip: HashMap<IpNet, PolicySet>,
    ip_lengths: BTreeSet<(bool, u8)>,
    by_port: HashMap<i64, PolicySet>,
}

/// Whether requests of `action` carry what `key` tests.
fn indexable(action: Action, key: &Key) -> bool {
    match key {
        Key::Resource(_) => true,
        Key::Attr(a, _) => Request::string_attr_names(action).contains(&a.as_str()),
        Key::Ip(_) => action == Action::NetworkConnect,
        Key::Port(_) => matches!(
            action,
            Action::NetworkConnect | Action::HttpRequest | Action::SecretUse
        ),
    }
}

/// Evaluates requests against a loaded policy document.
#[derive(Debug, Clone)]
pub struct Evaluator {
    slices: HashMap<Action, Slice>,
    index: HashMap<String, usize>,
    authorizer: Authorizer,
}

fn key(ty: &str, id: &str) -> String {
    format!("{ty}\0{id}")
}

impl Evaluator {
    /// Slices and indexes the document.
    pub fn new(doc: &PolicyDoc) -> Evaluator {
        let mut slices: HashMap<Action, Slice> = HashMap::new();
        let mut index = HashMap::new();
        for (i, info) in doc.policies.iter().enumerate() {
            index.insert(info.id.clone(), i);
            let Some(p) = doc.policy(i) else { continue };
            let req = requirement(p);
            let Some(facts) = doc.facts(i) else { continue };
            for a in facts.actions.iter().copied() {
                let slice = slices.entry(a).or_default();
                // Ids are unique in a loaded document, so `add` cannot fail.
                let _ = slice.all.add(p.clone());
                match &req {
                    Some(r) if r.quality() > 0 && r.0.iter().all(|k| indexable(a, k)) => {
                        for k in &r.0 {
                            let set = match k {
                                Key::Resource(key) => slice.by_resource.entry(key.clone()).or_default(),
                                Key::Attr(attr, pre) => {
                                    let ix = slice.by_attr.entry(attr.clone()).or_default();
                                    ix.lengths.insert(pre.len());
                                    ix.buckets.entry(pre.clone()).or_default()
                                }
                                Key::Ip(n) => {
                                    slice.ip_lengths.insert((n.addr().is_ipv6(), n.prefix_len()));
                                    slice.by_ip.entry(*n).or_default()
                                }
                                Key::Port(p) => slice.by_port.entry(*p).or_default(),
                            };
                            let _ = set.add(p.clone());
                        }
                    }
                    // No requirement, or one the index cannot see for this action.
                    _ => {
                        let _ = slice.always.add(p.clone());
                    }
                }
            }
        }
        Evaluator {
            slices,
            index,
            authorizer: Authorizer::new(),
        }
    }

    /// The policies that can apply to an action.
    pub fn slice(&self, action: Action) -> Option<&PolicySet> {
        self.slices.get(&action).map(|s| &s.all)
    }

    /// Decides a request.
    pub fn decide(&self, req: &Request) -> Result<Decision, RequestError> {
        let Some(slice) = self.slices.get(&req.action()) else {
            // Still validate the request, so bad input is reported the same way.
            req.resource_pairs()?;
            return Ok(Decision {
                allowed: false,
                determining: vec![],
                errors: vec![],
            });
        };
        let (res, parents) = req.resource_pairs()?;
        let mut sets: Vec<&PolicySet> = Vec::new();
        if !slice.always.is_empty() {
            sets.push(&slice.always);
        }
        for (t, id) in std::iter::once(&res).chain(parents.iter()) {
            if let Some(s) = slice.by_resource.get(&key(t, id)) {
                sets.push(s);
            }
        }
        for (attr, value) in req.string_attrs()? {
            let Some(ix) = slice.by_attr.get(attr) else {
                continue;
            };
            for len in ix.lengths.iter().take_while(|l| **l <= value.len()) {
                if let Some(s) = value.get(..*len).and_then(|pre| ix.buckets.get(pre)) {
                    sets.push(s);
                }
            }
        }
        let port = match req {
            Request::Net { port, .. } | Request::Http { port, .. } | Request::Secret { port, .. } => {
                Some(i64::from(*port))
            }
            _ => None,
        };
        if let Some(s) = port.and_then(|p| slice.by_port.get(&p)) {
            sets.push(s);
        }
        if let Request::Net { ip, .. } = req {
            let ip = ip.to_canonical();
            for (v6, len) in &slice.ip_lengths {
                if *v6 != ip.is_ipv6() {
                    continue;
                }
                if let Some(s) = IpNet::new(ip, *len)
                    .ok()
                    .and_then(|n| slice.by_ip.get(&n.trunc()))
                {
                    sets.push(s);
                }
            }
        }
        if sets.is_empty() {
            return Ok(Decision {
                allowed: false,
                determining: vec![],
                errors: vec![],
            });
        }
        let (r, e) = req.to_cedar_with(&res, &parents)?;
        let mut permits: Vec<usize> = Vec::new();
        let mut forbids: Vec<usize> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        for set in sets {
            let resp = self.authorizer.is_authorized(&r, set, &e);
            let allowed = resp.decision() == cedar_policy::Decision::Allow;
            for id in resp.diagnostics().reason() {
                if let Some(i) = self.index.get(AsRef::<str>::as_ref(id)) {
                    // Allowed: the reasons are satisfied permits; denied: satisfied forbids.
                    if allowed {
                        permits.push(*i);
                    } else {
                        forbids.push(*i);
                    }
                }
            }
            errors.extend(resp.diagnostics().errors().map(|e| e.to_string()));
        }
        let (allowed, mut determining) = if !forbids.is_empty() {
            (false, forbids)
        } else {
            (!permits.is_empty(), permits)
        };
        determining.sort_unstable();
        determining.dedup();
        errors.sort();
        errors.dedup();
        Ok(Decision {
            allowed,
            determining,
            errors,
        })
    }

    /// Index of a policy id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }
}

/// The strongest requirement a policy states (resource first).
fn requirement(p: &Policy) -> Option<Requirement> {
    let est = p.to_json().ok()?;
    let mut found: Vec<Requirement> = Vec::new();
    if let Some(r) = est.get("resource").and_then(scope_requirement) {
        found.push(r);
    }
    for c in est
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if c.get("kind").and_then(Value::as_str) == Some("when") {
            if let Some(r) = c.get("body").and_then(expr_requirement) {
                found.push(r);
            }
        }
    }
    found.into_iter().max_by_key(Requirement::rank)
}

fn entity_key(e: &Value) -> Option<String> {
    Some(key(e.get("type")?.as_str()?, e.get("id")?.as_str()?))
}

fn scope_requirement(scope: &Value) -> Option<Requirement> {
    let entity = match scope.get("op").and_then(Value::as_str)? {
        "==" | "in" => scope.get("entity")?,
        "is" => scope.get("in")?.get("entity")?,
        _ => return None,
    };
    Some(Requirement::one(Key::Resource(entity_key(entity)?)))
}

fn is_var(v: Option<&Value>, name: &str) -> bool {
    v.and_then(|v| v.get("Var")).and_then(Value::as_str) == Some(name)
}

fn context_attr(v: Option<&Value>) -> Option<String> {
    let dot = v?.get(".")?;
    is_var(dot.get("left"), "context").then_some(())?;
    dot.get("attr")?.as_str().map(str::to_string)
}

fn entity_literals(v: &Value) -> Option<BTreeSet<String>> {
    if let Some(e) = v.get("Value").and_then(|x| x.get("__entity")) {
        return Some(BTreeSet::from([entity_key(e)?]));
    }
    let items = v.get("Set")?.as_array()?;
    items
        .iter()
        .map(|i| {
            i.get("Value")
                .and_then(|x| x.get("__entity"))
                .and_then(entity_key)
        })
        .collect()
}

/// `ip("...")` as a range (a single address is its /32 or /128).
fn ip_literal(v: &Value) -> Option<IpNet> {
    let s = v.get("ip")?.as_array()?.first()?.get("Value")?.as_str()?;
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n.trunc());
    }
    s.parse::<std::net::IpAddr>().ok().map(IpNet::from)
}

fn resource_keys(v: &Value) -> Option<Requirement> {
    entity_literals(v).map(|ks| Requirement(ks.into_iter().map(Key::Resource).collect()))
}

fn expr_requirement(e: &Value) -> Option<Requirement> {
    if let Some(x) = e.get("in") {
        if is_var(x.get("left"), "resource") {
            return resource_keys(x.get("right")?);
        }
        return None;
    }
    if let Some(args) = e.get("isInRange").and_then(Value::as_array) {
        if let [l, r] = args.as_slice() {
            if context_attr(Some(l)).as_deref() == Some("ip") {
                return ip_literal(r).map(|n| Requirement::one(Key::Ip(n)));
            }
        }
        return None;
    }
    if let Some(x) = e.get("==") {
        let (l, r) = (x.get("left"), x.get("right"));
        for (a, b) in [(l, r), (r, l)] {
            let lit = b.and_then(|b| b.get("Value"));
            if is_var(a, "resource") {
                if let Some(ent) = lit.and_then(|v| v.get("__entity")) {
                    return entity_key(ent).map(|k| Requirement::one(Key::Resource(k)));
                }
            }
            match context_attr(a).as_deref() {
                Some("ip") => {
                    if let Some(n) = b
                        .and_then(ip_literal)
                        .filter(|n| n.prefix_len() == n.max_prefix_len())
                    {
                        return Some(Requirement::one(Key::Ip(n)));
                    }
                }
                Some("port") => {
                    if let Some(n) = lit.and_then(Value::as_i64) {
                        return Some(Requirement::one(Key::Port(n)));
                    }
                }
                Some(attr) => {
                    if let Some(s) = lit.and_then(Value::as_str) {
                        return Some(Requirement::one(Key::Attr(attr.to_string(), s.to_string())));
                    }
                }
                None => {}
            }
        }
        return None;
    }
    if let Some(x) = e.get("like") {
        let attr = context_attr(x.get("left"))?;
        let mut prefix = String::new();
        for part in x.get("pattern")?.as_array()? {
            match part.get("Literal").and_then(Value::as_str) {
                Some(s) => prefix.push_str(s),
                None => break,
            }
        }
        return (!prefix.is_empty()).then(|| Requirement::one(Key::Attr(attr, prefix)));
    }
    if let Some(x) = e.get("is") {
        if is_var(x.get("left"), "resource") {
            return resource_keys(x.get("in")?);
        }
        return None;
    }
    if let Some(x) = e.get("&&") {
        let l = x.get("left").and_then(expr_requirement);
        let r = x.get("right").and_then(expr_requirement);
        return match (l, r) {
            (Some(a), Some(b)) => Some(if b.rank() > a.rank() { b } else { a }),
            (a, b) => a.or(b),
        };
    }
    if let Some(x) = e.get("||") {
        // Satisfied only if one side is: one of either side's keys matches.
        let mut l = x.get("left").and_then(expr_requirement)?;
        let r = x.get("right").and_then(expr_requirement)?;
        l.0.extend(r.0);
        return Some(l);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn req(src: &str) -> Option<Requirement> {
        requirement(&Policy::from_str(src).unwrap())
    }

    #[test]
    fn requirements_are_read_from_scope_and_when_conjuncts() {
        let res = |v: &[&str]| {
            Some(Requirement(
                v.iter().map(|s| Key::Resource(s.replace("::", "\0"))).collect(),
            ))
        };
        assert_eq!(
            req(r#"permit(principal, action, resource in Dir::"/a/");"#),
            res(&["Dir::/a/"])
        );
        assert_eq!(
            req(
                r#"permit(principal, action, resource) when { context.x == 1 && resource in [Dir::"/a/", File::"/b"] };"#
            ),
            res(&["Dir::/a/", "File::/b"])
        );
        assert_eq!(
            req(
                r#"permit(principal, action, resource) when { context.path like "/api/*" || context.path == "/x" };"#
            ),
            Some(Requirement(
                [
                    Key::Attr("path".into(), "/api/".into()),
                    Key::Attr("path".into(), "/x".into())
                ]
                .into()
            ))
        );
        // A disjunction across dimensions is indexed under each.
        assert_eq!(
            req(
                r#"permit(principal, action, resource) when { resource in Host::"a" || context.port == 22 };"#
            ),
            Some(Requirement(
                [Key::Resource("Host\0a".into()), Key::Port(22)].into()
            ))
        );
        // Unless-clauses, negations and open disjuncts state no requirement.
        assert_eq!(
            req(r#"permit(principal, action, resource) unless { resource in Dir::"/a/" };"#),
            None
        );
        assert_eq!(
            req(r#"permit(principal, action, resource) when { !(resource in Dir::"/a/") };"#),
            None
        );
        assert_eq!(
            req(r#"permit(principal, action, resource) when { resource in Dir::"/a/" || context.x };"#),
            None
        );
        assert_eq!(
            req(r#"permit(principal, action, resource) when { context.path like "*x" };"#),
            None
        );
    }
}
