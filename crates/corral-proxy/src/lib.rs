#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod ca;
pub mod certs;
pub mod decide;
pub mod event;
mod forward;
mod mcp;
pub mod proxy;
pub mod secret;
mod serve;
pub mod smuggle;
pub mod transparent;
pub mod upstream;

pub use ca::{Ca, CaError};
pub use decide::{PolicyHit, ProxyPolicy, Redacted, Verdict};
pub use event::{Client, EventSink, HttpEvent};
pub use proxy::{Dest, Limits, Proxy, ProxyConfig, ProxyError};
pub use secret::{placeholder, Secret};
pub use serve::serve_connection;
pub use transparent::{refuse_unredirected, serve_redirected};
