//! corral's own JSON lines: each event as [`corral_core::Event`] serializes,
//! plus what the store added (`id`, `wall_ns`, `policy_at`).
//!
//! This is the one shape of an event as JSON: `corral events --json` prints
//! it and `corral events export --format jsonl` writes it. It is lossless:
//! [`from_value`] reads back exactly what [`to_value`] wrote.

use crate::Stored;
use serde_json::{Map, Value};

/// The event's fields, then `id` (once stored), `wall_ns`, and `policy_at`
/// (when any policy decided).
pub fn to_value(s: &Stored) -> Result<Value, serde_json::Error> {
    let mut m = match serde_json::to_value(&s.event)? {
        Value::Object(m) => m,
        // An `Event` always serializes as an object; keep anything else whole.
        other => {
            let mut m = Map::new();
            m.insert("event".into(), other);
            m
        }
    };
    if let Some(id) = s.id {
        m.insert("id".into(), id.into());
    }
    m.insert("wall_ns".into(), s.wall_ns.into());
    if !s.policy_at.is_empty() {
        m.insert("policy_at".into(), serde_json::to_value(&s.policy_at)?);
    }
    Ok(Value::Object(m))
}

/// Reads back what [`to_value`] wrote (`id` and `policy_at` may be absent).
pub fn from_value(v: Value) -> Result<Stored, serde_json::Error> {
    let mut m = match v {
        Value::Object(m) => m,
        other => {
            return Err(serde::de::Error::custom(format!(
                "expected an object, found {other}"
            )))
        }
    };
    let id = m.remove("id").map(serde_json::from_value).transpose()?;
    let wall_ns = match m.remove("wall_ns") {
        Some(w) => serde_json::from_value(w)?,
        None => return Err(serde::de::Error::missing_field("wall_ns")),
    };
    let policy_at = m
        .remove("policy_at")
        .map(serde_json::from_value)
        .transpose()?
        .unwrap_or_default();
    Ok(Stored {
        id,
        wall_ns,
        policy_at,
        event: serde_json::from_value(Value::Object(m))?,
    })
}

/// Parses one line written by [`to_value`].
pub fn parse_line(line: &str) -> Result<Stored, serde_json::Error> {
    from_value(serde_json::from_str(line)?)
}
