//! The audit store's integration tests: one binary, shared helpers in `util`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

mod bench_smoke;
mod crash;
mod export;
mod pipeline;
mod retention;
mod store;
mod throughput;
mod util;
