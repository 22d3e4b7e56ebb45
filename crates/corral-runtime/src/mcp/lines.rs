//! Newline-delimited JSON-RPC framing for stdio MCP: raw chunks in,
//! complete lines out. A trailing `\r` is stripped and blank lines are
//! skipped. A line longer than the limit is never buffered whole: once it
//! passes the limit it is reported as [`Piece::Oversized`] and the rest of
//! it, up to the next newline, is discarded as it arrives.

/// What a chunk completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A complete line, without its `\n` (or `\r\n`).
    Line(Vec<u8>),
    /// A line passed the limit; this many bytes of it were seen (the rest
    /// is discarded up to its newline).
    Oversized(u64),
}

/// Splits one direction of a conversation into lines.
#[derive(Debug)]
pub struct Lines {
    max: usize,
    buf: Vec<u8>,
    discarding: bool,
}

impl Lines {
    /// A splitter refusing lines longer than `max` bytes.
    pub fn new(max: usize) -> Lines {
        Lines {
            max,
            buf: Vec::new(),
            discarding: false,
        }
    }

    /// Takes the next chunk; returns what it completed, in order.
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<Piece> {
        let mut out = Vec::new();
        while !chunk.is_empty() {
            let (part, rest, newline) = match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => (
                    chunk.get(..at).unwrap_or_default(),
                    chunk.get(at + 1..).unwrap_or_default(),
                    true,
                ),
                None => (chunk, &[][..], false),
            };
            chunk = rest;
            if self.discarding {
                self.discarding = !newline;
                continue;
            }
            // One byte over the limit may be the `\r` of `\r\n`.
            if self.buf.len() + part.len() > self.max + 1 {
                out.push(Piece::Oversized((self.buf.len() + part.len()) as u64));
                self.buf = Vec::new();
                self.discarding = !newline;
                continue;
            }
            self.buf.extend_from_slice(part);
            if newline {
                self.complete(&mut out);
            }
        }
        out
    }

    /// The end of the stream: an unterminated last line counts as a line.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        if !self.discarding {
            self.complete(&mut out);
        }
        self.discarding = false;
        out
    }

    fn complete(&mut self, out: &mut Vec<Piece>) {
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > self.max {
            out.push(Piece::Oversized(line.len() as u64 + 1));
        } else if !line.iter().all(u8::is_ascii_whitespace) {
            out.push(Piece::Line(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Piece {
        Piece::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn lines_across_chunks() {
        let mut l = Lines::new(100);
        assert_eq!(l.push(b"{\"a\""), vec![]);
        assert_eq!(
            l.push(b":1}\n{\"b\":2}\r\n\n  \r\n{\"c\""),
            vec![line("{\"a\":1}"), line("{\"b\":2}")]
        );
        assert_eq!(l.push(b":3}"), vec![]);
        assert_eq!(l.finish(), vec![line("{\"c\":3}")]);
        assert_eq!(l.finish(), vec![]);
        assert_eq!(l.push(b"\n\r\n"), vec![]);
    }

    #[test]
    fn oversized_lines_are_refused_without_being_kept() {
        let mut l = Lines::new(10);
        // Exactly the limit, with and without `\r`.
        assert_eq!(
            l.push(b"0123456789\n0123456789\r\n"),
            vec![line("0123456789"), line("0123456789")]
        );
        // Over it: reported once, as soon as it is over, then discarded to
        // the newline; the next line is fine.
        assert_eq!(l.push(b"01234567"), vec![]);
        assert_eq!(l.push(b"89ab"), vec![Piece::Oversized(12)]);
        assert!(l.buf.is_empty());
        assert_eq!(l.push(&[b'x'; 1000]), vec![]);
        assert!(l.buf.is_empty(), "a discarded line was buffered");
        assert_eq!(l.push(b"yyy\nok\n"), vec![line("ok")]);
        // Over by the one byte the `\r` allowance lets in, at the newline.
        assert_eq!(l.push(b"0123456789a\n"), vec![Piece::Oversized(12)]);
        // A discarded last line is not a line at the end.
        assert_eq!(l.push(&[b'z'; 20]), vec![Piece::Oversized(20)]);
        assert_eq!(l.finish(), vec![]);
        assert_eq!(l.push(b"ok\n"), vec![line("ok")]);
    }
}
