//! corral-init, the entrypoint of a corral container:
//!
//! ```text
//! CORRAL_GO=/run/corral/go.sock /run/corral/init [--] COMMAND [ARG...]
//! ```
//!
//! It blocks every signal, connects to the supervisor's socket, says
//! `hello`, and waits for `go`: the supervisor sends it once the policy is
//! enforced on this process, so the command never runs unwatched. It then
//! installs corral's CA (if `ca.pem` sits next to it, or `CORRAL_CA` names
//! one), sets no_new_privs, becomes a subreaper unless it is PID 1, and
//! runs the command as its child, reporting the command's exit on the
//! socket (see [`protocol`]). If the supervisor dies, the session is killed.
//!
//! `CORRAL_GO`, `CORRAL_CA`, `CORRAL_CA_BUNDLES` (tests only: the bundles to
//! write instead of the system ones, colon-separated) and
//! `CORRAL_INIT_VERBOSE=1` (notes on stderr) are removed from the
//! command's environment. corral-init exits with the command's status
//! (128+N for signal N), 125 if it refused or failed to start it, 126/127
//! if exec failed, 137 if the supervisor went away.
//!
//! If `<dir of argv[0]>/bin` exists (`/run/corral/bin` in a container),
//! it is appended to the command's `PATH`: it holds `corral`, a hard link
//! to this binary, which started under that name is the relay of
//! `corral mcp wrap` ([`mcpwrap`]) and does none of init's work.
//!
//! No dependencies: corral-runtime's build script compiles this file alone
//! with rustc into a static binary.

mod ca;
mod ffi;
mod mcpframe;
mod mcpwrap;
mod protocol;
mod seccomp;
mod supervise;

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use protocol::Answer;

/// Exit status when corral-init itself refuses or fails to start.
const REFUSED: i32 = 125;

/// What corral-init takes from its environment.
struct Settings {
    go: PathBuf,
    ca: PathBuf,
    bundles: Option<String>,
    verbose: bool,
}

fn main() {
    // Started as `corral` inside a session: the MCP relay, nothing else.
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    if mcpwrap::invoked_as_corral(&argv0) {
        mcpwrap::main(args.collect())
    }

    // Before anything else, so that no signal is lost (or kills us) before
    // the loop in `supervise` waits for them.
    if let Err(err) = ffi::set_signal_mask(&ffi::SigSet::full()) {
        fatal(&format!("cannot block signals: {err}"));
    }
    // An inherited SIG_IGN would make the kernel reap our children itself.
    if let Err(err) = ffi::default_disposition(ffi::SIGCHLD) {
        fatal(&format!("cannot reset the SIGCHLD disposition: {err}"));
    }

    let argv = command(args.collect());
    let settings = settings(&argv0);

    let stream = match protocol::connect(&settings.go) {
        Ok(stream) => stream,
        Err(err) => fatal(&format!(
            "cannot connect to the supervisor at `{}`: {err}",
            settings.go.display()
        )),
    };
    let pid = ffi::own_pid();
    if let Err(err) = protocol::hello(&stream, pid) {
        fatal(&format!("cannot greet the supervisor: {err}; not starting"));
    }
    match protocol::answer(&stream) {
        Ok(Some(Answer::Go)) => {}
        Ok(Some(Answer::Abort(reason))) => {
            fatal(&format!("the supervisor refused to start the session: {reason}"))
        }
        Err(err) if err.kind() == std::io::ErrorKind::InvalidData => {
            fatal(&format!("cannot understand the supervisor: {err}; not starting"))
        }
        Ok(None) | Err(_) => fatal("the supervisor went away before enforcement was attached; not starting"),
    }

    ca::install(&settings.ca, settings.bundles.as_deref(), settings.verbose);

    if let Err(err) = ffi::set_no_new_privs() {
        fatal(&format!("cannot set no_new_privs: {err}"));
    }
    // Before the watchdog thread exists, so the filter covers every thread.
    if let Err(err) = seccomp::install() {
        fatal(&format!("cannot install the session's seccomp filter: {err}"));
    }
    let pid1 = pid == 1;
    if !pid1 {
        if let Err(err) = ffi::set_child_subreaper() {
            say(&format!("cannot become a subreaper, orphans will escape: {err}"));
        }
    }
    supervise::run(&argv, stream, pid1, settings.verbose)
}

/// The command to run: the arguments after an optional `--`.
fn command(mut args: Vec<OsString>) -> Vec<CString> {
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    if args.is_empty() {
        fatal("no command given (usage: corral-init [--] COMMAND [ARG...])");
    }
    args.into_iter()
        .map(|arg| {
            CString::new(arg.into_vec()).unwrap_or_else(|err| {
                fatal(&format!(
                    "an argument contains a NUL byte at {}",
                    err.nul_position()
                ))
            })
        })
        .collect()
}

/// Reads corral-init's variables and removes them from the environment
/// the command will inherit. Called while single-threaded.
fn settings(argv0: &OsString) -> Settings {
    let Some(go) = std::env::var_os("CORRAL_GO") else {
        fatal("CORRAL_GO is not set: corral-init runs only under corral's supervisor");
    };
    let ca = match std::env::var_os("CORRAL_CA") {
        Some(ca) => PathBuf::from(ca),
        None => own_dir(argv0).join("ca.pem"),
    };
    let bundles = std::env::var("CORRAL_CA_BUNDLES").ok();
    let verbose = std::env::var_os("CORRAL_INIT_VERBOSE").is_some_and(|v| v == "1");
    extend_path(&own_dir(argv0).join("bin"));
    for var in [
        "CORRAL_GO",
        "CORRAL_CA",
        "CORRAL_CA_BUNDLES",
        "CORRAL_INIT_VERBOSE",
    ] {
        std::env::remove_var(var);
    }
    Settings {
        go: PathBuf::from(go),
        ca,
        bundles,
        verbose,
    }
}

/// `PATH` when the environment has none (what a shell would search).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Appends `dir` to the `PATH` the command inherits, if `dir` exists and
/// is not on it already. Called while single-threaded.
fn extend_path(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    if std::env::split_paths(&path).any(|p| p == dir) {
        return;
    }
    let joined = std::env::join_paths(std::env::split_paths(&path).chain([dir.to_path_buf()]));
    match joined {
        Ok(joined) => std::env::set_var("PATH", joined),
        Err(err) => say(&format!("cannot add `{}` to PATH: {err}", dir.display())),
    }
}

/// The directory corral-init was started from: that of `argv[0]`, or of the
/// executable if `argv[0]` has no directory part.
fn own_dir(argv0: &OsString) -> PathBuf {
    match Path::new(argv0).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(".")),
    }
}

/// Writes `corral-init: <msg>` on stderr; a closed or broken stderr is
/// ignored (eprintln! would panic).
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "corral-init: {msg}");
}

/// Says `msg` and exits with 125.
fn fatal(msg: &str) -> ! {
    say(msg);
    std::process::exit(REFUSED)
}
