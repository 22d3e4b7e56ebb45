//! Live export to an OpenTelemetry collector: OTLP/HTTP, protobuf-encoded
//! logs (`POST {endpoint}/v1/logs`, `Content-Type: application/x-protobuf`).
//!
//! [`spawn`] starts a thread that reads a pipeline
//! [`Subscription`] and sends each stored event as one
//! `LogRecord`, up to [`OtlpConfig::max_batch`] per request:
//!
//! * `time_unix_nano` is the time the pipeline received the event,
//!   `observed_time_unix_nano` the time it was exported;
//! * severity WARN for `deny` and `would_deny`, INFO otherwise;
//! * the body is a one-line summary ([`super::summary`]);
//! * attributes: `corral.session`, `corral.principal`, `corral.kind`,
//!   `corral.decision` (decisions only), `corral.layer`, `process.pid`,
//!   `process.parent_pid`, `process.executable.path` (when known; for an
//!   http event only when the kernel told the proxy the process),
//!   `process.command_args` (execs), `corral.target` (when the event has
//!   one), `corral.policies`, `corral.policy_at`;
//! * for http events, OpenTelemetry's HTTP and URL conventions where they
//!   fit: `http.request.method`, `url.full`, `url.scheme`, `url.path`,
//!   `server.address`, `server.port`, `http.response.status_code` (when a
//!   response was sent), `http.request.body.size` (corral's `bytes_in`),
//!   `http.response.body.size` (`bytes_out`); and `corral.http.stage`,
//!   `corral.http.duration_us`, `corral.http.pid_known`, and when present
//!   `corral.http.injected_headers`, `corral.http.secrets_used`,
//!   `corral.http.secrets_withheld` (names only) and `corral.http.error`;
//! * resource attributes `service.name` = `corral`, `service.version`,
//!   `host.name`.
//!
//! Connection errors, 429 and 5xx are retried with exponential backoff; once
//! a request has failed all its attempts, the next ones are tried once each
//! until one succeeds, so a collector that is down costs one attempt per
//! batch. Records that cannot be delivered are counted in
//! [`OtlpStats::failed`]; batches the exporter was too slow to take from its
//! subscription in [`OtlpStats::lagged`]. Neither the pipeline nor
//! enforcement ever waits for the exporter.
//!
//! Plain `http://` only: this crate carries no TLS stack. Send to a
//! collector on the host (or a sidecar) that forwards over TLS. Proxy
//! variables (`HTTP_PROXY`, ...) are ignored: the endpoint is contacted
//! directly.

use super::{decision_name, http, layer_name, summary, target, what_name, ExportError};
use crate::{kind_of, Stored, Subscription};
use corral_core::{Decision, What};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest response body read (a collector's answer is a few bytes).
const MAX_RESPONSE: u64 = 64 * 1024;
/// How often the thread looks at the `finish` deadline while idle.
const POLL: Duration = Duration::from_millis(100);

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    endpoint: String,
    /// Most log records per request (at least one; default 512).
    pub max_batch: usize,
    /// Longest one request may take (default 10 s).
    pub timeout: Duration,
    /// Retries after the first attempt, on connection errors, 429 and 5xx
    /// (default 3).
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one (default
    /// 250 ms).
    pub backoff: Duration,
    /// Longest a received event waits for its batch to fill (default 1 s).
    pub flush_interval: Duration,
    /// The `host.name` resource attribute (default: this host's name).
    pub host_name: String,
    /// Extra request headers, e.g. a collector's API key.
    pub headers: Vec<(String, String)>,
}

impl OtlpConfig {
    /// A configuration with the defaults, for a collector at `endpoint`:
    /// its base URL (`http://localhost:4318`, to which `/v1/logs` is added)
    /// or the full logs URL (ending in `/v1/logs`, used as is).
    ///
    /// Only `http://` URLs are accepted (see the module doc).
    pub fn new(endpoint: &str) -> Result<OtlpConfig, ExportError> {
        let bad = |reason| ExportError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let trimmed = endpoint.trim();
        let scheme_end = trimmed
            .find("://")
            .ok_or_else(|| bad("expected an http:// URL"))?;
        let scheme = trimmed.get(..scheme_end).unwrap_or_default();
        if scheme.eq_ignore_ascii_case("https") {
            return Err(bad(
                "https is not supported by this build (no TLS): send to a local collector over http://",
            ));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("expected an http:// URL"));
        }
        let base = trimmed.trim_end_matches('/');
        let url = if base.ends_with("/v1/logs") {
            base.to_owned()
        } else {
            format!("{base}/v1/logs")
        };
        let uri: ureq::http::Uri = url.parse().map_err(|_| bad("not a valid URL"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("the URL names no host"));
        }
        Ok(OtlpConfig {
            endpoint: url,
            max_batch: 512,
            timeout: Duration::from_secs(10),
            retries: 3,
            backoff: Duration::from_millis(250),
            flush_interval: Duration::from_secs(1),
            host_name: super::host_name(),
            headers: Vec::new(),
        })
    }

    /// The URL requests are posted to (ends in `/v1/logs`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// What an exporter did, returned by [`OtlpHandle::finish`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpStats {
    /// Log records the collector accepted.
    pub sent: u64,
    /// Log records received from the pipeline that could not be delivered
    /// (collector unreachable, refused, or rejected them; or `finish`'s
    /// timeout ran out first).
    pub failed: u64,
    /// Events the exporter missed because it fell behind the pipeline.
    pub lagged: u64,
    /// The last delivery error, if any.
    pub last_error: Option<String>,
}

