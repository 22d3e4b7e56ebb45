//! An SSE answer on its way to the client, decoded event by event.
//!
//! Governed: `message` events (no type, or `message`) go through the
//! conversation's governor and are written back with their `event`, `id`
//! and `retry` fields (a refused one leaves only its `id` and `retry`, so
//! the client's position in the stream still moves); the governor's extra
//! messages follow as further events; an `endpoint` event binds the POST
//! endpoint it names to this conversation (legacy HTTP+SSE); other events
//! and comments pass unchanged. Answers corral owes a legacy client arrive
//! through a channel and are written as `message` events between the
//! upstream's.
//!
//! Watching (a GET nobody announced as MCP): the raw bytes are held until
//! the first event is complete (comments before it pass at once); if it
//! is `endpoint` the stream is governed from there on, else everything
//! held is passed on and the rest streams untouched.

use super::{lock, resolve, Conversation, Endpoint, Mcp, INJECT_QUEUE};
use crate::upstream::ProxyBody;
use bytes::Bytes;
use corral_mcp::sse::{encode, encode_comment, Decoder, Event, Item};
use corral_mcp::{Direction, Transport};
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

enum Mode {
    /// Holding the raw bytes until the first event.
    Watch(Vec<u8>),
    Govern,
    Pass,
}

/// The body of a governed or watched SSE answer.
pub(crate) struct SseBody {
    inner: ProxyBody,
    mcp: Arc<Mcp>,
    base: Endpoint,
    conv: Option<Arc<Conversation>>,
    session: Option<String>,
    decoder: Decoder,
    items: Vec<Item>,
    out: VecDeque<Bytes>,
    inject: Option<mpsc::Receiver<Vec<u8>>>,
    mode: Mode,
    ended: bool,
}

impl SseBody {
    fn new(inner: ProxyBody, mcp: Arc<Mcp>, base: Endpoint, mode: Mode) -> SseBody {
        // Room for a message of the limit on one `data:` line.
        let limit = mcp.limit().saturating_add(4096);
        SseBody {
            inner,
            mcp,
            base,
            conv: None,
            session: None,
            decoder: Decoder::new(limit),
            items: Vec::new(),
            out: VecDeque::new(),
            inject: None,
            mode,
            ended: false,
        }
    }

    /// A stream of an MCP conversation (`None`: made at its first message
    /// or `endpoint` event), with `first` (answers corral owes) sent
    /// before the upstream's events.
    pub(crate) fn governed(
        inner: ProxyBody,
        mcp: Arc<Mcp>,
        base: Endpoint,
        conv: Option<Arc<Conversation>>,
        session: Option<String>,
        first: Option<Vec<u8>>,
    ) -> SseBody {
        let mut b = SseBody::new(inner, mcp, base, Mode::Govern);
        b.conv = conv;
        b.session = session;
        if let Some(m) = first {
            b.out.push_back(Bytes::from(encode(&Event::message(
                String::from_utf8_lossy(&m).into_owned(),
            ))));
        }
        b
    }

    /// A stream not known as MCP, watched for a legacy `endpoint` event.
    pub(crate) fn watching(inner: ProxyBody, mcp: Arc<Mcp>, base: Endpoint) -> SseBody {
        SseBody::new(inner, mcp, base, Mode::Watch(Vec::new()))
    }

    fn conv(&mut self, t: Transport) -> Arc<Conversation> {
        if let Some(c) = &self.conv {
            return c.clone();
        }
        let c = self.mcp.conversation(&self.base.host, t);
        if let Some(s) = &self.session {
            c.gov().set_session(Some(s.clone()));
        }
        self.conv = Some(c.clone());
        c
    }

