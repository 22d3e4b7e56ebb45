//! Events as OCSF 1.1.0 (Open Cybersecurity Schema Framework) events.
//!
//! Each corral event becomes one event of the class that describes it:
//!
//! | corral event          | OCSF class (uid)             | activity (id)        |
//! |-----------------------|------------------------------|----------------------|
//! | `file_open`           | File System Activity (1001)  | Open (14)            |
//! | `exec`, `exec_trace`  | Process Activity (1007)      | Launch (1)           |
//! | `fork`                | Process Activity (1007)      | Launch (1)           |
//! | `exit`                | Process Activity (1007)      | Terminate (2)        |
//! | `connect`             | Network Activity (4001)      | Open (1)             |
//! | `http`                | HTTP Activity (4002)         | by method (see below)|
//! | `session_start`       | Application Lifecycle (6002) | Start (3)            |
//! | `session_end`         | Application Lifecycle (6002) | Stop (4)             |
//! | `mode_change`         | Application Lifecycle (6002) | Other (99)           |
//! | `policy_load`, `lost` | Application Lifecycle (6002) | Other (99)           |
//!
//! Session, mode, policy and lost-event records go to Application Lifecycle
//! because in 1.1.0 it is the class that "reports installation, removal,
//! start, stop of an application or service": a session is one run of the
//! corral supervisor for one agent, and its start and stop map exactly. Mode
//! switches, policy loads and lost events are changes to or incidents of that
//! run; 1.1.0's Application Lifecycle has no Update activity (added in 1.3)
//! and no other 1.1.0 class fits better (Account Change and Entity
//! Management are about identities and managed entities, Config State is a
//! discovery result), so they are Other (99) with a descriptive
//! `activity_name`, as the schema asks for unmapped activities.
//!
//! An `http` event's activity is its method: Connect (1, also every
//! `connect` stage tunnel), Delete (2), Get (3), Head (4), Options (5),
//! Post (6), Put (7), Trace (8); other methods are Other (99) named by the
//! method (1.1.0 has no Patch), a connection refused before any request is
//! Other (99) "Connection Refused", a request with no method Unknown (0).
//! `http_request` holds the method and the `url` (hostname, path, port,
//! scheme, url_string), `http_response.code` the status sent to the client
//! (absent when none was), `duration` is in ms, and `traffic` counts body
//! bytes from OCSF's point of view: `bytes_out` is source (the agent) to
//! destination, i.e. corral's `bytes_in` (what the proxy read from the
//! client), and `bytes_in` is corral's `bytes_out`. The `actor.process` is
//! there only when the kernel told the proxy which process connected
//! (`pid_known`). Injected header and secret names stay in
//! `unmapped.corral.what`; no value of either is ever in the event.
//!
//! Decisions use the security control profile (`metadata.profiles`):
//! `action_id`/`disposition_id` Allowed (1) or Denied/Blocked (2). A shadow
//! mode `would_deny` was let through, so it is Allowed, with
//! `status_detail` "would deny (shadow mode)". The deciding policies are in
//! `authorizations` (one Authorization Result per policy: its id as the
//! policy's `uid` and `name`, its `file:line` as `desc`) — 1.1.0's system and
//! network classes have no top-level `policy` attribute — and again in
//! `unmapped.corral.policies`/`policy_at`, next to everything else corral
//! knows that OCSF has no place for (the whole original `what`).
//!
//! Times: `time` is the wall-clock time the pipeline received the event, in
//! ms since the epoch; the kernel's monotonic `ts_ns` is in `unmapped`.
//!
//! Built with `serde_json::Value` rather than an OCSF crate: the Rust OCSF
//! crates on crates.io (`ocsf-types`, `ocsf-schema-rs`) are young,
//! generated from other schema versions (1.3 and later) and not pinned to
//! 1.1.0, and the few classes used here are easier to check against the
//! schema as plain JSON.

use super::{decision_name, http, layer_name, summary, target, what_name};
use crate::{kind_of, Stored};
use corral_core::{Decision, Proc, Transport, What};
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// The OCSF schema version these events follow.
pub const VERSION: &str = "1.1.0";

