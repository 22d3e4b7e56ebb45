//! corral-server's tests: real sockets on loopback, a temp store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

mod api;
mod auth;
mod bind;
mod browser;
mod events;
mod openapi;
mod policy;
mod schemathesis;
mod ui;
