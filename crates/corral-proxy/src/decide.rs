//! The proxy's questions to the policy, without IO: may this connection be
//! made, may this HTTP request be sent, which headers are injected.
//!
//! * A connection (and every request on it) needs `NetworkConnect` on the
//!   host name it goes to (`context.hostname`, with the destination
//!   address as `context.ip`).
//! * A request also needs `HttpRequest` (method, scheme, port, path, query)
//!   when some policy names that action in its scope (the plan's
//!   [`Asks`](corral_policy::plan::Asks)); otherwise HTTP is governed by
//!   `NetworkConnect` alone, so a Leash policy file keeps its meaning.
//! * Header injections: the candidates are the `(header, value)` pairs of
//!   the `HttpRewrite` permits (read by the plan compiler); each is decided
//!   per host with the real authorizer, so `unless` and `forbid` hold.
//! * Placeholder secrets: `SecretUse` per secret name and host, asked by
//!   [`secret`](crate::secret) when a request carries a placeholder.
//!
//! The mode (enforce or shadow) is not part of the policy: the [`Proxy`]
//! holds it, so a policy reload and a mode switch never disagree.
//!
//! [`Proxy`]: crate::Proxy
//!
//! Injected values are held in [`Redacted`], which never prints them.

use corral_policy::{compile, CompileOptions, Decision, Evaluator, PolicyDoc, Protocol, Request};
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why the policy side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The policy did not compile.
    #[error("the policy does not compile: {0}")]
    Compile(String),
}

/// A secret string: `Debug`, `Display` and serde all print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    /// Wraps a value.
    pub fn new(v: impl Into<String>) -> Redacted {
        Redacted(v.into())
    }
    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Redacted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

pub use corral_policy::PolicyHit;

/// The answer to one question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Allowed?
    pub allowed: bool,
    /// Determining policies: the permits that allow, or the forbids that
    /// deny (empty when denied by default).
    pub policies: Vec<PolicyHit>,
    /// The action that decided a denial (`NetworkConnect`/`HttpRequest`,
    /// `SecretUse` for a secret).
    pub action: &'static str,
    /// Why, in words (for error bodies and events).
    pub reason: String,
}

/// An HTTP request as the proxy decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAsk<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Method, upper case.
    pub method: &'a str,
    /// Host name or IP literal the request is sent to.
    pub host: &'a str,
    /// Destination address.
    pub ip: IpAddr,
    /// Port.
    pub port: u16,
    /// Path without the query.
    pub path: &'a str,
    /// Query without `?`.
    pub query: &'a str,
}

/// A header to inject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Injection {
    /// Header name, as written in the policy.
    pub header: String,
    /// Value (never printed).
    pub value: Redacted,
    /// The permit it comes from.
    pub policy: PolicyHit,
}

#[derive(Debug, Clone)]
struct Candidate {
    header: String,
    value: Redacted,
}

/// The loaded policy, as the proxy asks it.
#[derive(Debug, Clone)]
pub struct ProxyPolicy {
    doc: PolicyDoc,
    ev: Evaluator,
    ask_http: bool,
    candidates: Vec<Candidate>,
    /// Host names (no wildcard) `NetworkConnect` permits name, with their
    /// port when they give one: what an opaque stream to an address may be
    /// for ([`ProxyPolicy::permitted_names`]).
    names: Vec<(String, Option<u16>)>,
    memo: Arc<Mutex<Memo>>,
}

/// Answers that depend only on the connection (principal, host, address,
/// port), kept per policy: every request on a keep-alive connection asks
/// them again, and building a Cedar request costs more than deciding it
/// (docs/BENCHMARKS.md, "Egress proxy"). A swapped-in policy is a new
/// `ProxyPolicy` with an empty memo, so an answer never outlives its
/// policy. Bounded: cleared when full.
#[derive(Debug, Default)]
struct Memo {
    connect: HashMap<(String, Option<String>, IpAddr, u16), Verdict>,
    rewrites: HashMap<(String, String, u16), Vec<Injection>>,
}

