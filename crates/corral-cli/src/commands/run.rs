//! `corral run`: an agent (or any command) in a container under the policy.

use anyhow::{bail, Context as _, Result};
use corral_core::{Mode, What};
use corral_kernel::session::{FileLayer, JudgeRef};
use corral_policy::{check, default_policy, Source};
use corral_runtime::config::{self, Flags};
use corral_runtime::engine::{self, Kind};
use corral_runtime::session::{self, Compiled, Exit, Mount, Spec, Target};
use corral_runtime::{init, recipes};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// `corral run` arguments.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  corral run claude\n  corral run --policy team.cedar -- bash -lc 'make test'\n  corral run --no-container -- ./script.sh"
)]
pub struct RunArgs {
    /// A known agent (claude, codex, gemini, qwen, opencode, or one defined
    /// in config). Arguments after `--` go to it; without an agent, the
    /// words after `--` are the command.
    agent: Option<String>,
    /// The command (without AGENT) or the agent's extra arguments.
    #[arg(last = true)]
    rest: Vec<String>,
    /// Policy file (default: config's `policy`, else the built-in default
    /// policy for this project).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The session's principal, `Agent::"NAME"` (default: the agent's name,
    /// or the command's).
    #[arg(long = "as", value_name = "NAME")]
    principal: Option<String>,
    /// Run this image instead of the host filesystem (read-only).
    #[arg(long)]
    image: Option<String>,
    /// podman or docker (default: whichever works, podman first).
    #[arg(long)]
    runtime: Option<String>,
    /// No container: run in a cgroup on the host (hosts without an engine).
    #[arg(long)]
    no_container: bool,
    /// Extra bind mount SRC:DST[:ro|:rw] (repeatable).
    #[arg(short = 'v', long = "volume")]
    volumes: Vec<String>,
    /// Environment variable for the session, NAME=VALUE (repeatable).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Decide and record, never block ("would deny").
    #[arg(long)]
    shadow: bool,
    /// Which layer decides file opens and execs: auto, lsm, fanotify, off.
    #[arg(long, default_value = "auto")]
    file_layer: String,
    /// Write the session's events (JSON lines) here.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Mount the agent's config directories (and remember the consent).
    #[arg(long, conflicts_with = "no_mount_config")]
    mount_config: bool,
    /// Do not mount them (and remember the refusal).
    #[arg(long)]
    no_mount_config: bool,
    /// Project directory (default: the nearest directory with corral.toml,
    /// else the git work tree, else the current directory).
    #[arg(long)]
    project: Option<PathBuf>,
    /// The audit store (default: ~/.local/state/corral/audit.db).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Extra root certificates (a PEM file) the egress proxy trusts for
    /// upstream servers, beside the system's (repeatable).
    #[arg(long = "upstream-ca", value_name = "PEM")]
    upstream_ca: Vec<PathBuf>,
    /// A placeholder secret: the session sees NAME=corral-placeholder-…;
    /// the egress proxy puts the real value (from SOURCE: env:VAR, the
    /// default being env:NAME, or file:PATH) into requests only to hosts a
    /// `SecretUse` permit allows (repeatable).
    #[arg(long = "secret", value_name = "NAME[=SOURCE]")]
    secrets: Vec<String>,
    /// Resolve NAME to IP inside the session (repeatable; containers only).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_hosts: Vec<String>,
    /// Also send every stored event to this OpenTelemetry collector as
    /// OTLP/HTTP logs (plain http, e.g. http://localhost:4318).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// No banner and no summary on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Where the control UI listens when this run starts it (default:
    /// config's `ui.listen`, 127.0.0.1:18080, the next free port if taken).
    #[arg(long, value_name = "ADDR:PORT")]
    ui_listen: Option<String>,
    /// Neither start nor join the control UI server.
    #[arg(long)]
    no_ui: bool,
}

pub(crate) fn state_dir() -> PathBuf {
    if let Some(s) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(s).join("corral");
    }
    home().join(".local/state/corral")
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

pub(crate) fn run_root() -> PathBuf {
    std::env::var_os("CORRAL_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/corral"))
}

/// The project root: `--project`, the directory of the nearest corral.toml,
/// the git work tree, or the current directory.
fn project_root(cwd: &Path, flag: Option<&Path>) -> Result<(PathBuf, Option<PathBuf>)> {
    if let Some(p) = flag {
        let p = p
            .canonicalize()
            .with_context(|| format!("--project {}", p.display()))?;
        let toml = p.join("corral.toml");
        return Ok((p, toml.exists().then_some(toml)));
    }
    if let Some(dir) = config::find_project(cwd) {
        let toml = dir.join("corral.toml");
        return Ok((dir, Some(toml)));
    }
    for a in cwd.ancestors() {
        if a.join(".git").exists() {
            return Ok((a.to_path_buf(), None));
        }
    }
    Ok((cwd.to_path_buf(), None))
}

