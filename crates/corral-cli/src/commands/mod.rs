//! One module per subcommand.

pub mod config;
pub mod control;
pub mod doctor;
pub mod events;
pub mod image;
pub mod mcp;
pub mod policy;
pub mod run;
pub mod ui;