impl OtlpStats {
    /// Events that did not reach the collector: `failed + lagged`.
    pub fn undelivered(&self) -> u64 {
        self.failed + self.lagged
    }
}

/// The running exporter.
pub struct OtlpHandle {
    thread: JoinHandle<OtlpStats>,
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for OtlpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpHandle").finish_non_exhaustive()
    }
}

impl OtlpHandle {
    /// Waits for the exporter to send everything the pipeline stored, then
    /// stops it. Call it after [`Pipeline::close`](crate::Pipeline::close):
    /// the exporter drains its subscription until the pipeline has closed.
    ///
    /// After `timeout` (plus at most one request in flight, itself bounded
    /// by [`OtlpConfig::timeout`]) it gives up: records not sent by then are
    /// counted as failed.
    pub fn finish(self, timeout: Duration) -> OtlpStats {
        *self
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now() + timeout);
        self.thread.join().unwrap_or_else(|_| OtlpStats {
            last_error: Some("the OTLP exporter thread panicked".into()),
            ..OtlpStats::default()
        })
    }
}

/// Starts the exporter thread on `sub`. Fails only if the thread cannot be
/// started.
pub fn spawn(sub: Subscription, cfg: OtlpConfig) -> std::io::Result<OtlpHandle> {
    let deadline = Arc::new(Mutex::new(None));
    let exporter = Exporter::new(cfg, Arc::clone(&deadline));
    let thread = std::thread::Builder::new()
        .name("corral-otlp".into())
        .spawn(move || exporter.run(sub))?;
    Ok(OtlpHandle { thread, deadline })
}

/// How one request went.
enum Outcome {
    /// Accepted; the collector rejected this many records of it.
    Accepted { rejected: u64 },
    /// Refused for good (4xx other than 429).
    Refused(String),
    /// Worth another try (connection error, 429, 5xx).
    Retry(String),
}

struct Exporter {
    agent: ureq::Agent,
    cfg: OtlpConfig,
    resource: Resource,
    deadline: Arc<Mutex<Option<Instant>>>,
    /// The last request failed all its attempts: try the next ones once.
    down: bool,
    stats: OtlpStats,
}

