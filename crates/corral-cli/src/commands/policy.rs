//! `corral policy ...`: check, explain, compile, schema, default, suggest.

mod suggest;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use corral_policy::plan::{NetTable, PathTable, PrincipalPlan};
use corral_policy::{
    check, default_policy, explain, Checked, CompileOptions, Plan, PolicyDoc, Source, Verdict,
};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Validate policy files in strict mode against corral's schema; print
    /// errors and warnings with file:line:col. Exit 1 on any error.
    Check {
        /// Policy files (none: the built-in default policy).
        files: Vec<PathBuf>,
        /// Print diagnostics as JSON.
        #[arg(long)]
        json: bool,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
        #[command(flatten)]
        default: DefaultArgs,
    },
    /// Decide one request with the Cedar authorizer and show the policies
    /// (with file:line) that determined it, and what the kernel plan says.
    Explain {
        /// Policy files (none: the built-in default policy).
        files: Vec<PathBuf>,
        /// Agent name (the session's principal, `Agent::"<name>"`).
        #[arg(long, default_value = "agent")]
        principal: String,
        /// FileOpenReadOnly, FileOpenReadWrite, ProcessExec, NetworkConnect,
        /// HttpRequest, HttpRewrite, SecretUse or McpCall.
        #[arg(long)]
        action: String,
        /// A path (`/dir/` for a directory), host[:port], URL, or tool name.
        #[arg(long)]
        resource: String,
        /// Context entries, `key=value` (repeatable).
        #[arg(long = "context", short = 'c')]
        context: Vec<String>,
        /// Print the decision as JSON.
        #[arg(long)]
        json: bool,
        /// Exit 0 when allowed, 2 when denied.
        #[arg(long)]
        exit_code: bool,
        #[command(flatten)]
        default: DefaultArgs,
    },
    /// Print the plan: each layer's tables, every row tagged with the
    /// policies (and lines) that determine it, and what runs in userspace.
    Compile {
        /// Policy files (none: the built-in default policy).
        files: Vec<PathBuf>,
        /// Only the tables for this agent.
        #[arg(long)]
        principal: Option<String>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        default: DefaultArgs,
    },
    /// Print corral's Cedar schema.
    Schema,
    /// Print the built-in default policy for a workspace.
    Default {
        #[command(flatten)]
        default: DefaultArgs,
    },
    /// Write the rules that would have allowed what a session was denied
    /// (in shadow mode: would have been denied), appended to its policy;
    /// the diff goes to stderr. Checked before it is written: it validates,
    /// and every covered request is allowed.
    Suggest(suggest::SuggestArgs),
}

#[derive(Args, Clone)]
pub struct DefaultArgs {
    /// Workspace directory for the default policy (default: current directory).
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// Home directory for the default policy (default: $HOME).
    #[arg(long)]
    home: Option<PathBuf>,
}

impl DefaultArgs {
    fn render(&self) -> Result<String> {
        let ws = match &self.workspace {
            Some(w) => w.clone(),
            None => std::env::current_dir().context("cannot read the current directory")?,
        };
        let home = match &self.home {
            Some(h) => h.clone(),
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())),
        };
        Ok(default_policy::render(
            &ws.to_string_lossy(),
            &home.to_string_lossy(),
        )?)
    }
}

