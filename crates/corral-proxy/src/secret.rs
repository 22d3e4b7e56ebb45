//! Placeholder secrets (DESIGN.md §5): the agent holds
//! `NAME=corral-placeholder-<random>` instead of a real API key, and the
//! proxy puts the real value in place of the placeholder only on requests
//! to hosts the policy allows for that secret (`SecretUse`).
//!
//! * Headers: every request header whose value contains a placeholder is
//!   decided per secret; allowed, each occurrence is replaced by the real
//!   value; not allowed, the placeholder goes out unchanged.
//! * Bodies (secrets marked `bodies`): when such a secret is allowed for
//!   the host, the body is buffered (up to `Limits::max_rewrite_body`) and
//!   substituted; otherwise it streams through and is only scanned, so a
//!   withheld placeholder is still reported.
//!
//! Real values live in [`Redacted`] and leave it only as bytes of the
//! request sent upstream: events, errors and `Debug` name secrets, never
//! their values.

use crate::decide::{ProxyPolicy, Redacted};
use crate::upstream::ProxyBody;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use std::sync::{Arc, Mutex, PoisonError};

/// What every placeholder starts with.
pub const PLACEHOLDER_PREFIX: &str = "corral-placeholder-";

/// A secret the proxy substitutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// Its name, as `SecretUse` asks about it (`context.secret`): the
    /// environment variable, e.g. `ANTHROPIC_API_KEY`.
    pub name: String,
    /// What the agent holds instead of the value.
    pub placeholder: String,
    /// The real value (never printed).
    pub value: Redacted,
    /// Also substitute the placeholder in request bodies.
    pub bodies: bool,
}

/// Why no placeholder could be made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The OS random number generator failed.
    #[error("cannot make a placeholder: the OS random number generator failed: {0}")]
    Rng(String),
}

/// A fresh placeholder: [`PLACEHOLDER_PREFIX`] and 32 lower-case hex
/// digits (128 bits) from the OS random number generator.
pub fn try_placeholder() -> Result<String, SecretError> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| SecretError::Rng(e.to_string()))?;
    let mut out = String::with_capacity(PLACEHOLDER_PREFIX.len() + 32);
    out.push_str(PLACEHOLDER_PREFIX);
    for b in raw {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

/// [`try_placeholder`] for session setup, where no placeholder means no
/// session.
///
/// # Panics
///
/// When the OS random number generator fails (no `getrandom(2)` and no
/// readable `/dev/urandom`): there is no safe placeholder to make then.
pub fn placeholder() -> String {
    // Only at session setup, never on the request path.
    #[allow(clippy::expect_used)]
    try_placeholder().expect("the OS random number generator works")
}

/// Checks a set of secrets: names and placeholders non-empty, placeholders
/// distinct and none inside another (each occurrence must name one secret).
pub(crate) fn check(secrets: &[Secret]) -> Result<(), String> {
    for (i, s) in secrets.iter().enumerate() {
        if s.name.is_empty() || s.placeholder.is_empty() {
            return Err(format!(
                "secret `{}` needs a name and a non-empty placeholder",
                s.name
            ));
        }
        for t in secrets.iter().skip(i + 1) {
            if s.placeholder.contains(&t.placeholder) || t.placeholder.contains(&s.placeholder) {
                return Err(format!(
                    "secrets `{}` and `{}` have overlapping placeholders",
                    s.name, t.name
                ));
            }
        }
    }
    Ok(())
}

/// Index of the first occurrence of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle, 0).is_some()
}

/// `hay` with every occurrence of each `(needle, replacement)` pair's
/// needle replaced, in one left-to-right pass (a replacement is never
/// searched again).
fn substitute(hay: &[u8], subs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut at = 0;
    loop {
        let next = subs
            .iter()
            .filter_map(|(n, r)| find(hay, n, at).map(|p| (p, *n, *r)))
            .min_by_key(|(p, _, _)| *p);
        let Some((p, needle, with)) = next else { break };
        out.extend_from_slice(hay.get(at..p).unwrap_or_default());
        out.extend_from_slice(with);
        at = p + needle.len();
    }
    out.extend_from_slice(hay.get(at..).unwrap_or_default());
    out
}

/// Names pushed once each, in order.
fn push_once(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|n| n == name) {
        list.push(name.to_string());
    }
}

/// The secrets of one request: decided once each for its host, and what
/// happened to them.
pub(crate) struct Ask<'a> {
    secrets: &'a [Secret],
    policy: &'a ProxyPolicy,
    principal: &'a str,
    host: &'a str,
    port: u16,
    allowed: Vec<Option<bool>>,
    /// Names of the secrets whose value was sent.
    pub used: Vec<String>,
    /// Names of the secrets whose placeholder went out unchanged.
    pub withheld: Vec<String>,
}

