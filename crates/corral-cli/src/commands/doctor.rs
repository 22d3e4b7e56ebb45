//! `corral doctor`: probe this host (by loading and attaching, not by
//! reading config) and say which layer enforces each decision kind.

use anyhow::{Context as _, Result};
use clap::Args;
use corral_kernel::probe::{self, Capabilities, LayerChoice};
use serde::Serialize;
use std::process::ExitCode;

#[derive(Args)]
pub struct DoctorArgs {
    /// Print the capabilities, layers and verdict as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    caps: &'a Capabilities,
    layers: Vec<LayerChoice>,
    /// Every decision kind has a layer.
    complete: bool,
}

/// Exit 0 when every decision kind has a layer here, 1 otherwise.
pub fn run(args: DoctorArgs) -> Result<ExitCode> {
    let caps = probe::probe();
    let layers = caps.layers();
    let complete = layers.iter().all(|l| l.layer.is_some());
    if args.json {
        let report = Report {
            caps: &caps,
            layers,
            complete,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serialize the report")?
        );
    } else {
        print!("{}", render(&caps, &layers));
    }
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn render(caps: &Capabilities, layers: &[LayerChoice]) -> String {
    let mut out = String::new();
    let who = if caps.root {
        "as root"
    } else {
        "NOT as root: most probes need root"
    };
    out.push_str(&format!(
        "corral doctor: kernel {}, running {who}\n\n",
        caps.kernel
    ));

    let rows = caps.checks.rows();
    let w = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(5).max(5);
    out.push_str(&format!(
        "{:<w$}  {:<6}  {:>8}  {}\n",
        "probe", "status", "ms", "detail"
    ));
    for (name, c) in &rows {
        out.push_str(&format!(
            "{:<w$}  {:<6}  {:>8.2}  {}\n",
            name,
            c.status.as_str(),
            c.ms,
            c.detail
        ));
    }

    out.push('\n');
    let names: Vec<String> = layers
        .iter()
        .map(|l| match (&l.layer, l.fallback) {
            (Some(x), true) => format!("{x} (fallback)"),
            (Some(x), false) => x.clone(),
            (None, _) => "NONE".to_string(),
        })
        .collect();
    let kw = layers
        .iter()
        .map(|l| l.kind.label().len())
        .max()
        .unwrap_or(13)
        .max(13);
    let lw = names.iter().map(String::len).max().unwrap_or(5).max(5);
    out.push_str(&format!(
        "{:<kw$}  {:<lw$}  {}\n",
        "decision kind", "layer", "why"
    ));
    for (l, name) in layers.iter().zip(&names) {
        out.push_str(&format!("{:<kw$}  {:<lw$}  {}\n", l.kind.label(), name, l.note));
    }

    out.push('\n');
    let missing: Vec<&str> = layers
        .iter()
        .filter(|l| l.layer.is_none())
        .map(|l| l.kind.label())
        .collect();
    let fallbacks: Vec<&str> = layers
        .iter()
        .filter(|l| l.fallback)
        .map(|l| l.kind.label())
        .collect();
    if missing.is_empty() {
        out.push_str("Every decision kind has a layer on this host");
    } else {
        out.push_str(&format!(
            "No layer for: {}. Sessions whose policy needs these refuse to start",
            missing.join(", ")
        ));
    }
    if fallbacks.is_empty() {
        out.push_str(".\n");
    } else {
        out.push_str(&format!("; fallbacks in use for: {}.\n", fallbacks.join(", ")));
    }
    out
}
