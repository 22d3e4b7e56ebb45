//! Event queries: filters and the SQL they become.

use crate::Kind;
use corral_core::Decision;
use rusqlite::types::Value;

/// Which events to return. Every filter that is set must match.
///
/// Results come oldest first (ascending id). With `limit` and no `after_id`
/// they are the newest `limit` matching events (a tail); with `after_id`
/// they are the first `limit` events after it, so a `--follow` loop can page
/// forward without skipping any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only this session.
    pub session: Option<u32>,
    /// Only this kind.
    pub kind: Option<Kind>,
    /// Only this decision.
    pub decision: Option<Decision>,
    /// Only events received at or after this wall-clock time (ns).
    pub since_wall_ns: Option<u64>,
    /// Case-sensitive substring of the target (path, ip:port, or an http
    /// event's `METHOD url`), exe, comm or one of the policy ids.
    pub grep: Option<String>,
    /// Only events of this MCP tool call (`<conversation>#<n>`): its
    /// request and response, and what the wrapped server's processes did
    /// while it was in flight.
    pub mcp_call: Option<String>,
    /// At most this many events.
    pub limit: Option<usize>,
    /// Only events stored after this id.
    pub after_id: Option<i64>,
}

pub(crate) fn decision_str(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
        Decision::WouldDeny => "would_deny",
    }
}

/// The SQL (selecting `id, wall_ns, policy_at, data`, or with `count` the
/// number of matches, ignoring `limit`) and its parameters.
pub(crate) fn to_sql(q: &Query, count: bool) -> (String, Vec<Value>) {
    let (filter, params) = where_sql(q);
    if count {
        return (format!("SELECT count(*) FROM events{filter}"), params);
    }
    let base = format!("SELECT id, wall_ns, policy_at, data FROM events{filter}");
    let sql = match (q.limit, q.after_id) {
        (Some(l), None) => format!(
            "SELECT * FROM ({base} ORDER BY id DESC LIMIT {}) ORDER BY id",
            l.min(i64::MAX as usize)
        ),
        (Some(l), Some(_)) => format!("{base} ORDER BY id LIMIT {}", l.min(i64::MAX as usize)),
        (None, _) => format!("{base} ORDER BY id"),
    };
    (sql, params)
}

/// The ` WHERE ...` clause of `q`'s filters (empty when none is set; the
/// limit is not a filter) and its parameters.
pub(crate) fn where_sql(q: &Query) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    if let Some(s) = q.session {
        clauses.push("session = ?");
        params.push(Value::Integer(i64::from(s)));
    }
    if let Some(k) = q.kind {
        clauses.push("kind = ?");
        params.push(Value::Text(k.as_str().to_owned()));
    }
    if let Some(d) = q.decision {
        clauses.push("decision = ?");
        params.push(Value::Text(decision_str(d).to_owned()));
    }
    if let Some(t) = q.since_wall_ns {
        clauses.push("wall_ns >= ?");
        params.push(Value::Integer(t as i64));
    }
    if let Some(g) = &q.grep {
        clauses.push(
            "(instr(coalesce(target, ''), ?1g) > 0 OR instr(coalesce(exe, ''), ?1g) > 0 \
             OR instr(comm, ?1g) > 0 OR instr(policies, ?1g) > 0)",
        );
        params.push(Value::Text(g.clone()));
    }
    if let Some(c) = &q.mcp_call {
        clauses.push("(mcp_call IS NOT NULL AND instr(',' || mcp_call || ',', ?) > 0)");
        params.push(Value::Text(format!(",{c},")));
    }
    if let Some(a) = q.after_id {
        clauses.push("id > ?");
        params.push(Value::Integer(a));
    }
    // Number the parameters explicitly: grep uses its one four times.
    let mut n = 0;
    let clauses: Vec<String> = clauses
        .iter()
        .map(|c| {
            n += 1;
            if c.contains("?1g") {
                c.replace("?1g", &format!("?{n}"))
            } else {
                c.replace('?', &format!("?{n}"))
            }
        })
        .collect();
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    (filter, params)
}