/// What to do with a request body.
enum BodyPlan {
    /// Nothing to look for.
    Stream,
    /// Buffer it and substitute (some `bodies` secret is allowed here).
    Buffer,
    /// Stream it through, reporting the placeholders seen (withheld).
    Scan(BodyScan),
}

impl<'a> Ask<'a> {
    pub fn new(
        secrets: &'a [Secret],
        policy: &'a ProxyPolicy,
        principal: &'a str,
        host: &'a str,
        port: u16,
    ) -> Ask<'a> {
        Ask {
            secrets,
            policy,
            principal,
            host,
            port,
            allowed: vec![None; secrets.len()],
            used: vec![],
            withheld: vec![],
        }
    }

    /// `SecretUse` for secret `i` on this host (asked once).
    fn allowed(&mut self, i: usize) -> bool {
        if let Some(Some(a)) = self.allowed.get(i) {
            return *a;
        }
        let Some(s) = self.secrets.get(i) else {
            return false;
        };
        let a = self
            .policy
            .decide_secret(self.principal, self.host, self.port, &s.name)
            .allowed;
        if let Some(slot) = self.allowed.get_mut(i) {
            *slot = Some(a);
        }
        a
    }

    /// Substitutes in `bytes` the placeholders of the secrets `eligible`
    /// accepts that are allowed here; records the used and the withheld.
    /// `None` when nothing was substituted.
    fn apply(&mut self, bytes: &[u8], eligible: impl Fn(&Secret) -> bool) -> Option<(Vec<u8>, Vec<usize>)> {
        let present: Vec<usize> = (0..self.secrets.len())
            .filter(|i| {
                self.secrets
                    .get(*i)
                    .is_some_and(|s| eligible(s) && contains(bytes, s.placeholder.as_bytes()))
            })
            .collect();
        let mut swap = Vec::new();
        for i in present {
            if self.allowed(i) {
                swap.push(i);
            } else if let Some(s) = self.secrets.get(i) {
                push_once(&mut self.withheld, &s.name);
            }
        }
        if swap.is_empty() {
            return None;
        }
        let subs: Vec<(&[u8], &[u8])> = swap
            .iter()
            .filter_map(|i| self.secrets.get(*i))
            .map(|s| (s.placeholder.as_bytes(), s.value.expose().as_bytes()))
            .collect();
        Some((substitute(bytes, &subs), swap))
    }

    fn mark_used(&mut self, swapped: &[usize]) {
        for i in swapped {
            if let Some(s) = self.secrets.get(*i) {
                push_once(&mut self.used, &s.name);
            }
        }
    }

    /// Substitutes placeholders in every header value. Returns what went
    /// wrong (a real value that is not a valid header value: the
    /// placeholder is kept and the secret counted as withheld).
    pub fn headers(&mut self, headers: &mut HeaderMap) -> Vec<String> {
        let mut errors = Vec::new();
        if self.secrets.is_empty() {
            return errors;
        }
        for (name, value) in headers.iter_mut() {
            let Some((bytes, swapped)) = self.apply(value.as_bytes(), |_| true) else {
                continue;
            };
            match HeaderValue::from_bytes(&bytes) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    *value = v;
                    self.mark_used(&swapped);
                }
                Err(_) => {
                    for i in swapped {
                        if let Some(s) = self.secrets.get(i) {
                            push_once(&mut self.withheld, &s.name);
                            errors.push(format!(
                                "secret `{}` is not a valid value for header `{name}`: its placeholder was sent",
                                s.name
                            ));
                        }
                    }
                }
            }
        }
        errors
    }

    /// How to treat the body of this request.
    fn body_plan(&mut self) -> BodyPlan {
        let mut scan = Vec::new();
        for i in 0..self.secrets.len() {
            let Some(s) = self.secrets.get(i).filter(|s| s.bodies) else {
                continue;
            };
            let (name, ph) = (s.name.clone(), s.placeholder.clone().into_bytes());
            if self.allowed(i) {
                return BodyPlan::Buffer;
            }
            scan.push((name, ph));
        }
        if scan.is_empty() {
            BodyPlan::Stream
        } else {
            BodyPlan::Scan(BodyScan::new(scan))
        }
    }

    /// The request body to send upstream, and where a streamed body's
    /// withheld placeholders are collected. Buffered (and `Content-Length`
    /// set) when a `bodies` secret is allowed for the host; else streamed,
    /// scanned if some `bodies` secret could appear. Fails with the status
    /// and error to refuse the request with (a body over `limit`).
    pub async fn body(
        &mut self,
        body: ProxyBody,
        headers: &mut HeaderMap,
        upgrade: bool,
        limit: usize,
    ) -> Result<(ProxyBody, Option<Seen>), (StatusCode, String)> {
        if body.is_end_stream() || upgrade {
            return Ok((body, None));
        }
        match self.body_plan() {
            BodyPlan::Stream => Ok((body, None)),
            BodyPlan::Scan(mut scan) => {
                let seen = scan.found();
                let body = body
                    .map_frame(move |f| {
                        if let Some(d) = f.data_ref() {
                            scan.feed(d);
                        }
                        f
                    })
                    .boxed();
                Ok((body, Some(seen)))
            }
            BodyPlan::Buffer => {
                let bytes = self.substitute_body(buffer(body, headers, limit).await?);
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                let body = Full::new(bytes).map_err(|never| match never {}).boxed();
                Ok((body, None))
            }
        }
    }

    /// Substitutes the placeholders of `bodies` secrets in a buffered body.
    fn substitute_body(&mut self, body: Bytes) -> Bytes {
        match self.apply(&body, |s| s.bodies) {
            Some((bytes, swapped)) => {
                self.mark_used(&swapped);
                Bytes::from(bytes)
            }
            None => body,
        }
    }
}

