//! What the proxy reports: one [`HttpEvent`] per request, and one per
//! connection it refuses before any request (not TLS, SNI mismatch, bad
//! handshake, timeouts, malformed HTTP).
//!
//! Events name injected headers and placeholder secrets, never their values.

use corral_core::Decision;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// The process that opened a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Client {
    /// Its pid (in corral's pid namespace).
    pub pid: u32,
    /// Its `comm` when it connected.
    pub comm: String,
    /// Its executable, when it could be read.
    pub exe: Option<String>,
}

/// Receives every event. Called on the proxy's tasks: keep it quick
/// (hand the event to a channel).
pub type EventSink = Arc<dyn Fn(HttpEvent) + Send + Sync>;

/// One request (or one refused connection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpEvent {
    /// The principal.
    pub principal: String,
    /// `request`, `connect` (a CONNECT tunnel) or `connection` (refused
    /// before any request).
    pub kind: &'static str,
    /// Method (empty for a connection event).
    pub method: String,
    /// `http` or `https` (empty when unknown).
    pub scheme: String,
    /// Host the request was for (SNI, destination name or address).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path, without the query.
    pub path: String,
    /// Status sent to the client (`None`: no response was sent).
    pub status: Option<u16>,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// From the request head to the end of the response body.
    pub duration: Duration,
    /// Allowed, denied, or (shadow mode) denied by the policy but let through.
    pub decision: Decision,
    /// Determining policy ids (for `would_deny`, the denying ones).
    pub policies: Vec<String>,
    /// Their `file:line`s, in the same order.
    pub policy_at: Vec<String>,
    /// Names of the headers the proxy injected.
    pub injected_headers: Vec<String>,
    /// Names of the placeholder secrets whose real value was sent.
    pub secrets_used: Vec<String>,
    /// Names of the placeholder secrets the request carried to a host the
    /// policy does not allow them for: sent as the placeholder.
    pub secrets_withheld: Vec<String>,
    /// The process that opened the connection, when the kernel told the
    /// proxy (a redirected connection); `None` otherwise.
    pub client: Option<Client>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl HttpEvent {
    /// A denied connection, refused before any request.
    pub fn refused(principal: &str, scheme: &str, host: &str, port: u16, error: String) -> HttpEvent {
        HttpEvent {
            principal: principal.to_string(),
            kind: "connection",
            method: String::new(),
            scheme: scheme.to_string(),
            host: host.to_string(),
            port,
            path: String::new(),
            status: None,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            decision: Decision::Deny,
            policies: vec![],
            policy_at: vec![],
            injected_headers: vec![],
            secrets_used: vec![],
            secrets_withheld: vec![],
            client: None,
            error: Some(error),
        }
    }
}
