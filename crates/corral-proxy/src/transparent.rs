//! Connections the kernel redirected to the proxy (corral-kernel's
//! `connect4/6` rewrite): the client meant to reach `dst` and does not know
//! a proxy is there.
//!
//! The first bytes say what the connection is, without consuming them:
//!
//! * a TLS record (`0x16`) or an HTTP request line (`METHOD ` with a known
//!   method, or the HTTP/2 preface): intercepted and served like any other
//!   connection ([`serve_connection`](crate::serve_connection)), every
//!   request decided on its host;
//! * anything else, or nothing within [`OPAQUE_WAIT`] (protocols where the
//!   server speaks first: SSH banners, SMTP, MySQL): an opaque TCP stream,
//!   decided as `NetworkConnect` on the destination address and port, then
//!   spliced to `dst` byte for byte.
//!
//! Every connection, intercepted or opaque, is reported with the process
//! that opened it when the kernel told us.

use crate::event::{Client, HttpEvent};
use crate::proxy::{Dest, Proxy};
use corral_core::Decision;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long a client may stay silent before its connection is taken as a
/// protocol where the server speaks first.
pub const OPAQUE_WAIT: Duration = Duration::from_millis(300);

/// Methods whose request line marks a connection as HTTP/1.x, and the
/// HTTP/2 prior-knowledge preface.
const HTTP_STARTS: [&[u8]; 10] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PRI * HTTP/2.0",
];

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lead {
    /// A TLS handshake record.
    Tls,
    /// An HTTP request line.
    Http,
    /// Anything else.
    Opaque,
    /// Not enough bytes to tell yet.
    Undecided,
}

/// Classifies the first bytes of a connection.
pub fn classify(first: &[u8]) -> Lead {
    match first.first() {
        None => Lead::Undecided,
        Some(0x16) => Lead::Tls,
        Some(_) => {
            let mut partial = false;
            for s in HTTP_STARTS {
                if first.starts_with(s) {
                    return Lead::Http;
                }
                if s.starts_with(first) {
                    partial = true;
                }
            }
            if partial {
                Lead::Undecided
            } else {
                Lead::Opaque
            }
        }
    }
}

/// Whether the proxy may connect to `ip` for a session: never a loopback
/// or unspecified address. The session's loopback is its own (the kernel
/// never redirects it); the proxy's is the host's.
pub fn reachable(ip: std::net::IpAddr) -> bool {
    let ip = ip.to_canonical();
    !(ip.is_loopback() || ip.is_unspecified())
}

/// Records a connection to the proxy's port that the kernel did not
/// redirect (its destination is unknown): the caller closes it.
pub fn refuse_unredirected(ctx: &Proxy, local: SocketAddr, peer: SocketAddr) {
    ctx.emit(HttpEvent::refused(
        &ctx.principal,
        "",
        &local.ip().to_string(),
        local.port(),
        format!("a connection from {peer} to the proxy's own port, not redirected by the kernel: refused"),
    ));
}

/// Serves a redirected connection the client meant for `dst`.
pub async fn serve_redirected(stream: TcpStream, dst: SocketAddr, client: Option<Client>, ctx: Arc<Proxy>) {
    let dst = SocketAddr::new(dst.ip().to_canonical(), dst.port());
    if !ctx.may_reach(dst.ip()) {
        let mut ev = HttpEvent::refused(
            &ctx.principal,
            "",
            &dst.ip().to_string(),
            dst.port(),
            format!("{dst} is a loopback or unspecified address: never reached through the proxy"),
        );
        ev.client = client;
        ctx.emit(ev);
        return;
    }
    let deadline = Instant::now() + OPAQUE_WAIT;
    let mut buf = [0u8; 16];
    let lead = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.peek(&mut buf)).await {
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => match classify(buf.get(..n).unwrap_or_default()) {
                Lead::Undecided if n < buf.len() && !left.is_zero() => {
                    // More of the request line is on its way.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                // A slow request line is still HTTP: its header timeout applies.
                Lead::Undecided => break Lead::Http,
                l => break l,
            },
            Ok(Err(_)) => return,
            Err(_) => break Lead::Opaque,
        }
    };
    let dest = Dest {
        host: None,
        ip: dst.ip(),
        port: dst.port(),
    };
    match lead {
        Lead::Tls | Lead::Http => crate::serve::serve_from(Box::new(stream), dest, client, ctx).await,
        Lead::Opaque | Lead::Undecided => tunnel(stream, dst, client, ctx).await,
    }
}

