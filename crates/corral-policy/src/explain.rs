//! `explain`: turn a question typed on the command line into a [`Request`],
//! decide it with the Cedar authorizer, and show what the kernel plan says.

use crate::request::{check_path, normalize_host, Protocol, Request, RequestError};
use crate::schema::Action;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Why a command-line question is malformed.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Unknown action.
    #[error("unknown action `{0}`; expected one of {all}", all = Action::ALL.map(Action::name).join(", "))]
    UnknownAction(String),
    /// A `key=value` without `=`.
    #[error("context entry `{0}` is not `key=value`")]
    BadContext(String),
    /// A context key that this action does not have.
    #[error("context key `{key}` does not apply to `{action}` (keys: {allowed})")]
    UnknownKey {
        /// The key.
        key: String,
        /// The action.
        action: &'static str,
        /// Allowed keys.
        allowed: &'static str,
    },
    /// A value that does not parse.
    #[error("context `{key}`: `{value}` is not {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A required key is missing.
    #[error("`{action}` needs `--context {key}=...`")]
    Missing {
        /// The action.
        action: &'static str,
        /// The key.
        key: &'static str,
    },
    /// The resource does not fit the action.
    #[error("resource `{resource}` does not fit `{action}`: {why}")]
    BadResource {
        /// The resource as given.
        resource: String,
        /// The action.
        action: &'static str,
        /// Why.
        why: String,
    },
    /// The request could not be built.
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Address used when `NetworkConnect` names a host without `ip=`:
/// TEST-NET-1 (RFC 5737), which no real rule should mention.
pub const DEFAULT_IP: &str = "192.0.2.1";

fn strip_uid<'a>(resource: &'a str, types: &[&str]) -> &'a str {
    for t in types {
        if let Some(rest) = resource.strip_prefix(&format!("{t}::\"")) {
            return rest.strip_suffix('"').unwrap_or(rest);
        }
    }
    resource
}

