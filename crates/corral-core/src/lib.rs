//! corral's shared vocabulary: the typed events every enforcement layer
//! emits, and the identifiers that tie them to a session.
//!
//! Events are plain data; no layer-specific types leak in here, so the audit
//! store, the UI and the kernel crate agree on one shape.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A session's identifier (unique on this host while it runs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u32);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied; the caller saw an error.
    Deny,
    /// Shadow mode: the policy denies, but the request was let through.
    WouldDeny,
}

/// Where a decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// A BPF LSM program.
    BpfLsm,
    /// A cgroup socket-address BPF program.
    CgroupBpf,
    /// fanotify permission events (the fallback where BPF LSM is unavailable).
    Fanotify,
    /// The Cedar authorizer in userspace (exec arguments).
    Userspace,
    /// A tracepoint (telemetry only, no decision).
    Tracepoint,
    /// The egress proxy in userspace (HTTP requests and the connections it
    /// refuses).
    Proxy,
    /// The MCP layer: the stdio wrapper's supervisor side, or MCP over HTTP
    /// in the egress proxy.
    Mcp,
}

/// How a file was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Read only.
    Read,
    /// Writable (read-write or write-only).
    Write,
    /// Opened to be executed.
    Exec,
}

/// Transport of a network request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// TCP `connect`.
    Tcp,
    /// UDP `connect` or `sendmsg`.
    Udp,
}

/// The process an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    /// Thread-group id.
    pub pid: u32,
    /// Parent's thread-group id (0 when unknown).
    pub ppid: u32,
    /// `comm` (writable by the process: informative, never trusted).
    pub comm: String,
    /// Executable path, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    /// A file open decision.
    FileOpen {
        /// The canonical path of the object opened.
        path: String,
        /// Access mode.
        access: Access,
    },
    /// An exec decision (the file actually executed).
    Exec {
        /// Path of the executed file.
        path: String,
        /// Arguments, when known at decision time.
        #[serde(skip_serializing_if = "Option::is_none")]
        argv: Option<Vec<String>>,
    },
    /// A direct network connection or datagram.
    Connect {
        /// Destination address (v4-mapped v6 shown as v4).
        ip: IpAddr,
        /// Destination port.
        port: u16,
        /// TCP or UDP.
        transport: Transport,
    },
    /// An HTTP request through the egress proxy, or a connection the proxy
    /// refused before any request.
    ///
    /// Secrets appear by name only: the proxy swaps placeholders for real
    /// values and injects headers, but no field here holds a value.
    Http {
        /// `request` (one request), `connect` (a CONNECT tunnel) or
        /// `connection` (refused before any request).
        stage: String,
        /// Method (empty for a connection).
        method: String,
        /// `http` or `https` (empty when unknown).
        scheme: String,
        /// Host the request was for (SNI, destination name or address).
        host: String,
        /// Destination port.
        port: u16,
        /// Path, without the query (empty for a connection).
        path: String,
        /// Status sent to the client (`None`: no response was sent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// Request body bytes the proxy read from the client.
        bytes_in: u64,
        /// Response body bytes the proxy sent to the client.
        bytes_out: u64,
        /// From the request head to the end of the response body, µs.
        duration_us: u64,
        /// Names of the headers the proxy injected (never their values).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        injected: Vec<String>,
        /// Names of the secrets whose real values replaced their
        /// placeholders in this request.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        secrets_used: Vec<String>,
        /// Names of the secrets whose placeholders the request carried to a
        /// host the policy does not allow them for (left as placeholders).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        secrets_withheld: Vec<String>,
        /// What went wrong, if anything (a refusal's reason, an upstream
        /// failure).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Whether [`Event::proc`] is the process that opened the connection
        /// (the kernel layer told the proxy); if not, it is empty.
        pid_known: bool,
    },
    /// An MCP message, seen by the stdio wrapper or the egress proxy: a
    /// request (decided when it is a tool call, or when a forbid names its
    /// server), a notification, a response, or traffic refused as
    /// unparseable, oversized or malformed.
    Mcp {
        /// `stdio`, `http` (streamable HTTP) or `sse` (legacy HTTP+SSE).
        transport: String,
        /// The server's id (`MCP::Server::"<id>"`): the HTTP host, or the
        /// wrapped server's name.
        server: String,
        /// `to_server` (from the agent) or `to_client`.
        direction: String,
        /// `request`, `notification`, `response`, `error` or `refused`.
        stage: String,
        /// JSON-RPC method (of the request, for a response).
        method: String,
        /// JSON-RPC id as JSON text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rpc_id: Option<String>,
        /// The tool of a `tools/call`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tool: Option<String>,
        /// The call's arguments as JSON text (at most 2 KiB; see
        /// `args_truncated`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        args: Option<String>,
        /// `args` was cut.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        args_truncated: bool,
        /// Tools a `tools/list` result hid (shadow mode: would hide).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hidden: Vec<String>,
        /// Why it was refused or denied, or the error a response carried.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// For a response: time since its request was forwarded, µs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_us: Option<u64>,
        /// The conversation (one wrapped server, or one HTTP MCP session).
        conversation: String,
        /// The server's `Mcp-Session-Id`, when it gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        /// Size of the message, bytes.
        bytes: u64,
    },
    /// A process started (telemetry).
    Fork {
        /// The child's pid.
        child: u32,
    },
    /// A process ended (telemetry).
    Exit {
        /// Exit code (or 128 + signal).
        code: i32,
    },
    /// A program was executed (telemetry, with arguments).
    ExecTrace {
        /// Path of the executed file.
        path: String,
        /// Arguments.
        argv: Vec<String>,
    },
    /// Events were lost before reaching userspace.
    Lost {
        /// How many.
        count: u64,
    },
    /// A session started (recorded by the supervisor before the agent runs).
    SessionStart {
        /// Enforce or shadow.
        mode: Mode,
        /// SHA-256 of the policy in force.
        policy_sha256: String,
        /// The command the session runs.
        command: Vec<String>,
    },
    /// A session ended.
    SessionEnd {
        /// How it ended (`exit 0`, `signal 9`, `failed: ...`).
        exit: String,
    },
    /// The session's mode was switched while it ran.
    ModeChange {
        /// The new mode.
        mode: Mode,
    },
    /// A new policy was offered to a running session: in force if `error`
    /// is `None`, else refused (the old one stays in force, unchanged).
    PolicyLoad {
        /// Where the policy came from (a file name, `ui`).
        label: String,
        /// SHA-256 of the policy text.
        sha256: String,
        /// Why it was refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// One event: a decision (with its policy ids) or a telemetry record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The session.
    pub session: SessionId,
    /// The session's principal (`Agent::"<name>"`).
    pub principal: String,
    /// Kernel monotonic timestamp (`CLOCK_MONOTONIC`/`ktime_get_ns`), ns
    /// (the supervisor's own clock reading for session and policy events).
    pub ts_ns: u64,
    /// The process.
    pub proc: Proc,
    /// What happened.
    pub what: What,
    /// The decision (`None` for telemetry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// The layer that produced the event.
    pub layer: Layer,
    /// Ids of the determining policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// The MCP tool call this event belongs to (`<conversation>#<n>`): on
    /// a tool call's own request and response events, and on kernel events
    /// of a wrapped stdio server's processes while the call was in flight
    /// (several concurrent calls: their ids joined with `,`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_call: Option<String>,
}