/// An opaque stream: `NetworkConnect` on the address, then a splice.
async fn tunnel(mut stream: TcpStream, dst: SocketAddr, client: Option<Client>, ctx: Arc<Proxy>) {
    let start = Instant::now();
    let mut ev = HttpEvent::refused(
        &ctx.principal,
        "tcp",
        &dst.ip().to_string(),
        dst.port(),
        String::new(),
    );
    ev.kind = "tunnel";
    ev.error = None;
    ev.client = client;
    let mut verdict = ctx.decide_connect(None, dst.ip(), dst.port());
    if !verdict.allowed && verdict.policies.is_empty() {
        // Not permitted by address: it may be for a host name a permit
        // names (ssh to `github.com:22`) that resolves to this address.
        if let Some((name, v)) = by_name(&ctx, dst).await {
            ev.host = name;
            verdict = v;
        }
    }
    ev.policies = verdict.policies.iter().map(|p| p.id.clone()).collect();
    ev.policy_at = verdict.policies.iter().map(|p| p.at.clone()).collect();
    ev.decision = ctx.decision_of(&verdict);
    if ev.decision == Decision::Deny {
        ev.error = Some(verdict.reason);
        ctx.emit(ev);
        return;
    }
    let mut up = match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(dst)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            ev.error = Some(format!("cannot connect to {dst}: {e}"));
            ev.duration = start.elapsed();
            ctx.emit(ev);
            return;
        }
        Err(_) => {
            ev.error = Some(format!("connecting to {dst} timed out"));
            ev.duration = start.elapsed();
            ctx.emit(ev);
            return;
        }
    };
    let _ = up.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut stream, &mut up).await {
        Ok((from_client, from_server)) => {
            ev.bytes_in = from_client;
            ev.bytes_out = from_server;
        }
        Err(e) => ev.error = Some(format!("the stream failed: {e}")),
    }
    ev.duration = start.elapsed();
    ctx.emit(ev);
}

/// The first permitted host name that resolves to `dst`'s address and whose
/// `NetworkConnect` allows the stream, with its verdict.
async fn by_name(ctx: &Arc<Proxy>, dst: SocketAddr) -> Option<(String, crate::decide::Verdict)> {
    let names: Vec<String> = ctx
        .policy()
        .permitted_names(dst.port())
        .map(str::to_string)
        .collect();
    // Resolved all at once: a stream waits for the slowest lookup, not for
    // the sum of them (a policy may name dozens of hosts for one port).
    let mut lookups = tokio::task::JoinSet::new();
    for (i, name) in names.into_iter().enumerate() {
        let ctx = ctx.clone();
        lookups.spawn(async move {
            let ok = ctx.resolves_to(&name, dst.ip()).await;
            (i, name, ok)
        });
    }
    let mut found: Vec<(usize, String)> = Vec::new();
    while let Some(r) = lookups.join_next().await {
        if let Ok((i, name, true)) = r {
            found.push((i, name));
        }
    }
    // The first name in policy order that the policy allows.
    found.sort();
    found.into_iter().find_map(|(_, name)| {
        let v = ctx.decide_connect(Some(&name), dst.ip(), dst.port());
        v.allowed.then_some((name, v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes() {
        assert_eq!(classify(b"\x16\x03\x01"), Lead::Tls);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Lead::Http);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Lead::Http);
        assert_eq!(classify(b"GE"), Lead::Undecided);
        assert_eq!(classify(b"OPT"), Lead::Undecided);
        assert_eq!(classify(b""), Lead::Undecided);
        // SSH's banner starts with an upper-case letter but is no request.
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.2\r\n"), Lead::Opaque);
        assert_eq!(classify(b"\x00\x01"), Lead::Opaque);
        assert_eq!(classify(b"get / HTTP/1.1"), Lead::Opaque);
    }
}
