//! How an http event reads: its URL, its `target` (as stored and grepped),
//! and what came of it in a few words, shared by the store, the summaries
//! every exporter carries and `corral events`.
//!
//! Only what the event holds is shown: header and secret names, never a
//! value (the event has none).

use corral_core::What;

/// `scheme://host:port` plus `path` as given (IPv6 hosts in brackets;
/// `host:port...` when the scheme is unknown).
pub fn url(scheme: &str, host: &str, port: u16, path: &str) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if scheme.is_empty() {
        format!("{host}:{port}{path}")
    } else {
        format!("{scheme}://{host}:{port}{path}")
    }
}

/// Whether an http event is about a connection refused before any request
/// (no method, no path).
pub(crate) fn is_connection(stage: &str) -> bool {
    stage == "connection"
}

/// The path an http event shows: none for a connection.
pub(crate) fn shown_path<'a>(stage: &str, path: &'a str) -> &'a str {
    if is_connection(stage) {
        ""
    } else {
        path
    }
}

/// The store's `target` of an http event: `METHOD scheme://host:port/path`,
/// or `scheme://host:port` for a connection; `None` for other events.
pub fn target(what: &What) -> Option<String> {
    let What::Http {
        stage,
        method,
        scheme,
        host,
        port,
        path,
        ..
    } = what
    else {
        return None;
    };
    let u = url(scheme, host, *port, shown_path(stage, path));
    if is_connection(stage) || method.is_empty() {
        Some(u)
    } else {
        Some(format!("{method} {u}"))
    }
}

/// What came of an http event, e.g. `200, in 1.2 KiB, out 33.2 KiB,
/// 812.3 ms, injected [x-api-key], secrets used [ANTHROPIC_API_KEY]`:
/// the status (`no response`), the body bytes read from the client (in) and
/// sent to it (out) and the duration (not for a connection), then the
/// injected header names and the secret names used and withheld, when any.
/// The error is left to the caller (it reads best after the decision).
/// `None` for other events.
pub fn outcome(what: &What) -> Option<String> {
    let What::Http {
        stage,
        status,
        bytes_in,
        bytes_out,
        duration_us,
        injected,
        secrets_used,
        secrets_withheld,
        ..
    } = what
    else {
        return None;
    };
    let mut parts = vec![match status {
        Some(s) => s.to_string(),
        None => "no response".to_owned(),
    }];
    if !is_connection(stage) {
        parts.push(format!("in {}", bytes(*bytes_in)));
        parts.push(format!("out {}", bytes(*bytes_out)));
        parts.push(duration(*duration_us));
    }
    for (label, names) in [
        ("injected", injected),
        ("secrets used", secrets_used),
        ("secrets withheld", secrets_withheld),
    ] {
        if !names.is_empty() {
            parts.push(format!("{label} [{}]", names.join(", ")));
        }
    }
    Some(parts.join(", "))
}

/// An http event whose `proc` is empty: the proxy was not told which
/// process opened the connection.
pub fn pid_unknown(what: &What) -> bool {
    matches!(what, What::Http { pid_known: false, .. })
}

/// The error of an http event. A denial with an error and no policy was
/// refused for that reason (not TLS, SNI mismatch, smuggling), not by
/// default deny.
pub fn error(what: &What) -> Option<&str> {
    match what {
        What::Http { error, .. } => error.as_deref(),
        _ => None,
    }
}

/// A byte count in B, KiB, MiB or GiB.
pub(crate) fn bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = "KiB";
    for u in ["MiB", "GiB"] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// A duration given in µs, in µs, ms or s.
pub(crate) fn duration(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(stage: &str, method: &str, host: &str, path: &str) -> What {
        What::Http {
            stage: stage.into(),
            method: method.into(),
            scheme: "https".into(),
            host: host.into(),
            port: 443,
            path: path.into(),
            status: None,
            bytes_in: 0,
            bytes_out: 0,
            duration_us: 0,
            injected: vec![],
            secrets_used: vec![],
            secrets_withheld: vec![],
            error: Some("not a TLS handshake".into()),
            pid_known: false,
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            target(&http("request", "GET", "api.github.com", "/user")).as_deref(),
            Some("GET https://api.github.com:443/user")
        );
        assert_eq!(
            target(&http("connection", "", "evil.example", "")).as_deref(),
            Some("https://evil.example:443")
        );
        assert_eq!(
            target(&http("request", "GET", "::1", "/")).as_deref(),
            Some("GET https://[::1]:443/")
        );
        assert_eq!(url("", "10.0.0.1", 80, "/x"), "10.0.0.1:80/x");
        assert_eq!(target(&What::Exit { code: 0 }), None);
    }

    #[test]
    fn outcomes() {
        assert_eq!(
            outcome(&http("connection", "", "evil.example", "")).as_deref(),
            Some("no response")
        );
        let w = What::Http {
            stage: "request".into(),
            method: "POST".into(),
            scheme: "https".into(),
            host: "api.anthropic.com".into(),
            port: 443,
            path: "/v1/messages".into(),
            status: Some(200),
            bytes_in: 1_229,
            bytes_out: 34_000,
            duration_us: 812_345,
            injected: vec!["x-api-key".into(), "anthropic-version".into()],
            secrets_used: vec!["ANTHROPIC_API_KEY".into()],
            secrets_withheld: vec![],
            error: None,
            pid_known: true,
        };
        assert_eq!(
            outcome(&w).as_deref(),
            Some(
                "200, in 1.2 KiB, out 33.2 KiB, 812.3 ms, injected [x-api-key, anthropic-version], \
                 secrets used [ANTHROPIC_API_KEY]"
            )
        );
    }

    #[test]
    fn units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 20), "5.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bytes(u64::MAX), "17179869184.0 GiB");
        assert_eq!(duration(999), "999 µs");
        assert_eq!(duration(1_000), "1.0 ms");
        assert_eq!(duration(2_500_000), "2.50 s");
    }
}
