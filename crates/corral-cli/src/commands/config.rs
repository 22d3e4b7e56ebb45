//! `corral config ...`: show the merged configuration, and where the files are.

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use corral_runtime::config::{self, Flags, Settings, PROJECT_FILE};
use corral_runtime::recipes;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Print every effective setting with its origin (default, global file,
    /// project file or flag), then the agent recipes that have overrides.
    Show(SettingsArgs),
    /// Print the global and project configuration file paths and whether
    /// they exist.
    Path {
        /// Project directory (default: the nearest directory with corral.toml,
        /// from the current directory upwards).
        #[arg(long)]
        project: Option<PathBuf>,
    },
}

/// The flags that override configuration files (shared with `corral run`).
#[derive(Args, Clone, Debug, Default)]
pub struct SettingsArgs {
    /// Policy file.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Container image.
    #[arg(long)]
    pub image: Option<String>,
    /// Container engine: podman or docker.
    #[arg(long)]
    pub runtime: Option<String>,
    /// Bind mount `src:dst[:ro|:rw]` (repeatable).
    #[arg(long = "volume", short = 'v')]
    pub volumes: Vec<String>,
    /// Environment variable `NAME=value` for the session (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Address and port of the web UI.
    #[arg(long)]
    pub ui_listen: Option<String>,
    /// Shadow mode.
    #[arg(long)]
    pub shadow: bool,
    /// Project directory (default: the nearest directory with corral.toml,
    /// from the current directory upwards).
    #[arg(long)]
    pub project: Option<PathBuf>,
}

impl SettingsArgs {
    /// The flags as the configuration loader takes them.
    pub fn flags(&self) -> Flags {
        Flags {
            policy: self.policy.clone(),
            image: self.image.clone(),
            runtime: self.runtime.clone(),
            volumes: self.volumes.clone(),
            env: self.env.clone(),
            ui_listen: self.ui_listen.clone(),
            shadow: self.shadow.then_some(true),
            ..Flags::default()
        }
    }

    /// Loads the global file, the project's `corral.toml` and these flags.
    pub fn load(&self) -> Result<Settings> {
        let project = project_file(self.project.as_deref())?;
        let global = config::global_path();
        Ok(config::load(
            global.as_deref(),
            project.as_deref(),
            &self.flags(),
        )?)
    }
}

/// The project's `corral.toml`: in `--project DIR` (as `corral run` takes
/// it), else in the nearest directory upwards that has one.
fn project_file(dir: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(dir) = dir {
        return Ok(Some(dir.join(PROJECT_FILE)));
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(config::find_project(&cwd).map(|root| root.join(PROJECT_FILE)))
}

pub fn run(cmd: ConfigCmd) -> Result<ExitCode> {
    match cmd {
        ConfigCmd::Show(args) => {
            let settings = args.load()?;
            print!("{}", settings.show());
            for name in settings.recipes.keys() {
                if let Some(r) = recipes::resolve(name, &settings) {
                    print!("\n{}", describe(&r));
                }
            }
        }
        ConfigCmd::Path { project } => {
            let exists = |p: &Path| if p.is_file() { "exists" } else { "missing" };
            match config::global_path() {
                Some(g) => println!("global   {}  ({})", g.display(), exists(&g)),
                None => println!("global   (none: neither XDG_CONFIG_HOME nor HOME is set)"),
            }
            match project_file(project.as_deref())? {
                Some(p) => println!("project  {}  ({})", p.display(), exists(&p)),
                None => println!("project  (none: no {PROJECT_FILE} here or in a parent directory)"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(r: &recipes::Recipe) -> String {
    let kind = if recipes::builtin(&r.name).is_some() {
        "built-in, with overrides"
    } else {
        "from configuration"
    };
    let consent = match r.mount_config {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not asked yet",
    };
    let words = |v: Vec<String>| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.join(" ")
        }
    };
    let home: Vec<String> = r.config_paths.iter().map(|p| format!("~/{p}")).collect();
    format!(
        "recipe {} ({kind})\n  command       {:?}\n  config_paths  {}\n  env           {}\n  hosts         {}\n  mount_config  {consent}\n",
        r.name,
        r.command,
        words(home),
        words(r.env.clone()),
        words(r.hosts.clone()),
    )
}