/// An OCSF event class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// `class_uid`.
    pub uid: u32,
    /// `class_name`.
    pub name: &'static str,
    /// `category_uid`.
    pub category_uid: u32,
    /// `category_name`.
    pub category_name: &'static str,
}

/// File System Activity (System Activity).
pub const FILE_SYSTEM_ACTIVITY: Class = Class {
    uid: 1001,
    name: "File System Activity",
    category_uid: 1,
    category_name: "System Activity",
};

/// Process Activity (System Activity).
pub const PROCESS_ACTIVITY: Class = Class {
    uid: 1007,
    name: "Process Activity",
    category_uid: 1,
    category_name: "System Activity",
};

/// Network Activity (Network Activity).
pub const NETWORK_ACTIVITY: Class = Class {
    uid: 4001,
    name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
};

/// HTTP Activity (Network Activity).
pub const HTTP_ACTIVITY: Class = Class {
    uid: 4002,
    name: "HTTP Activity",
    category_uid: 4,
    category_name: "Network Activity",
};

/// API Activity (Application Activity): MCP messages.
pub const API_ACTIVITY: Class = Class {
    uid: 6003,
    name: "API Activity",
    category_uid: 6,
    category_name: "Application Activity",
};

/// Application Lifecycle (Application Activity).
pub const APPLICATION_LIFECYCLE: Class = Class {
    uid: 6002,
    name: "Application Lifecycle",
    category_uid: 6,
    category_name: "Application Activity",
};

/// The class, `activity_id` and `activity_name` of an event.
pub fn classify(what: &What) -> (Class, u32, Cow<'static, str>) {
    let (class, id, name) = match what {
        What::FileOpen { .. } => (FILE_SYSTEM_ACTIVITY, 14, "Open"),
        What::Exec { .. } | What::ExecTrace { .. } | What::Fork { .. } => (PROCESS_ACTIVITY, 1, "Launch"),
        What::Exit { .. } => (PROCESS_ACTIVITY, 2, "Terminate"),
        What::Connect { .. } => (NETWORK_ACTIVITY, 1, "Open"),
        What::Http { stage, method, .. } => {
            let (id, name) = http_activity(stage, method);
            return (HTTP_ACTIVITY, id, name);
        }
        What::Mcp { method, .. } => {
            let name = if method.is_empty() {
                "refused"
            } else {
                method.as_str()
            };
            return (API_ACTIVITY, 99, Cow::Owned(name.to_owned()));
        }
        What::SessionStart { .. } => (APPLICATION_LIFECYCLE, 3, "Start"),
        What::SessionEnd { .. } => (APPLICATION_LIFECYCLE, 4, "Stop"),
        What::ModeChange { .. } => (APPLICATION_LIFECYCLE, 99, "Mode Change"),
        What::PolicyLoad { .. } => (APPLICATION_LIFECYCLE, 99, "Policy Load"),
        What::Lost { .. } => (APPLICATION_LIFECYCLE, 99, "Events Lost"),
    };
    (class, id, Cow::Borrowed(name))
}

/// HTTP Activity's `activity_id` and `activity_name`: the method (methods
/// are case-sensitive: `get` is not GET).
fn http_activity(stage: &str, method: &str) -> (u32, Cow<'static, str>) {
    if http::is_connection(stage) {
        return (99, Cow::Borrowed("Connection Refused"));
    }
    if stage == "connect" {
        return (1, Cow::Borrowed("Connect"));
    }
    let (id, name) = match method {
        "CONNECT" => (1, "Connect"),
        "DELETE" => (2, "Delete"),
        "GET" => (3, "Get"),
        "HEAD" => (4, "Head"),
        "OPTIONS" => (5, "Options"),
        "POST" => (6, "Post"),
        "PUT" => (7, "Put"),
        "TRACE" => (8, "Trace"),
        "" => (0, "Unknown"),
        other => return (99, Cow::Owned(other.to_owned())),
    };
    (id, Cow::Borrowed(name))
}

/// `severity_id`: 1 Informational, 2 Low, 3 Medium.
fn severity(s: &Stored) -> (u32, &'static str) {
    match (&s.event.decision, &s.event.what) {
        (Some(Decision::Deny), _) | (_, What::Lost { .. }) => (3, "Medium"),
        (_, What::PolicyLoad { error: Some(_), .. }) => (3, "Medium"),
        (Some(Decision::WouldDeny), _) => (2, "Low"),
        _ => (1, "Informational"),
    }
}