    fn take(&mut self, d: Bytes) {
        match &mut self.mode {
            Mode::Pass => self.out.push_back(d),
            Mode::Govern => {
                self.decoder.feed(&d, &mut self.items);
                self.govern();
            }
            Mode::Watch(held) => {
                held.extend_from_slice(&d);
                self.decoder.feed(&d, &mut self.items);
                let first = self.items.iter().find_map(|i| match i {
                    Item::Event(e) => Some(e.kind() == "endpoint"),
                    Item::Oversized { .. } => Some(false),
                    Item::Comment(_) => None,
                });
                match first {
                    Some(true) => {
                        self.mode = Mode::Govern;
                        self.govern();
                    }
                    Some(false) => self.pass_held(),
                    None if held.len() > self.mcp.limit() => self.pass_held(),
                    // Only whole comments and blank lines so far: passed
                    // on now (keep-alives), still watching.
                    None if self.decoder.pending() == 0 => {
                        self.out.push_back(Bytes::from(std::mem::take(held)));
                        self.items.clear();
                    }
                    None => {}
                }
            }
        }
    }

    fn pass_held(&mut self) {
        if let Mode::Watch(held) = std::mem::replace(&mut self.mode, Mode::Pass) {
            self.out.push_back(Bytes::from(held));
        }
        self.items.clear();
    }

    fn govern(&mut self) {
        let mut buf = Vec::new();
        for item in std::mem::take(&mut self.items) {
            match item {
                Item::Comment(c) => buf.extend(encode_comment(&c)),
                Item::Oversized { limit } => {
                    let (t, label) = self.label();
                    self.mcp.refused(
                        t,
                        &self.base.host,
                        &label,
                        Direction::ToClient,
                        limit as u64,
                        &format!("an SSE event over {limit} bytes was dropped"),
                    );
                }
                Item::Event(e) => self.event(e, &mut buf),
            }
        }
        if !buf.is_empty() {
            self.out.push_back(Bytes::from(buf));
        }
    }

    fn label(&self) -> (Transport, String) {
        self.conv.as_ref().map_or((Transport::Http, String::new()), |c| {
            (c.transport, c.gov().label().to_string())
        })
    }

    fn event(&mut self, e: Event, buf: &mut Vec<u8>) {
        let data = match e.data.as_deref() {
            Some(d) if !d.trim().is_empty() => d,
            // No message in it (an id-only or priming event).
            _ => {
                buf.extend(encode(&e));
                return;
            }
        };
        match e.kind() {
            "endpoint" => {
                if let Some((at, query)) = resolve(&self.base, data) {
                    let conv = self.conv(Transport::Sse);
                    if self.inject.is_none() {
                        let (tx, rx) = mpsc::channel(INJECT_QUEUE);
                        *lock(&conv.inject) = Some(tx);
                        self.inject = Some(rx);
                    }
                    self.mcp.remember(&self.base, Transport::Sse);
                    self.mcp.bind(at, query, &conv);
                }
                buf.extend(encode(&e));
            }
            "message" => {
                let step = self.conv(Transport::Http).gov().from_server(data.as_bytes());
                match step.forward {
                    Some(f) => buf.extend(encode(&Event {
                        data: Some(String::from_utf8_lossy(&f).into_owned()),
                        ..e.clone()
                    })),
                    None if e.id.is_some() || e.retry.is_some() => buf.extend(encode(&Event {
                        event: None,
                        data: None,
                        ..e.clone()
                    })),
                    None => {}
                }
                for x in step.extra {
                    buf.extend(encode(&Event {
                        event: e.event.clone(),
                        data: Some(String::from_utf8_lossy(&x).into_owned()),
                        id: None,
                        retry: None,
                    }));
                }
            }
            _ => buf.extend(encode(&e)),
        }
    }

    fn end(&mut self) {
        if let Mode::Watch(_) = self.mode {
            self.pass_held();
        } else if matches!(self.mode, Mode::Govern) && self.decoder.pending() > 0 {
            let (t, label) = self.label();
            self.mcp.refused(
                t,
                &self.base.host,
                &label,
                Direction::ToClient,
                self.decoder.pending() as u64,
                "the SSE stream ended inside an event; the unfinished event was dropped",
            );
        }
        self.ended = true;
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            if let Some(rx) = this.inject.as_mut() {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(m)) => {
                        let e = Event::message(String::from_utf8_lossy(&m).into_owned());
                        this.out.push_back(Bytes::from(encode(&e)));
                        continue;
                    }
                    Poll::Ready(None) => this.inject = None,
                    Poll::Pending => {}
                }
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => this.take(d),
                    Err(f) => return Poll::Ready(Some(Ok(f))),
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.end(),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.out.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
