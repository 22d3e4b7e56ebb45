//! One MCP conversation between a client (the agent) and a server.
//!
//! The transport hands every complete message to [`Governor::from_client`]
//! or [`Governor::from_server`] and does what the returned step says. The
//! governor never passes a sender's bytes on: it forwards its own
//! serialization of what it parsed and decided.

use crate::event::{Direction, McpEvent, Stage, Transport, ARGS_MAX};
use crate::jsonrpc::{self, code, Kind, Message, Parsed, Refusal};
use crate::policy::{McpPolicy, PolicyHit, Verdict};
use crate::Limits;
use corral_core::{Decision, Mode};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Where events go (the session's pipeline).
pub type McpSink = Arc<dyn Fn(McpEvent) + Send + Sync>;

/// The MCP layer of one session: its principal, policy, mode and event
/// sink, shared by every conversation. A policy or mode swap applies to
/// the next message of every conversation.
pub struct Authority {
    principal: String,
    policy: Mutex<Arc<McpPolicy>>,
    shadow: AtomicBool,
    limits: Limits,
    sink: McpSink,
    next: AtomicU64,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("principal", &self.principal)
            .field("mode", &self.mode())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// The layer for a session.
    pub fn new(
        principal: impl Into<String>,
        policy: McpPolicy,
        mode: Mode,
        limits: Limits,
        sink: McpSink,
    ) -> Arc<Authority> {
        Arc::new(Authority {
            principal: principal.into(),
            policy: Mutex::new(Arc::new(policy)),
            shadow: AtomicBool::new(mode == Mode::Shadow),
            limits,
            sink,
            next: AtomicU64::new(1),
        })
    }

    /// The session's principal.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<McpPolicy> {
        self.policy.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Puts a new policy in force.
    pub fn set_policy(&self, p: McpPolicy) {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(p);
    }

    /// Enforce or shadow.
    pub fn mode(&self) -> Mode {
        if self.shadow.load(Ordering::Relaxed) {
            Mode::Shadow
        } else {
            Mode::Enforce
        }
    }

    /// Switches the mode.
    pub fn set_mode(&self, m: Mode) {
        self.shadow.store(m == Mode::Shadow, Ordering::Relaxed);
    }

    /// The size limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Reports an event.
    pub fn emit(&self, e: McpEvent) {
        (self.sink)(e);
    }

    /// A new conversation with `server` (its `MCP::Server` id), labelled
    /// `m<n>` (unique within this authority).
    pub fn governor(self: &Arc<Self>, server: impl Into<String>, transport: Transport) -> Governor {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Governor {
            auth: self.clone(),
            server: server.into(),
            transport,
            label: format!("m{n}"),
            session: None,
            client: None,
            pending: HashMap::new(),
            from_server: HashMap::new(),
            owed: HashMap::new(),
            next_call: 1,
            next_batch: 1,
            cancelled: Vec::new(),
        }
    }

    /// An event for traffic refused before it reached a conversation (an
    /// oversized stdio line, a body that could not be read).
    pub fn refused(
        &self,
        transport: Transport,
        server: &str,
        conversation: &str,
        direction: Direction,
        bytes: u64,
        why: &str,
    ) {
        self.emit(McpEvent {
            transport,
            server: server.to_string(),
            conversation: conversation.to_string(),
            session: None,
            direction,
            stage: Stage::Refused,
            method: String::new(),
            rpc_id: None,
            tool: None,
            call: None,
            args: None,
            args_truncated: false,
            decision: (direction == Direction::ToServer).then_some(Decision::Deny),
            policies: vec![],
            error: Some(why.to_string()),
            hidden: vec![],
            duration_us: None,
            bytes,
            client: None,
        });
    }
}

/// A tool call in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRef {
    /// `<conversation>#<n>`.
    pub id: String,
    /// The tool.
    pub tool: String,
    /// The server.
    pub server: String,
}

/// What to do with a client message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientStep {
    /// Send this to the server (one JSON text, no trailing newline).
    pub forward: Option<Vec<u8>>,
    /// Send this answer to the client now (an error, or a batch of them;
    /// on stdio also beside a forwarded batch, for its denied members).
    pub reply: Option<Vec<u8>>,
    /// Tool calls this step forwards: in flight from now on.
    pub started: Vec<CallRef>,
    /// Tool calls the client cancelled (`notifications/cancelled`): no
    /// longer in flight.
    pub finished: Vec<CallRef>,
    /// The forwarded text holds requests: the server will answer.
    pub expects_response: bool,
}

