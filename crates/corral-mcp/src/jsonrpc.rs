//! Strict JSON-RPC 2.0 for MCP.
//!
//! A message corral forwards must mean the same thing to every parser on
//! the way, or a policy decided on one reading is enforced on another.
//! So anything two parsers could read differently is refused: invalid
//! UTF-8, a byte-order mark, a repeated object key (at any depth), two keys
//! of one object that differ only in case (Go's `encoding/json` matches
//! keys case-insensitively, folding `ſ` to `s` and the Kelvin sign to `k`,
//! and the last one wins: `"method":"tools/list","Method":"tools/call"`
//! would be a `tools/call` to a Go server), a lone
//! UTF-16 surrogate, trailing bytes, nesting deeper than serde_json's
//! limit (128). What is forwarded is corral's own serialization of what
//! it decided, never the sender's bytes.

use crate::Limits;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// JSON-RPC error codes corral answers with.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Invalid method parameters (e.g. a malformed tool name).
    pub const INVALID_PARAMS: i64 = -32602;
    /// A tool call (or another request) the policy denies.
    pub const DENIED: i64 = -32001;
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has an id and a method.
    Request,
    /// A method and no id.
    Notification,
    /// An id and a result.
    Response,
    /// An id (possibly null) and an error.
    Error,
}

/// One JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// What it is.
    pub kind: Kind,
    /// The id (requests and responses; `Null` for an error about an
    /// unidentifiable request).
    pub id: Option<Value>,
    /// The method (requests and notifications).
    pub method: Option<String>,
    /// The whole object, as parsed.
    pub body: Map<String, Value>,
}

impl Message {
    /// The id as JSON text (`7`, `"a"`), the key requests and responses
    /// are matched on.
    pub fn id_text(&self) -> Option<String> {
        self.id.as_ref().map(Value::to_string)
    }

    /// `params`, when it is an object.
    pub fn params(&self) -> Option<&Map<String, Value>> {
        self.body.get("params").and_then(Value::as_object)
    }

    /// `result`, when it is an object.
    pub fn result(&self) -> Option<&Map<String, Value>> {
        self.body.get("result").and_then(Value::as_object)
    }

    /// The error's message, for an error response.
    pub fn error_message(&self) -> Option<String> {
        let e = self.body.get("error")?;
        let code = e.get("code").and_then(Value::as_i64).unwrap_or_default();
        let msg = e.get("message").and_then(Value::as_str).unwrap_or_default();
        Some(format!("{code}: {msg}"))
    }

    /// The message as JSON text.
    pub fn to_bytes(&self) -> Vec<u8> {
        value_bytes(&Value::Object(self.body.clone()))
    }
}

/// A parsed message: one, or a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A single message.
    Single(Message),
    /// A batch (a non-empty array of messages).
    Batch(Vec<Message>),
}

impl Parsed {
    /// The messages, one or many.
    pub fn messages(&self) -> &[Message] {
        match self {
            Parsed::Single(m) => std::slice::from_ref(m),
            Parsed::Batch(v) => v,
        }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The JSON-RPC error code to answer with.
    pub code: i64,
    /// What is wrong, in words.
    pub message: String,
    /// The id of the offending request, when it could be read (else the
    /// answer's id is `null`).
    pub id: Option<Value>,
}

impl Refusal {
    fn new(code: i64, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            id: None,
        }
    }
}

/// Parses one message (or batch) strictly; see the module docs.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, Refusal> {
    if bytes.len() > limits.max_message {
        return Err(Refusal::new(
            code::INVALID_REQUEST,
            format!(
                "message of {} bytes exceeds corral's MCP limit of {} bytes",
                bytes.len(),
                limits.max_message
            ),
        ));
    }
    let value = parse_value(bytes)?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(Refusal::new(code::INVALID_REQUEST, "empty batch"));
            }
            if items.len() > limits.max_batch {
                return Err(Refusal::new(
                    code::INVALID_REQUEST,
                    format!(
                        "batch of {} messages exceeds corral's limit of {}",
                        items.len(),
                        limits.max_batch
                    ),
                ));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, v) in items.into_iter().enumerate() {
                let m = message(v).map_err(|mut r| {
                    r.message = format!("batch member {i}: {}", r.message);
                    r
                })?;
                out.push(m);
            }
            Ok(Parsed::Batch(out))
        }
        v => message(v).map(Parsed::Single),
    }
}

