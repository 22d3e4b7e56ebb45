//! corral's sessions: `corral run` puts an agent (or any command) in a
//! container, or in a bare cgroup, under one policy.
//!
//! * [`config`]: global and project TOML configuration, merged with flags,
//!   each value remembering where it came from.
//! * [`recipes`]: what each known agent needs (config dirs, API-key
//!   variables, hosts).
//! * [`init`]: the static `corral-init` entrypoint, embedded in this crate,
//!   and the supervisor's side of its go/exit protocol.
//! * [`engine`]: podman and docker through their CLIs.
//! * [`session`]: one governed run, from cgroup to cleanup.
//! * [`egress`]: the session's egress proxy (its listeners in the session's
//!   network namespace, the kernel's redirect, the CA trust inside).
//! * [`mcp`]: the supervisor's end of `corral mcp wrap` (stdio MCP servers
//!   in the session, governed from outside), and the log linking kernel
//!   events to the tool calls in flight.

pub mod config;
pub mod control;
pub mod egress;
pub mod engine;
pub mod image;
pub mod init;
pub mod mcp;
pub mod mcp_layer;
pub mod recipes;
pub mod session;
pub mod sys;
