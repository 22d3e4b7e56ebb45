//! Server-Sent Events framing (the WHATWG HTML "event stream" format),
//! incremental in both directions, for MCP's HTTP transports.
//!
//! [`Decoder`] takes the stream in chunks split anywhere (inside a UTF-8
//! sequence, between the CR and LF of a line end) and yields the same
//! [`Item`]s whatever the split:
//!
//! * lines end with CRLF, LF or CR; a leading byte-order mark is dropped;
//! * an empty line ends an event block; `data` lines join with `"\n"`;
//!   one space after the colon is removed; `event`, `id` (ignored when it
//!   contains NUL) and `retry` (ASCII digits only) are kept, other fields
//!   ignored;
//! * comment lines (`:` first) are yielded at once, so keep-alives can be
//!   passed on promptly;
//! * a block is yielded even without `data` when it has an `id` or a
//!   `retry` (browsers do not dispatch it but do take its id), so a proxy
//!   loses nothing a client could act on;
//! * a block that grows past the decoder's limit is dropped (reported as
//!   [`Item::Oversized`]) and the bytes up to the next empty line are
//!   discarded unbuffered: memory stays bounded whatever the sender does.
//!
//! Text is decoded per line with UTF-8 replacement, which is what the
//! standard's whole-stream decoding yields (line ends are ASCII).
//!
//! [`encode`] writes a block back: one `data:` line per line of its data.
//! Decoding what it wrote gives the block back (see the tests).

use std::mem;

/// One event block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event` field (`None`: absent; the type is then `message`).
    pub event: Option<String>,
    /// The `data` lines joined with `"\n"` (`None`: no `data` line, which
    /// browsers do not dispatch).
    pub data: Option<String>,
    /// This block's `id` field (`Some("")` resets the last event id).
    pub id: Option<String>,
    /// This block's `retry` field, milliseconds.
    pub retry: Option<u64>,
}

impl Event {
    /// A `message` block with `data` and no other field.
    pub fn message(data: impl Into<String>) -> Event {
        Event {
            data: Some(data.into()),
            ..Event::default()
        }
    }

    /// The event type: the `event` field, or `message` when it is absent
    /// or empty.
    pub fn kind(&self) -> &str {
        match self.event.as_deref() {
            None | Some("") => "message",
            Some(e) => e,
        }
    }

    fn is_empty(&self) -> bool {
        self.event.is_none() && self.data.is_none() && self.id.is_none() && self.retry.is_none()
    }
}

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An event block, complete.
    Event(Event),
    /// A comment line's text (after the colon, verbatim).
    Comment(String),
    /// A block grew past the limit: it is dropped, and so is the rest of
    /// it up to the next empty line.
    Oversized {
        /// The decoder's limit, bytes.
        limit: usize,
    },
}

impl Item {
    /// The item as event-stream bytes (nothing for [`Item::Oversized`]).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Item::Event(e) => encode(e),
            Item::Comment(c) => encode_comment(c),
            Item::Oversized { .. } => Vec::new(),
        }
    }
}

/// Incremental event-stream decoder; see the module docs.
#[derive(Debug)]
pub struct Decoder {
    limit: usize,
    /// The line being read (without its end).
    line: Vec<u8>,
    /// The last byte seen was a CR: an LF right after it belongs to it.
    after_cr: bool,
    /// No line has ended yet (a leading BOM is still to be dropped).
    first_line: bool,
    /// The block being read.
    block: Event,
    /// Bytes of the block's field lines so far.
    block_bytes: usize,
    /// Dropping an oversized block: bytes on the current line so far, or
    /// `None` when not dropping.
    skipping: Option<usize>,
}

