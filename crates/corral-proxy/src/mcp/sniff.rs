//! Telling a JSON-RPC body from any other, without trusting its headers.
//!
//! A body is MCP when some top-level object (the body itself, a member
//! of a top-level array, or one value of a sequence of them) has the key
//! `jsonrpc`, compared the way lenient servers compare keys: escapes
//! decoded, ASCII case ignored, `ſ` (U+017F) read as `s` (Go's
//! `encoding/json` folds both). A key deeper inside (an agent's API
//! request that quotes a JSON-RPC message) does not count.
//!
//! [`Scanner`] reads the body incrementally and never holds more than a
//! key's first bytes. It answers as soon as it can: MCP at the closing
//! quote of such a key; not MCP when the first significant byte is no
//! `{` or `[` (no JSON-RPC server reads such a body as a message); and
//! otherwise only at the end of the body. A body in UTF-16 or UTF-32
//! (which Python's `json.loads` detects and reads) whose first character
//! is `{` or `[` counts as MCP: corral refuses what it cannot read.

/// What the bytes so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A JSON-RPC message (or something to refuse as one).
    Mcp,
    /// Not JSON-RPC, whatever follows.
    NotMcp,
    /// Not known until more is read.
    Unknown,
}

/// Longest key kept for comparison (`jsonrpc` is 7 characters; a key
/// with more bytes cannot fold to it).
const KEY_MAX: usize = 16;

/// Incremental classifier; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    verdict: Option<Verdict>,
    /// The first bytes, until the encoding is known.
    head: Vec<u8>,
    started: bool,
    /// A significant byte was seen.
    seen_value: bool,
    depth: usize,
    /// Depth of the objects whose keys count: 1 under a top-level
    /// object, 2 under a top-level array.
    key_depth: usize,
    /// The container at `key_depth` is an object.
    in_object: bool,
    /// The next string at `key_depth` is a key.
    expect_key: bool,
    in_string: bool,
    escape: Escape,
    /// The key being read (decoded), when it counts; `None` past
    /// [`KEY_MAX`] bytes or for other strings.
    key: Option<Vec<u8>>,
    capturing: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After a backslash.
    Start,
    /// Inside `\uXXXX`: digits read so far and their value.
    Hex(u8, u32),
}

impl Scanner {
    /// What the bytes so far say.
    pub(crate) fn verdict(&self) -> Verdict {
        self.verdict.unwrap_or(Verdict::Unknown)
    }

    /// The verdict at the end of the body.
    pub(crate) fn finish(&mut self) -> Verdict {
        if !self.started && self.verdict.is_none() {
            let head = std::mem::take(&mut self.head);
            self.start(&head, true);
        }
        *self.verdict.get_or_insert(Verdict::NotMcp)
    }

    /// Reads more of the body.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Verdict {
        if self.verdict.is_some() {
            return self.verdict();
        }
        if !self.started {
            self.head.extend_from_slice(bytes);
            if self.head.len() < 4 {
                return Verdict::Unknown;
            }
            let head = std::mem::take(&mut self.head);
            self.start(&head, false);
            return self.verdict();
        }
        self.scan(bytes);
        self.verdict()
    }

    /// Decides the encoding from the first bytes (at least 4, or all of a
    /// shorter body), then scans them.
    fn start(&mut self, head: &[u8], end: bool) {
        self.started = true;
        let b = |i: usize| head.get(i).copied();
        let wide = head.starts_with(&[0, 0, 0xfe, 0xff])
            || head.starts_with(&[0xff, 0xfe, 0, 0])
            || head.starts_with(&[0xfe, 0xff])
            || head.starts_with(&[0xff, 0xfe])
            || (head.len() >= 4 && (b(0) == Some(0) || b(1) == Some(0)))
            || (head.len() == 2 && end && (b(0) == Some(0) || b(1) == Some(0)));
        if wide {
            // The first character that is not a BOM or whitespace, with
            // the zero bytes of the wider encoding left out.
            let first = head
                .iter()
                .copied()
                .find(|c| !matches!(c, 0 | 0xfe | 0xff | b' ' | b'\t' | b'\r' | b'\n'));
            self.verdict = Some(if matches!(first, Some(b'{') | Some(b'[')) {
                Verdict::Mcp
            } else {
                Verdict::NotMcp
            });
            return;
        }
        let rest = head.strip_prefix(&[0xef, 0xbb, 0xbf][..]).unwrap_or(head);
        self.scan(rest);
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &c in bytes {
            if self.in_string {
                self.string_byte(c);
                if self.verdict.is_some() {
                    return;
                }
                continue;
            }
            if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
                continue;
            }
            if !std::mem::replace(&mut self.seen_value, true) && c != b'{' && c != b'[' {
                // The first significant byte is no `{` or `[`.
                self.verdict = Some(Verdict::NotMcp);
                return;
            }
            match c {
                b'"' => {
                    self.in_string = true;
                    self.capturing = self.expect_key && self.in_object && self.depth == self.key_depth;
                    self.key = self.capturing.then(Vec::new);
                    self.expect_key = false;
                }
                b'{' | b'[' => {
                    if self.depth == 0 {
                        self.key_depth = if c == b'{' { 1 } else { 2 };
                    }
                    self.depth += 1;
                    if self.depth == self.key_depth {
                        self.in_object = c == b'{';
                        self.expect_key = self.in_object;
                    }
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.expect_key = false;
                }
                b',' => {
                    self.expect_key = self.depth == self.key_depth && self.in_object;
                }
                _ => self.expect_key = false,
            }
        }
    }

    fn string_byte(&mut self, c: u8) {
        match self.escape {
            Escape::Start => {
                self.escape = Escape::None;
                let decoded = match c {
                    b'u' => {
                        self.escape = Escape::Hex(0, 0);
                        return;
                    }
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    other => other,
                };
                self.key_push(&[decoded]);
            }
            Escape::Hex(n, v) => {
                let digit = char::from(c).to_digit(16).unwrap_or(0);
                let v = (v << 4) | digit;
                if n + 1 < 4 {
                    self.escape = Escape::Hex(n + 1, v);
                    return;
                }
                self.escape = Escape::None;
                let ch = char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER);
                let mut buf = [0u8; 4];
                self.key_push(ch.encode_utf8(&mut buf).as_bytes());
            }
            Escape::None => match c {
                b'\\' => self.escape = Escape::Start,
                b'"' => {
                    self.in_string = false;
                    if let (true, Some(k)) = (std::mem::take(&mut self.capturing), self.key.take()) {
                        if folds_to_jsonrpc(&k) {
                            self.verdict = Some(Verdict::Mcp);
                        }
                    }
                }
                other => self.key_push(&[other]),
            },
        }
    }

    fn key_push(&mut self, bytes: &[u8]) {
        if let Some(k) = self.key.as_mut() {
            if k.len() + bytes.len() > KEY_MAX {
                self.key = None;
            } else {
                k.extend_from_slice(bytes);
            }
        }
    }
}