/// Reads a request body whole, up to `limit` bytes; over it (or a
/// `Content-Length` over it) the status and error to refuse it with.
async fn buffer(body: ProxyBody, headers: &HeaderMap, limit: usize) -> Result<Bytes, (StatusCode, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body over the limit `max_rewrite_body` ({limit} bytes): bodies that may carry a placeholder secret are buffered to substitute it"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err((
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// Names of the secrets whose placeholders a streamed body carried, filled
/// in while it streams.
pub(crate) type Seen = Arc<Mutex<Vec<String>>>;

/// Looks for placeholders in a streamed body, across chunk boundaries.
struct BodyScan {
    needles: Vec<(String, Vec<u8>)>,
    tail: Vec<u8>,
    keep: usize,
    found: Seen,
}

impl BodyScan {
    fn new(needles: Vec<(String, Vec<u8>)>) -> BodyScan {
        let keep = needles
            .iter()
            .map(|(_, n)| n.len().saturating_sub(1))
            .max()
            .unwrap_or(0);
        BodyScan {
            needles,
            tail: Vec::new(),
            keep,
            found: Arc::default(),
        }
    }

    /// The names seen so far, shared with whoever reports the request.
    fn found(&self) -> Seen {
        self.found.clone()
    }

    /// Looks at the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut buf = std::mem::take(&mut self.tail);
        buf.extend_from_slice(chunk);
        let mut found = self.found.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, needle) in &self.needles {
            if !found.contains(name) && contains(&buf, needle) {
                found.push(name.clone());
            }
        }
        self.tail = buf.split_off(buf.len().saturating_sub(self.keep));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_random_lower_hex() {
        let a = placeholder();
        let b = placeholder();
        assert_ne!(a, b);
        for p in [&a, &b] {
            let hex = p.strip_prefix(PLACEHOLDER_PREFIX).unwrap();
            assert_eq!(hex.len(), 32, "{p}");
            assert!(hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')), "{p}");
        }
    }

    #[test]
    fn substitution_replaces_every_occurrence_once() {
        let s = substitute(b"xPHyPHPHz", &[(b"PH", b"v PH")]);
        assert_eq!(s, b"xv PHyv PHv PHz");
        let s = substitute(b"AB-BA", &[(b"A", b"1"), (b"B", b"2")]);
        assert_eq!(s, b"12-21");
        assert_eq!(substitute(b"none", &[(b"PH", b"v")]), b"none");
    }

    #[test]
    fn scanning_finds_placeholders_split_across_chunks() {
        let mut scan = BodyScan::new(vec![("K".into(), b"corral-placeholder-ab".to_vec())]);
        let found = scan.found();
        scan.feed(b"...corral-pla");
        scan.feed(b"ceholder-");
        assert!(found.lock().unwrap().is_empty());
        scan.feed(b"ab...");
        assert_eq!(*found.lock().unwrap(), ["K"]);
    }

    #[test]
    fn overlapping_placeholders_are_refused() {
        let s = |n: &str, p: &str| Secret {
            name: n.into(),
            placeholder: p.into(),
            value: Redacted::new("v"),
            bodies: false,
        };
        assert!(check(&[s("A", "corral-placeholder-1"), s("B", "corral-placeholder-2")]).is_ok());
        assert!(check(&[s("A", "corral-placeholder-1"), s("B", "corral-placeholder-12")]).is_err());
        assert!(check(&[s("A", "")]).is_err());
        let shown = format!("{:?}", s("A", "p"));
        assert!(
            shown.contains("<redacted>") && !shown.contains("\"v\""),
            "{shown}"
        );
    }
}