/// What to do with a server message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServerStep {
    /// Send this to the client (`None`: the message was refused).
    pub forward: Option<Vec<u8>>,
    /// Then these (errors owed to members of a batch the server answered
    /// one by one).
    pub extra: Vec<Vec<u8>>,
    /// Tool calls this step answers: no longer in flight.
    pub finished: Vec<CallRef>,
}

#[derive(Debug)]
struct Pending {
    method: String,
    tool: Option<String>,
    call: Option<CallRef>,
    at: Instant,
    batch: Option<u64>,
}

/// One conversation's state: requests awaiting answers, in both
/// directions, and errors owed to partly denied batches.
#[derive(Debug)]
pub struct Governor {
    auth: Arc<Authority>,
    server: String,
    transport: Transport,
    label: String,
    session: Option<String>,
    client: Option<(u32, String)>,
    /// Client requests forwarded, by id text.
    pending: HashMap<String, Pending>,
    /// Server requests forwarded to the client, by id text: method, when.
    from_server: HashMap<String, (String, Instant)>,
    /// Batch number → errors for its denied members, sent with the first
    /// answer to one of its forwarded members.
    owed: HashMap<u64, Vec<Value>>,
    next_call: u64,
    next_batch: u64,
    /// Calls cancelled while handling the current client message.
    cancelled: Vec<CallRef>,
}

/// Most requests in flight per conversation (each side); beyond it a
/// request is refused (a client that never reads answers would otherwise
/// grow the table without bound).
pub const MAX_PENDING: usize = 4096;

enum Item {
    Keep(Message),
    Refuse(Value),
}

impl Governor {
    /// The conversation's label (`m<n>`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The server's id.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The session id the server assigned (`Mcp-Session-Id`), for events.
    pub fn set_session(&mut self, id: Option<String>) {
        self.session = id;
    }

    /// The agent-side process (pid as the supervisor sees it, comm), for
    /// events.
    pub fn set_client(&mut self, pid: u32, comm: impl Into<String>) {
        self.client = Some((pid, comm.into()));
    }

    /// The tool calls in flight.
    pub fn in_flight(&self) -> Vec<CallRef> {
        self.pending.values().filter_map(|p| p.call.clone()).collect()
    }

    /// Whether a client request is awaiting its answer.
    pub fn awaiting(&self) -> bool {
        !self.pending.is_empty()
    }

    fn event(&self, direction: Direction, stage: Stage, method: &str, bytes: usize) -> McpEvent {
        McpEvent {
            transport: self.transport,
            server: self.server.clone(),
            conversation: self.label.clone(),
            session: self.session.clone(),
            direction,
            stage,
            method: method.to_string(),
            rpc_id: None,
            tool: None,
            call: None,
            args: None,
            args_truncated: false,
            decision: None,
            policies: vec![],
            error: None,
            hidden: vec![],
            duration_us: None,
            bytes: bytes as u64,
            client: self.client.clone(),
        }
    }

    fn refusal_reply(&self, r: &Refusal) -> Value {
        jsonrpc::error_response(r.id.as_ref(), r.code, &format!("corral: {}", r.message), None)
    }

