//! Diagnostics: what is wrong, where (file:line:col), and how to fix it.
//!
//! Rendering is done here rather than by miette's graphical handler so that
//! the first line is the compiler-standard `file:line:col: severity: message`
//! that editors and CI annotators parse; miette's `Diagnostic` trait is still
//! how Cedar's own errors hand us their spans and help text.

use crate::source::Source;
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::Arc;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The policy set is rejected.
    Error,
    /// Accepted, but probably not what the author meant.
    Warning,
}

/// One finding about a policy source.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Stable short code, e.g. `parse`, `validation`, `dir-without-slash`.
    pub code: &'static str,
    /// Lower-case message, user input in backticks.
    pub message: String,
    /// File name as given, if the finding is tied to a source.
    pub file: Option<String>,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column.
    pub col: Option<usize>,
    /// Byte span in the file.
    #[serde(skip)]
    pub span: Option<(usize, usize)>,
    /// A suggestion.
    pub help: Option<String>,
    /// Id of the policy concerned, if any.
    pub policy: Option<String>,
    #[serde(skip)]
    source: Option<Arc<Source>>,
}

impl Diagnostic {
    /// A diagnostic not tied to a position.
    pub fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity,
            code,
            message: message.into(),
            file: None,
            line: None,
            col: None,
            span: None,
            help: None,
            policy: None,
            source: None,
        }
    }

    /// An error not tied to a position.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    /// A warning not tied to a position.
    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, message)
    }

    /// Ties the diagnostic to a byte span of a source.
    pub fn at(mut self, source: &Arc<Source>, start: usize, len: usize) -> Self {
        // Spans come from Cedar and from our own scanning; never trust them
        // to fall on UTF-8 boundaries.
        let text = &source.text;
        let mut start = start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = start.saturating_add(len).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let (line, col) = source.line_col(start);
        self.file = Some(source.name.clone());
        self.line = Some(line);
        self.col = Some(col);
        self.span = Some((start, end));
        self.source = Some(source.clone());
        self
    }

    /// Adds a suggestion.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Names the policy concerned.
    pub fn policy(mut self, id: impl Into<String>) -> Self {
        self.policy = Some(id.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col` (or just the file, or nothing).
    pub fn location(&self) -> Option<String> {
        match (&self.file, self.line, self.col) {
            (Some(f), Some(l), Some(c)) => Some(format!("{f}:{l}:{c}")),
            (Some(f), _, _) => Some(f.clone()),
            _ => None,
        }
    }

    /// Renders like a compiler: location line, source line, caret, help.
    pub fn render(&self) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = String::new();
        match self.location() {
            Some(loc) => {
                let _ = writeln!(out, "{loc}: {sev}[{}]: {}", self.code, self.message);
            }
            None => {
                let _ = writeln!(out, "{sev}[{}]: {}", self.code, self.message);
            }
        }
        if let (Some(src), Some((start, end)), Some(line)) = (&self.source, self.span, self.line) {
            let text = &src.text;
            let line_start = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
            let line_end = text[start..].find('\n').map(|i| start + i).unwrap_or(text.len());
            let line_text = &text[line_start..line_end];
            let gutter = line.to_string().len();
            let pad = text[line_start..start].chars().count();
            let width = text[start..end.min(line_end).max(start)].chars().count().max(1);
            let _ = writeln!(out, "{:gutter$} |", "");
            let _ = writeln!(out, "{line} | {line_text}");
            let _ = writeln!(out, "{:gutter$} | {}{}", "", " ".repeat(pad), "^".repeat(width));
        }
        if let Some(h) = &self.help {
            let _ = writeln!(out, "  = help: {h}");
        }
        out
    }
}

/// Extracts the primary span (offset, len) from a Cedar/miette diagnostic.
pub(crate) fn primary_span(d: &dyn miette::Diagnostic) -> Option<(usize, usize)> {
    let labels: Vec<_> = d.labels()?.collect();
    let pick = labels.iter().find(|l| l.primary()).or_else(|| labels.first())?;
    Some((pick.offset(), pick.len()))
}

/// Help text of a Cedar/miette diagnostic, if any.
pub(crate) fn help_of(d: &dyn miette::Diagnostic) -> Option<String> {
    d.help().map(|h| h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_and_caret() {
        let src = Arc::new(Source::new(
            "p.cedar",
            "permit(\n  principal, actoin, resource);\n",
        ));
        let d = Diagnostic::error("parse", "unexpected token `actoin`").at(&src, 21, 6);
        let r = d.render();
        assert!(
            r.starts_with("p.cedar:2:14: error[parse]: unexpected token `actoin`\n"),
            "{r}"
        );
        assert!(r.contains("2 |   principal, actoin, resource);"), "{r}");
        assert!(r.contains("  |              ^^^^^^"), "{r}");
    }
}
