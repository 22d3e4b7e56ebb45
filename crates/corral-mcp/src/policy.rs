//! `McpCall` decisions.
//!
//! * `tools/call` is decided with Cedar's semantics: allowed iff some
//!   permit applies and no forbid does (default deny), so a list of
//!   permitted tools is a true allowlist. The resource is
//!   `MCP::Tool::"<name>"` in `MCP::Server::"<server>"`; the call's
//!   top-level arguments are tags of `context.args`.
//! * Every other request (`initialize`, `tools/list`, `resources/read`,
//!   `prompts/get`, ...) is decided on `MCP::Server::"<server>"` by the
//!   forbids alone: a forbid that applies denies it; otherwise it goes
//!   through, so an allowlist of tools does not also have to permit the
//!   protocol's housekeeping. Its params are the tags of `context.args`.
//! * A policy that never names `McpCall` makes the layer observe, not
//!   decide (so a Leash policy file keeps working under default deny).
//! * `tools/list` results hide a tool whose call the policy denies
//!   whatever its arguments: denied with no arguments, and no permit that
//!   could apply to `McpCall` reads `context.args`.

use corral_policy::{Action, Evaluator, PolicyDoc, Request};
use serde::Serialize;
use std::collections::BTreeMap;

pub use corral_policy::PolicyHit;

/// The answer to one question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Allowed?
    pub allowed: bool,
    /// Whether the policy decided (false: no policy names `McpCall`, the
    /// call is observed and let through).
    pub decided: bool,
    /// Determining policies: the permits that allow, or the forbids that
    /// deny (empty when denied by default).
    pub policies: Vec<PolicyHit>,
    /// Why, in words.
    pub reason: String,
}

/// The loaded policy, as the MCP layer asks it.
#[derive(Debug, Clone)]
pub struct McpPolicy {
    doc: PolicyDoc,
    ev: Evaluator,
    asks: bool,
    permits_read_args: bool,
}

impl McpPolicy {
    /// Prepares a loaded policy for MCP decisions (no plan is compiled:
    /// the layer needs only whether `McpCall` is asked, and the policies).
    pub fn new(doc: PolicyDoc) -> McpPolicy {
        let permits_read_args = (0..doc.policies.len()).any(|i| {
            doc.policies.get(i).is_some_and(|p| !p.is_forbid())
                && doc
                    .facts(i)
                    .is_some_and(|f| f.actions.contains(&Action::McpCall) && f.context_attrs.contains("args"))
        });
        McpPolicy {
            ev: Evaluator::new(&doc),
            asks: corral_policy::plan::asks(&doc).mcp_call,
            permits_read_args,
            doc,
        }
    }

    /// Whether the policy decides MCP requests (some policy names `McpCall`).
    pub fn asks(&self) -> bool {
        self.asks
    }

    /// Decides one request. `tool` is the tool of a `tools/call`.
    pub fn decide(
        &self,
        principal: &str,
        server: &str,
        method: &str,
        tool: Option<&str>,
        args: &BTreeMap<String, String>,
    ) -> Verdict {
        if !self.asks {
            return Verdict {
                allowed: true,
                decided: false,
                policies: vec![],
                reason: "no policy names McpCall: observed, not decided".into(),
            };
        }
        let req = Request::Mcp {
            principal: principal.to_string(),
            server: server.to_string(),
            tool: tool.map(str::to_string),
            method: method.to_string(),
            args: args.clone(),
        };
        let what = match tool {
            Some(t) => format!("tool `{t}` of MCP server `{server}`"),
            None => format!("`{method}` on MCP server `{server}`"),
        };
        match self.ev.decide(&req) {
            Ok(d) => {
                let policies = self.doc.hits(&d.determining);
                // Not a tool call: only a forbid denies.
                let allowed = d.allowed || (tool.is_none() && policies.is_empty());
                let reason = if allowed && tool.is_none() && !d.allowed {
                    format!("no forbid applies to {what}")
                } else if allowed {
                    format!("McpCall allowed for {what}")
                } else if policies.is_empty() {
                    format!("no policy permits McpCall for {what} (default deny)")
                } else {
                    format!("a forbid denies McpCall for {what}")
                };
                Verdict {
                    allowed,
                    decided: true,
                    policies: if allowed && !d.allowed { vec![] } else { policies },
                    reason,
                }
            }
            Err(e) => Verdict {
                allowed: false,
                decided: true,
                policies: vec![],
                reason: format!("cannot decide McpCall for {what}: {e}"),
            },
        }
    }

