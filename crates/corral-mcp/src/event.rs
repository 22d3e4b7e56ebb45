//! What the MCP layer reports: one [`McpEvent`] per message it handled.

use crate::policy::PolicyHit;
use corral_core::Decision;
use serde::Serialize;

/// How the conversation reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// A stdio server behind `corral mcp wrap`.
    Stdio,
    /// Streamable HTTP (POST, JSON or SSE responses, the GET stream).
    Http,
    /// The legacy HTTP+SSE transport (an SSE stream that names the POST
    /// endpoint).
    Sse,
}

impl Transport {
    /// `stdio`, `http` or `sse`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Stdio => "stdio",
            Transport::Http => "http",
            Transport::Sse => "sse",
        }
    }
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the agent (the MCP client) to the server.
    ToServer,
    /// From the server to the agent.
    ToClient,
}

/// What kind of message an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// A request (it has an id and expects a response).
    Request,
    /// A notification.
    Notification,
    /// A successful response.
    Response,
    /// An error response.
    Error,
    /// Traffic refused before it could be understood (unparseable,
    /// oversized, malformed): the sender got a JSON-RPC error, or the
    /// message was dropped if it came from the server.
    Refused,
}

impl Stage {
    /// The stage's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Request => "request",
            Stage::Notification => "notification",
            Stage::Response => "response",
            Stage::Error => "error",
            Stage::Refused => "refused",
        }
    }
}

/// Most bytes of a tool call's arguments an event carries (JSON text,
/// cut at a character boundary; `args_truncated` says so).
pub const ARGS_MAX: usize = 2048;

/// One MCP message, as the layer saw and decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct McpEvent {
    /// The transport.
    pub transport: Transport,
    /// The server's id (`MCP::Server::"<id>"`).
    pub server: String,
    /// The conversation (the governor's label, e.g. `m3`).
    pub conversation: String,
    /// The server's `Mcp-Session-Id`, when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Which way it went.
    pub direction: Direction,
    /// What it is.
    pub stage: Stage,
    /// JSON-RPC method (for a response: the method of its request, when
    /// known; empty for refused traffic).
    pub method: String,
    /// JSON-RPC id as JSON text (`7`, `"a"`), for requests and responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_id: Option<String>,
    /// The tool, for `tools/call` requests and their responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The call's id (`<conversation>#<n>`), for a forwarded `tools/call`
    /// and its response: kernel events of a wrapped server's processes
    /// while it is in flight carry the same id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// The call's arguments (JSON text, at most [`ARGS_MAX`] bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// `args` was cut.
    pub args_truncated: bool,
    /// The decision (`None`: observed, not decided).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Determining policies.
    pub policies: Vec<PolicyHit>,
    /// Why it was refused or denied, or the error a response carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tools a `tools/list` result no longer shows (or, in shadow mode,
    /// would not show).
    pub hidden: Vec<String>,
    /// For a response: time since its request was forwarded, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// Size of the message, bytes.
    pub bytes: u64,
    /// The agent-side process of the conversation, when the transport
    /// knows it: the stdio wrapper's pid as the supervisor sees it, or the
    /// process that opened the HTTP connection; and its comm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<(u32, String)>,
}
