//! Requests: the typed questions enforcement layers ask, and how each becomes
//! a Cedar request with its entity hierarchy.
//!
//! * paths: `File::"/a/b/c"` is in `Dir::"/a/b/"`, `Dir::"/a/"`, `Dir::"/"`;
//!   a directory is asked about as `Dir::"/a/b/"` (in itself, Cedar's `in`
//!   being reflexive, and in its ancestors);
//! * hosts: the resource is the bare host, in `Host::"<host>:<port>"`, every
//!   `Host::"*.<zone>"` and `Host::"*.<zone>:<port>"` of a DNS name,
//!   `Host::"*:<port>"` and `Host::"*"`.

use crate::schema::{action_entities, uid, Action};
use cedar_policy::{Context, Entities, Entity, EntityUid, RestrictedExpression};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Why a request could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// A path that is not absolute and canonical.
    #[error("path `{0}` is not absolute: enforcement layers ask about absolute, canonical paths")]
    RelativePath(String),
    /// `.`/`..` components or NUL.
    #[error("path `{0}` is not canonical: `.` and `..` components and NUL bytes never reach a decision")]
    NonCanonicalPath(String),
    /// An empty or malformed host.
    #[error("host `{0}` is not a valid host name or IP address")]
    BadHost(String),
    /// Cedar refused to build the context or entities.
    #[error("cannot build the Cedar request: {0}")]
    Cedar(String),
}

/// Transport protocol of a network request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP connect (or TCP Fast Open send).
    Tcp,
    /// UDP connect or send.
    Udp,
}

impl Protocol {
    /// `"tcp"` / `"udp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A question to the policy, typed by layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// A file or directory open.
    File {
        /// Agent name.
        principal: String,
        /// Write access requested.
        write: bool,
        /// Absolute canonical path.
        path: String,
        /// The object is a directory.
        is_dir: bool,
    },
    /// A program execution.
    Exec {
        /// Agent name.
        principal: String,
        /// Absolute path of the executed file.
        path: String,
        /// Arguments, argv[0] included.
        argv: Vec<String>,
    },
    /// A network connect or datagram send.
    Net {
        /// Agent name.
        principal: String,
        /// Host name (proxy) or `None` for a direct connection by address.
        hostname: Option<String>,
        /// Destination address (v4-mapped v6 is turned into v4).
        ip: IpAddr,
        /// Destination port.
        port: u16,
        /// TCP or UDP.
        protocol: Protocol,
    },
    /// One HTTP request seen by the proxy.
    Http {
        /// Agent name.
        principal: String,
        /// Host (name or address).
        host: String,
        /// Port.
        port: u16,
        /// Method, upper case.
        method: String,
        /// `http` or `https`.
        scheme: String,
        /// Path without query.
        path: String,
        /// Query string without `?`.
        query: String,
    },
    /// May header `header: value` be injected into requests to `host`?
    Rewrite {
        /// Agent name.
        principal: String,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Header name.
        header: String,
        /// Header value.
        value: String,
    },
    /// May the real value of placeholder secret `secret` be sent to `host`?
    Secret {
        /// Agent name.
        principal: String,
        /// Host the request goes to.
        host: String,
        /// Port.
        port: u16,
        /// Secret name (the environment variable, e.g. `ANTHROPIC_API_KEY`).
        secret: String,
    },
    /// An MCP request.
    Mcp {
        /// Agent name.
        principal: String,
        /// Server id (HTTP host or wrapped server name).
        server: String,
        /// Tool name for `tools/call`.
        tool: Option<String>,
        /// JSON-RPC method.
        method: String,
        /// Top-level tool arguments as strings.
        args: BTreeMap<String, String>,
    },
}

impl Request {
    /// The action this request carries.
    pub fn action(&self) -> Action {
        match self {
            Request::File { write: false, .. } => Action::FileOpenReadOnly,
            Request::File { write: true, .. } => Action::FileOpenReadWrite,
            Request::Exec { .. } => Action::ProcessExec,
            Request::Net { .. } => Action::NetworkConnect,
            Request::Http { .. } => Action::HttpRequest,
            Request::Rewrite { .. } => Action::HttpRewrite,
            Request::Secret { .. } => Action::SecretUse,
            Request::Mcp { .. } => Action::McpCall,
        }
    }

    /// The principal's name.
    pub fn principal(&self) -> &str {
        match self {
            Request::File { principal, .. }
            | Request::Exec { principal, .. }
            | Request::Net { principal, .. }
            | Request::Http { principal, .. }
            | Request::Rewrite { principal, .. }
            | Request::Secret { principal, .. }
            | Request::Mcp { principal, .. } => principal,
        }
    }

