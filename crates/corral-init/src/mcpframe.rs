//! The frame types and limits of the `corral mcp wrap` wire, in one place:
//! corral-init's relay (`mcpwrap`) uses this module, and corral-runtime's
//! supervisor side includes this same file (`#[path]`), so the two cannot
//! disagree. Constants only: corral-init is built with no dependencies.
//! The frames are described in corral-runtime's `mcp::wire`.

/// Largest frame payload, bytes.
pub const MAX_FRAME: usize = 1 << 20;

/// Frame types.
pub mod kind {
    /// Relay → supervisor: name and argv.
    pub const HELLO: u8 = 1;
    /// Supervisor → relay: start the server.
    pub const OK: u8 = 2;
    /// Supervisor → relay: do not start it, because.
    pub const ABORT: u8 = 3;
    /// Relay → supervisor: bytes from the agent.
    pub const CLIENT_BYTES: u8 = 4;
    /// Relay → supervisor: the agent closed its end.
    pub const CLIENT_EOF: u8 = 5;
    /// Relay → supervisor: bytes from the server's stdout.
    pub const SERVER_BYTES: u8 = 6;
    /// Relay → supervisor: the server closed its stdout.
    pub const SERVER_EOF: u8 = 7;
    /// Relay → supervisor: how the server ended.
    pub const SERVER_EXIT: u8 = 8;
    /// Supervisor → relay: bytes for the server's stdin.
    pub const TO_SERVER: u8 = 9;
    /// Supervisor → relay: bytes for the agent.
    pub const TO_CLIENT: u8 = 10;
    /// Supervisor → relay: close the server's stdin.
    pub const CLOSE_SERVER_STDIN: u8 = 11;
    /// Supervisor → relay: all flushed, exit.
    pub const DONE: u8 = 12;
}

/// The HELLO version (its first payload byte).
pub const VERSION: u8 = 1;