/// How a session applies its policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Denials are enforced.
    #[default]
    Enforce,
    /// Decide and record, never block: denials are reported as `would_deny`.
    Shadow,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http() -> What {
        http_with(None)
    }

    fn http_with(error: Option<String>) -> What {
        What::Http {
            stage: "request".into(),
            method: "POST".into(),
            scheme: "https".into(),
            host: "api.anthropic.com".into(),
            port: 443,
            path: "/v1/messages".into(),
            status: Some(200),
            bytes_in: 1_200,
            bytes_out: 34_000,
            duration_us: 812_345,
            injected: vec!["x-api-key".into()],
            secrets_used: vec!["ANTHROPIC_API_KEY".into()],
            secrets_withheld: vec!["GITHUB_TOKEN".into()],
            error,
            pid_known: true,
        }
    }

    #[test]
    fn http_serializes_with_its_kind_tag_and_round_trips() {
        let w = http();
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(v["kind"], "http");
        assert_eq!(v["status"], 200);
        assert_eq!(v["secrets_used"], serde_json::json!(["ANTHROPIC_API_KEY"]));
        assert_eq!(serde_json::from_value::<What>(v).unwrap(), w);
        assert_eq!(serde_json::to_value(Layer::Proxy).unwrap(), "proxy");
    }

    #[test]
    fn http_omits_empty_lists_and_absent_options() {
        let w = What::Http {
            stage: "connection".into(),
            method: String::new(),
            scheme: "https".into(),
            host: "evil.example".into(),
            port: 443,
            path: String::new(),
            status: None,
            bytes_in: 0,
            bytes_out: 0,
            duration_us: 0,
            injected: vec![],
            secrets_used: vec![],
            secrets_withheld: vec![],
            error: None,
            pid_known: false,
        };
        let v = serde_json::to_value(&w).unwrap();
        for absent in ["status", "injected", "secrets_used", "secrets_withheld", "error"] {
            assert!(v.get(absent).is_none(), "{absent} in {v}");
        }
        assert_eq!(v["pid_known"], false);
        assert_eq!(serde_json::from_value::<What>(v).unwrap(), w);
    }

    /// Every field an http event has. A new one must not be able to carry a
    /// secret's value (header values, placeholder replacements, bodies,
    /// query strings): check that, then add it here.
    #[test]
    fn http_has_no_field_for_a_secret_value() {
        let v = serde_json::to_value(http_with(Some("upstream reset".into()))).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "bytes_in",
                "bytes_out",
                "duration_us",
                "error",
                "host",
                "injected",
                "kind",
                "method",
                "path",
                "pid_known",
                "port",
                "scheme",
                "secrets_used",
                "secrets_withheld",
                "stage",
                "status",
            ]
        );
    }

    #[test]
    fn an_event_names_its_mcp_call_only_when_it_has_one() {
        let mut e = Event {
            session: SessionId(1),
            principal: "claude".into(),
            ts_ns: 1,
            proc: Proc::default(),
            what: What::Fork { child: 2 },
            decision: None,
            layer: Layer::Tracepoint,
            policies: vec![],
            mcp_call: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert!(v.get("mcp_call").is_none(), "{v}");
        e.mcp_call = Some("m1#2".into());
        e.what = What::Mcp {
            transport: "stdio".into(),
            server: "fs".into(),
            direction: "to_server".into(),
            stage: "request".into(),
            method: "tools/call".into(),
            rpc_id: Some("2".into()),
            tool: Some("read_text_file".into()),
            args: Some("{}".into()),
            args_truncated: false,
            hidden: vec![],
            error: None,
            duration_us: None,
            conversation: "m1".into(),
            session_id: None,
            bytes: 9,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["mcp_call"], "m1#2");
        assert_eq!(v["what"]["kind"], "mcp");
        assert!(v["what"].get("args_truncated").is_none(), "{v}");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
    }
}