    /// The resource entity uid, as the request presents it.
    pub fn resource_uid(&self) -> Result<EntityUid, RequestError> {
        let ((t, id), _) = self.resource_pairs()?;
        Ok(uid(t, &id))
    }

    /// The resource as `(type, id)` and its ancestors (all of them, as
    /// direct parents: the list is transitively closed).
    pub fn resource_pairs(&self) -> Result<(Pair, Vec<Pair>), RequestError> {
        match self {
            Request::File { path, is_dir, .. } => {
                let p = check_path(path)?;
                // The root is always a directory.
                Ok(path_pairs(&p, *is_dir || p == "/"))
            }
            Request::Exec { path, .. } => {
                let p = check_path(path)?;
                Ok(path_pairs(&p, false))
            }
            Request::Net {
                hostname, ip, port, ..
            } => {
                let host = match hostname {
                    Some(h) => normalize_host(h)?,
                    None => ip_text(*ip),
                };
                Ok(host_pairs(host, *port))
            }
            Request::Http { host, port, .. }
            | Request::Rewrite { host, port, .. }
            | Request::Secret { host, port, .. } => Ok(host_pairs(normalize_host(host)?, *port)),
            Request::Mcp { server, tool, .. } => {
                let srv = ("MCP::Server", server.clone());
                match tool {
                    Some(t) => Ok((("MCP::Tool", t.clone()), vec![srv])),
                    None => Ok((srv, vec![])),
                }
            }
        }
    }

