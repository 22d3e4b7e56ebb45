//! The schema and its version (`PRAGMA user_version`).
//!
//! Version 1 is the first. A file with a newer version is refused, never
//! rewritten; an older one is migrated step by step inside one transaction.
//!
//! Version 2 keeps each policy text once (by SHA-256), so a session's policy
//! can be read back (`corral policy suggest` diffs against it), and records
//! how many events a session generated, so `generated = stored + drops` can
//! be checked.
//!
//! Version 3 adds `events.mcp_call`: the MCP tool call an event belongs to
//! (`corral events --mcp-call`).

/// The newest schema this build knows.
pub(crate) const VERSION: i64 = 3;

/// Creates version 1 from an empty database.
pub(crate) const V1: &str = "
CREATE TABLE sessions (
    id            INTEGER PRIMARY KEY,
    principal     TEXT NOT NULL,
    policy_label  TEXT NOT NULL,
    policy_sha256 TEXT NOT NULL,
    mode          TEXT NOT NULL,
    started_ns    INTEGER NOT NULL,
    command       TEXT NOT NULL,   -- JSON array of strings
    ended_ns      INTEGER,
    exit          TEXT,
    lost          INTEGER
);
CREATE TABLE events (
    id        INTEGER PRIMARY KEY,
    session   INTEGER NOT NULL,
    wall_ns   INTEGER NOT NULL,
    ts_ns     INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    decision  TEXT,
    layer     TEXT NOT NULL,
    principal TEXT NOT NULL,
    pid       INTEGER NOT NULL,
    ppid      INTEGER NOT NULL,
    comm      TEXT NOT NULL,
    exe       TEXT,
    target    TEXT,              -- path, or ip:port
    policies  TEXT NOT NULL,     -- policy ids, one per line
    policy_at TEXT NOT NULL,     -- JSON array of file:line, same order
    data      TEXT NOT NULL      -- the full corral_core::Event as JSON
);
CREATE INDEX events_wall ON events(wall_ns);
CREATE INDEX events_session ON events(session, id);
CREATE INDEX events_kind ON events(kind);
CREATE INDEX events_decision ON events(decision);
CREATE TABLE drops (
    session INTEGER NOT NULL,
    reason  TEXT NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (session, reason)
) WITHOUT ROWID;
-- Decision counts per session, kept by insert so sessions() needs no scan.
CREATE TABLE counts (
    session    INTEGER PRIMARY KEY,
    allowed    INTEGER NOT NULL DEFAULT 0,
    denied     INTEGER NOT NULL DEFAULT 0,
    would_deny INTEGER NOT NULL DEFAULT 0
);
";

/// Version 1 -> 2.
pub(crate) const V2: &str = "
CREATE TABLE policies (
    sha256 TEXT PRIMARY KEY,
    label  TEXT NOT NULL,
    text   TEXT NOT NULL
) WITHOUT ROWID;
ALTER TABLE sessions ADD COLUMN generated INTEGER;
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 2 -> 3.
pub(crate) const V3: &str = "
ALTER TABLE events ADD COLUMN mcp_call TEXT;  -- call id(s), comma-separated
CREATE INDEX events_mcp_call ON events(mcp_call) WHERE mcp_call IS NOT NULL;
";