impl Exporter {
    fn new(cfg: OtlpConfig, deadline: Arc<Mutex<Option<Instant>>>) -> Exporter {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(cfg.timeout))
            .proxy(None)
            .user_agent(format!("corral/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let resource = Resource {
            attributes: vec![
                kv("service.name", string("corral")),
                kv("service.version", string(env!("CARGO_PKG_VERSION"))),
                kv("host.name", string(&cfg.host_name)),
            ],
            ..Resource::default()
        };
        Exporter {
            agent,
            cfg,
            resource,
            deadline,
            down: false,
            stats: OtlpStats::default(),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        *self
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn past_deadline(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    fn run(mut self, sub: Subscription) -> OtlpStats {
        let max = self.cfg.max_batch.max(1);
        let mut pending: Vec<LogRecord> = Vec::new();
        let mut oldest: Option<Instant> = None;
        loop {
            let wait = match oldest {
                Some(t) => self.cfg.flush_interval.saturating_sub(t.elapsed()),
                None => self.cfg.flush_interval,
            };
            let wait = if self.deadline().is_some() {
                wait.min(POLL)
            } else {
                wait
            };
            match sub.recv_timeout(wait) {
                Ok(batch) => {
                    let observed = now_ns();
                    for s in batch.iter() {
                        pending.push(record(s, observed));
                        oldest.get_or_insert_with(Instant::now);
                        if pending.len() >= max {
                            self.send(std::mem::take(&mut pending));
                            oldest = None;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if oldest.is_some_and(|t| t.elapsed() >= self.cfg.flush_interval) {
                self.send(std::mem::take(&mut pending));
                oldest = None;
            }
            if self.past_deadline() {
                // `finish` ran out of time with the pipeline still open:
                // whatever is already queued counts as not delivered.
                while let Ok(batch) = sub.recv_timeout(Duration::ZERO) {
                    self.stats.failed += batch.len() as u64;
                }
                break;
            }
        }
        while !pending.is_empty() {
            let n = pending.len().min(max);
            let chunk: Vec<LogRecord> = pending.drain(..n).collect();
            self.send(chunk);
        }
        self.stats.lagged = sub.lagged();
        self.stats
    }

    /// Sends one request's worth of records, retrying as configured.
    fn send(&mut self, records: Vec<LogRecord>) {
        let n = records.len() as u64;
        if n == 0 {
            return;
        }
        if self.past_deadline() {
            self.stats.failed += n;
            return;
        }
        let body = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "corral-audit".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..InstrumentationScope::default()
                    }),
                    log_records: records,
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
        .encode_to_vec();
        let retries = if self.down { 0 } else { self.cfg.retries };
        let mut wait = self.cfg.backoff;
        for attempt in 0..=retries {
            match self.post(&body) {
                Outcome::Accepted { rejected } => {
                    let rejected = rejected.min(n);
                    self.stats.sent += n - rejected;
                    self.stats.failed += rejected;
                    self.down = false;
                    return;
                }
                Outcome::Refused(e) => {
                    self.stats.last_error = Some(e);
                    self.stats.failed += n;
                    return;
                }
                Outcome::Retry(e) => self.stats.last_error = Some(e),
            }
            if attempt == retries || self.deadline().is_some_and(|d| Instant::now() + wait >= d) {
                break;
            }
            std::thread::sleep(wait);
            wait = wait.saturating_mul(2);
        }
        self.down = true;
        self.stats.failed += n;
    }

    fn post(&self, body: &[u8]) -> Outcome {
        let mut req = self
            .agent
            .post(&self.cfg.endpoint)
            .header("Content-Type", "application/x-protobuf");
        for (k, v) in &self.cfg.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let mut resp = match req.send(body) {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("{}: {e}", self.cfg.endpoint)),
        };
        let status = resp.status().as_u16();
        // Read the answer whole, so the connection can be reused.
        let answer = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .unwrap_or_default();
        match status {
            200..=299 => {
                let partial = ExportLogsServiceResponse::decode(answer.as_slice())
                    .ok()
                    .and_then(|r| r.partial_success);
                Outcome::Accepted {
                    rejected: partial.map_or(0, |p| u64::try_from(p.rejected_log_records).unwrap_or(0)),
                }
            }
            429 | 500..=599 => Outcome::Retry(format!("{}: HTTP {status}", self.cfg.endpoint)),
            _ => Outcome::Refused(format!("{}: HTTP {status}", self.cfg.endpoint)),
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    }
}

fn int(i: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(i)),
    }
}

fn boolean(b: bool) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::BoolValue(b)),
    }
}

fn strings(v: &[String]) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue {
            values: v.iter().map(|s| string(s)).collect(),
        })),
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..KeyValue::default()
    }
}