/// Builds a request from `--action`, `--resource` and `--context k=v` pairs.
pub fn parse_request(
    principal: &str,
    action: &str,
    resource: &str,
    context: &[String],
) -> Result<Request, ExplainError> {
    let action = Action::from_name(action).ok_or_else(|| ExplainError::UnknownAction(action.to_string()))?;
    let mut ctx: BTreeMap<String, String> = BTreeMap::new();
    for c in context {
        let (k, v) = c
            .split_once('=')
            .ok_or_else(|| ExplainError::BadContext(c.clone()))?;
        ctx.insert(k.trim().to_string(), v.to_string());
    }
    // Keys each action's question takes (`arg.` is a prefix: one per MCP argument).
    let (keys, shown): (&[&str], &'static str) = match action {
        Action::FileOpenReadOnly | Action::FileOpenReadWrite => (&[], "none"),
        Action::ProcessExec => (&["cmdline", "argv"], "cmdline, argv (JSON array)"),
        Action::NetworkConnect => (&["ip", "port", "protocol"], "ip, port, protocol"),
        Action::HttpRequest => (
            &["method", "port", "path", "query", "scheme"],
            "method, port, path, query, scheme",
        ),
        Action::HttpRewrite => (&["header", "value", "port"], "header, value, port"),
        Action::SecretUse => (&["secret", "port"], "secret, port"),
        Action::McpCall => (&["server", "method", "arg."], "server, method, arg.<name>"),
    };
    for k in ctx.keys() {
        let ok = keys
            .iter()
            .any(|a| a == k || (a.ends_with('.') && k.starts_with(a)));
        if !ok {
            return Err(ExplainError::UnknownKey {
                key: k.clone(),
                action: action.name(),
                allowed: shown,
            });
        }
    }
    let port = |default: u16| -> Result<u16, ExplainError> {
        match ctx.get("port") {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| ExplainError::BadValue {
                key: "port".into(),
                value: v.clone(),
                expected: "a port number (0-65535)",
            }),
        }
    };
    let principal = principal.to_string();
    Ok(match action {
        Action::FileOpenReadOnly | Action::FileOpenReadWrite => {
            let is_dir =
                resource.starts_with("Dir::") || resource.ends_with('/') || resource.ends_with("/\"");
            let p = strip_uid(resource, &["File", "Dir"]);
            Request::File {
                principal,
                write: action == Action::FileOpenReadWrite,
                path: check_path(p)?,
                is_dir,
            }
        }
        Action::ProcessExec => {
            let p = check_path(strip_uid(resource, &["File"]))?;
            let argv: Vec<String> = if let Some(j) = ctx.get("argv") {
                serde_json::from_str(j).map_err(|_| ExplainError::BadValue {
                    key: "argv".into(),
                    value: j.clone(),
                    expected: "a JSON array of strings",
                })?
            } else if let Some(c) = ctx.get("cmdline") {
                c.split_whitespace().map(str::to_string).collect()
            } else {
                vec![p.clone()]
            };
            Request::Exec {
                principal,
                path: p,
                argv,
            }
        }
        Action::NetworkConnect => {
            let (host, p) = split_host_port(strip_uid(resource, &["Host"]));
            let port = resource_port(p, resource, action, || port(443))?;
            let protocol = match ctx.get("protocol").map(String::as_str) {
                None | Some("tcp") => Protocol::Tcp,
                Some("udp") => Protocol::Udp,
                Some(v) => {
                    return Err(ExplainError::BadValue {
                        key: "protocol".into(),
                        value: v.into(),
                        expected: "`tcp` or `udp`",
                    })
                }
            };
            let host = normalize_host(host)?;
            match host.parse::<IpAddr>() {
                Ok(ip) => {
                    if let Some(v) = ctx.get("ip") {
                        return Err(ExplainError::BadValue {
                            key: "ip".into(),
                            value: v.clone(),
                            expected: "allowed when the resource is already an address",
                        });
                    }
                    Request::Net {
                        principal,
                        hostname: None,
                        ip,
                        port,
                        protocol,
                    }
                }
                Err(_) => {
                    let ip_s = ctx.get("ip").map(String::as_str).unwrap_or(DEFAULT_IP);
                    let ip = ip_s.parse().map_err(|_| ExplainError::BadValue {
                        key: "ip".into(),
                        value: ip_s.into(),
                        expected: "an IPv4 or IPv6 address",
                    })?;
                    Request::Net {
                        principal,
                        hostname: Some(host),
                        ip,
                        port,
                        protocol,
                    }
                }
            }
        }
        Action::HttpRequest => {
            let r = strip_uid(resource, &["Host"]);
            let (scheme, rest) = match r.split_once("://") {
                Some((s, rest)) => (s.to_string(), rest),
                None => (ctx.get("scheme").cloned().unwrap_or_else(|| "https".into()), r),
            };
            let (authority, path_q) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (path, query) = path_q.split_once('?').unwrap_or((path_q, ""));
            let (host, p) = split_host_port(authority);
            let default_port = if scheme == "http" { 80 } else { 443 };
            let port = resource_port(p, resource, action, || port(default_port))?;
            Request::Http {
                principal,
                host: normalize_host(host)?,
                port,
                method: ctx
                    .get("method")
                    .cloned()
                    .unwrap_or_else(|| "GET".into())
                    .to_ascii_uppercase(),
                scheme,
                path: ctx.get("path").cloned().unwrap_or_else(|| path.to_string()),
                query: ctx.get("query").cloned().unwrap_or_else(|| query.to_string()),
            }
        }
        Action::HttpRewrite => {
            let (host, p) = split_host_port(strip_uid(resource, &["Host"]));
            let port = resource_port(p, resource, action, || port(443))?;
            Request::Rewrite {
                principal,
                host: normalize_host(host)?,
                port,
                header: ctx.get("header").cloned().ok_or(ExplainError::Missing {
                    action: "HttpRewrite",
                    key: "header",
                })?,
                value: ctx.get("value").cloned().ok_or(ExplainError::Missing {
                    action: "HttpRewrite",
                    key: "value",
                })?,
            }
        }
        Action::SecretUse => {
            let (host, p) = split_host_port(strip_uid(resource, &["Host"]));
            let port = resource_port(p, resource, action, || port(443))?;
            Request::Secret {
                principal,
                host: normalize_host(host)?,
                port,
                secret: ctx.get("secret").cloned().ok_or(ExplainError::Missing {
                    action: "SecretUse",
                    key: "secret",
                })?,
            }
        }
        Action::McpCall => {
            let server = ctx.get("server").cloned().ok_or(ExplainError::Missing {
                action: "McpCall",
                key: "server",
            })?;
            let method = ctx.get("method").cloned().unwrap_or_else(|| "tools/call".into());
            // `tools/call` asks about the tool (in its server); other methods about the server.
            let tool = (method == "tools/call").then(|| strip_uid(resource, &["MCP::Tool"]).to_string());
            let args = ctx
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("arg.").map(|k| (k.to_string(), v.clone())))
                .collect();
            Request::Mcp {
                principal,
                server,
                tool,
                method,
                args,
            }
        }
    })
}

