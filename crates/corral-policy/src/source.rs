//! Policy source text: files, statement boundaries and line/column lookup.
//!
//! Cedar's public API does not expose where each policy starts in its file,
//! so this module finds statement boundaries itself with a small lexer that
//! understands just enough of Cedar's syntax (string literals with escapes,
//! `//` comments) to split on top-level `;`. It never decides meaning: Cedar's
//! parser does that.

use std::sync::Arc;

/// One policy file (or an in-memory text with a display name).
#[derive(Debug, Clone)]
pub struct Source {
    /// Name shown in diagnostics (usually the path as the user wrote it).
    pub name: String,
    /// The full text.
    pub text: Arc<str>,
    line_starts: Vec<usize>,
}

impl Source {
    /// Wraps a text under a display name.
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        let text: Arc<str> = text.into();
        let mut line_starts = vec![0];
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                line_starts.push(i + 1);
            }
        }
        Self {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line_idx = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line_idx).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(0);
        (line_idx + 1, col + 1)
    }
}

/// Byte range of one statement (`permit (...) ...;`) in its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement {
    /// Offset of the statement's first token (an annotation or the effect).
    pub start: usize,
    /// Offset just past the terminating `;` (or end of text).
    pub end: usize,
}

/// Splits a policy file into statements. Comments and whitespace between
/// statements are skipped; a trailing fragment without `;` is returned too
/// (Cedar's parser will report it).
pub fn split_statements(text: &str) -> Vec<Statement> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut start: Option<usize> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                start.get_or_insert(i);
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                continue;
            }
            b';' => {
                let s = start.take().unwrap_or(i);
                out.push(Statement { start: s, end: i + 1 });
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                start.get_or_insert(i);
            }
        }
        i += 1;
    }
    if let Some(s) = start {
        out.push(Statement {
            start: s,
            end: bytes.len(),
        });
    }
    out
}

/// Offset of the `permit`/`forbid` keyword in a statement (after any
/// annotations and comments); 0 if not found.
pub fn effect_offset(stmt: &str) -> usize {
    let bytes = stmt.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            _ if !stmt.is_char_boundary(i) => i += 1,
            _ => {
                let rest = stmt.get(i..).unwrap_or("");
                let boundary_before =
                    i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
                if boundary_before && (rest.starts_with("permit") || rest.starts_with("forbid")) {
                    let after = rest.as_bytes().get(6);
                    if !after.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_') {
                        return i;
                    }
                }
                i += 1;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    #[test]
    fn effect_after_non_ascii_bytes() {
        // Found by fuzzing: a no-break space before `permit` split a char.
        let t = "\u{a0}permit(principal, action, resource);";
        assert_eq!(super::effect_offset(t), "\u{a0}".len());
    }

    #[test]
    fn effect_after_annotations() {
        let t = "@id(\"permit-x\") // forbid\n@x(\"y\")\nforbid (principal, action, resource);";
        assert!(t[super::effect_offset(t)..].starts_with("forbid (principal"));
    }

    use super::*;

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let text = "// a; comment\npermit(principal, action, resource)\n when { context.x == \"a;b\\\";\" };\n\n@id(\"x;\")\nforbid(principal, action, resource);\n";
        let st = split_statements(text);
        assert_eq!(st.len(), 2);
        assert!(text[st[0].start..].starts_with("permit"));
        assert!(text[st[1].start..].starts_with("@id"));
        assert!(text[..st[1].end].ends_with("resource);"));
    }

    #[test]
    fn line_col_is_one_based_in_chars() {
        let s = Source::new("f", "ab\ncdé f\n");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(3), (2, 1));
        let off = "ab\ncdé ".len();
        assert_eq!(s.line_col(off), (2, 5));
    }
}
