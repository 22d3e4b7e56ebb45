//! Request-smuggling guard for HTTP/1.1: watches the bytes hyper reads and
//! flags a request head that carries both `Content-Length` and
//! `Transfer-Encoding`.
//!
//! hyper already handles such a request safely by RFC 9112 §6.3 (the
//! chunked encoding wins, `Content-Length` is dropped, the connection is
//! closed after the response), but it removes the evidence: the request the
//! service sees is an ordinary chunked one. The proxy refuses these
//! requests outright (400, never forwarded) so that no upstream with a
//! different reading ever sees one, and so they are recorded.
//!
//! The guard follows message framing (heads, `Content-Length` bodies,
//! chunked bodies) to find each head. It only reads; if it ever loses track
//! (an upgrade, `CONNECT`, HTTP/2, a head or chunk line it cannot parse) it
//! stops looking and hyper's own handling stands.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the guard found, shared with the request handler.
#[derive(Debug, Default)]
pub struct HeadFlags {
    conflict: AtomicBool,
}

impl HeadFlags {
    /// A head with both `Content-Length` and `Transfer-Encoding` was read.
    pub fn conflict(&self) -> bool {
        self.conflict.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    Body(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    Trailers(Vec<u8>),
    Off,
}

/// Framing tracker (no IO; fed the bytes read).
#[derive(Debug)]
pub struct Tracker {
    state: State,
    max_head: usize,
    flags: Arc<HeadFlags>,
}

impl Tracker {
    /// A tracker for heads of at most `max_head` bytes.
    pub fn new(max_head: usize, flags: Arc<HeadFlags>) -> Tracker {
        Tracker {
            state: State::Head(Vec::new()),
            max_head,
            flags,
        }
    }

    /// Looks at the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let in_head = matches!(self.state, State::Head(_));
            match &mut self.state {
                State::Off => return,
                State::Head(buf) | State::Trailers(buf) => {
                    let Some((&b, rest)) = data.split_first() else {
                        return;
                    };
                    data = rest;
                    // Empty lines before a request line are allowed (RFC 9112 §2.2).
                    if buf.is_empty() && (b == b'\r' || b == b'\n') && in_head {
                        continue;
                    }
                    buf.push(b);
                    let done =
                        buf.ends_with(b"\r\n\r\n") || buf.ends_with(b"\n\n") || buf.as_slice() == b"\r\n";
                    if buf.len() > self.max_head {
                        self.state = State::Off;
                    } else if done {
                        self.state = match &self.state {
                            State::Head(h) => self.after_head(h),
                            _ => State::Head(Vec::new()),
                        };
                    }
                }
                State::Body(n) | State::ChunkData(n) => {
                    let take = (data.len() as u64).min(*n);
                    *n -= take;
                    data = data.get(take as usize..).unwrap_or_default();
                    if *n == 0 {
                        self.state = match self.state {
                            State::Body(_) => State::Head(Vec::new()),
                            _ => State::ChunkSize(Vec::new()),
                        };
                    }
                }
                State::ChunkSize(line) => {
                    let Some((&b, rest)) = data.split_first() else {
                        return;
                    };
                    data = rest;
                    line.push(b);
                    if line.len() > 1024 {
                        self.state = State::Off;
                    } else if b == b'\n' {
                        let text = String::from_utf8_lossy(line);
                        let hex = text.split([';', '\r', '\n']).next().unwrap_or("").trim();
                        self.state = match u64::from_str_radix(hex, 16) {
                            Ok(0) => State::Trailers(Vec::new()),
                            // Data, then its CRLF.
                            Ok(n) => n.checked_add(2).map(State::ChunkData).unwrap_or(State::Off),
                            Err(_) => State::Off,
                        };
                    }
                }
            }
        }
    }

    fn after_head(&self, head: &[u8]) -> State {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.lines();
        let method = lines.next().and_then(|l| l.split(' ').next()).unwrap_or("");
        if method == "CONNECT" || method == "PRI" {
            return State::Off;
        }
        let (mut cl, mut te, mut upgrade) = (None, false, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim().to_ascii_lowercase();
            match name.as_str() {
                "content-length" => cl = Some(value.trim().to_string()),
                "transfer-encoding" => te = true,
                "upgrade" => upgrade = true,
                _ => {}
            }
        }
        if te && cl.is_some() {
            self.flags.conflict.store(true, Ordering::Relaxed);
            // hyper closes the connection after this request.
            return State::Off;
        }
        if upgrade {
            return State::Off;
        }
        if te {
            return State::ChunkSize(Vec::new());
        }
        match cl.map(|v| v.parse::<u64>()) {
            Some(Ok(0)) | None => State::Head(Vec::new()),
            Some(Ok(n)) => State::Body(n),
            Some(Err(_)) => State::Off,
        }
    }
}

/// A stream that feeds what is read through a [`Tracker`].
pub(crate) struct HeadGuard<T> {
    inner: T,
    tracker: Tracker,
}

impl<T> HeadGuard<T> {
    /// Wraps `inner`; the flags are for the request handler.
    pub(crate) fn new(inner: T, max_head: usize) -> (HeadGuard<T>, Arc<HeadFlags>) {
        let flags = Arc::new(HeadFlags::default());
        let tracker = Tracker::new(max_head, flags.clone());
        (HeadGuard { inner, tracker }, flags)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            if let Some(new) = buf.filled().get(before..) {
                this.tracker.feed(new);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadGuard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(chunks: &[&[u8]]) -> bool {
        let flags = Arc::new(HeadFlags::default());
        let mut t = Tracker::new(65536, flags.clone());
        for c in chunks {
            t.feed(c);
        }
        flags.conflict()
    }

    #[test]
    fn flags_cl_te_in_any_request_of_a_connection() {
        let bad =
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(conflict(&[bad]));
        // Byte by byte, after a Content-Length request and a chunked one.
        let mut s = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        s.extend_from_slice(b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n");
        assert!(!conflict(&[&s]));
        s.extend_from_slice(bad);
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert!(conflict(&bytes));
    }

    #[test]
    fn body_bytes_are_not_mistaken_for_heads() {
        let inner = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n";
        let mut s = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", inner.len()).into_bytes();
        s.extend_from_slice(inner);
        assert!(!conflict(&[&s]));
        // The same bytes as a head of their own are flagged.
        assert!(conflict(&[inner]));
    }
}