    /// The string-valued context attributes this action's requests carry,
    /// by name. The evaluator indexes policies only on these.
    pub fn string_attr_names(action: Action) -> &'static [&'static str] {
        match action {
            Action::FileOpenReadOnly | Action::FileOpenReadWrite => &[],
            Action::ProcessExec => &["cmdline"],
            Action::NetworkConnect => &["protocol", "hostname"],
            Action::HttpRequest => &["method", "scheme", "path", "query"],
            Action::HttpRewrite => &["header", "value"],
            Action::SecretUse => &["secret"],
            Action::McpCall => &["method", "server", "tool"],
        }
    }

    /// Values of [`Request::string_attr_names`], exactly as the Cedar
    /// context carries them.
    pub fn string_attrs(&self) -> Result<Vec<(&'static str, String)>, RequestError> {
        Ok(match self {
            Request::File { .. } => vec![],
            Request::Exec { argv, .. } => vec![("cmdline", argv.join(" "))],
            Request::Net {
                protocol, hostname, ..
            } => vec![
                ("protocol", protocol.as_str().to_string()),
                (
                    "hostname",
                    hostname
                        .as_deref()
                        .map(normalize_host)
                        .transpose()?
                        .unwrap_or_default(),
                ),
            ],
            Request::Http {
                method,
                scheme,
                path,
                query,
                ..
            } => vec![
                ("method", method.clone()),
                ("scheme", scheme.clone()),
                ("path", path.clone()),
                ("query", query.clone()),
            ],
            Request::Rewrite { header, value, .. } => {
                vec![("header", header.clone()), ("value", value.clone())]
            }
            Request::Secret { secret, .. } => vec![("secret", secret.clone())],
            Request::Mcp {
                server, method, tool, ..
            } => vec![
                ("server", server.clone()),
                ("method", method.clone()),
                ("tool", tool.clone().unwrap_or_default()),
            ],
        })
    }

    fn context(&self) -> Result<(Context, Vec<Entity>), RequestError> {
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        let mut extra = Vec::new();
        let pairs: Vec<(String, RestrictedExpression)> = match self {
            Request::File { .. } => vec![],
            Request::Exec { argv, .. } => vec![
                ("cmdline".into(), s(&argv.join(" "))),
                (
                    "argv".into(),
                    RestrictedExpression::new_set(argv.iter().map(|a| s(a))),
                ),
                ("argc".into(), RestrictedExpression::new_long(argv.len() as i64)),
            ],
            Request::Net {
                hostname,
                ip,
                port,
                protocol,
                ..
            } => vec![
                ("ip".into(), RestrictedExpression::new_ip(ip_text(*ip))),
                ("port".into(), RestrictedExpression::new_long(i64::from(*port))),
                ("protocol".into(), s(protocol.as_str())),
                (
                    "hostname".into(),
                    s(&hostname
                        .as_deref()
                        .map(normalize_host)
                        .transpose()?
                        .unwrap_or_default()),
                ),
            ],
            Request::Http {
                port,
                method,
                scheme,
                path,
                query,
                ..
            } => vec![
                ("method".into(), s(method)),
                ("scheme".into(), s(scheme)),
                ("port".into(), RestrictedExpression::new_long(i64::from(*port))),
                ("path".into(), s(path)),
                ("query".into(), s(query)),
            ],
            Request::Rewrite { header, value, .. } => {
                vec![("header".into(), s(header)), ("value".into(), s(value))]
            }
            Request::Secret { port, secret, .. } => vec![
                ("secret".into(), s(secret)),
                ("port".into(), RestrictedExpression::new_long(i64::from(*port))),
            ],
            Request::Mcp {
                server,
                tool,
                method,
                args,
                ..
            } => {
                let args_uid = uid("MCP::Arguments", "request");
                let e = Entity::new_with_tags(
                    args_uid.clone(),
                    [],
                    [],
                    args.iter().map(|(k, v)| (k.clone(), s(v))),
                )
                .map_err(|e| RequestError::Cedar(e.to_string()))?;
                extra.push(e);
                vec![
                    ("method".into(), s(method)),
                    ("server".into(), s(server)),
                    ("tool".into(), s(tool.as_deref().unwrap_or(""))),
                    ("args".into(), RestrictedExpression::new_entity_uid(args_uid)),
                ]
            }
        };
        let ctx = Context::from_pairs(pairs).map_err(|e| RequestError::Cedar(e.to_string()))?;
        Ok((ctx, extra))
    }

    /// The Cedar request and entities for this question.
    pub fn to_cedar(&self) -> Result<(cedar_policy::Request, Entities), RequestError> {
        let (res, parents) = self.resource_pairs()?;
        self.to_cedar_with(&res, &parents)
    }

    /// [`Request::to_cedar`] with the resource pairs already computed (the
    /// evaluator needs them for its index first).
    pub(crate) fn to_cedar_with(
        &self,
        res: &Pair,
        parents: &[Pair],
    ) -> Result<(cedar_policy::Request, Entities), RequestError> {
        let res_uid = uid(res.0, &res.1);
        let parents: Vec<EntityUid> = parents.iter().map(|(t, id)| uid(t, id)).collect();
        let res = res_uid;
        let (ctx, mut extra) = self.context()?;
        extra.push(Entity::new_no_attrs(res.clone(), parents.into_iter().collect()));
        // Only the request's own action entity matters for `action in ...`
        // (Cedar looks up the request action's ancestors, never another
        // action's); adding just that one keeps the store, and the
        // transitive-closure pass Cedar runs over it, small.
        let action = self.action().uid();
        if let Some(a) = action_entities().get(&action) {
            extra.push(a.clone());
        }
        let entities =
            Entities::from_entities(extra, None).map_err(|e| RequestError::Cedar(e.to_string()))?;
        let req = cedar_policy::Request::new(uid("Agent", self.principal()), action, res, ctx, None)
            .map_err(|e| RequestError::Cedar(e.to_string()))?;
        Ok((req, entities))
    }
}