    /// Handles one message (or batch) from the client.
    pub fn from_client(&mut self, bytes: &[u8]) -> ClientStep {
        let policy = self.auth.policy();
        let shadow = self.auth.mode() == Mode::Shadow;
        let parsed = match jsonrpc::parse(bytes, &self.auth.limits) {
            Ok(p) => p,
            Err(r) => {
                let mut e = self.event(Direction::ToServer, Stage::Refused, "", bytes.len());
                e.rpc_id = r.id.as_ref().map(Value::to_string);
                e.decision = Some(Decision::Deny);
                e.error = Some(r.message.clone());
                self.auth.emit(e);
                return ClientStep {
                    reply: Some(jsonrpc::value_bytes(&self.refusal_reply(&r))),
                    ..ClientStep::default()
                };
            }
        };
        let (batch, msgs) = match parsed {
            Parsed::Single(m) => (None, vec![m]),
            Parsed::Batch(v) => {
                let b = self.next_batch;
                self.next_batch += 1;
                (Some(b), v)
            }
        };
        let share = if batch.is_some() { 0 } else { bytes.len() };
        let mut items = Vec::with_capacity(msgs.len());
        let mut started = Vec::new();
        for m in msgs {
            items.push(self.client_item(m, batch, share, &policy, shadow, &mut started));
        }
        let mut kept = Vec::new();
        let mut errors = Vec::new();
        for i in items {
            match i {
                Item::Keep(m) => kept.push(m),
                Item::Refuse(v) => errors.push(v),
            }
        }
        let expects_response = kept.iter().any(|m| m.kind == Kind::Request);
        let mut step = ClientStep {
            started,
            finished: std::mem::take(&mut self.cancelled),
            expects_response,
            ..ClientStep::default()
        };
        match batch {
            None => {
                if let Some(m) = kept.pop() {
                    step.forward = Some(m.to_bytes());
                } else if let Some(e) = errors.pop() {
                    step.reply = Some(jsonrpc::value_bytes(&e));
                }
            }
            Some(b) => {
                if !kept.is_empty() {
                    let arr = Value::Array(kept.into_iter().map(|m| Value::Object(m.body)).collect());
                    step.forward = Some(jsonrpc::value_bytes(&arr));
                }
                if !errors.is_empty() {
                    // Over HTTP the server's answer to the batch is the
                    // POST's response: the denials join it. On stdio they
                    // go at once (servers there may ignore batches, and
                    // the client must not wait for an answer that never
                    // comes).
                    if expects_response && self.transport != Transport::Stdio {
                        self.owed.insert(b, errors);
                    } else {
                        step.reply = Some(jsonrpc::value_bytes(&Value::Array(errors)));
                    }
                }
            }
        }
        step
    }

