//! Proxy and MCP rules: host-name rules the egress proxy enforces, header
//! rewrites it performs, and the policies it and the MCP layer evaluate with
//! the Cedar authorizer.

use super::{clause_diag, UserspacePart};
use crate::analyze::Facts;
use crate::diag::Diagnostic;
use crate::load::PolicyDoc;
use crate::plan::net::host_literal;
use crate::schema::Action;
use serde::Serialize;
use serde_json::Value;

/// A network policy's host literals and who enforces them.
#[derive(Debug, Clone, Serialize)]
pub struct HostRule {
    /// Policy index.
    pub policy: usize,
    /// `permit`/`forbid`.
    pub effect: &'static str,
    /// Host literals the policy mentions.
    pub hosts: Vec<String>,
    /// `proxy` for names, `proxy+kernel` when every host is an address or `*`.
    pub enforced_by: &'static str,
}

/// A header the proxy injects, from an `HttpRewrite` permit.
#[derive(Debug, Clone, Serialize)]
pub struct RewriteRule {
    /// Policy index.
    pub policy: usize,
    /// Hosts the policy names (`*` when it names none).
    pub hosts: Vec<String>,
    /// Header name.
    pub header: String,
    /// Header value, exactly as written (spaces intact). Never logged:
    /// serialized (`corral policy compile --json`) as `<redacted>`.
    #[serde(serialize_with = "redacted")]
    pub value: String,
}

/// Serializes a header value that may be a secret as `<redacted>`.
fn redacted<S: serde::Serializer>(_: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

/// What the egress proxy is told.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyPlan {
    /// `NetworkConnect` and `HttpRequest` policies that name hosts.
    pub host_rules: Vec<HostRule>,
    /// Header injections; each is re-checked per request with the Cedar
    /// authorizer, so a `forbid` on `HttpRewrite` still vetoes it.
    pub rewrites: Vec<RewriteRule>,
}

pub(super) fn compile(
    doc: &PolicyDoc,
    ev: &crate::eval::Evaluator,
    facts: &[Facts],
    diags: &mut Vec<Diagnostic>,
    userspace: &mut Vec<UserspacePart>,
) -> ProxyPlan {
    let mut plan = ProxyPlan::default();
    for (i, f) in facts.iter().enumerate() {
        let Some(info) = doc.policies.get(i) else { continue };
        let hosts: Vec<String> = f.entities_of("Host").map(str::to_string).collect();
        let net = f.actions.contains(&Action::NetworkConnect) || f.actions.contains(&Action::HttpRequest);
        if net && !hosts.is_empty() {
            let kernel = hosts.iter().all(|h| host_literal(h).is_some());
            if !kernel && f.actions.contains(&Action::NetworkConnect) {
                userspace.push(UserspacePart {
                    layer: "net-proxy",
                    policy: i,
                    reason: "connections by host name are decided by the egress proxy".into(),
                });
            }
            plan.host_rules.push(HostRule {
                policy: i,
                effect: info.effect,
                hosts: hosts.clone(),
                enforced_by: if kernel { "proxy+kernel" } else { "proxy" },
            });
        }
        if f.actions.contains(&Action::HttpRequest) {
            userspace.push(UserspacePart {
                layer: "http",
                policy: i,
                reason: "HTTP requests are decided by the egress proxy".into(),
            });
        }
        if f.actions.contains(&Action::SecretUse) {
            userspace.push(UserspacePart {
                layer: "secret",
                policy: i,
                reason: "placeholder secrets are substituted by the egress proxy".into(),
            });
        }
        if f.actions.contains(&Action::McpCall) {
            userspace.push(UserspacePart {
                layer: "mcp",
                policy: i,
                reason: "MCP calls are decided by the MCP proxy / stdio wrapper".into(),
            });
        }
        if f.actions.contains(&Action::HttpRewrite) {
            userspace.push(UserspacePart {
                layer: "rewrite",
                policy: i,
                reason: "header rewrites are applied by the egress proxy".into(),
            });
            if info.is_forbid() {
                continue;
            }
            let Some(est) = doc.policy(i).and_then(|p| p.to_json().ok()) else {
                continue;
            };
            // Only `when` conditions state what to inject; `unless` only vetoes.
            let whens: Vec<&Value> = est
                .get("conditions")
                .and_then(Value::as_array)
                .map(|c| {
                    c.iter()
                        .filter(|c| c.get("kind").and_then(Value::as_str) == Some("when"))
                        .filter_map(|c| c.get("body"))
                        .collect()
                })
                .unwrap_or_default();
            let headers: Vec<String> = whens
                .iter()
                .flat_map(|b| context_equalities(b, "header"))
                .collect();
            let values: Vec<String> = whens
                .iter()
                .flat_map(|b| context_equalities(b, "value"))
                .collect();
            match (headers.as_slice(), values.as_slice()) {
                ([h], [v]) => {
                    // The proxy re-asks Cedar per request; say so now if Cedar would never allow it.
                    let principal = f.entities_of("Agent").next().unwrap_or("agent").to_string();
                    let host = hosts
                        .iter()
                        .find(|h| crate::lint::host_form(h).is_ok() && !h.contains('*') && !h.contains(':'))
                        .cloned()
                        .unwrap_or_else(|| "corral-rewrite-check.invalid".into());
                    let req = crate::request::Request::Rewrite {
                        principal,
                        host: host.clone(),
                        port: 443,
                        header: h.clone(),
                        value: v.clone(),
                    };
                    if ev.decide(&req).is_ok_and(|d| !d.allowed) {
                        let mut d = clause_diag(
                            doc,
                            i,
                            "rewrite-never-applied",
                            &format!("the authorizer denies this rewrite for `{host}`, so the proxy would never inject `{h}`"),
                            "check `unless` clauses and forbids on `HttpRewrite`",
                            &["unless", "when"],
                        );
                        d.severity = crate::diag::Severity::Warning;
                        diags.push(d);
                    }
                    plan.rewrites.push(RewriteRule {
                        policy: i,
                        hosts: if hosts.is_empty() { vec!["*".into()] } else { hosts },
                        header: h.clone(),
                        value: v.clone(),
                    })
                }
                _ => diags.push(clause_diag(
                    doc,
                    i,
                    "rewrite-shape",
                    "an `HttpRewrite` permit must name exactly one header and one value",
                    "write `when { context.header == \"Name\" && context.value == \"the value\" }`",
                    &["context.header", "context.value", "when", "unless"],
                )),
            }
        }
    }
    plan
}

