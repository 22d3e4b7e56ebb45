//! One module per subcommand.

pub mod config;
pub mod doctor;
pub mod policy;
pub mod run;
