//! The crate's error: what can go wrong before the server is serving.

use std::net::SocketAddr;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configured address is not a loopback address and
    /// `allow_non_loopback` is not set.
    #[error(
        "refusing to listen on `{0}`: not a loopback address (the control API would be \
         reachable from the network); use 127.0.0.1 or configure a non-loopback address explicitly"
    )]
    NonLoopback(SocketAddr),
    /// Every port from the configured one up to the last tried was taken.
    #[error("no free port on {ip} from {first} to {last}: all in use")]
    NoFreePort {
        /// The address tried.
        ip: std::net::IpAddr,
        /// The first port tried.
        first: u16,
        /// The last port tried.
        last: u16,
    },
    /// Binding failed for another reason than a port in use.
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        source: std::io::Error,
    },
    /// A configured token is unusable.
    #[error("the access token must be 16 to 256 characters from [A-Za-z0-9_-], got {0} characters")]
    BadToken(usize),
    /// No randomness for the token.
    #[error("cannot generate an access token: {0}")]
    Random(String),
    /// The audit store could not be opened.
    #[error("cannot open the audit store: {0}")]
    Store(#[from] corral_audit::AuditError),
    /// Serving failed.
    #[error("serving the control API: {0}")]
    Serve(std::io::Error),
}
