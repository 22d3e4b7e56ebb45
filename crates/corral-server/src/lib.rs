#![doc = include_str!("../README.md")]

mod assets;
mod auth;
mod detail;
mod error;
mod filters;
mod policy;
mod routes;
mod server;
mod sessions;
mod start;
mod state;
mod stream;
mod token;
mod watch;

pub use auth::COOKIE;
pub use error::ServerError;
pub use server::{default_run_root, Server, ServerConfig, DEFAULT_LISTEN, PORT_TRIES};
pub use start::StartConfig;

/// The routes the router serves under `/api`, as `(method, path)`: what
/// `openapi.json` must describe (checked by a test).
pub fn api_routes() -> Vec<(&'static str, &'static str)> {
    routes::api_routes().into_iter().map(|(m, p, _)| (m, p)).collect()
}

/// The OpenAPI 3.1 document served at `/api/openapi.json`.
pub fn openapi() -> &'static str {
    routes::OPENAPI
}