/// One stored event as a log record; `observed` is the export time (ns).
pub fn record(s: &Stored, observed: u64) -> LogRecord {
    let e = &s.event;
    let warn = matches!(e.decision, Some(Decision::Deny | Decision::WouldDeny));
    let mut attributes = vec![
        kv("corral.session", string(&e.session.to_string())),
        kv("corral.principal", string(&e.principal)),
        kv("corral.kind", string(kind_of(&e.what).as_str())),
    ];
    if let Some(d) = e.decision {
        attributes.push(kv("corral.decision", string(decision_name(d))));
    }
    attributes.push(kv("corral.layer", string(layer_name(e.layer))));
    // An http event's `proc` is empty unless the kernel told the proxy.
    if !http::pid_unknown(&e.what) && !super::mcp::pid_unknown(e) {
        attributes.push(kv("process.pid", int(i64::from(e.proc.pid))));
        if e.proc.ppid != 0 {
            attributes.push(kv("process.parent_pid", int(i64::from(e.proc.ppid))));
        }
        if let Some(exe) = &e.proc.exe {
            attributes.push(kv("process.executable.path", string(exe)));
        }
    }
    match &e.what {
        What::Exec { argv: Some(argv), .. } | What::ExecTrace { argv, .. } => {
            attributes.push(kv("process.command_args", strings(argv)));
        }
        What::Http { .. } => http_attributes(&e.what, &mut attributes),
        What::Mcp {
            transport,
            server,
            method,
            tool,
            stage,
            ..
        } => {
            attributes.push(kv("corral.mcp.transport", string(transport)));
            attributes.push(kv("corral.mcp.server", string(server)));
            attributes.push(kv("corral.mcp.stage", string(stage)));
            attributes.push(kv("rpc.method", string(method)));
            if let Some(t) = tool {
                attributes.push(kv("corral.mcp.tool", string(t)));
            }
        }
        _ => {}
    }
    if let Some(c) = &e.mcp_call {
        attributes.push(kv("corral.mcp.call", string(c)));
    }
    if let Some(t) = target(&e.what) {
        attributes.push(kv("corral.target", string(&t)));
    }
    attributes.push(kv("corral.policies", strings(&e.policies)));
    attributes.push(kv("corral.policy_at", strings(&s.policy_at)));
    let severity = if warn {
        SeverityNumber::Warn
    } else {
        SeverityNumber::Info
    };
    LogRecord {
        time_unix_nano: s.wall_ns,
        observed_time_unix_nano: observed,
        severity_number: severity as i32,
        severity_text: if warn { "WARN" } else { "INFO" }.into(),
        body: Some(string(&summary(s))),
        attributes,
        event_name: format!("corral.{}", what_name(&e.what)),
        ..LogRecord::default()
    }
}

/// The attributes of an http event (see the module doc).
fn http_attributes(what: &What, out: &mut Vec<KeyValue>) {
    let What::Http {
        stage,
        method,
        scheme,
        host,
        port,
        path,
        status,
        bytes_in,
        bytes_out,
        duration_us,
        injected,
        secrets_used,
        secrets_withheld,
        error,
        pid_known,
    } = what
    else {
        return;
    };
    let path = http::shown_path(stage, path);
    out.push(kv("corral.http.stage", string(stage)));
    if !method.is_empty() {
        out.push(kv("http.request.method", string(method)));
    }
    out.push(kv("url.full", string(&http::url(scheme, host, *port, path))));
    if !scheme.is_empty() {
        out.push(kv("url.scheme", string(scheme)));
    }
    if !path.is_empty() {
        out.push(kv("url.path", string(path)));
    }
    out.push(kv("server.address", string(host)));
    out.push(kv("server.port", int(i64::from(*port))));
    if let Some(code) = status {
        out.push(kv("http.response.status_code", int(i64::from(*code))));
    }
    let size = |n: u64| int(i64::try_from(n).unwrap_or(i64::MAX));
    out.push(kv("http.request.body.size", size(*bytes_in)));
    out.push(kv("http.response.body.size", size(*bytes_out)));
    out.push(kv("corral.http.duration_us", size(*duration_us)));
    out.push(kv("corral.http.pid_known", boolean(*pid_known)));
    for (key, names) in [
        ("corral.http.injected_headers", injected),
        ("corral.http.secrets_used", secrets_used),
        ("corral.http.secrets_withheld", secrets_withheld),
    ] {
        if !names.is_empty() {
            out.push(kv(key, strings(names)));
        }
    }
    if let Some(e) = error {
        out.push(kv("corral.http.error", string(e)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let c = OtlpConfig::new("http://127.0.0.1:4318").unwrap();
        assert_eq!(c.endpoint(), "http://127.0.0.1:4318/v1/logs");
        let c = OtlpConfig::new("http://collector:4318/").unwrap();
        assert_eq!(c.endpoint(), "http://collector:4318/v1/logs");
        let c = OtlpConfig::new("http://collector/otlp/v1/logs").unwrap();
        assert_eq!(c.endpoint(), "http://collector/otlp/v1/logs");
        for bad in [
            "https://collector:4318",
            "ftp://x",
            "collector:4318",
            "http://",
            "http:// bad",
        ] {
            assert!(OtlpConfig::new(bad).is_err(), "{bad}");
        }
    }
}