/// Parses JSON text strictly into a value (no repeated keys, no BOM, no
/// trailing bytes).
pub fn parse_value(bytes: &[u8]) -> Result<Value, Refusal> {
    if bytes.starts_with(&[0xef, 0xbb, 0xbf]) {
        return Err(Refusal::new(
            code::PARSE_ERROR,
            "byte-order mark before the JSON text",
        ));
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(Refusal::new(
            code::PARSE_ERROR,
            format!("not valid UTF-8 at byte {}", e.valid_up_to()),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = StrictSeed
        .deserialize(&mut de)
        .map_err(|e| Refusal::new(code::PARSE_ERROR, format!("invalid JSON: {e}")))?;
    de.end()
        .map_err(|e| Refusal::new(code::PARSE_ERROR, format!("invalid JSON: {e}")))?;
    Ok(v)
}

/// Whether bytes could be the start of a JSON-RPC message: after
/// whitespace an object or array whose text mentions `"jsonrpc"`. Used to
/// spot MCP in bodies that do not announce it (a wrong content type).
pub fn looks_like_jsonrpc(prefix: &[u8]) -> bool {
    let start = prefix
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    let Some(start) = start else { return false };
    let rest = &prefix[start..];
    let rest = rest.strip_prefix(&[0xef, 0xbb, 0xbf][..]).unwrap_or(rest);
    matches!(rest.first(), Some(b'{') | Some(b'[')) && rest.windows(9).any(|w| w == b"\"jsonrpc\"")
}

fn message(v: Value) -> Result<Message, Refusal> {
    let Value::Object(body) = v else {
        return Err(Refusal::new(
            code::INVALID_REQUEST,
            "a message must be a JSON object",
        ));
    };
    let id = body.get("id").cloned();
    let fail = |msg: String| Refusal {
        code: code::INVALID_REQUEST,
        message: msg,
        id: id.clone().filter(|i| i.is_string() || i.is_number()),
    };
    match body.get("jsonrpc") {
        Some(Value::String(s)) if s == "2.0" => {}
        _ => return Err(fail("`jsonrpc` must be \"2.0\"".into())),
    }
    if let Some(i) = &id {
        if !(i.is_string() || i.is_number() || i.is_null()) {
            return Err(fail("`id` must be a string or a number".into()));
        }
    }
    let method = match body.get("method") {
        None => None,
        Some(Value::String(m)) => {
            check_name(m).map_err(|e| fail(format!("method: {e}")))?;
            Some(m.clone())
        }
        Some(_) => return Err(fail("`method` must be a string".into())),
    };
    let has_result = body.contains_key("result");
    let has_error = body.contains_key("error");
    let kind = match (&method, &id, has_result, has_error) {
        (Some(_), _, true, _) | (Some(_), _, _, true) => {
            return Err(fail("a message has either `method` or `result`/`error`".into()))
        }
        (Some(_), Some(Value::Null), _, _) => return Err(fail("a request's `id` must not be null".into())),
        (Some(_), Some(_), _, _) => Kind::Request,
        (Some(_), None, _, _) => Kind::Notification,
        (None, None, _, _) => return Err(fail("a response must have an `id`".into())),
        (None, Some(_), true, true) => {
            return Err(fail("a response has `result` or `error`, not both".into()))
        }
        (None, Some(Value::Null), true, false) => {
            return Err(fail("a result's `id` must not be null".into()))
        }
        (None, Some(_), true, false) => Kind::Response,
        (None, Some(_), false, true) => {
            let ok = body.get("error").and_then(Value::as_object).is_some_and(|e| {
                e.get("code").is_some_and(Value::is_i64) && e.get("message").is_some_and(Value::is_string)
            });
            if !ok {
                return Err(fail(
                    "`error` must be an object with an integer `code` and a string `message`".into(),
                ));
            }
            Kind::Error
        }
        (None, Some(_), false, false) => {
            return Err(fail("a message needs `method`, `result` or `error`".into()))
        }
    };
    if let Some(p) = body.get("params") {
        if !(p.is_object() || p.is_array()) {
            return Err(fail("`params` must be an object or an array".into()));
        }
    }
    Ok(Message {
        kind,
        id,
        method,
        body,
    })
}

/// Longest method or tool name accepted.
pub const NAME_MAX: usize = 128;

/// A method or tool name: 1 to [`NAME_MAX`] printable ASCII characters, no
/// spaces. Names a policy could be written against only one way: no
/// look-alike letters, invisible characters, controls or escapes.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > NAME_MAX {
        return Err(format!("name longer than {NAME_MAX} bytes"));
    }
    if let Some(c) = name.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "name {:?} contains {:?} (U+{:04X}): only printable ASCII without spaces is accepted",
            name, c, c as u32
        ));
    }
    Ok(())
}