/// Entries per memo table before it is cleared.
const MEMO_MAX: usize = 4096;

fn memo_put<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>, k: K, v: V) {
    if m.len() >= MEMO_MAX {
        m.clear();
    }
    m.insert(k, v);
}

impl ProxyPolicy {
    /// Compiles `doc` for its proxy rules.
    pub fn new(doc: PolicyDoc) -> Result<ProxyPolicy, DecideError> {
        let plan = compile(&doc, &CompileOptions::default()).map_err(|d| {
            DecideError::Compile(
                d.iter()
                    .filter(|d| d.is_error())
                    .map(|d| d.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let mut candidates: Vec<Candidate> = Vec::new();
        for r in &plan.proxy.rewrites {
            let c = Candidate {
                header: r.header.clone(),
                value: Redacted::new(r.value.clone()),
            };
            if !candidates
                .iter()
                .any(|x| x.header.eq_ignore_ascii_case(&c.header) && x.value == c.value)
            {
                candidates.push(c);
            }
        }
        let mut names: Vec<(String, Option<u16>)> = Vec::new();
        for r in plan.proxy.host_rules.iter().filter(|r| r.effect == "permit") {
            for h in &r.hosts {
                if corral_policy::plan::host_literal(h).is_some() || h.starts_with('*') {
                    continue;
                }
                let (name, port) = match h.rsplit_once(':') {
                    Some((n, p)) => match p.parse::<u16>() {
                        Ok(p) => (n, Some(p)),
                        Err(_) => continue,
                    },
                    None => (h.as_str(), None),
                };
                let e = (name.to_ascii_lowercase(), port);
                if !names.contains(&e) {
                    names.push(e);
                }
            }
        }
        Ok(ProxyPolicy {
            memo: Arc::default(),
            names,
            ev: Evaluator::new(&doc),
            ask_http: plan.asks.http_request,
            candidates,
            doc,
        })
    }

    /// Whether requests are decided with `HttpRequest` (some policy names it).
    pub fn asks_http(&self) -> bool {
        self.ask_http
    }

    /// Host names a `NetworkConnect` permit names for `port` (or for any
    /// port): the names an opaque stream to an address might be for. The
    /// caller checks which of them resolve to the address, and decides
    /// with that name.
    pub fn permitted_names(&self, port: u16) -> impl Iterator<Item = &str> + '_ {
        self.names
            .iter()
            .filter(move |(_, p)| p.is_none_or(|p| p == port))
            .map(|(n, _)| n.as_str())
    }

    fn hits(&self, d: &Decision) -> Vec<PolicyHit> {
        self.doc.hits(&d.determining)
    }

    fn verdict(&self, action: &'static str, what: &str, d: Result<Decision, String>) -> Verdict {
        match d {
            Ok(d) => {
                let policies = self.hits(&d);
                let reason = if d.allowed {
                    format!("{action} allowed")
                } else if policies.is_empty() {
                    format!("no policy permits {action} for {what} (default deny)")
                } else {
                    format!("a forbid denies {action} for {what}")
                };
                Verdict {
                    allowed: d.allowed,
                    policies,
                    action,
                    reason,
                }
            }
            Err(e) => Verdict {
                allowed: false,
                policies: vec![],
                action,
                reason: format!("cannot decide {action} for {what}: {e}"),
            },
        }
    }

    /// `NetworkConnect` to `host` (a name, or an IP literal) at `ip:port`.
    pub fn decide_connect(&self, principal: &str, host: Option<&str>, ip: IpAddr, port: u16) -> Verdict {
        let key = (principal.to_string(), host.map(str::to_string), ip, port);
        if let Some(v) = self.memo().connect.get(&key) {
            return v.clone();
        }
        let v = self.decide_connect_uncached(principal, host, ip, port);
        memo_put(&mut self.memo().connect, key, v.clone());
        v
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.memo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn decide_connect_uncached(&self, principal: &str, host: Option<&str>, ip: IpAddr, port: u16) -> Verdict {
        let hostname = host.filter(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h.parse::<IpAddr>().is_err()
        });
        let req = Request::Net {
            principal: principal.to_string(),
            hostname: hostname.map(str::to_string),
            ip,
            port,
            protocol: Protocol::Tcp,
        };
        let what = format!(
            "`{}`",
            corral_policy::request::host_port(host.unwrap_or(&ip.to_string()), port)
        );
        self.verdict(
            "NetworkConnect",
            &what,
            self.ev.decide(&req).map_err(|e| e.to_string()),
        )
    }

    /// An HTTP request: `NetworkConnect` to its host, then (when the policy
    /// asks) `HttpRequest`. Denied if either denies; when allowed, the
    /// policies are the permits of both.
    pub fn decide_http(&self, principal: &str, ask: &HttpAsk<'_>) -> Verdict {
        let conn = self.decide_connect(principal, Some(ask.host), ask.ip, ask.port);
        if !conn.allowed || !self.ask_http {
            return conn;
        }
        let req = Request::Http {
            principal: principal.to_string(),
            host: ask.host.to_string(),
            port: ask.port,
            method: ask.method.to_string(),
            scheme: ask.scheme.to_string(),
            path: ask.path.to_string(),
            query: ask.query.to_string(),
        };
        let what = format!("`{} {}://{}{}`", ask.method, ask.scheme, ask.host, ask.path);
        let mut v = self.verdict(
            "HttpRequest",
            &what,
            self.ev.decide(&req).map_err(|e| e.to_string()),
        );
        if v.allowed {
            let mut all = conn.policies;
            all.extend(v.policies);
            all.dedup();
            v.policies = all;
        }
        v
    }

    /// `SecretUse`: may the real value of secret `secret` be sent to
    /// `host:port`?
    pub fn decide_secret(&self, principal: &str, host: &str, port: u16, secret: &str) -> Verdict {
        let req = Request::Secret {
            principal: principal.to_string(),
            host: host.to_string(),
            port,
            secret: secret.to_string(),
        };
        let what = format!(
            "`{secret}` to `{}`",
            corral_policy::request::host_port(host, port)
        );
        self.verdict(
            "SecretUse",
            &what,
            self.ev.decide(&req).map_err(|e| e.to_string()),
        )
    }

    /// The headers to inject into requests to `host:port` for `principal`:
    /// each candidate decided as `HttpRewrite`. When several values are
    /// permitted for one header, the first in policy order is used.
    pub fn rewrites(&self, principal: &str, host: &str, port: u16) -> Vec<Injection> {
        if self.candidates.is_empty() {
            return Vec::new();
        }
        let key = (principal.to_string(), host.to_string(), port);
        if let Some(v) = self.memo().rewrites.get(&key) {
            return v.clone();
        }
        let v = self.rewrites_uncached(principal, host, port);
        memo_put(&mut self.memo().rewrites, key, v.clone());
        v
    }

    fn rewrites_uncached(&self, principal: &str, host: &str, port: u16) -> Vec<Injection> {
        let mut out: Vec<Injection> = Vec::new();
        for c in &self.candidates {
            if out.iter().any(|i| i.header.eq_ignore_ascii_case(&c.header)) {
                continue;
            }
            let req = Request::Rewrite {
                principal: principal.to_string(),
                host: host.to_string(),
                port,
                header: c.header.clone(),
                value: c.value.expose().to_string(),
            };
            let Ok(d) = self.ev.decide(&req) else { continue };
            if !d.allowed {
                continue;
            }
            let Some(policy) = self.hits(&d).into_iter().next() else {
                continue;
            };
            out.push(Injection {
                header: c.header.clone(),
                value: c.value.clone(),
                policy,
            });
        }
        out
    }
}

/// The path a request is decided on, and sent with: `%XX` escapes of
/// unreserved characters decoded (other escapes kept, hex upper-cased),
/// `.` and `..` segments resolved, runs of `/` collapsed. A policy that
/// forbids `/admin*` then also catches `/%61dmin`, `/v1/../admin` and
/// `//admin`, which many servers treat as `/admin`. Fails on a path that
/// does not start with `/` or holds a malformed escape.
pub fn normalize_path(raw: &str) -> Result<String, String> {
    if raw == "*" {
        return Ok(raw.to_string());
    }
    if !raw.starts_with('/') {
        return Err(format!("path `{raw}` does not start with `/`"));
    }
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("path `{raw}` has a malformed `%` escape"))?;
            if hex.is_ascii_alphanumeric() || matches!(hex, b'-' | b'.' | b'_' | b'~') {
                decoded.push(char::from(hex));
            } else {
                decoded.push_str(&format!("%{hex:02X}"));
            }
            i += 3;
        } else {
            // Multi-byte UTF-8 is copied byte-run by byte-run below.
            let end = (i + 1..=bytes.len())
                .find(|j| raw.is_char_boundary(*j))
                .unwrap_or(bytes.len());
            decoded.push_str(raw.get(i..end).unwrap_or(""));
            i = end;
        }
    }
    let parts: Vec<&str> = decoded.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::new();
    let last = parts.len().saturating_sub(1);
    for (n, seg) in parts.iter().enumerate() {
        match *seg {
            "." | "" => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
        if n == last && matches!(*seg, "." | ".." | "") && !out.is_empty() {
            out.push("");
        }
    }
    Ok(format!("/{}", out.join("/")))
}

/// `host`, with `:port` unless it is the scheme's default (IPv6 in brackets).
pub fn host_with_port(host: &str, port: u16, scheme: &str) -> String {
    let default = matches!((scheme, port), ("https", 443) | ("http", 80));
    match (default, host.contains(':')) {
        (true, true) => format!("[{host}]"),
        (true, false) => host.to_string(),
        (false, _) => corral_policy::request::host_port(host, port),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use corral_policy::{load, Source};

    fn policy(text: &str) -> ProxyPolicy {
        let doc = load(vec![Source::new("p.cedar", text)]).unwrap();
        ProxyPolicy::new(doc).unwrap()
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn ask<'a>(host: &'a str, path: &'a str) -> HttpAsk<'a> {
        HttpAsk {
            scheme: "https",
            method: "GET",
            host,
            ip: LOCAL,
            port: 443,
            path,
            query: "",
        }
    }

    const BASE: &str = r#"
@id("net")
permit (principal, action == Action::"NetworkConnect", resource == Host::"api.test");
@id("http")
permit (principal, action == Action::"HttpRequest", resource == Host::"api.test");
@id("no-admin")
forbid (principal, action == Action::"HttpRequest", resource == Host::"api.test")
  when { context.path like "/admin*" };
@id("token")
permit (principal, action == Action::"HttpRewrite", resource == Host::"api.test")
  when { context.header == "Authorization" && context.value == "Bearer a b \"c\" ünï" };
"#;

    #[test]
    fn requests_are_decided_with_connect_then_http() {
        let p = policy(BASE);
        assert!(p.asks_http());
        let ok = p.decide_http("claude", &ask("api.test", "/v1"));
        assert!(ok.allowed);
        let ids: Vec<&str> = ok.policies.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["net", "http"]);
        let admin = p.decide_http("claude", &ask("api.test", "/admin/x"));
        assert!(!admin.allowed);
        assert_eq!(admin.action, "HttpRequest");
        assert_eq!(
            admin.policies,
            [PolicyHit {
                id: "no-admin".into(),
                at: "p.cedar:7".into()
            }]
        );
        let other = p.decide_http("claude", &ask("other.test", "/"));
        assert!(!other.allowed);
        assert!(other.policies.is_empty());
        assert_eq!(other.action, "NetworkConnect");
        assert!(other.reason.contains("default deny"), "{}", other.reason);
    }

    #[test]
    fn without_http_request_policies_connect_decides_alone() {
        let p = policy(
            r#"permit (principal, action == Action::"NetworkConnect", resource == Host::"api.test");"#,
        );
        assert!(!p.asks_http());
        assert!(p.decide_http("a", &ask("api.test", "/admin")).allowed);
        assert!(!p.decide_http("a", &ask("b.test", "/")).allowed);
    }

    #[test]
    fn rewrites_are_decided_per_host_and_vetoed_by_forbids() {
        let p = policy(BASE);
        let r = p.rewrites("claude", "api.test", 443);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].header, "Authorization");
        assert_eq!(r[0].value.expose(), "Bearer a b \"c\" ünï");
        assert!(p.rewrites("claude", "other.test", 443).is_empty());
        let vetoed = policy(&format!(
            "{BASE}\nforbid (principal == Agent::\"intern\", action == Action::\"HttpRewrite\", resource);"
        ));
        assert!(vetoed.rewrites("intern", "api.test", 443).is_empty());
        assert_eq!(vetoed.rewrites("claude", "api.test", 443).len(), 1);
    }