/// `status_id` (1 Success, 2 Failure) and a `status_detail` when there is
/// more to say.
fn status(s: &Stored) -> (u32, &'static str, Option<String>) {
    let failure = |detail: String| (2, "Failure", Some(detail));
    let http_error = http::error(&s.event.what).or_else(|| super::mcp::error(&s.event.what));
    match (&s.event.decision, &s.event.what) {
        (Some(Decision::Deny), _) => failure(match http_error {
            Some(e) if s.event.policies.is_empty() => format!("denied: {e}"),
            _ if s.event.policies.is_empty() => "denied: no permit (default deny)".into(),
            _ => "denied by policy".into(),
        }),
        (Some(Decision::WouldDeny), _) => (1, "Success", Some("would deny (shadow mode)".into())),
        (_, What::Lost { count }) => failure(format!("{count} events lost before reaching userspace")),
        (_, What::PolicyLoad { error: Some(e), .. }) => failure(format!("policy refused: {e}")),
        (_, What::SessionEnd { exit }) if exit.starts_with("failed") => failure(exit.clone()),
        (_, What::Http { error: Some(e), .. }) | (_, What::Mcp { error: Some(e), .. }) => failure(e.clone()),
        _ => (1, "Success", None),
    }
}

/// The last component of a path.
fn base_name(path: &str) -> &str {
    path.rsplit('/').find(|c| !c.is_empty()).unwrap_or(path)
}

/// An OCSF File object; `type_id` 0 (Unknown) unless `regular`.
fn file(path: &str, regular: bool) -> Value {
    let (type_id, type_name) = if regular {
        (1, "Regular File")
    } else {
        (0, "Unknown")
    };
    json!({ "name": base_name(path), "path": path, "type_id": type_id, "type": type_name })
}

/// The process an event is about, as an OCSF Process object.
fn process(p: &Proc) -> Value {
    let mut m = Map::new();
    m.insert("pid".into(), p.pid.into());
    m.insert("name".into(), p.comm.clone().into());
    if let Some(exe) = &p.exe {
        m.insert("file".into(), file(exe, true));
    }
    if p.ppid != 0 {
        m.insert("parent_process".into(), json!({ "pid": p.ppid }));
    }
    Value::Object(m)
}

/// The decision as an Authorization Result's `decision`.
fn decision_text(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allowed",
        Decision::Deny => "denied",
        Decision::WouldDeny => "would deny (shadow mode)",
    }
}