/// Compact JSON text of a value.
pub fn value_bytes(v: &Value) -> Vec<u8> {
    // Serialising a Value cannot fail (its keys are strings).
    serde_json::to_vec(v).unwrap_or_default()
}

/// A JSON-RPC error response.
pub fn error_response(id: Option<&Value>, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut err = Map::new();
    err.insert("code".into(), Value::from(code));
    err.insert("message".into(), Value::from(message));
    if let Some(d) = data {
        err.insert("data".into(), d);
    }
    let mut m = Map::new();
    m.insert("jsonrpc".into(), Value::from("2.0"));
    m.insert("id".into(), id.cloned().unwrap_or(Value::Null));
    m.insert("error".into(), Value::Object(err));
    Value::Object(m)
}

/// A key as case-insensitive matchers see it: lower case, with the two
/// non-ASCII letters Go's `encoding/json` folds onto ASCII (`ſ` → `s`,
/// Kelvin sign → `k`).
fn fold(k: &str) -> String {
    k.chars()
        .flat_map(|c| match c {
            '\u{17f}' => 's'.to_lowercase(),
            '\u{212a}' => 'k'.to_lowercase(),
            c => c.to_lowercase(),
        })
        .collect()
}

/// Deserialises into a [`Value`], refusing repeated object keys.
struct StrictSeed;

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = seq.next_element_seed(StrictSeed)? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        let mut folded: Vec<(String, String)> = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            if m.contains_key(&k) {
                return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
            }
            let f = fold(&k);
            if let Some((other, _)) = folded.iter().find(|(_, g)| *g == f) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key: {other:?} and {k:?} differ only in case"
                )));
            }
            folded.push((k.clone(), f));
            let v = map.next_value_seed(StrictSeed)?;
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn p(s: &str) -> Result<Parsed, Refusal> {
        parse(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn requests_notifications_responses_and_errors_are_told_apart() {
        let kinds = |s: &str| {
            p(s).unwrap()
                .messages()
                .iter()
                .map(|m| m.kind)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            [Kind::Request]
        );
        assert_eq!(
            kinds(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            [Kind::Notification]
        );
        assert_eq!(
            kinds(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            [Kind::Response]
        );
        assert_eq!(
            kinds(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#),
            [Kind::Error]
        );
        assert_eq!(
            kinds(r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}]"#),
            [Kind::Request, Kind::Notification]
        );
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for s in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"rm"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","arguments":{"a":[{"x":1,"x":2}]}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call"}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"NAME\":\"x\"}}",
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"kind\":1,\"\u{212a}ind\":2}}}",
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"\u{17f}\":1,\"S\":2}}",
        ] {
            let e = p(s).unwrap_err();
            assert_eq!(e.code, code::PARSE_ERROR, "{s}");
            assert!(e.message.contains("duplicate key"), "{e}");
        }
    }

    #[test]
    fn what_parsers_could_read_differently_is_refused() {
        let bad: &[&[u8]] = &[
            b"\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"method\":\"a\"}",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"a\xff\"}",
            br#"{"jsonrpc":"2.0","method":"a","params":{"s":"\ud800"}}"#,
            br#"{"jsonrpc":"2.0","method":"a"} {"jsonrpc":"2.0","method":"b"}"#,
            br#"{"jsonrpc":"2.0","method":"a",}"#,
            br#"{"jsonrpc":"2.0","method":"a"/*c*/}"#,
        ];
        for b in bad {
            let e = parse(b, &Limits::default()).unwrap_err();
            assert_eq!(e.code, code::PARSE_ERROR, "{}", String::from_utf8_lossy(b));
        }
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(parse_value(deep.as_bytes()).is_err());
    }

    #[test]
    fn malformed_messages_are_invalid_requests_with_their_id() {
        for (s, id) in [
            (r#"{"id":1,"method":"a"}"#, Some(Value::from(1))),
            (
                r#"{"jsonrpc":"1.0","id":"x","method":"a"}"#,
                Some(Value::from("x")),
            ),
            (r#"{"jsonrpc":"2.0","id":{"a":1},"method":"a"}"#, None),
            (r#"{"jsonrpc":"2.0","id":null,"method":"a"}"#, None),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"a","result":{}}"#,
                Some(Value::from(2)),
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"result":{},"error":{"code":1,"message":"m"}}"#,
                Some(Value::from(3)),
            ),
            (
                r#"{"jsonrpc":"2.0","id":4,"error":{"code":"x","message":"m"}}"#,
                Some(Value::from(4)),
            ),
            (
                r#"{"jsonrpc":"2.0","id":5,"method":"a","params":"s"}"#,
                Some(Value::from(5)),
            ),
            (
                r#"{"jsonrpc":"2.0","id":6,"method":"tools/cal\u200bl"}"#,
                Some(Value::from(6)),
            ),
            ("[]", None),
            ("3", None),
        ] {
            let e = p(s).unwrap_err();
            assert_eq!(e.code, code::INVALID_REQUEST, "{s}: {e}");
            assert_eq!(e.id, id, "{s}");
        }
    }

    #[test]
    fn size_and_batch_limits_hold() {
        let l = Limits {
            max_message: 64,
            max_batch: 2,
        };
        let big = format!(r#"{{"jsonrpc":"2.0","method":"{}"}}"#, "a".repeat(80));
        assert!(parse(big.as_bytes(), &l).unwrap_err().message.contains("exceeds"));
        let three = r#"[{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","method":"a"}]"#;
        let l = Limits {
            max_message: 1024,
            max_batch: 2,
        };
        assert!(parse(three.as_bytes(), &l)
            .unwrap_err()
            .message
            .contains("batch of 3"));
    }

    #[test]
    fn names_are_printable_ascii() {
        assert!(check_name("get-weather_v2.1").is_ok());
        for bad in [
            "",
            "echo ",
            "ech\u{043e}",
            "a\u{200b}b",
            "a\u{0}b",
            "ａ",
            &"x".repeat(129),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sniffing_finds_json_rpc_without_a_content_type() {
        assert!(looks_like_jsonrpc(
            b"  {\"method\":\"tools/call\",\"jsonrpc\":\"2.0\"}"
        ));
        assert!(looks_like_jsonrpc(b"[{\"jsonrpc\":\"2.0\""));
        assert!(!looks_like_jsonrpc(b"{\"hello\":1}"));
        assert!(!looks_like_jsonrpc(b"jsonrpc"));
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse(&b, &Limits::default());
        }

        #[test]
        fn forwarded_text_reparses_to_the_same_message(
            method in "[a-z/]{1,20}", id in 0i64..1000, arg in ".{0,40}",
        ) {
            let v = serde_json::json!({"jsonrpc":"2.0","id":id,"method":method,"params":{"a":arg}});
            let m = match p(&v.to_string()).unwrap() { Parsed::Single(m) => m, Parsed::Batch(_) => unreachable!() };
            let again = parse(&m.to_bytes(), &Limits::default()).unwrap();
            proptest::prop_assert_eq!(again, Parsed::Single(m));
        }
    }
}
