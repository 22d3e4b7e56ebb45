//! The corral Cedar schema (`corral.cedarschema`) and the action vocabulary.

use cedar_policy::{Entities, EntityTypeName, EntityUid, Schema};
use std::sync::OnceLock;

/// The schema text shipped with corral (`corral policy schema` prints it).
pub const SCHEMA_TEXT: &str = include_str!("../corral.cedarschema");

struct Loaded {
    schema: Schema,
    action_entities: Entities,
}

fn loaded() -> &'static Loaded {
    static CELL: OnceLock<Loaded> = OnceLock::new();
    CELL.get_or_init(|| {
        // The schema is a compile-time constant covered by tests; failing to
        // parse it is a build defect, not a user error.
        #[allow(clippy::expect_used)]
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA_TEXT).expect("corral.cedarschema parses");
        #[allow(clippy::expect_used)]
        let action_entities = schema.action_entities().expect("schema action entities");
        Loaded {
            schema,
            action_entities,
        }
    })
}

/// The parsed schema.
pub fn schema() -> &'static Schema {
    &loaded().schema
}

/// Action entities (with the `FileOpen` group) for building requests.
pub fn action_entities() -> &'static Entities {
    &loaded().action_entities
}

/// The actions a request can carry (groups such as `FileOpen` are never requested).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Action {
    /// `Action::"FileOpenReadOnly"`
    FileOpenReadOnly,
    /// `Action::"FileOpenReadWrite"`
    FileOpenReadWrite,
    /// `Action::"ProcessExec"`
    ProcessExec,
    /// `Action::"NetworkConnect"`
    NetworkConnect,
    /// `Action::"HttpRequest"`
    HttpRequest,
    /// `Action::"HttpRewrite"`
    HttpRewrite,
    /// `Action::"SecretUse"`
    SecretUse,
    /// `Action::"McpCall"`
    McpCall,
}

impl Action {
    /// Every requestable action.
    pub const ALL: [Action; 8] = [
        Action::FileOpenReadOnly,
        Action::FileOpenReadWrite,
        Action::ProcessExec,
        Action::NetworkConnect,
        Action::HttpRequest,
        Action::HttpRewrite,
        Action::SecretUse,
        Action::McpCall,
    ];

    /// The Cedar action id.
    pub fn name(self) -> &'static str {
        match self {
            Action::FileOpenReadOnly => "FileOpenReadOnly",
            Action::FileOpenReadWrite => "FileOpenReadWrite",
            Action::ProcessExec => "ProcessExec",
            Action::NetworkConnect => "NetworkConnect",
            Action::HttpRequest => "HttpRequest",
            Action::HttpRewrite => "HttpRewrite",
            Action::SecretUse => "SecretUse",
            Action::McpCall => "McpCall",
        }
    }

    /// Parses a Cedar action id (without the `Action::` prefix).
    pub fn from_name(s: &str) -> Option<Action> {
        let s = s.trim_start_matches("Action::").trim_matches('"');
        Action::ALL.into_iter().find(|a| a.name() == s)
    }

    /// `Action::"<name>"` as a Cedar uid.
    pub fn uid(self) -> EntityUid {
        action_uid(self.name())
    }
}

/// Builds `Action::"<name>"`.
pub fn action_uid(name: &str) -> EntityUid {
    uid("Action", name)
}

/// Parsed type names of the schema, built once (parsing a type name on
/// every request was a measurable share of request building).
fn type_name(name: &str) -> EntityTypeName {
    static TYPES: OnceLock<Vec<(&'static str, EntityTypeName)>> = OnceLock::new();
    let types = TYPES.get_or_init(|| {
        [
            "Action",
            "Agent",
            "Dir",
            "File",
            "Host",
            "MCP::Server",
            "MCP::Tool",
            "MCP::Arguments",
        ]
        .into_iter()
        .filter_map(|n| n.parse().ok().map(|t| (n, t)))
        .collect()
    });
    if let Some((_, t)) = types.iter().find(|(n, _)| *n == name) {
        return t.clone();
    }
    // Only the schema's names are passed here; they are valid type names.
    #[allow(clippy::expect_used)]
    name.parse().expect("schema type names are valid")
}

/// Builds `<type>::"<id>"` for one of the schema's entity type names.
pub fn uid(type_name_str: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name(type_name_str), cedar_policy::EntityId::new(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parses_and_has_every_action() {
        let s = schema();
        let names: Vec<String> = s.actions().map(|a| a.id().unescaped().to_string()).collect();
        for a in Action::ALL {
            assert!(names.iter().any(|n| n == a.name()), "missing {}", a.name());
        }
        assert!(names.iter().any(|n| n == "FileOpen"));
    }

    #[test]
    fn every_action_parses_back_from_its_name() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(a));
            assert_eq!(Action::from_name(&format!("Action::\"{}\"", a.name())), Some(a));
        }
        assert_eq!(Action::from_name("SecretUse"), Some(Action::SecretUse));
        assert_eq!(Action::from_name("FileOpen"), None);
    }
}