/// One event as an OCSF 1.1.0 event; `host` is this machine's name (the
/// `device`).
pub fn to_value(s: &Stored, host: &str) -> Value {
    let e = &s.event;
    let (class, activity_id, activity_name) = classify(&e.what);
    let (severity_id, severity_name) = severity(s);
    let (status_id, status_name, status_detail) = status(s);
    let ms = s.wall_ns / 1_000_000;
    let product = json!({
        "name": "corral",
        "vendor_name": "corral",
        "version": env!("CARGO_PKG_VERSION"),
    });

    let mut metadata = Map::new();
    metadata.insert("version".into(), VERSION.into());
    metadata.insert("product".into(), product.clone());
    if let Some(id) = s.id {
        metadata.insert("uid".into(), id.to_string().into());
    }
    metadata.insert("logged_time".into(), ms.into());
    metadata.insert("event_code".into(), what_name(&e.what).into());
    if e.decision.is_some() {
        metadata.insert("profiles".into(), json!(["security_control"]));
    }

    let mut v = Map::new();
    v.insert("class_uid".into(), class.uid.into());
    v.insert("class_name".into(), class.name.into());
    v.insert("category_uid".into(), class.category_uid.into());
    v.insert("category_name".into(), class.category_name.into());
    v.insert("activity_id".into(), activity_id.into());
    v.insert("activity_name".into(), activity_name.as_ref().into());
    v.insert(
        "type_uid".into(),
        (u64::from(class.uid) * 100 + u64::from(activity_id)).into(),
    );
    v.insert(
        "type_name".into(),
        format!("{}: {activity_name}", class.name).into(),
    );
    v.insert("time".into(), ms.into());
    v.insert("severity_id".into(), severity_id.into());
    v.insert("severity".into(), severity_name.into());
    v.insert("status_id".into(), status_id.into());
    v.insert("status".into(), status_name.into());
    if let Some(d) = status_detail {
        v.insert("status_detail".into(), d.into());
    }
    v.insert("message".into(), summary(s).into());
    v.insert("metadata".into(), Value::Object(metadata));
    let mut actor = Map::new();
    // An http event's `proc` is empty unless the kernel told the proxy.
    if !http::pid_unknown(&e.what) {
        actor.insert("process".into(), process(&e.proc));
    }
    actor.insert(
        "user".into(),
        json!({ "name": e.principal, "uid": e.principal, "type_id": 99, "type": "Agent" }),
    );
    actor.insert("session".into(), json!({ "uid": e.session.to_string() }));
    v.insert("actor".into(), Value::Object(actor));
    v.insert(
        "device".into(),
        json!({ "hostname": host, "name": host, "type_id": 0, "type": "Unknown" }),
    );

    match &e.what {
        What::FileOpen { path, .. } => {
            v.insert("file".into(), file(path, false));
        }
        What::Exec { path, argv } => {
            v.insert("process".into(), launched(&e.proc, path, argv.as_deref()));
        }
        What::ExecTrace { path, argv } => {
            v.insert("process".into(), launched(&e.proc, path, Some(argv)));
        }
        What::Fork { child } => {
            let mut p = process(&e.proc);
            if let Value::Object(m) = &mut p {
                m.insert("pid".into(), (*child).into());
                m.insert("parent_process".into(), process(&e.proc));
            }
            v.insert("process".into(), p);
        }
        What::Exit { code } => {
            v.insert("process".into(), process(&e.proc));
            v.insert("exit_code".into(), (*code).into());
        }
        What::Connect { ip, port, transport } => {
            let (name, num) = match transport {
                Transport::Tcp => ("tcp", 6),
                Transport::Udp => ("udp", 17),
            };
            let ver = if ip.is_ipv4() { 4 } else { 6 };
            v.insert(
                "dst_endpoint".into(),
                json!({ "ip": ip.to_string(), "port": port }),
            );
            v.insert("src_endpoint".into(), json!({ "hostname": host }));
            v.insert(
                "connection_info".into(),
                json!({
                    "protocol_name": name,
                    "protocol_num": num,
                    "protocol_ver_id": ver,
                    "direction_id": 2,
                    "direction": "Outbound",
                }),
            );
        }
        What::Http {
            stage,
            method,
            scheme,
            host: server,
            port,
            path,
            status,
            bytes_in,
            bytes_out,
            duration_us,
            ..
        } => {
            let path = http::shown_path(stage, path);
            let mut url = Map::new();
            url.insert("hostname".into(), server.clone().into());
            if !path.is_empty() {
                url.insert("path".into(), path.into());
            }
            url.insert("port".into(), (*port).into());
            if !scheme.is_empty() {
                url.insert("scheme".into(), scheme.clone().into());
            }
            url.insert("url_string".into(), http::url(scheme, server, *port, path).into());
            let mut request = Map::new();
            if !method.is_empty() {
                request.insert("http_method".into(), method.clone().into());
            }
            request.insert("url".into(), Value::Object(url));
            v.insert("http_request".into(), Value::Object(request));
            if let Some(code) = status {
                v.insert("http_response".into(), json!({ "code": code }));
            }
            // OCSF counts from the source (the agent): out is what it sent.
            v.insert(
                "traffic".into(),
                json!({
                    "bytes": bytes_in.saturating_add(*bytes_out),
                    "bytes_in": bytes_out,
                    "bytes_out": bytes_in,
                }),
            );
            v.insert("duration".into(), (duration_us / 1000).into());
            let dst = match server.parse::<std::net::IpAddr>() {
                Ok(ip) => json!({ "ip": ip.to_string(), "port": port }),
                Err(_) => json!({ "hostname": server, "port": port }),
            };
            v.insert("dst_endpoint".into(), dst);
            v.insert("src_endpoint".into(), json!({ "hostname": host }));
            v.insert(
                "connection_info".into(),
                json!({
                    "protocol_name": "tcp",
                    "protocol_num": 6,
                    "direction_id": 2,
                    "direction": "Outbound",
                }),
            );
        }
        What::Mcp {
            server,
            method,
            rpc_id,
            tool,
            args,
            error,
            duration_us,
            ..
        } => {
            let mut api = Map::new();
            api.insert("operation".into(), method.clone().into());
            api.insert("service".into(), json!({ "name": server }));
            let mut request = Map::new();
            if let Some(id) = rpc_id {
                request.insert("uid".into(), id.clone().into());
            }
            if let Some(t) = tool {
                request.insert("data".into(), json!({ "tool": t, "arguments": args }));
            }
            api.insert("request".into(), Value::Object(request));
            if let Some(e) = error {
                api.insert("response".into(), json!({ "error": "error", "error_message": e }));
            }
            v.insert("api".into(), Value::Object(api));
            if let Some(d) = duration_us {
                v.insert("duration".into(), (d / 1000).into());
            }
            v.insert("app".into(), product);
        }
        What::SessionStart { .. }
        | What::SessionEnd { .. }
        | What::ModeChange { .. }
        | What::PolicyLoad { .. }
        | What::Lost { .. } => {
            v.insert("app".into(), product);
        }
    }

    if let Some(d) = e.decision {
        let denied = d == Decision::Deny;
        v.insert("action_id".into(), if denied { 2 } else { 1 }.into());
        v.insert("action".into(), if denied { "Denied" } else { "Allowed" }.into());
        v.insert("disposition_id".into(), if denied { 2 } else { 1 }.into());
        v.insert(
            "disposition".into(),
            if denied { "Blocked" } else { "Allowed" }.into(),
        );
        let auth: Vec<Value> = if e.policies.is_empty() {
            vec![json!({ "decision": decision_text(d) })]
        } else {
            e.policies
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let mut policy = Map::new();
                    policy.insert("uid".into(), id.clone().into());
                    policy.insert("name".into(), id.clone().into());
                    if let Some(at) = s.policy_at.get(i).filter(|at| !at.is_empty()) {
                        policy.insert("desc".into(), at.clone().into());
                    }
                    json!({ "decision": decision_text(d), "policy": Value::Object(policy) })
                })
                .collect()
        };
        v.insert("authorizations".into(), auth.into());
    }

    let mut corral = Map::new();
    corral.insert("session".into(), e.session.to_string().into());
    corral.insert("principal".into(), e.principal.clone().into());
    corral.insert("kind".into(), kind_of(&e.what).as_str().into());
    corral.insert("layer".into(), layer_name(e.layer).into());
    if let Some(d) = e.decision {
        corral.insert("decision".into(), decision_name(d).into());
    }
    if let Some(t) = target(&e.what) {
        corral.insert("target".into(), t.into());
    }
    if !e.policies.is_empty() {
        corral.insert("policies".into(), e.policies.clone().into());
    }
    if !s.policy_at.is_empty() {
        corral.insert("policy_at".into(), s.policy_at.clone().into());
    }
    if let Some(c) = &e.mcp_call {
        corral.insert("mcp_call".into(), c.clone().into());
    }
    corral.insert("ts_ns".into(), e.ts_ns.into());
    corral.insert("wall_ns".into(), s.wall_ns.into());
    corral.insert(
        "what".into(),
        serde_json::to_value(&e.what).unwrap_or(Value::Null),
    );
    v.insert("unmapped".into(), json!({ "corral": Value::Object(corral) }));
    Value::Object(v)
}

/// The process after an exec of `path`: same pid, the new file, its
/// command line when known.
fn launched(p: &Proc, path: &str, argv: Option<&[String]>) -> Value {
    let mut m = Map::new();
    m.insert("pid".into(), p.pid.into());
    m.insert("name".into(), base_name(path).into());
    m.insert("file".into(), file(path, true));
    if let Some(a) = argv {
        m.insert("cmd_line".into(), a.join(" ").into());
    }
    m.insert("parent_process".into(), json!({ "pid": p.ppid }));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names() {
        assert_eq!(base_name("/usr/bin/curl"), "curl");
        assert_eq!(base_name("/tmp/dir/"), "dir");
        assert_eq!(base_name("/"), "/");
        assert_eq!(base_name("rel"), "rel");
    }
}