    fn client_item(
        &mut self,
        m: Message,
        batch: Option<u64>,
        bytes: usize,
        policy: &McpPolicy,
        shadow: bool,
        started: &mut Vec<CallRef>,
    ) -> Item {
        let method = m.method.clone().unwrap_or_default();
        match m.kind {
            Kind::Notification => {
                if method == "notifications/cancelled" {
                    let id = m.params().and_then(|p| p.get("requestId")).map(Value::to_string);
                    if let Some(p) = id.and_then(|id| self.pending.remove(&id)) {
                        // The server need not answer a cancelled request.
                        if let Some(c) = p.call {
                            if started.iter().any(|s| s.id == c.id) {
                                started.retain(|s| s.id != c.id);
                            } else {
                                self.cancelled.push(c);
                            }
                        }
                    }
                }
                let e = self.event(Direction::ToServer, Stage::Notification, &method, bytes);
                self.auth.emit(e);
                Item::Keep(m)
            }
            Kind::Response | Kind::Error => {
                let mut e = self.event(
                    Direction::ToServer,
                    if m.kind == Kind::Response {
                        Stage::Response
                    } else {
                        Stage::Error
                    },
                    "",
                    bytes,
                );
                e.rpc_id = m.id_text();
                if let Some((method, at)) = m.id_text().and_then(|id| self.from_server.remove(&id)) {
                    e.method = method;
                    e.duration_us = Some(at.elapsed().as_micros() as u64);
                }
                e.error = m.error_message();
                self.auth.emit(e);
                Item::Keep(m)
            }
            Kind::Request => self.client_request(m, method, batch, bytes, policy, shadow, started),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn client_request(
        &mut self,
        m: Message,
        method: String,
        batch: Option<u64>,
        bytes: usize,
        policy: &McpPolicy,
        shadow: bool,
        started: &mut Vec<CallRef>,
    ) -> Item {
        let id_text = m.id_text().unwrap_or_default();
        let mut e = self.event(Direction::ToServer, Stage::Request, &method, bytes);
        e.rpc_id = Some(id_text.clone());
        let refuse = |this: &Self, mut e: McpEvent, code: i64, msg: String| {
            e.decision = Some(Decision::Deny);
            e.error = Some(msg.clone());
            this.auth.emit(e);
            Item::Refuse(jsonrpc::error_response(
                m.id.as_ref(),
                code,
                &format!("corral: {msg}"),
                None,
            ))
        };
        if self.pending.contains_key(&id_text) {
            return refuse(
                self,
                e,
                code::INVALID_REQUEST,
                format!("request id {id_text} is already in flight"),
            );
        }
        if self.pending.len() >= MAX_PENDING {
            return refuse(
                self,
                e,
                code::INVALID_REQUEST,
                format!("more than {MAX_PENDING} requests in flight"),
            );
        }
        let empty = Map::new();
        let params = m.params().unwrap_or(&empty);
        if m.body.get("params").is_some_and(Value::is_array) {
            return refuse(
                self,
                e,
                code::INVALID_PARAMS,
                format!("`{method}` params must be an object"),
            );
        }
        let (tool, args_value) = if method == "tools/call" {
            let name = match params.get("name") {
                Some(Value::String(n)) => n.clone(),
                _ => {
                    return refuse(
                        self,
                        e,
                        code::INVALID_PARAMS,
                        "tools/call needs a string `name`".into(),
                    )
                }
            };
            if let Err(why) = jsonrpc::check_name(&name) {
                return refuse(self, e, code::INVALID_PARAMS, format!("invalid tool name: {why}"));
            }
            e.tool = Some(name.clone());
            match params.get("arguments") {
                None | Some(Value::Null) => (Some(name), Map::new()),
                Some(Value::Object(a)) => (Some(name), a.clone()),
                Some(_) => {
                    return refuse(
                        self,
                        e,
                        code::INVALID_PARAMS,
                        "tools/call `arguments` must be an object".into(),
                    )
                }
            }
        } else {
            let mut p = params.clone();
            p.remove("_meta");
            (None, p)
        };
        let args_text = jsonrpc::value_bytes(&Value::Object(args_value.clone()));
        let (args, cut) = truncate(&args_text);
        e.args = Some(args);
        e.args_truncated = cut;
        let args: BTreeMap<String, String> = args_value
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect();
        let v = policy.decide(
            self.auth.principal(),
            &self.server,
            &method,
            tool.as_deref(),
            &args,
        );
        e.policies = v.policies.clone();
        e.decision = v.decided.then_some(if v.allowed {
            Decision::Allow
        } else if shadow {
            Decision::WouldDeny
        } else {
            Decision::Deny
        });
        if !v.allowed {
            e.error = Some(v.reason.clone());
            if !shadow {
                self.auth.emit(e);
                return Item::Refuse(denial(m.id.as_ref(), &v));
            }
        }
        let call = tool.as_ref().map(|t| {
            let c = CallRef {
                id: format!("{}#{}", self.label, self.next_call),
                tool: t.clone(),
                server: self.server.clone(),
            };
            self.next_call += 1;
            c
        });
        if let Some(c) = &call {
            e.call = Some(c.id.clone());
            started.push(c.clone());
        }
        self.auth.emit(e);
        self.pending.insert(
            id_text,
            Pending {
                method,
                tool,
                call,
                at: Instant::now(),
                batch,
            },
        );
        Item::Keep(m)
    }

    /// Handles one message (or batch) from the server.
    pub fn from_server(&mut self, bytes: &[u8]) -> ServerStep {
        let policy = self.auth.policy();
        let shadow = self.auth.mode() == Mode::Shadow;
        let parsed = match jsonrpc::parse(bytes, &self.auth.limits) {
            Ok(p) => p,
            Err(r) => {
                let mut e = self.event(Direction::ToClient, Stage::Refused, "", bytes.len());
                e.error = Some(format!("dropped a server message: {}", r.message));
                self.auth.emit(e);
                return ServerStep::default();
            }
        };
        let is_batch = matches!(parsed, Parsed::Batch(_));
        let msgs = match parsed {
            Parsed::Single(m) => vec![m],
            Parsed::Batch(v) => v,
        };
        let share = if is_batch { 0 } else { bytes.len() };
        let mut step = ServerStep::default();
        let mut out = Vec::with_capacity(msgs.len());
        let mut owed = Vec::new();
        for mut m in msgs {
            self.server_item(&mut m, share, &policy, shadow, &mut step, &mut owed);
            out.push(Value::Object(m.body));
        }
        if is_batch {
            out.extend(owed);
            step.forward = Some(jsonrpc::value_bytes(&Value::Array(out)));
        } else {
            step.forward = out.pop().map(|v| jsonrpc::value_bytes(&v));
            step.extra = owed.iter().map(jsonrpc::value_bytes).collect();
        }
        step
    }

    fn server_item(
        &mut self,
        m: &mut Message,
        bytes: usize,
        policy: &McpPolicy,
        shadow: bool,
        step: &mut ServerStep,
        owed: &mut Vec<Value>,
    ) {
        let method = m.method.clone().unwrap_or_default();
        match m.kind {
            Kind::Request => {
                let id = m.id_text().unwrap_or_default();
                if self.from_server.len() < MAX_PENDING {
                    self.from_server
                        .insert(id.clone(), (method.clone(), Instant::now()));
                }
                let mut e = self.event(Direction::ToClient, Stage::Request, &method, bytes);
                e.rpc_id = Some(id);
                self.auth.emit(e);
            }
            Kind::Notification => {
                let e = self.event(Direction::ToClient, Stage::Notification, &method, bytes);
                self.auth.emit(e);
            }
            Kind::Response | Kind::Error => {
                let id = m.id_text().unwrap_or_default();
                let stage = if m.kind == Kind::Response {
                    Stage::Response
                } else {
                    Stage::Error
                };
                let mut e = self.event(Direction::ToClient, stage, "", bytes);
                e.rpc_id = Some(id.clone());
                e.error = m.error_message();
                match self.pending.remove(&id) {
                    Some(p) => {
                        e.method = p.method.clone();
                        e.tool = p.tool.clone();
                        e.duration_us = Some(p.at.elapsed().as_micros() as u64);
                        if let Some(c) = p.call {
                            e.call = Some(c.id.clone());
                            step.finished.push(c);
                        }
                        if p.method == "tools/call" && e.error.is_none() {
                            let is_error = m
                                .result()
                                .and_then(|r| r.get("isError"))
                                .and_then(Value::as_bool)
                                .unwrap_or(false);
                            if is_error {
                                e.error = Some("the tool reported an error (isError)".into());
                            }
                        }
                        if p.method == "tools/list" && m.kind == Kind::Response {
                            let (hidden, by) = self.filter_tools(m, policy, shadow);
                            e.hidden = hidden;
                            e.policies = by;
                            if !e.hidden.is_empty() {
                                e.decision = Some(if shadow {
                                    Decision::WouldDeny
                                } else {
                                    Decision::Deny
                                });
                            }
                        }
                        if let Some(errs) = p.batch.and_then(|b| self.owed.remove(&b)) {
                            owed.extend(errs);
                        }
                    }
                    None => {
                        e.error = Some(match e.error.take() {
                            Some(err) => format!("{err} (no request with this id was seen)"),
                            None => "no request with this id was seen".into(),
                        });
                    }
                }
                self.auth.emit(e);
            }
        }
    }

    /// Removes the tools the policy denies from a `tools/list` result (in
    /// shadow mode only reports them), and tools whose names no call could
    /// use. Returns their names, and the forbids that hid them.
    fn filter_tools(
        &self,
        m: &mut Message,
        policy: &McpPolicy,
        shadow: bool,
    ) -> (Vec<String>, Vec<PolicyHit>) {
        let Some(Value::Object(result)) = m.body.get_mut("result") else {
            return (vec![], vec![]);
        };
        let Some(Value::Array(tools)) = result.get_mut("tools") else {
            return (vec![], vec![]);
        };
        let mut hidden = Vec::new();
        let mut by: Vec<PolicyHit> = Vec::new();
        tools.retain(|t| {
            let name = t.get("name").and_then(Value::as_str);
            let hide = match name {
                None => true,
                Some(n) if jsonrpc::check_name(n).is_err() => true,
                Some(n) => match policy.hides(self.auth.principal(), &self.server, n) {
                    Some(v) => {
                        for p in v.policies {
                            if !by.contains(&p) {
                                by.push(p);
                            }
                        }
                        true
                    }
                    None => false,
                },
            };
            if hide {
                hidden.push(name.map_or_else(|| t.to_string(), str::to_string));
            }
            !hide || shadow
        });
        (hidden, by)
    }
}

/// The JSON-RPC error a denied request gets: what was denied, by which
/// policy (id and `file:line`), with the decision in `data.corral`.
pub fn denial(id: Option<&Value>, v: &Verdict) -> Value {
    let message = if v.policies.is_empty() {
        // The reason already says "default deny" (or why it could not
        // be decided).
        format!("corral: {}", v.reason)
    } else {
        format!(
            "corral: {}: denied by policy {}",
            v.reason,
            v.policies
                .iter()
                .map(|p| format!("{} ({})", p.id, p.at))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let data = serde_json::json!({
        "corral": {
            "decision": "deny",
            "action": "McpCall",
            "reason": v.reason,
            "policies": v.policies,
        }
    });
    jsonrpc::error_response(id, code::DENIED, &message, Some(data))
}

fn truncate(b: &[u8]) -> (String, bool) {
    let s = String::from_utf8_lossy(b);
    if s.len() <= ARGS_MAX {
        return (s.into_owned(), false);
    }
    let mut end = ARGS_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_string(), true)
}

#[cfg(test)]
mod tests;