/// Checks that a path is absolute and canonical; removes a trailing slash
/// (except for `/`).
pub fn check_path(path: &str) -> Result<String, RequestError> {
    if !path.starts_with('/') {
        return Err(RequestError::RelativePath(path.to_string()));
    }
    if path.contains('\0') || path.split('/').any(|c| c == "." || c == "..") {
        return Err(RequestError::NonCanonicalPath(path.to_string()));
    }
    let mut out = String::with_capacity(path.len());
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        out.push('/');
        out.push_str(comp);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The proper ancestor directories of a canonical path, deepest first,
/// each with a trailing slash: `/a/b/c` → `/a/b/`, `/a/`, `/`.
pub fn ancestor_dirs(path: &str) -> impl Iterator<Item = &str> {
    let mut end = path.len();
    std::iter::from_fn(move || {
        if end == 0 {
            return None;
        }
        let cut = path[..end].trim_end_matches('/').rfind('/')?;
        end = cut;
        Some(&path[..=cut])
    })
}

/// An entity as `(type name, id)`.
pub type Pair = (&'static str, String);

/// Resource and ancestors of a canonical path.
fn path_pairs(path: &str, is_dir: bool) -> (Pair, Vec<Pair>) {
    let parents: Vec<Pair> = ancestor_dirs(path).map(|d| ("Dir", d.to_string())).collect();
    if is_dir {
        let id = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        (("Dir", id), parents)
    } else {
        (("File", path.to_string()), parents)
    }
}

/// Canonical text of an address: v4-mapped v6 becomes v4.
pub fn ip_text(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// Lower-cases a host name and removes a final dot; IP literals become
/// canonical (`[::1]` → `::1`).
pub fn normalize_host(h: &str) -> Result<String, RequestError> {
    let t = h.trim().trim_end_matches('.');
    let t = t.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(t);
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(ip_text(ip));
    }
    if t.is_empty()
        || t.len() > 253
        || !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err(RequestError::BadHost(h.to_string()));
    }
    Ok(t.to_ascii_lowercase())
}

/// `host:port`, with brackets for IPv6.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The `Host` groups a host belongs to on a given port.
pub fn host_groups(host: &str, port: u16) -> Vec<String> {
    let mut g = vec![host_port(host, port)];
    if host.parse::<IpAddr>().is_err() {
        let mut rest = host;
        while let Some(i) = rest.find('.') {
            rest = &rest[i + 1..];
            if rest.is_empty() {
                break;
            }
            g.push(format!("*.{rest}"));
            g.push(format!("*.{rest}:{port}"));
        }
    }
    g.push(format!("*:{port}"));
    g.push("*".to_string());
    g
}

fn host_pairs(host: String, port: u16) -> (Pair, Vec<Pair>) {
    let parents = host_groups(&host, port)
        .into_iter()
        .map(|g| ("Host", g))
        .collect();
    (("Host", host), parents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_whole_components() {
        let v: Vec<_> = ancestor_dirs("/usr/bin/nmap").collect();
        assert_eq!(v, ["/usr/bin/", "/usr/", "/"]);
        assert_eq!(ancestor_dirs("/").count(), 0);
        assert_eq!(ancestor_dirs("/a").collect::<Vec<_>>(), ["/"]);
    }

    #[test]
    fn paths_must_be_canonical() {
        assert_eq!(check_path("//a//b/").as_deref(), Ok("/a/b"));
        assert!(matches!(check_path("a/b"), Err(RequestError::RelativePath(_))));
        assert!(matches!(
            check_path("/a/../b"),
            Err(RequestError::NonCanonicalPath(_))
        ));
    }

    #[test]
    fn secret_use_asks_about_the_host_with_the_secret_name_and_port() {
        let r = Request::Secret {
            principal: "claude".into(),
            host: "API.Anthropic.com.".into(),
            port: 443,
            secret: "ANTHROPIC_API_KEY".into(),
        };
        assert_eq!(r.action(), Action::SecretUse);
        assert_eq!(r.principal(), "claude");
        let ((t, id), parents) = r.resource_pairs().unwrap();
        assert_eq!((t, id.as_str()), ("Host", "api.anthropic.com"));
        let groups: Vec<&str> = parents.iter().map(|(_, g)| g.as_str()).collect();
        assert_eq!(groups, host_groups("api.anthropic.com", 443));
        assert_eq!(
            r.string_attrs().unwrap(),
            [("secret", "ANTHROPIC_API_KEY".to_string())]
        );
        assert_eq!(Request::string_attr_names(Action::SecretUse), ["secret"]);
        // The context conforms to the schema (strict: `secret` and `port`, nothing else).
        let (req, _) = r.to_cedar().unwrap();
        let ctx = req.context().unwrap().clone();
        cedar_policy::Request::new(
            req.principal().unwrap().clone(),
            req.action().unwrap().clone(),
            req.resource().unwrap().clone(),
            ctx,
            Some(crate::schema::schema()),
        )
        .unwrap();
        let bad = Request::Secret {
            principal: "claude".into(),
            host: "not a host".into(),
            port: 443,
            secret: "X".into(),
        };
        assert!(matches!(bad.to_cedar(), Err(RequestError::BadHost(_))));
    }

    #[test]
    fn host_groups_cover_zones_and_ports() {
        let g = host_groups("api.example.com", 443);
        assert_eq!(
            g,
            [
                "api.example.com:443",
                "*.example.com",
                "*.example.com:443",
                "*.com",
                "*.com:443",
                "*:443",
                "*"
            ]
        );
        assert_eq!(host_groups("2001:db8::1", 53), ["[2001:db8::1]:53", "*:53", "*"]);
        assert_eq!(normalize_host("[::ffff:10.0.0.1]").as_deref(), Ok("10.0.0.1"));
        assert_eq!(
            normalize_host("API.Example.COM.").as_deref(),
            Ok("api.example.com")
        );
    }
}
