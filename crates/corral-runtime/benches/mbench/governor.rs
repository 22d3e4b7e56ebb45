//! The decision work alone: one conversation's `Governor`, in-process,
//! given a `tools/call` and then its answer, as the relay's supervisor side
//! and the proxy give them (bytes in, bytes to forward out). No IO.

use crate::{echo_call, Target, MESSAGE};
use anyhow::bail;
use corral_mcp::{Authority, Governor, Transport};
use serde_json::json;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A conversation after initialize.
pub struct GovernorTarget {
    gov: Governor,
}

impl GovernorTarget {
    /// A governor for server `everything`, through initialize, and a check
    /// that it refuses a forbidden tool.
    pub fn start(auth: &Arc<Authority>) -> anyhow::Result<GovernorTarget> {
        let mut gov = auth.governor("everything", Transport::Stdio);
        let init = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "corral-mbench", "version": "0"}},
        });
        let answer = json!({
            "jsonrpc": "2.0", "id": 1,
            "result": {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                       "serverInfo": {"name": "everything", "version": "1"}},
        });
        if gov.from_client(init.to_string().as_bytes()).forward.is_none()
            || gov.from_server(answer.to_string().as_bytes()).forward.is_none()
        {
            bail!("governor: initialize was not forwarded");
        }
        let call = json!({
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": crate::setup::FORBIDDEN[0], "arguments": {}},
        });
        let step = gov.from_client(call.to_string().as_bytes());
        let refused = step
            .reply
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r).ok())
            .is_some_and(|r| r["error"]["code"] == -32001);
        if step.forward.is_some() || !refused {
            bail!("governor: the forbidden tool was not refused");
        }
        Ok(GovernorTarget { gov })
    }
}

/// What server-everything answers to an echo call (one line, as on stdio).
fn echo_answer(id: u64) -> String {
    json!({
        "jsonrpc": "2.0", "id": id,
        "result": {"content": [{"type": "text", "text": format!("Echo: {MESSAGE}")}]},
    })
    .to_string()
}

impl Target for GovernorTarget {
    fn calls(&mut self, ids: Range<u64>) -> anyhow::Result<Vec<Duration>> {
        let mut out = Vec::with_capacity(ids.clone().count());
        for id in ids {
            let (call, answer) = (echo_call(id), echo_answer(id));
            let start = Instant::now();
            let c = self.gov.from_client(call.as_bytes());
            let s = self.gov.from_server(answer.as_bytes());
            out.push(start.elapsed());
            if c.forward.is_none() || c.reply.is_some() || s.forward.is_none() {
                bail!("governor: call {id} or its answer was not forwarded");
            }
        }
        Ok(out)
    }
}