pub fn run(cmd: PolicyCmd) -> Result<ExitCode> {
    match cmd {
        PolicyCmd::Check {
            files,
            json,
            deny_warnings,
            default,
        } => {
            let checked = check(sources(&files, &default)?);
            let errors = checked.diagnostics.iter().filter(|d| d.is_error()).count();
            let warnings = checked.diagnostics.len() - errors;
            if json {
                println!("{}", serde_json::to_string_pretty(&checked.diagnostics)?);
            } else {
                for d in &checked.diagnostics {
                    eprint!("{}", d.render());
                }
                let count = match checked.doc.as_ref() {
                    Some(d) => format!(
                        "{} {}, ",
                        d.policies.len(),
                        plural(d.policies.len(), "policy", "policies")
                    ),
                    None => String::new(),
                };
                println!(
                    "{}: {count}{errors} {}, {warnings} {}",
                    names(&files),
                    plural(errors, "error", "errors"),
                    plural(warnings, "warning", "warnings")
                );
            }
            Ok(if errors > 0 || (deny_warnings && warnings > 0) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        PolicyCmd::Explain {
            files,
            principal,
            action,
            resource,
            context,
            json,
            exit_code,
            default,
        } => {
            let (doc, plan) = loaded(&files, &default)?;
            let req = explain::parse_request(&principal, &action, &resource, &context)?;
            let ev = corral_policy::Evaluator::new(&doc);
            let d = ev.decide(&req)?;
            let kernel = kernel_verdict(&plan, &req);
            // The MCP layer asks Cedar, then applies its own rules (other
            // requests than tools/call are refused only by a forbid; no
            // McpCall policy at all means observe only).
            let mcp = match &req {
                corral_policy::Request::Mcp {
                    principal,
                    server,
                    tool,
                    method,
                    args,
                } => Some(corral_mcp::McpPolicy::new(doc.clone()).decide(
                    principal,
                    server,
                    method,
                    tool.as_deref(),
                    args,
                )),
                _ => None,
            };
            let effective = mcp.as_ref().map_or(d.allowed, |v| v.allowed);
            let pols = |idx: &[usize]| -> Vec<serde_json::Value> {
                idx.iter()
                    .filter_map(|i| doc.policies.get(*i))
                    .map(|p| serde_json::json!({"id": p.id, "effect": p.effect, "file": p.file, "line": p.line}))
                    .collect()
            };
            if json {
                let out = serde_json::json!({
                    "request": describe_request(&req),
                    "decision": if d.allowed { "allow" } else { "deny" },
                    "determining": pols(&d.determining),
                    "errors": d.errors,
                    "kernel": kernel.as_ref().map(|(layer, v)| serde_json::json!({"table": layer, "verdict": v})),
                    "mcp_layer": mcp.as_ref().map(|v| serde_json::json!({
                        "decision": if v.allowed { "allow" } else { "deny" },
                        "decided": v.decided,
                        "reason": v.reason,
                    })),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("request:  {}", describe_request(&req));
                println!("decision: {}", if d.allowed { "ALLOW" } else { "DENY" });
                if d.determining.is_empty() {
                    println!("  no permit matches: denied by default");
                }
                for i in &d.determining {
                    if let Some(p) = doc.policies.get(*i) {
                        println!("  {} `{}` at {}:{}:{}", p.effect, p.id, p.file, p.line, p.col);
                        let lines: Vec<&str> = p.text.lines().collect();
                        for l in lines.iter().take(8) {
                            println!("      {l}");
                        }
                        if lines.len() > 8 {
                            println!("      ...");
                        }
                    }
                }
                for e in &d.errors {
                    println!("  evaluation error (policy skipped, as Cedar does): {e}");
                }
                if let Some(v) = mcp.as_ref().filter(|v| v.allowed != d.allowed || !v.decided) {
                    println!(
                        "MCP layer: {} ({})",
                        if v.allowed { "ALLOW" } else { "DENY" },
                        v.reason
                    );
                }
                if let Some((layer, v)) = &kernel {
                    let agrees = v.allowed().map(|a| a == d.allowed);
                    println!(
                        "kernel plan ({layer}): {}{}",
                        verdict_word(v),
                        match agrees {
                            Some(true) => "",
                            Some(false) => "  (DISAGREES with the authorizer: please report)",
                            None => "  (decided in userspace with the arguments)",
                        }
                    );
                }
            }
            Ok(if exit_code && !effective {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        PolicyCmd::Compile {
            files,
            principal,
            json,
            default,
        } => {
            let srcs = sources(&files, &default)?;
            let doc = load_or_report(srcs)?;
            let plan = corral_policy::compile(&doc, &CompileOptions { principal }).map_err(report)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                let mut out = String::new();
                print_plan(&mut out, &plan);
                emit(&out)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Schema => {
            print!("{}", corral_policy::SCHEMA_TEXT);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Default { default } => {
            print!("{}", default.render()?);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Suggest(args) => suggest::run(args),
    }
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn names(files: &[PathBuf]) -> String {
    if files.is_empty() {
        "default policy".into()
    } else {
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn sources(files: &[PathBuf], default: &DefaultArgs) -> Result<Vec<Source>> {
    if files.is_empty() {
        return Ok(vec![Source::new("<default policy>", default.render()?)]);
    }
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .map(|t| Source::new(f.display().to_string(), t))
                .with_context(|| format!("cannot read `{}`", f.display()))
        })
        .collect()
}

fn report(diags: Vec<corral_policy::Diagnostic>) -> anyhow::Error {
    let n = diags.iter().filter(|d| d.is_error()).count();
    for d in &diags {
        eprint!("{}", d.render());
    }
    anyhow::anyhow!("the policy has {n} {}", plural(n, "error", "errors"))
}

fn load_or_report(srcs: Vec<Source>) -> Result<PolicyDoc> {
    corral_policy::load(srcs).map_err(report)
}

fn loaded(files: &[PathBuf], default: &DefaultArgs) -> Result<(PolicyDoc, Plan)> {
    let Checked {
        doc,
        plan,
        diagnostics,
    } = check(sources(files, default)?);
    match (doc, plan) {
        (Some(doc), Some(plan)) => Ok((doc, plan)),
        _ => Err(report(diagnostics)),
    }
}

fn describe_request(r: &corral_policy::Request) -> String {
    use corral_policy::Request as R;
    let res = r.resource_uid().map(|u| u.to_string()).unwrap_or_default();
    let ctx = match r {
        R::File { .. } => String::new(),
        R::Exec { argv, .. } => format!(" argv={argv:?}"),
        R::Net {
            ip,
            port,
            protocol,
            hostname,
            ..
        } => format!(
            " ip={ip} port={port} protocol={} hostname={:?}",
            protocol.as_str(),
            hostname.clone().unwrap_or_default()
        ),
        R::Http {
            method,
            scheme,
            port,
            path,
            query,
            ..
        } => {
            format!(" method={method} scheme={scheme} port={port} path={path:?} query={query:?}")
        }
        R::Rewrite { header, .. } => format!(" header={header:?} value=<redacted>"),
        R::Secret { secret, port, .. } => format!(" secret={secret:?} port={port}"),
        R::Mcp {
            server, method, args, ..
        } => format!(" server={server:?} method={method} args={args:?}"),
    };
    format!("Agent::{:?} {} {res}{ctx}", r.principal(), r.action().uid())
}

/// The kernel table's verdict for a kernel-layer request.
fn kernel_verdict(plan: &Plan, req: &corral_policy::Request) -> Option<(&'static str, Verdict)> {
    use corral_policy::Request as R;
    let p = plan.for_principal(req.principal())?;
    match req {
        R::File {
            write, path, is_dir, ..
        } => {
            let t = if *write { &p.file_write } else { &p.file_read };
            Some((
                if *write { "file write" } else { "file read" },
                t.lookup(path, *is_dir).clone(),
            ))
        }
        R::Exec { path, .. } => Some(("exec", p.exec.lookup(path, false).clone())),
        R::Net {
            hostname: None,
            ip,
            port,
            protocol,
            ..
        } => p
            .net
            .iter()
            .find(|t| t.protocol == *protocol)
            .map(|t| ("net, direct connection", t.lookup(*ip, *port).clone())),
        _ => None,
    }
}

fn verdict_word(v: &Verdict) -> &'static str {
    match v {
        Verdict::Allow { .. } => "allow",
        Verdict::Deny { .. } => "deny",
        Verdict::Userspace { .. } => "userspace",
    }
}

/// `writeln!` into a String (infallible).
macro_rules! wl {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Writes to stdout; a closed pipe (`corral ... | head`) is not an error.
fn emit(s: &str) -> Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(s.as_bytes()).and_then(|_| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn print_plan(out: &mut String, plan: &Plan) {
    wl!(
        out,
        "plan for {} {}",
        plan.policies.len(),
        plural(plan.policies.len(), "policy", "policies")
    );
    for p in &plan.principals {
        print_principal(out, plan, p);
    }
    wl!(
        out,
        "\n== proxy: host rules (NetworkConnect / HttpRequest by name) =="
    );
    if plan.proxy.host_rules.is_empty() {
        wl!(out, "  (none)");
    }
    for r in &plan.proxy.host_rules {
        let at = plan.policy_label(r.policy);
        wl!(
            out,
            "  {:<7} {at}: {} — enforced by {}",
            r.effect,
            r.hosts.join(", "),
            r.enforced_by
        );
    }
    wl!(out, "\n== proxy: header rewrites (HttpRewrite) ==");
    if plan.proxy.rewrites.is_empty() {
        wl!(out, "  (none)");
    }
    for r in &plan.proxy.rewrites {
        let at = plan.policy_label(r.policy);
        wl!(
            out,
            "  {at}: on {} set `{}: <redacted>`",
            r.hosts.join(", "),
            r.header,
        );
    }
    wl!(
        out,
        "\n== questions asked ==\n  HttpRequest: {}\n  McpCall:     {}",
        if plan.asks.http_request {
            "yes: the proxy decides every HTTP request"
        } else {
            "no policy names it: HTTP is governed by NetworkConnect alone"
        },
        if plan.asks.mcp_call {
            "yes: every MCP request is decided"
        } else {
            "no policy names it: MCP traffic is recorded, not decided"
        }
    );
    wl!(out, "\n== evaluated in userspace by the Cedar authorizer ==");
    if plan.userspace.is_empty() {
        wl!(out, "  (nothing)");
    }
    for u in &plan.userspace {
        let at = plan.policy_label(u.policy);
        wl!(out, "  {:<8} {at}: {}", u.layer, u.reason);
    }
}

fn print_principal(out: &mut String, plan: &Plan, p: &PrincipalPlan) {
    wl!(out, "\n#### principal: {}", p.principal);
    for (name, t) in [
        ("file read", &p.file_read),
        ("file write", &p.file_write),
        ("exec", &p.exec),
    ] {
        print_path_table(out, plan, name, t);
    }
    for t in &p.net {
        print_net_table(out, plan, t);
    }
}

fn print_path_table(out: &mut String, plan: &Plan, name: &str, t: &PathTable) {
    wl!(
        out,
        "\n== {name}: {} ({} rows; lookup: exact path, then deepest listed directory) ==",
        t.action.name(),
        t.rows()
    );
    let exec = t.action == corral_policy::Action::ProcessExec;
    let sorted: std::collections::BTreeMap<_, _> = t.entries.iter().collect();
    for (path, e) in sorted {
        if let Some(v) = &e.file {
            row(out, plan, path, "file", v);
        }
        if let Some(d) = &e.dir {
            if !exec {
                row(out, plan, path, "dir itself", &d.itself);
            }
            row(out, plan, path, "files below", &d.files);
            if !exec {
                row(out, plan, path, "dirs below", &d.dirs);
            }
        }
    }
}

fn row(out: &mut String, plan: &Plan, key: &str, class: &str, v: &Verdict) {
    wl!(
        out,
        "  {key:<40} {class:<12} {:<9} {}",
        verdict_word(v),
        plan.describe(v)
    );
}

fn print_net_table(out: &mut String, plan: &Plan, t: &NetTable) {
    wl!(
        out,
        "\n== net {}: NetworkConnect, direct connections ({} prefixes × {} port classes; lookup: port class, then longest prefix) ==",
        t.protocol.as_str(),
        t.entries.len(),
        t.ports.len()
    );
    for e in &t.entries {
        for (r, v) in t.ports.iter().zip(&e.verdicts) {
            let Some(v) = v else { continue };
            let ports = if r.lo == 0 && r.hi == 65535 {
                "any port".to_string()
            } else if r.lo == r.hi {
                format!("port {}", r.lo)
            } else {
                format!("ports {}-{}", r.lo, r.hi)
            };
            row(out, plan, &e.prefix.to_string(), &ports, v);
        }
    }
}
