//! `corral image`: build and check the agents image (docs/IMAGES.md).

use anyhow::Context;
use corral_runtime::image::{self, BuildOptions, Engine};
use std::path::PathBuf;
use std::process::ExitCode;

/// `corral image` subcommands.
#[derive(clap::Subcommand)]
pub enum ImageCmd {
    /// Build the agents image from images/agents/Containerfile (built into
    /// this binary). Without a registry, bootstraps a Debian base first.
    Build(BuildArgs),
    /// Run `<agent> --version` for each agent in an image.
    Check(CheckArgs),
}

/// `corral image build` flags.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// Tag of the built image.
    #[arg(long, default_value = image::DEFAULT_TAG)]
    tag: String,
    /// Base image [default: debian:bookworm-slim, or a local debootstrapped
    /// `localhost/corral-debian:bookworm` when that cannot be pulled].
    #[arg(long, value_name = "IMAGE")]
    base: Option<String>,
    /// Container engine [default: podman if installed, else docker].
    #[arg(long, value_parser = ["podman", "docker"])]
    engine: Option<String>,
    /// Rebuild every layer, and the local Debian base.
    #[arg(long)]
    no_cache: bool,
    /// Build this Containerfile instead, e.g. one `FROM
    /// localhost/corral-agents:latest` adding toolchains (its directory is
    /// the context; a base is chosen only if it declares `ARG BASE`).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Pass a build argument, e.g. `CLAUDE_CODE_VERSION=2.1.0` (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    build_arg: Vec<String>,
    /// Trust this PEM CA certificate during the build only, e.g. for a
    /// TLS-inspecting proxy (repeatable). The host's local CAs
    /// (/usr/local/share/ca-certificates and the like) are trusted too.
    #[arg(long, value_name = "FILE")]
    ca_cert: Vec<PathBuf>,
    /// Do not trust the host's local CAs during the build.
    #[arg(long)]
    no_host_ca: bool,
}

/// `corral image check` flags.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// The image to check.
    #[arg(long, default_value = image::DEFAULT_TAG)]
    tag: String,
    /// Container engine [default: podman if installed, else docker].
    #[arg(long, value_parser = ["podman", "docker"])]
    engine: Option<String>,
}

/// Runs `corral image`.
pub fn run(cmd: ImageCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCmd::Build(args) => build(args),
        ImageCmd::Check(args) => check(args),
    }
}

fn engine(name: Option<&str>) -> anyhow::Result<Engine> {
    Ok(match name {
        Some(name) => name.parse()?,
        None => Engine::detect()?,
    })
}

fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    if let Some(bad) = args.build_arg.iter().find(|a| !a.contains('=')) {
        anyhow::bail!("invalid `--build-arg {bad}`: expected KEY=VALUE");
    }
    let opts = BuildOptions {
        tag: args.tag,
        base: args.base,
        engine: Some(engine(args.engine.as_deref())?),
        no_cache: args.no_cache,
        file: args.file,
        build_args: args.build_arg,
        ca_certs: args.ca_cert,
        host_cas: !args.no_host_ca,
    };
    let report = image::build(&opts, &mut |step| eprintln!("corral: {step}"))
        .context("cannot build the agents image")?;
    let size = report.engine.image_size(&report.tag).map_or_else(
        |_| String::from("unknown size"),
        |bytes| format!("{:.0} MB", bytes as f64 / 1e6),
    );
    let base = match (&report.base, report.base_built_in) {
        (Some(base), Some(took)) => format!(" on {base} (bootstrapped in {took:.0?})"),
        (Some(base), None) => format!(" on {base}"),
        (None, _) => String::new(),
    };
    println!("{}: {size}, built in {:.0?}{base}", report.tag, report.built_in);
    Ok(ExitCode::SUCCESS)
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let engine = engine(args.engine.as_deref())?;
    engine.check()?;
    let mut ok = true;
    for (command, package) in image::AGENTS {
        match engine.version_in(&args.tag, command) {
            Ok(version) => println!("{command:<9} {version}"),
            Err(e) => {
                ok = false;
                println!("{command:<9} FAILED ({package}): {e}");
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
