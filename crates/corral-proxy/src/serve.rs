//! One intercepted connection: look at the first bytes, terminate TLS with
//! a leaf for the SNI (which must name the destination) or take plain HTTP
//! as it is, then serve HTTP/1.1 or HTTP/2 with hyper, each request going
//! through [`forward`](crate::forward).
//!
//! Whatever a client sends, this code answers or closes; it never panics on
//! input and reports every refused connection as an event.

use crate::event::{Client, HttpEvent};
use crate::forward::{handle, ConnInfo};
use crate::proxy::{Dest, Proxy};
use crate::smuggle::HeadGuard;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::timeout;

/// A byte stream a connection runs over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A stream with bytes already read from it put back in front.
struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    inner: Box<dyn Io>,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.pos..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The TLS record type of a handshake message (a ClientHello starts with it).
const TLS_HANDSHAKE: u8 = 0x16;

/// Serves one connection the client meant for `dest`, until it closes.
///
/// * TLS (the first byte is a handshake record): the ClientHello's SNI
///   must equal `dest.host` when that is known (else the connection is
///   refused); without SNI the leaf is made for `dest.host` or `dest.ip`.
/// * Plain HTTP (the first byte is an upper-case letter): served as is;
///   `CONNECT` opens a tunnel whose content is served like a new
///   connection to the CONNECT target.
/// * Anything else is refused.
///
/// Every request's Host (`:authority`) must name the connection's host and
/// port. Refusals and requests are reported through the proxy's event sink.
pub async fn serve_connection<S>(stream: S, dest: Dest, ctx: Arc<Proxy>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_io(Box::new(stream), dest, None, ctx).await
}

/// [`serve_connection`] for a connection whose opener is known (the kernel's
/// redirect said which process it is): every event names it, and a plain
/// HTTP request's Host is checked against the destination address.
pub(crate) async fn serve_from(io: Box<dyn Io>, dest: Dest, client: Option<Client>, ctx: Arc<Proxy>) {
    serve_io(io, dest, client, ctx).await
}

/// [`serve_io`] as a boxed future (a CONNECT tunnel is served from inside
/// a request handler: the box breaks the type cycle).
pub(crate) fn serve_boxed(
    io: Box<dyn Io>,
    dest: Dest,
    client: Option<Client>,
    ctx: Arc<Proxy>,
) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(serve_io(io, dest, client, ctx))
}

pub(crate) async fn serve_io(mut io: Box<dyn Io>, dest: Dest, client: Option<Client>, ctx: Arc<Proxy>) {
    let limits = ctx.limits;
    let shown = dest.host.clone().unwrap_or_else(|| dest.ip.to_string());
    let refuse = |scheme: &str, why: String| {
        let mut e = HttpEvent::refused(&ctx.principal, scheme, &shown, dest.port, why);
        e.client = client.clone();
        ctx.emit(e);
    };
    let mut first = vec![0u8; 1024];
    let n = match timeout(limits.header_timeout, io.read(&mut first)).await {
        Ok(Ok(0)) => return,
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return refuse("", format!("read failed: {e}")),
        Err(_) => return refuse("", "timed out waiting for the first bytes".into()),
    };
    first.truncate(n);
    let lead = first.first().copied().unwrap_or(0);
    let io = Prefixed {
        prefix: first,
        pos: 0,
        inner: io,
    };
    if lead == TLS_HANDSHAKE {
        serve_tls(io, dest, client, ctx.clone()).await
    } else if lead.is_ascii_uppercase() {
        // A redirected connection's host is not known before its requests
        // name one: each Host is checked against the destination address.
        let verify_host = dest.host.is_none() && client.is_some();
        let conn = ConnInfo {
            scheme: "http",
            host: dest.host.clone().unwrap_or_else(|| dest.ip.to_string()),
            dest,
            h2: false,
            client,
            verify_host,
            verified: Default::default(),
        };
        serve_http(Box::new(io), conn, ctx.clone()).await
    } else {
        refuse(
            "",
            format!("neither a TLS ClientHello nor HTTP (first byte 0x{lead:02x})"),
        )
    }
}

async fn serve_tls(io: Prefixed, dest: Dest, client: Option<Client>, ctx: Arc<Proxy>) {
    let limits = ctx.limits;
    let shown = dest.host.clone().unwrap_or_else(|| dest.ip.to_string());
    let refuse = |why: String| {
        let mut e = HttpEvent::refused(&ctx.principal, "https", &shown, dest.port, why);
        e.client = client.clone();
        ctx.emit(e);
    };
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match timeout(limits.header_timeout, acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refuse(format!("bad TLS ClientHello: {e}")),
        Err(_) => return refuse("timed out waiting for the TLS ClientHello".into()),
    };
    let sni = start
        .client_hello()
        .server_name()
        .map(|s| s.trim_end_matches('.').to_ascii_lowercase());
    let want = dest.host.as_deref().map(norm);
    let name = match (sni.clone(), want) {
        (Some(s), Some(h)) if s != h => {
            return refuse(format!("TLS SNI `{s}` does not match the destination `{h}`"))
        }
        (Some(s), _) => s,
        (None, Some(h)) => h,
        (None, None) => dest.ip.to_string(),
    };
    let config = if sni.is_some() {
        Ok(ctx.tls.clone())
    } else {
        ctx.certs
            .get(&name)
            .map_err(|e| e.to_string())
            .and_then(|k| crate::certs::fixed_server_config(k).map_err(|e| e.to_string()))
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => return refuse(format!("cannot make a certificate for `{name}`: {e}")),
    };
    let tls = match timeout(limits.header_timeout, start.into_stream(config)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return refuse(format!("TLS handshake with the client failed: {e}")),
        Err(_) => return refuse("timed out in the TLS handshake".into()),
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let conn = ConnInfo {
        scheme: "https",
        host: name,
        dest,
        h2,
        client,
        verify_host: false,
        verified: Default::default(),
    };
    serve_http(Box::new(tls), conn, ctx).await
}

fn norm(h: &str) -> String {
    corral_policy::request::normalize_host(h).unwrap_or_else(|_| h.to_ascii_lowercase())
}

async fn serve_http(io: Box<dyn Io>, conn: ConnInfo, ctx: Arc<Proxy>) {
    let limits = ctx.limits;
    let conn = Arc::new(conn);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let (guard, flags) = HeadGuard::new(io, limits.max_header_bytes);
    let builder = if conn.h2 {
        builder.http2_only()
    } else if conn.scheme == "https" {
        builder.http1_only()
    } else {
        builder
    };
    let svc = {
        let conn = conn.clone();
        let ctx = ctx.clone();
        service_fn(move |req| handle(req, conn.clone(), ctx.clone(), flags.clone()))
    };
    let result = builder
        .serve_connection_with_upgrades(TokioIo::new(guard), svc)
        .await;
    if let Err(e) = result {
        let text = match e.downcast_ref::<hyper::Error>() {
            Some(h) if h.is_timeout() => "timed out waiting for a request header".to_string(),
            Some(h) if h.is_parse_too_large() => format!("request header too large: {h}"),
            Some(h) if h.is_parse() => format!("malformed request: {h}"),
            Some(h) if h.is_incomplete_message() || h.is_canceled() => return,
            _ => format!("connection failed: {e}"),
        };
        let mut ev = HttpEvent::refused(&ctx.principal, conn.scheme, &conn.host, conn.dest.port, text);
        ev.client = conn.client.clone();
        ctx.emit(ev);
    }
}