/// The port written in the resource (`host:port`), else the fallback.
fn resource_port(
    written: Option<&str>,
    resource: &str,
    action: Action,
    fallback: impl FnOnce() -> Result<u16, ExplainError>,
) -> Result<u16, ExplainError> {
    match written {
        Some(p) => p.parse().map_err(|_| ExplainError::BadResource {
            resource: resource.into(),
            action: action.name(),
            why: "the port is not a number".into(),
        }),
        None => fallback(),
    }
}

fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once("]:") {
            return (h, Some(p));
        }
        return (rest.trim_end_matches(']'), None);
    }
    if s.matches(':').count() == 1 {
        if let Some((h, p)) = s.split_once(':') {
            return (h, Some(p));
        }
    }
    (s, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        let r = parse_request("claude", "FileOpenReadOnly", "/etc/", &[]).unwrap();
        assert!(matches!(r, Request::File { is_dir: true, ref path, .. } if path == "/etc"));
        let r = parse_request("c", "NetworkConnect", "[::ffff:10.0.0.1]:22", &[]).unwrap();
        assert!(matches!(
            r,
            Request::Net {
                hostname: None,
                port: 22,
                ..
            }
        ));
        let r = parse_request(
            "c",
            "HttpRequest",
            "http://Example.com:8080/a/b?x=1",
            &["method=post".into()],
        )
        .unwrap();
        assert!(
            matches!(r, Request::Http { ref host, port: 8080, ref method, ref path, ref query, .. }
            if host == "example.com" && method == "POST" && path == "/a/b" && query == "x=1")
        );
        assert!(matches!(
            parse_request("c", "FileOpen", "/x", &[]),
            Err(ExplainError::UnknownAction(_))
        ));
        assert!(matches!(
            parse_request("c", "FileOpenReadOnly", "/x", &["ip=1.2.3.4".into()]),
            Err(ExplainError::UnknownKey { .. })
        ));
    }

    #[test]
    fn parses_secret_use() {
        let r = parse_request(
            "claude",
            "SecretUse",
            "Host::\"API.Anthropic.com\"",
            &["secret=ANTHROPIC_API_KEY".into()],
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Secret {
                principal: "claude".into(),
                host: "api.anthropic.com".into(),
                port: 443,
                secret: "ANTHROPIC_API_KEY".into(),
            }
        );
        // The port comes from the resource, else from `port=`.
        let r = parse_request("c", "SecretUse", "h.test:8443", &["secret=K".into()]).unwrap();
        assert!(matches!(r, Request::Secret { port: 8443, .. }));
        let r = parse_request("c", "SecretUse", "h.test", &["secret=K".into(), "port=80".into()]).unwrap();
        assert!(matches!(r, Request::Secret { port: 80, .. }));
        assert!(matches!(
            parse_request("c", "SecretUse", "h.test", &[]),
            Err(ExplainError::Missing { key: "secret", .. })
        ));
        let e =
            parse_request("c", "SecretUse", "h.test", &["secret=K".into(), "value=v".into()]).unwrap_err();
        assert!(matches!(e, ExplainError::UnknownKey { .. }));
        assert_eq!(
            e.to_string(),
            "context key `value` does not apply to `SecretUse` (keys: secret, port)"
        );
        // The list of actions in the error names every action.
        let e = parse_request("c", "Secret", "h.test", &[])
            .unwrap_err()
            .to_string();
        for a in Action::ALL {
            assert!(e.contains(a.name()), "{e}");
        }
    }
}