impl Decoder {
    /// A decoder that refuses blocks (field lines plus the line being
    /// read) over `limit` bytes.
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            limit,
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            block: Event::default(),
            block_bytes: 0,
            skipping: None,
        }
    }

    /// Bytes held for an incomplete block (what the end of the stream
    /// would discard).
    pub fn pending(&self) -> usize {
        self.block_bytes + self.line.len()
    }

    /// Decodes the next chunk, appending what completes to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<Item>) {
        while !chunk.is_empty() {
            if mem::take(&mut self.after_cr) {
                if let Some(rest) = chunk.strip_prefix(b"\n") {
                    chunk = rest;
                    continue;
                }
            }
            let end = chunk.iter().position(|b| *b == b'\n' || *b == b'\r');
            let (segment, terminator) = match end {
                Some(i) => (chunk.get(..i).unwrap_or_default(), chunk.get(i).copied()),
                None => (chunk, None),
            };
            chunk = match end {
                Some(i) => chunk.get(i + 1..).unwrap_or_default(),
                None => &[],
            };
            if let Some(n) = self.skipping.as_mut() {
                *n += segment.len();
            } else {
                self.line.extend_from_slice(segment);
                if self.block_bytes + self.line.len() > self.limit {
                    self.skipping = Some(self.line.len());
                    self.line = Vec::new();
                    self.block = Event::default();
                    self.block_bytes = 0;
                    out.push(Item::Oversized { limit: self.limit });
                }
            }
            let Some(t) = terminator else { break };
            self.after_cr = t == b'\r';
            self.end_line(out);
        }
    }

    fn end_line(&mut self, out: &mut Vec<Item>) {
        if let Some(n) = self.skipping {
            self.first_line = false;
            // An empty line ends the dropped block.
            self.skipping = (n != 0).then_some(0);
            return;
        }
        let mut line = mem::take(&mut self.line);
        if mem::take(&mut self.first_line) && line.starts_with(&[0xef, 0xbb, 0xbf]) {
            line.drain(..3);
        }
        if line.is_empty() {
            let block = mem::take(&mut self.block);
            self.block_bytes = 0;
            if !block.is_empty() {
                out.push(Item::Event(block));
            }
            return;
        }
        if let Some(comment) = line.strip_prefix(b":") {
            out.push(Item::Comment(String::from_utf8_lossy(comment).into_owned()));
            return;
        }
        self.block_bytes += line.len() + 1;
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let value = line.get(i + 1..).unwrap_or_default();
                (
                    line.get(..i).unwrap_or_default(),
                    value.strip_prefix(b" ").unwrap_or(value),
                )
            }
            None => (&line[..], &[][..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"event" => self.block.event = Some(value.into_owned()),
            b"data" => match self.block.data.as_mut() {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&value);
                }
                None => self.block.data = Some(value.into_owned()),
            },
            b"id" if !value.contains('\0') => self.block.id = Some(value.into_owned()),
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // More digits than a u64 holds: ignored like any bad value.
                if let Ok(ms) = value.parse() {
                    self.block.retry = Some(ms);
                }
            }
            _ => {}
        }
    }
}

/// A field value as one line: CR and LF cannot be written in it, so they
/// are left out.
fn one_line(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().filter(|c| *c != '\r' && *c != '\n')
}

/// An event block as bytes: `event`, `id`, `retry`, then one `data:` line
/// per line of the data (split at CRLF, LF or CR), then an empty line.
/// CR and LF in `event` and `id` are left out (they cannot be written).
pub fn encode(e: &Event) -> Vec<u8> {
    let mut s = String::new();
    if let Some(ev) = &e.event {
        s.push_str("event: ");
        s.extend(one_line(ev));
        s.push('\n');
    }
    if let Some(id) = &e.id {
        s.push_str("id: ");
        s.extend(one_line(id));
        s.push('\n');
    }
    if let Some(r) = e.retry {
        s.push_str(&format!("retry: {r}\n"));
    }
    if let Some(d) = &e.data {
        let d = d.replace("\r\n", "\n").replace('\r', "\n");
        for line in d.split('\n') {
            s.push_str("data: ");
            s.push_str(line);
            s.push('\n');
        }
    }
    s.push('\n');
    s.into_bytes()
}

/// A comment line (`:` then the text; CR and LF left out).
pub fn encode_comment(text: &str) -> Vec<u8> {
    let mut s = String::from(":");
    s.extend(one_line(text));
    s.push('\n');
    s.into_bytes()
}

#[cfg(test)]
mod tests;