    #[test]
    fn secrets_are_decided_per_name_and_host_and_forbid_wins() {
        let text = format!(
            r#"{BASE}
@id("key") permit (principal, action == Action::"SecretUse", resource in Host::"api.test:443")
  when {{ context.secret == "API_KEY" }};
@id("no-intern") forbid (principal == Agent::"intern", action == Action::"SecretUse", resource);"#
        );
        let p = policy(&text);
        let v = p.decide_secret("claude", "api.test", 443, "API_KEY");
        assert!(v.allowed);
        assert_eq!(v.policies[0].id, "key");
        assert!(!p.decide_secret("claude", "api.test", 8443, "API_KEY").allowed);
        assert!(!p.decide_secret("claude", "other.test", 443, "API_KEY").allowed);
        assert!(!p.decide_secret("claude", "api.test", 443, "OTHER_KEY").allowed);
        let v = p.decide_secret("intern", "api.test", 443, "API_KEY");
        assert!(!v.allowed);
        assert_eq!(v.action, "SecretUse");
        assert_eq!(v.policies[0].id, "no-intern");
    }

    #[test]
    fn paths_are_normalised_before_deciding() {
        let n = |p: &str| normalize_path(p).unwrap();
        assert_eq!(n("/"), "/");
        assert_eq!(n("/v1/models"), "/v1/models");
        assert_eq!(n("/v1/models/"), "/v1/models/");
        assert_eq!(n("/%61dmin/x"), "/admin/x");
        assert_eq!(n("/v1/../admin"), "/admin");
        assert_eq!(n("/v1/./x/.."), "/v1/");
        assert_eq!(n("//admin"), "/admin");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/a%2fb%2Fc"), "/a%2Fb%2Fc");
        assert_eq!(n("/%2e%2E/admin"), "/admin");
        assert_eq!(n("/ünï/x"), "/ünï/x");
        assert!(normalize_path("/a%zz").is_err());
        assert!(normalize_path("/a%4").is_err());
        assert!(normalize_path("relative").is_err());
    }

    #[test]
    fn redacted_never_prints() {
        let r = Redacted::new("s3cret");
        assert_eq!(format!("{r} {r:?}"), "<redacted> <redacted>");
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"<redacted>\"");
        let inj = Injection {
            header: "X".into(),
            value: r,
            policy: PolicyHit {
                id: "i".into(),
                at: "f:1".into(),
            },
        };
        assert!(!format!("{inj:?}").contains("s3cret"));
        assert!(!serde_json::to_string(&inj).unwrap().contains("s3cret"));
    }
}
