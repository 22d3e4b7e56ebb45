//! `corral`: runs AI coding agents under one Cedar policy. This binary only
//! parses arguments and wires the libraries together.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// corral: govern what an AI coding agent does — files, processes, network,
/// HTTP, MCP — with one Cedar policy.
#[derive(Parser)]
#[command(name = "corral", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate, explain and compile policies.
    #[command(subcommand)]
    Policy(commands::policy::PolicyCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(cmd) => commands::policy::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