/// Whether a decoded key reads as `jsonrpc` to a case-folding parser.
fn folds_to_jsonrpc(key: &[u8]) -> bool {
    let s = String::from_utf8_lossy(key);
    let folded: String = s
        .chars()
        .map(|c| match c {
            '\u{17f}' => 's',
            '\u{212a}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    folded == "jsonrpc"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn whole(b: &[u8]) -> Verdict {
        let mut s = Scanner::default();
        s.feed(b);
        s.finish()
    }

    fn bytewise(b: &[u8]) -> Verdict {
        let mut s = Scanner::default();
        for c in b.chunks(1) {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    fn a_top_level_jsonrpc_key_anywhere_in_the_object_is_mcp() {
        for b in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#[..],
            br#"  {"method":"tools/call","params":{"name":"x","arguments":{"pad":"}]\"{"}},"id":1,"jsonrpc":"2.0"}"#,
            br#"[{"a":1},{"id":1,"jsonrpc":"2.0"}]"#,
            br#"{"json\u0072pc":"2.0"}"#,
            br#"{"JSONRPC":"2.0"}"#,
            "{\"j\u{17f}onrpc\":\"2.0\"}".as_bytes(),
            b"\xef\xbb\xbf{\"jsonrpc\":\"2.0\"}",
            br#"{"a":1}
{"jsonrpc":"2.0"}"#,
        ] {
            assert_eq!(whole(b), Verdict::Mcp, "{}", String::from_utf8_lossy(b));
            assert_eq!(bytewise(b), Verdict::Mcp, "{}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn it_is_known_at_the_key_not_at_the_end() {
        let mut s = Scanner::default();
        assert_eq!(s.feed(br#"{"jsonrpc""#), Verdict::Mcp);
        let mut s = Scanner::default();
        assert_eq!(s.feed(br#"{"model":"x","jsonrpc_like":1"#), Verdict::Unknown);
        assert_eq!(s.finish(), Verdict::NotMcp);
    }

    #[test]
    fn deeper_keys_strings_and_other_bodies_are_not_mcp() {
        for b in [
            &br#"{"model":"m","messages":[{"content":{"jsonrpc":"2.0","method":"tools/call"}}]}"#[..],
            br#"{"text":"\"jsonrpc\": \"2.0\""}"#,
            br#"{"a":"jsonrpc"}"#,
            br#"[[{"jsonrpc":"2.0"}]]"#,
            b"jsonrpc=2.0&method=tools/call",
            b"",
            b"   ",
            b"\x00\x00\x00\x05\x0a\x03abc",
        ] {
            assert_eq!(whole(b), Verdict::NotMcp, "{}", String::from_utf8_lossy(b));
            assert_eq!(bytewise(b), Verdict::NotMcp, "{}", String::from_utf8_lossy(b));
        }
        let mut s = Scanner::default();
        assert_eq!(s.feed(b"key=value&jsonrpc=1"), Verdict::NotMcp);
    }

    #[test]
    fn wide_encodings_of_json_count_as_mcp() {
        let utf16le: Vec<u8> = "{\"jsonrpc\":\"2.0\"}"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert_eq!(whole(&utf16le), Verdict::Mcp);
        let mut bom = vec![0xfe, 0xff];
        bom.extend("[1]".encode_utf16().flat_map(|u| u.to_be_bytes()));
        assert_eq!(whole(&bom), Verdict::Mcp);
    }
}
