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
    /// Probe this host (by loading and attaching tiny programs) and show
    /// which layer enforces each decision kind. Exit 1 if a kind has none.
    Doctor(commands::doctor::DoctorArgs),
    /// Run an agent (or any command) in a container under the policy.
    Run(commands::run::RunArgs),
    /// The audit trail: every decision of every session, from the store.
    Events(commands::events::EventsArgs),
    /// Past and running sessions, with their counts of decisions.
    Sessions(commands::events::SessionsArgs),
    /// Show or switch a running session's mode: enforce, or shadow (decide
    /// and record "would deny", block nothing).
    Mode(commands::control::ModeArgs),
    /// Load a new policy into a running session (hot reload; on any error
    /// the policy in force stays, unchanged).
    Reload(commands::control::ReloadArgs),
    /// Stop a running session: its command gets SIGTERM, then SIGKILL
    /// after 5 s; the session ends and is recorded as usual.
    Stop(commands::control::StopArgs),
    /// Show the merged configuration and where each value came from.
    #[command(subcommand)]
    Config(commands::config::ConfigCmd),
    /// Build the agents image (images/agents/Containerfile).
    #[command(subcommand)]
    Image(commands::image::ImageCmd),
    /// Route agents' stdio MCP servers through corral: `config` finds and
    /// rewrites their configurations, `wrap` starts one in a session.
    #[command(subcommand)]
    Mcp(commands::mcp::McpCmd),
    /// The control UI and API: start it (or find the running one) and
    /// print its URL with the access token; `serve`, `url`, `stop`.
    Ui(commands::ui::UiArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(cmd) => commands::policy::run(cmd),
        Command::Doctor(args) => commands::doctor::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Config(cmd) => commands::config::run(cmd),
        Command::Events(args) => commands::events::run(args),
        Command::Sessions(args) => commands::events::sessions(args),
        Command::Mode(args) => commands::control::mode(args),
        Command::Reload(args) => commands::control::reload(args),
        Command::Stop(args) => commands::control::stop(args),
        Command::Image(cmd) => commands::image::run(cmd),
        Command::Mcp(cmd) => commands::mcp::run(cmd),
        Command::Ui(args) => commands::ui::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