fn parse_layer(s: &str) -> Result<FileLayer> {
    Ok(match s {
        "auto" => FileLayer::Auto,
        "lsm" => FileLayer::Lsm,
        "fanotify" => FileLayer::Fanotify,
        "off" => FileLayer::Off,
        _ => bail!("--file-layer {s:?}: expected auto, lsm, fanotify or off"),
    })
}

/// Runs `corral run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let (workspace, project_file) = project_root(&cwd, args.project.as_deref())?;
    let flags = Flags {
        policy: args.policy.clone(),
        image: args.image.clone(),
        runtime: args.runtime.clone(),
        volumes: args.volumes.clone(),
        env: args.env.clone(),
        ui_listen: args.ui_listen.clone(),
        ui_enabled: args.no_ui.then_some(false),
        shadow: args.shadow.then_some(true),
        store: args.store.clone(),
        upstream_ca: args.upstream_ca.clone(),
        secrets: args.secrets.clone(),
        add_hosts: args.add_hosts.clone(),
    };
    let global = config::global_path();
    let settings = config::load(global.as_deref(), project_file.as_deref(), &flags)?;
    let home = home();
    if let Some(notice) = super::mcp::unwrapped_notice(&workspace, &home).filter(|_| !args.quiet) {
        eprintln!("{notice}");
    }

    // What to run, as whom.
    let (command, principal_default, recipe) = match &args.agent {
        Some(name) => {
            let r = recipes::resolve(name, &settings).with_context(|| {
                format!(
                    "unknown agent {name:?} (known: {}); to run a command, put it after `--`: corral run -- {name} ...",
                    recipes::builtin_names().join(", ")
                )
            })?;
            let mut c = r.command.clone();
            c.extend(args.rest.iter().cloned());
            (c, name.clone(), Some(r))
        }
        None => {
            let Some(first) = args.rest.first() else {
                bail!("nothing to run: give an agent (corral run claude) or a command after `--` (corral run -- bash)");
            };
            let base = Path::new(first)
                .file_name()
                .map(|b| b.to_string_lossy().into_owned())
                .unwrap_or_else(|| "agent".into());
            (args.rest.clone(), base, None)
        }
    };
    let principal = args.principal.clone().unwrap_or(principal_default);

    // The policy.
    let (sources, policy_label) = match &settings.policy {
        Some(p) => {
            let text = std::fs::read_to_string(&p.value).with_context(|| {
                format!("cannot read the policy {} (from {})", p.value.display(), p.origin)
            })?;
            (
                vec![Source::new(p.value.display().to_string(), text)],
                p.value.display().to_string(),
            )
        }
        None => (
            vec![Source::new(
                "<default policy>",
                default_policy::render(&workspace.to_string_lossy(), &home.to_string_lossy())?,
            )],
            "built-in default".to_string(),
        ),
    };
    let policy_text: String = sources.iter().map(|s| &*s.text).collect();
    // The policy is stored under the name its events' `policy_at` use.
    let source_name = sources
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let policy_sha256 = corral_runtime::session::sha256_hex(policy_text.as_bytes());
    let compiled = compile_policy(sources).map_err(|e| {
        eprint!("{e}");
        anyhow::anyhow!("the policy was refused; nothing was started")
    })?;
    let (plan, judge, proxy_policy, mcp_policy) =
        (compiled.plan, compiled.judge, compiled.proxy, compiled.mcp);
    // A reload goes through the same checks (its text is one source).
    let reload: session::Reloader =
        Arc::new(move |label: &str, text: &str| compile_policy(vec![Source::new(label, text.to_string())]));

    // Where.
    let state = state_dir();
    let target = if args.no_container {
        Target::Bare
    } else {
        let prefer = settings.runtime.as_ref().map(|v| match v.value {
            config::Engine::Podman => Kind::Podman,
            config::Engine::Docker => Kind::Docker,
        });
        Target::Container {
            engine: engine::detect(prefer, &state)?,
            image: settings.image.as_ref().map(|v| v.value.clone()),
        }
    };

    // Environment and mounts.
    let mut env: Vec<(String, String)> = Vec::new();
    for k in ["TERM", "LANG", "LC_ALL", "COLORTERM", "NO_COLOR"] {
        if let Ok(v) = std::env::var(k) {
            env.push((k.into(), v));
        }
    }
    let mut mounts: Vec<Mount> = settings
        .volumes
        .iter()
        .map(|v| Mount {
            src: v.value.src.clone(),
            dst: v.value.dst.clone(),
            read_only: v.value.read_only,
        })
        .collect();
    // Placeholder secrets: the configured ones, then the recipe's
    // credentials present in corral's environment.
    let mut secret_specs: Vec<(String, config::SecretSpec, String)> = settings
        .proxy
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone(), v.origin.label()))
        .collect();
    if let Some(r) = &recipe {
        for k in &r.env {
            if recipes::is_secret_var(k) {
                if std::env::var_os(k).is_some() && !secret_specs.iter().any(|(n, _, _)| n == k) {
                    let spec = config::SecretSpec {
                        from: config::SecretFrom::Env(k.clone()),
                        bodies: false,
                    };
                    secret_specs.push((k.clone(), spec, format!("recipe {}", r.name)));
                }
                continue;
            }
            if let Ok(v) = std::env::var(k) {
                env.push((k.clone(), v));
            }
        }
        if consent(r, &args, global.as_deref())? {
            for p in &r.config_paths {
                let host = home.join(p);
                if host.exists() {
                    mounts.push(Mount {
                        src: host.clone(),
                        dst: host,
                        read_only: false,
                    });
                }
            }
        }
    }
    for (k, v) in &settings.env {
        env.push((k.clone(), v.value.clone()));
    }
    let mut secrets = Vec::new();
    for (name, spec, origin) in &secret_specs {
        let value = spec
            .from
            .read()
            .map_err(|e| anyhow::anyhow!("secret {name} ({} from {origin}): {e}", spec.from))?;
        let placeholder = corral_proxy::secret::placeholder();
        // The session sees the placeholder, whatever else set the name.
        env.retain(|(k, _)| k != name);
        env.push((name.clone(), placeholder.clone()));
        secrets.push(corral_proxy::Secret {
            name: name.clone(),
            placeholder,
            value: corral_proxy::Redacted::new(value),
            bodies: spec.bodies,
        });
    }
    let ca_dir = state.join("ca");
    corral_runtime::egress::check_ca_hidden(&ca_dir, &mounts).map_err(|e| anyhow::anyhow!(e))?;
    let ca = corral_proxy::Ca::load_or_create(&ca_dir)
        .with_context(|| format!("the egress proxy's CA in {}", ca_dir.display()))?;
    let egress = corral_runtime::egress::Egress {
        ca: Arc::new(ca),
        upstream_ca: settings
            .proxy
            .upstream_ca
            .iter()
            .map(|v| v.value.clone())
            .collect(),
        secrets,
        add_hosts: settings.proxy.add_hosts.iter().map(|v| v.value.clone()).collect(),
        policy: proxy_policy,
    };

    let run_root = run_root();
    let (id, run_dir) = session::new_id(&run_root)?;
    let init_bin = init::install(&state.join("bin")).context("install corral-init")?;
    // The audit trail: the session's row, then every event through the
    // pipeline (a writer thread; enforcement never waits on it).
    let store_path = settings
        .audit
        .store
        .as_ref()
        .map(|v| v.value.clone())
        .unwrap_or_else(corral_audit::default_path);
    let mode = if settings.shadow.value {
        Mode::Shadow
    } else {
        Mode::Enforce
    };
    let policy_sha256_spec = policy_sha256.clone();
    let row = corral_audit::SessionRow {
        id: id.0,
        principal: principal.clone(),
        policy_label: policy_label.clone(),
        policy_sha256: policy_sha256.clone(),
        mode: if mode == Mode::Shadow { "shadow" } else { "enforce" }.into(),
        started_ns: session::wall_ns(),
        command: command.clone(),
    };
    let retention = corral_audit::Retention {
        max_age: settings.audit.retain.as_ref().map(|v| v.value),
        max_bytes: settings.audit.max_size.as_ref().map(|v| v.value),
    };
    // A store that cannot be used (corrupt, locked for too long, a full
    // disk) does not stop the session: it runs, enforced as usual, and
    // the user is told what is and is not recorded.
    let shown = store_path.display().to_string();
    let health: corral_audit::pipeline::HealthFn = Arc::new(move |e: Option<&str>| {
        match e {
        Some(e) => eprint!(
            "corral: WARNING: {e}; events wait in memory and are counted if dropped; enforcement continues\r\n"
        ),
        None => eprint!("corral: the audit store {shown} accepts writes again\r\n"),
    }
    });
    let otlp = args
        .otlp_endpoint
        .as_deref()
        .map(corral_audit::export::otlp::OtlpConfig::new)
        .transpose()?;
    let queue = settings.audit.queue.value;
    let opened = (|| -> Result<(corral_audit::Store, corral_audit::Pipeline), corral_audit::AuditError> {
        let mut store = corral_audit::Store::open(&store_path)?;
        store.record_policy(&source_name, &policy_text)?;
        store.session_started(&row)?;
        let options = corral_audit::Options {
            retention,
            on_health: Some(health),
        };
        let pipeline =
            corral_audit::Pipeline::start_with(corral_audit::Store::open(&store_path)?, queue, options);
        Ok((store, pipeline))
    })();
    let (mut store, pipeline) = match opened {
        Ok((s, p)) => (Some(s), Some(p)),
        Err(e) => {
            eprintln!(
                "corral: WARNING: {e}\ncorral: the session runs, enforced as usual, but its events are not stored{}",
                match &args.events {
                    Some(p) => format!(" (they are written to {})", p.display()),
                    None => " (pass --events FILE to keep a JSON-lines copy)".into(),
                }
            );
            (None, None)
        }
    };
    // Subscribed before the session starts, so the exporter sees every event.
    let otlp = otlp.zip(pipeline.as_ref()).and_then(|(cfg, p)| {
        let started = corral_audit::export::otlp::spawn(p.subscribe(32), cfg);
        started
            .map_err(|e| eprintln!("corral: WARNING: cannot start the OTLP exporter: {e}"))
            .ok()
    });
    // Events the supervisor records itself, outside the session's count.
    let audit = pipeline.as_ref().map(corral_audit::Pipeline::sender);
    let who = principal.clone();
    let mut own_events = 0u64;
    let mut own = |what| {
        own_events += 1;
        if let Some(a) = &audit {
            a.send(corral_audit::Stored {
                id: None,
                wall_ns: session::wall_ns(),
                policy_at: Vec::new(),
                event: session::supervisor_event(id, &who, what),
            });
        }
    };
    own(What::SessionStart {
        mode,
        policy_sha256,
        command: command.clone(),
    });
    let record_label = match &args.events {
        Some(p) => format!("{} and {}", store_path.display(), p.display()),
        None => store_path.display().to_string(),
    };
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    // The control UI: joined or started before the session, so the kernel
    // can refuse the session's connections to its port and the banner can
    // show its URL. Not being able to start it does not stop the session.
    let ui = if settings.ui_enabled.value {
        super::ui::ensure(&state, &store_path, settings.ui_listen.value)
            .map_err(|e| eprintln!("corral: WARNING: no control UI: {e:#}"))
            .ok()
    } else {
        None
    };
    let spec = Spec {
        id,
        principal,
        command,
        mode,
        plan,
        judge: Some(judge),
        policy_sha256: policy_sha256_spec,
        reload: Some(reload),
        policy_label,
        workspace: workspace.clone(),
        cwd: if cwd.starts_with(&workspace) {
            cwd
        } else {
            workspace
        },
        home,
        env,
        mounts,
        target,
        tty,
        file_layer: parse_layer(&args.file_layer)?,
        ctl_port: ui.as_ref().map(|u| u.addr.port()),
        ui_url: ui.as_ref().map(|u| u.url.clone()),
        egress: Some(egress),
        mcp: mcp_policy,
        mcp_limits: settings.mcp.limits(),
        events_path: args.events.clone(),
        audit: pipeline.as_ref().map(corral_audit::Pipeline::sender),
        record_label,
        run_root,
        init_bin,
        banner: !args.quiet,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let out = rt.block_on(session::run_in(spec, Some(run_dir)));
    drop(rt);
    // Everything the session produced is in the pipeline: store it, then
    // close the session's row (also when the session failed to start).
    let (exit_text, lost, proxy_dropped, mcp_dropped, events) = match &out {
        Ok(o) => (
            match o.exit {
                Exit::Code(c) => format!("exit {c}"),
                Exit::Signal(s) => format!("signal {s}"),
            },
            o.lost,
            o.proxy_dropped,
            o.mcp_dropped,
            o.events,
        ),
        Err(e) => (format!("failed: {e}"), 0, 0, 0, 0),
    };
    own(What::SessionEnd {
        exit: exit_text.clone(),
    });
    // Every event generated is stored or counted as a drop: the kernel's
    // losses (below), the pipeline's (by reason, at close).
    let generated = events + lost + proxy_dropped + mcp_dropped + own_events;
    let mut unstored = 0;
    let warn = |e: corral_audit::AuditError| eprintln!("corral: WARNING: {e}");
    match pipeline.map(corral_audit::Pipeline::close) {
        Some(Ok(stats)) => unstored += stats.dropped,
        Some(Err(e)) => {
            warn(e);
            unstored = generated;
        }
        None => unstored = generated,
    }
    if let Some(s) = otlp.map(|h| h.finish(std::time::Duration::from_secs(10))) {
        if s.undelivered() > 0 {
            let why = s.last_error.as_deref().unwrap_or("the exporter fell behind");
            eprintln!(
                "corral: WARNING: {} events not delivered to the OTLP collector: {why}",
                s.undelivered()
            );
        }
    }
    if let Some(store) = store.as_mut() {
        if let Err(e) = store.session_ended(id.0, session::wall_ns(), &exit_text, lost, generated) {
            warn(e);
        }
        for (reason, n) in [
            ("kernel", lost),
            ("proxy_queue", proxy_dropped),
            ("mcp_queue", mcp_dropped),
        ] {
            if n > 0 {
                if let Err(e) = store.add_drops(id.0, reason, n) {
                    warn(e);
                }
            }
        }
    }
    let out = out?;
    if !args.quiet {
        let how = match out.exit {
            Exit::Code(c) => format!("exit {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
        };
        let missing = out.lost + out.proxy_dropped + out.mcp_dropped + unstored;
        let lost = if missing > 0 {
            format!(", {} not stored", missing.min(generated))
        } else {
            String::new()
        };
        eprintln!(
            "corral: session {} ended ({how}) · {} events, {} denied{lost}",
            out.id, out.events, out.denied
        );
    }
    match out.exit {
        Exit::Code(c) => Ok(ExitCode::from(u8::try_from(c & 0xff).unwrap_or(1))),
        Exit::Signal(s) => corral_runtime::sys::die_by_signal(s),
    }
}

/// Whether to mount the recipe's config directories: the flag (remembered),
/// else the remembered answer, else ask on a terminal (remembered), else no.
fn consent(r: &recipes::Recipe, args: &RunArgs, global: Option<&Path>) -> Result<bool> {
    let remember = |yes: bool| -> Result<()> {
        if let Some(g) = global {
            config::remember_consent(g, &r.name, yes)?;
        }
        Ok(())
    };
    if args.mount_config || args.no_mount_config {
        remember(args.mount_config)?;
        return Ok(args.mount_config);
    }
    if let Some(v) = r.mount_config {
        return Ok(v);
    }
    let present: Vec<String> = r
        .config_paths
        .iter()
        .filter(|p| home().join(p).exists())
        .map(|p| format!("~/{p}"))
        .collect();
    if present.is_empty() {
        return Ok(false);
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        eprint!(
            "corral: mount {} into the session (read-write) so {} keeps its login and settings? [y/N] ",
            present.join(", "),
            r.name
        );
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).context("read the answer")?;
        let yes = matches!(line.trim(), "y" | "Y" | "yes");
        remember(yes)?;
        Ok(yes)
    } else {
        eprintln!(
            "corral: not mounting {} (no consent recorded; pass --mount-config once to allow it)",
            present.join(", ")
        );
        Ok(false)
    }
}

/// Validates and compiles a policy for every layer (kernel tables, exec
/// judge, egress proxy, MCP), or the rendered diagnostics (file:line:col)
/// that refuse it.
fn compile_policy(sources: Vec<Source>) -> std::result::Result<Compiled, String> {
    let checked = check(sources);
    let (doc, plan) = match (checked.doc, checked.plan) {
        (Some(d), Some(p)) if !checked.diagnostics.iter().any(|d| d.is_error()) => (d, p),
        _ => {
            let n = checked.diagnostics.iter().filter(|d| d.is_error()).count();
            let mut out: String = checked.diagnostics.iter().map(|d| d.render()).collect();
            out.push_str(&format!("the policy has {n} error(s)\n"));
            return Err(out);
        }
    };
    let judge = JudgeRef(Arc::new(corral_kernel::argv::CedarJudge::new(&doc)));
    let mcp = corral_mcp::McpPolicy::new(doc.clone());
    let proxy = corral_proxy::ProxyPolicy::new(doc).map_err(|e| format!("{e}\n"))?;
    Ok(Compiled {
        plan,
        judge,
        proxy,
        mcp,
    })
}
