//! Request bodies that were looked at before being sent: the frames read
//! to classify them are put back in front of the rest, and a body still
//! being classified while it streams is cut off at the first sign of
//! JSON-RPC.

use super::sniff::{Scanner, Verdict};
use crate::upstream::ProxyBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Set when a streamed body turned out to carry JSON-RPC and was cut off
/// before its end.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tripped(Arc<AtomicBool>);

impl Tripped {
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The frames already read, then the rest of the body; with a scanner,
/// every later frame is classified before it is sent, and the body ends
/// early (so the upstream never receives a complete JSON text) when it
/// shows a JSON-RPC message.
pub(crate) struct Rejoin {
    head: VecDeque<Frame<Bytes>>,
    head_len: u64,
    inner: Option<ProxyBody>,
    guard: Option<(Scanner, Tripped)>,
}

impl Rejoin {
    /// `head`, then `inner` (`None`: the body ended while it was read).
    pub(crate) fn new(head: Vec<Frame<Bytes>>, inner: Option<ProxyBody>) -> Rejoin {
        let head_len = head
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        Rejoin {
            head: head.into(),
            head_len,
            inner,
            guard: None,
        }
    }

    /// Keeps classifying the rest with `scan`; `tripped` says whether it
    /// cut the body off.
    pub(crate) fn guarded(mut self, scan: Scanner, tripped: Tripped) -> Rejoin {
        self.guard = Some((scan, tripped));
        self
    }
}

impl Body for Rejoin {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(f) = this.head.pop_front() {
            if let Some(d) = f.data_ref() {
                this.head_len -= d.len() as u64;
            }
            return Poll::Ready(Some(Ok(f)));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let r = Pin::new(inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(f))), Some((scan, tripped))) = (&r, this.guard.as_mut()) {
            if let Some(d) = f.data_ref() {
                if scan.feed(d) == Verdict::Mcp {
                    // Not this frame, nor anything after it: the upstream
                    // is left with an unfinished JSON text.
                    tripped.set();
                    this.inner = None;
                    return Poll::Ready(None);
                }
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let Some(inner) = self.inner.as_ref() else {
            return SizeHint::with_exact(self.head_len);
        };
        let h = inner.size_hint();
        let mut s = SizeHint::new();
        s.set_lower(h.lower() + self.head_len);
        if let Some(u) = h.upper() {
            s.set_upper(u + self.head_len);
        }
        s
    }
}
