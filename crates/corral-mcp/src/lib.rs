//! corral's MCP layer, independent of transport.
//!
//! * [`jsonrpc`]: a strict JSON-RPC 2.0 parser. A message is refused (not
//!   waved through) when it is not valid UTF-8 JSON, repeats an object key
//!   anywhere, is larger than [`Limits::max_message`], or is not a
//!   well-formed request, notification, response or batch of them.
//! * [`policy`]: `McpCall` decisions with the Cedar authorizer
//!   ([`McpPolicy`]), and which tools a `tools/list` result hides.
//! * [`govern`]: one MCP conversation ([`Governor`]): each client message
//!   is decided and forwarded, answered with a JSON-RPC error, or both (a
//!   batch with denied members); each server message is matched to its
//!   request, `tools/list` results are filtered, and every message is
//!   reported as an [`McpEvent`] through the [`Authority`] shared by all
//!   conversations of a session (policy and mode swap there).
//!
//! * [`sse`]: Server-Sent Events framing, decoded incrementally and
//!   re-encoded, for the HTTP transports.
//!
//! The transports live elsewhere: streamable HTTP and legacy HTTP+SSE in
//! corral-proxy, stdio in corral-runtime (the supervisor's end of
//! `corral mcp wrap`).

pub mod event;
pub mod govern;
pub mod jsonrpc;
pub mod policy;
pub mod sse;

pub use event::{Direction, McpEvent, Stage, Transport};
pub use govern::{Authority, CallRef, ClientStep, Governor, McpSink, ServerStep};
pub use policy::{McpPolicy, PolicyHit, Verdict};

/// Size limits on MCP traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message (one line on stdio, one body or SSE event over
    /// HTTP), bytes. Larger ones are refused.
    pub max_message: usize,
    /// Most members in one batch.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 4 << 20,
            max_batch: 128,
        }
    }
}
