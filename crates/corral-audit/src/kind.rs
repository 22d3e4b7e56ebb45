//! Event kinds: the coarse classes the store indexes and the CLI filters on.

use crate::AuditError;
use corral_core::What;
use std::str::FromStr;

/// The class of an event, as stored in the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// File opens.
    File,
    /// Exec decisions.
    Exec,
    /// Network connections and datagrams.
    Net,
    /// HTTP requests through the egress proxy, and connections it refused.
    Http,
    /// MCP messages (tool calls, lists, responses, refusals).
    Mcp,
    /// Process telemetry: fork, exit, exec traces.
    Process,
    /// Session start, end and mode switches.
    Session,
    /// Policy loads and reloads.
    Policy,
    /// Anything else (lost-event records).
    Other,
}

impl Kind {
    /// The name stored in the database and accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Exec => "exec",
            Kind::Net => "net",
            Kind::Http => "http",
            Kind::Mcp => "mcp",
            Kind::Process => "process",
            Kind::Session => "session",
            Kind::Policy => "policy",
            Kind::Other => "other",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "file" => Ok(Kind::File),
            "exec" => Ok(Kind::Exec),
            "net" => Ok(Kind::Net),
            "http" => Ok(Kind::Http),
            "mcp" => Ok(Kind::Mcp),
            "process" => Ok(Kind::Process),
            "session" => Ok(Kind::Session),
            "policy" => Ok(Kind::Policy),
            "other" => Ok(Kind::Other),
            _ => Err(AuditError::UnknownKind(s.to_owned())),
        }
    }
}

/// The kind of an event.
pub fn kind_of(what: &What) -> Kind {
    match what {
        What::FileOpen { .. } => Kind::File,
        What::Exec { .. } => Kind::Exec,
        What::Connect { .. } => Kind::Net,
        What::Http { .. } => Kind::Http,
        What::Mcp { .. } => Kind::Mcp,
        What::Fork { .. } | What::Exit { .. } | What::ExecTrace { .. } => Kind::Process,
        What::SessionStart { .. } | What::SessionEnd { .. } | What::ModeChange { .. } => Kind::Session,
        What::PolicyLoad { .. } => Kind::Policy,
        What::Lost { .. } => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in [
            Kind::File,
            Kind::Exec,
            Kind::Net,
            Kind::Http,
            Kind::Mcp,
            Kind::Process,
            Kind::Session,
            Kind::Policy,
            Kind::Other,
        ] {
            assert_eq!(k.as_str().parse::<Kind>().ok(), Some(k));
        }
        assert!("files".parse::<Kind>().is_err());
    }
}