    /// Whether a `tools/list` result hides `tool`: its call is denied with
    /// no arguments, and no permit reads the arguments. Returns the verdict
    /// that hides it.
    pub fn hides(&self, principal: &str, server: &str, tool: &str) -> Option<Verdict> {
        if !self.asks {
            return None;
        }
        let v = self.decide(principal, server, "tools/call", Some(tool), &BTreeMap::new());
        (!v.allowed && (!self.permits_read_args || !v.policies.is_empty())).then_some(v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use corral_policy::Source;

    fn policy(text: &str) -> McpPolicy {
        let doc = corral_policy::load(vec![Source::new("p.cedar", text)]).unwrap();
        McpPolicy::new(doc)
    }

    fn call(p: &McpPolicy, tool: &str, args: &[(&str, &str)]) -> Verdict {
        let args = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        p.decide("claude", "everything", "tools/call", Some(tool), &args)
    }

    #[test]
    fn without_mcp_policies_calls_are_observed() {
        let p = policy("permit (principal, action == Action::\"ProcessExec\", resource);");
        let v = call(&p, "anything", &[]);
        assert!(v.allowed && !v.decided);
        assert!(p.hides("claude", "everything", "anything").is_none());
    }

    #[test]
    fn permit_and_forbid_follow_cedar() {
        let p = policy(
            r#"@id("mcp-all") permit (principal, action == Action::"McpCall", resource in MCP::Server::"everything");
@id("no-env") forbid (principal, action == Action::"McpCall", resource == MCP::Tool::"printEnv");
@id("no-etc") forbid (principal, action == Action::"McpCall", resource) when { context.args.hasTag("path") && context.args.getTag("path") like "/etc/*" };"#,
        );
        let v = call(&p, "echo", &[("message", "hi")]);
        assert!(v.allowed && v.decided);
        assert_eq!(v.policies[0].id, "mcp-all");
        let v = call(&p, "printEnv", &[]);
        assert!(!v.allowed);
        assert_eq!(v.policies[0].id, "no-env");
        assert_eq!(v.policies[0].at, "p.cedar:2");
        assert!(!call(&p, "read", &[("path", "/etc/shadow")]).allowed);
        assert!(call(&p, "read", &[("path", "/tmp/x")]).allowed);
        // Another server: nothing permits it.
        let v = p.decide("claude", "other", "tools/call", Some("echo"), &BTreeMap::new());
        assert!(!v.allowed && v.policies.is_empty());
        assert!(v.reason.contains("default deny"));
        // Hidden from tools/list: printEnv (forbid), not echo; `read` stays
        // listed (only some arguments are denied).
        assert!(p.hides("claude", "everything", "printEnv").is_some());
        assert!(p.hides("claude", "everything", "echo").is_none());
        assert!(p.hides("claude", "everything", "read").is_none());
    }

    #[test]
    fn an_allowlist_does_not_block_housekeeping_but_a_server_forbid_does() {
        let p = policy(
            r#"permit (principal, action == Action::"McpCall", resource == MCP::Tool::"echo");
@id("no-evil") forbid (principal, action == Action::"McpCall", resource == MCP::Server::"evil");"#,
        );
        assert!(call(&p, "echo", &[]).allowed);
        assert!(!call(&p, "add", &[]).allowed);
        assert!(p.hides("claude", "everything", "add").is_some());
        let init = p.decide("claude", "everything", "initialize", None, &BTreeMap::new());
        assert!(init.allowed && init.policies.is_empty());
        let evil = p.decide("claude", "evil", "tools/list", None, &BTreeMap::new());
        assert!(!evil.allowed);
        assert_eq!(evil.policies[0].id, "no-evil");
    }

    #[test]
    fn a_permit_reading_arguments_keeps_the_tool_listed() {
        let p = policy(
            r#"permit (principal, action == Action::"McpCall", resource == MCP::Tool::"fetch") when { context.args.hasTag("url") && context.args.getTag("url") like "https://docs.*" };"#,
        );
        assert!(p.hides("claude", "s", "fetch").is_none());
        assert!(call(&p, "fetch", &[("url", "https://docs.rs/x")]).allowed);
        assert!(!call(&p, "fetch", &[("url", "https://evil")]).allowed);
    }
}