/// String literals `s` in `context.<attr> == "s"` (either side) anywhere in a policy.
fn context_equalities(v: &Value, attr: &str) -> Vec<String> {
    let mut out = Vec::new();
    collect_eq(v, attr, &mut out);
    out
}

fn collect_eq(v: &Value, attr: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(eq) = map.get("==") {
                let (l, r) = (eq.get("left"), eq.get("right"));
                for (a, b) in [(l, r), (r, l)] {
                    if let (Some(a), Some(b)) = (a, b) {
                        let is_attr = a.get(".").is_some_and(|d| {
                            d.get("attr").and_then(Value::as_str) == Some(attr)
                                && d.get("left").and_then(|x| x.get("Var")).and_then(Value::as_str)
                                    == Some("context")
                        });
                        if let (true, Some(s)) = (is_attr, b.get("Value").and_then(Value::as_str)) {
                            out.push(s.to_string());
                        }
                    }
                }
            }
            map.values().for_each(|x| collect_eq(x, attr, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_eq(x, attr, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::{compile, CompileOptions};
    use crate::{load, Source};

    fn plan(text: &str) -> crate::Plan {
        let doc = load(vec![Source::new("p.cedar", text)]).unwrap();
        compile(&doc, &CompileOptions::default()).unwrap()
    }

    #[test]
    fn rewrite_values_are_kept_exactly_but_serialized_redacted() {
        let p = plan(
            r#"@id("tok") permit (principal, action == Action::"HttpRewrite", resource == Host::"api.internal")
when { context.header == "Authorization" && context.value == "Bearer s3 \"q\" ünï" };"#,
        );
        let r = &p.proxy.rewrites[0];
        assert_eq!(r.value, "Bearer s3 \"q\" ünï");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["proxy"]["rewrites"][0]["value"], "<redacted>");
        assert_eq!(json["proxy"]["rewrites"][0]["header"], "Authorization");
        let text = json.to_string();
        assert!(!text.contains("s3") && !text.contains("ünï"), "{text}");
    }

    #[test]
    fn secret_use_policies_are_decided_in_userspace_by_the_proxy() {
        let p = plan(
            r#"@id("key") permit (principal, action == Action::"SecretUse", resource in Host::"api.x.com:443")
when { context.secret == "X_API_KEY" };
@id("net") permit (principal, action == Action::"NetworkConnect", resource in Host::"api.x.com:443");"#,
        );
        let parts: Vec<(&str, usize)> = p.userspace.iter().map(|u| (u.layer, u.policy)).collect();
        assert!(parts.contains(&("secret", 0)), "{parts:?}");
        assert!(!parts.iter().any(|(l, i)| *l == "secret" && *i == 1), "{parts:?}");
        // SecretUse is no host rule of the proxy's connection decisions.
        assert!(p.proxy.host_rules.iter().all(|r| r.policy == 1));
    }
}
