//! Syntactic facts about a policy, read from Cedar's JSON form (EST): the
//! literals it mentions and the constructs it uses. The plan compiler uses
//! them to partition request space into classes on which every policy is
//! constant; it never interprets meaning itself (Cedar evaluates).

use crate::schema::Action;
use cedar_policy::Policy;
use serde_json::Value;
use std::collections::BTreeSet;

/// What one policy mentions.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    /// Requestable actions the policy's scope can apply to.
    pub actions: BTreeSet<Action>,
    /// Entity literals `(type, id)`, from scope and conditions.
    pub entities: BTreeSet<(String, String)>,
    /// Arguments of `ip("...")` calls.
    pub ips: BTreeSet<String>,
    /// Integer literals.
    pub longs: BTreeSet<i64>,
    /// `context.<attr>` names read or tested with `has`.
    pub context_attrs: BTreeSet<String>,
    /// Uses `+`, `-`, `*` or unary negation.
    pub arithmetic: bool,
}

impl Facts {
    /// Reads the facts of a policy.
    pub fn of(policy: &Policy) -> Facts {
        let mut f = Facts::default();
        let Ok(est) = policy.to_json() else {
            // A policy Cedar cannot serialise would have failed validation.
            f.actions = Action::ALL.into_iter().collect();
            return f;
        };
        f.actions = scope_actions(est.get("action"));
        for key in ["principal", "resource"] {
            if let Some(v) = est.get(key) {
                walk(v, &mut f);
            }
        }
        if let Some(v) = est.get("conditions") {
            walk(v, &mut f);
        }
        f
    }

    /// Entity literals of one type.
    pub fn entities_of<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entities
            .iter()
            .filter(move |(t, _)| t == ty)
            .map(|(_, id)| id.as_str())
    }
}

fn scope_actions(scope: Option<&Value>) -> BTreeSet<Action> {
    let all: BTreeSet<Action> = Action::ALL.into_iter().collect();
    let Some(scope) = scope else { return all };
    let names: Vec<&str> = match scope.get("op").and_then(Value::as_str) {
        Some("==") | Some("in") if scope.get("entity").is_some() => scope
            .get("entity")
            .and_then(|e| e.get("id"))
            .and_then(Value::as_str)
            .into_iter()
            .collect(),
        Some("in") => scope
            .get("entities")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.get("id").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default(),
        _ => return all,
    };
    let is_in = scope.get("op").and_then(Value::as_str) == Some("in");
    let mut out = BTreeSet::new();
    for n in names {
        if n == "FileOpen" && is_in {
            out.insert(Action::FileOpenReadOnly);
            out.insert(Action::FileOpenReadWrite);
        } else if let Some(a) = Action::from_name(n) {
            out.insert(a);
        }
    }
    out
}

fn walk(v: &Value, f: &mut Facts) {
    match v {
        Value::Object(map) => {
            if let (Some(Value::String(t)), Some(Value::String(id))) = (map.get("type"), map.get("id")) {
                f.entities.insert((t.clone(), id.clone()));
            }
            for (k, val) in map {
                match k.as_str() {
                    "Value" => {
                        if let Some(n) = val.as_i64() {
                            f.longs.insert(n);
                        }
                    }
                    "ip" => {
                        if let Some(arr) = val.as_array() {
                            for a in arr {
                                if let Some(s) = a.get("Value").and_then(Value::as_str) {
                                    f.ips.insert(s.to_string());
                                }
                            }
                        }
                    }
                    "+" | "-" | "*" | "neg" => f.arithmetic = true,
                    "." | "has" if val.get("left") == Some(&Value::Object(ctx_var())) => {
                        if let Some(a) = val.get("attr").and_then(Value::as_str) {
                            f.context_attrs.insert(a.to_string());
                        }
                    }
                    _ => {}
                }
                walk(val, f);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| walk(x, f)),
        _ => {}
    }
}

fn ctx_var() -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("Var".into(), Value::String("context".into()));
    m
}

/// Is `id` a canonical file path as requests present it (`/a/b`)?
pub fn is_canonical_file(id: &str) -> bool {
    id != "/" && crate::request::check_path(id).is_ok_and(|p| p == id)
}

/// Is `id` a canonical directory (`/` or `/a/b/`)?
pub fn is_canonical_dir(id: &str) -> bool {
    id == "/" || (id.ends_with('/') && crate::request::check_path(id).is_ok_and(|p| format!("{p}/") == id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn collects_literals_and_context() {
        let p = Policy::from_str(
            r#"forbid(principal == Agent::"a", action in [Action::"FileOpen", Action::"ProcessExec"], resource)
               when { resource in [Dir::"/x/"] && context.ip.isInRange(ip("10.0.0.0/8")) && context.port < 1024 + 1 };"#,
        )
        .unwrap();
        let f = Facts::of(&p);
        assert!(f.entities.contains(&("Agent".into(), "a".into())));
        assert!(f.entities.contains(&("Dir".into(), "/x/".into())));
        assert!(f.ips.contains("10.0.0.0/8"));
        assert!(f.longs.contains(&1024));
        assert!(f.arithmetic);
        assert!(f.context_attrs.contains("ip") && f.context_attrs.contains("port"));
        assert_eq!(
            f.actions.iter().copied().collect::<Vec<_>>(),
            [
                Action::FileOpenReadOnly,
                Action::FileOpenReadWrite,
                Action::ProcessExec
            ]
        );
    }
}
