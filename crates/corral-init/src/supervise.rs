//! Runs the command as our only direct child and stays with it: forwards
//! the signals we receive, reaps every process that ends up ours, reports
//! the command's exit to the supervisor and exits the same way. A watchdog
//! thread kills the whole session if the supervisor dies, since nothing
//! would enforce the policy any more.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::ffi::{self, SigSet};
use crate::protocol::{self, Exit};
use crate::{fatal, say};

/// Who ends the process: the main thread (the command exited) or the
/// watchdog (the supervisor died). Whichever claims it first wins; the
/// other stands aside, so that a supervisor closing the socket right after
/// reading `exit code N` cannot turn status N into 137.
static ENDING: AtomicU8 = AtomicU8::new(RUNNING);
const RUNNING: u8 = 0;
const EXITING: u8 = 1;
const KILLING: u8 = 2;

/// Status when the session is killed because the supervisor went away.
const KILLED: i32 = 128 + ffi::SIGKILL;

/// Forks and execs `argv`, then supervises it until it exits. Must be
/// called with every signal blocked and while single-threaded.
pub fn run(argv: &[CString], stream: UnixStream, pid1: bool, verbose: bool) -> ! {
    let name = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let refs: Vec<&CStr> = argv.iter().map(CString::as_c_str).collect();
    let child = match ffi::spawn(&refs, |err| exec_failed(&name, &err)) {
        Ok(pid) => pid,
        Err(err) => fatal(&format!("cannot fork to run `{name}`: {err}")),
    };

    let watched = stream.try_clone().and_then(|watched| {
        std::thread::Builder::new()
            .name("watchdog".into())
            .stack_size(256 * 1024)
            .spawn(move || watchdog(watched, child, pid1))
    });
    if let Err(err) = watched {
        kill_session(child, pid1);
        fatal(&format!(
            "cannot watch the supervisor's socket: {err}; killed the session"
        ));
    }

    let signals = SigSet::full();
    loop {
        let sig = match ffi::wait_signal(&signals) {
            Ok(sig) => sig,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                kill_session(child, pid1);
                fatal(&format!("cannot wait for signals: {err}; killed the session"));
            }
        };
        if sig == ffi::SIGCHLD {
            reap(child, &stream, verbose);
        } else if sig == ffi::SIGPIPE {
            // Raised by our own write to a broken stderr (blocked signals
            // are queued even when ignored); not the command's business.
        } else if let Err(err) = ffi::send_signal(child, sig) {
            if verbose {
                say(&format!("cannot forward signal {sig} to the command: {err}"));
            }
        }
    }
}

/// Reaps every child that has ended; if the command is among them,
/// reports and exits.
fn reap(child: i32, stream: &UnixStream, verbose: bool) {
    loop {
        match ffi::reap_any() {
            Ok(Some((pid, status))) if pid == child => {
                finish(stream, Exit::from_wait_status(status), verbose)
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(err) => {
                say(&format!("cannot reap children: {err}"));
                return;
            }
        }
    }
}

fn finish(stream: &UnixStream, exit: Exit, verbose: bool) -> ! {
    if ENDING
        .compare_exchange(RUNNING, EXITING, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // The watchdog is killing the session and will exit with 137.
        loop {
            std::thread::park();
        }
    }
    if let Err(err) = protocol::report(stream, exit) {
        if verbose {
            say(&format!("cannot report the exit to the supervisor: {err}"));
        }
    }
    std::process::exit(exit.status())
}

/// The child's last words when exec fails: 127 if there is no such
/// command, 126 if it cannot be run (the policy may deny the exec).
fn exec_failed(name: &str, err: &io::Error) -> i32 {
    say(&format!("cannot run `{name}`: {}", describe(err)));
    if err.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// The system's description of an error, without std's "(os error N)".
fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text.get(..at).unwrap_or(&text).to_string(),
        None => text,
    }
}

fn watchdog(stream: UnixStream, child: i32, pid1: bool) {
    protocol::wait_for_close(stream);
    if ENDING
        .compare_exchange(RUNNING, KILLING, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return; // the command exited and the main thread is exiting
    }
    say("the supervisor went away; killing the session");
    kill_session(child, pid1);
    ffi::exit_now(KILLED)
}

/// Kills every process of the session: everything in our pid namespace if
/// we are its init, otherwise the command's process group and then every
/// remaining descendant (we are their subreaper, so even those that left
/// the group or daemonized are still below us).
fn kill_session(child: i32, pid1: bool) {
    if pid1 {
        let _ = ffi::send_signal(-1, ffi::SIGKILL);
        return;
    }
    let _ = ffi::send_signal(-child, ffi::SIGKILL);
    let me = ffi::own_pid();
    for _ in 0..50 {
        let alive = descendants(me);
        if alive.is_empty() {
            return;
        }
        for pid in alive {
            let _ = ffi::send_signal(pid, ffi::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The live (non-zombie) descendants of `root`, from /proc; empty if /proc
/// cannot be read.
fn descendants(root: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let procs: Vec<(i32, i32, bool)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (ppid, zombie) = parse_stat(&stat)?;
            Some((pid, ppid, zombie))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while let Some(&parent) = found.get(i) {
        for &(pid, ppid, _) in &procs {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
            }
        }
        i += 1;
    }
    found
        .into_iter()
        .filter(|&pid| pid != root && procs.iter().any(|&(p, _, zombie)| p == pid && !zombie))
        .collect()
}

/// The parent pid and whether the process is a zombie, from
/// `/proc/<pid>/stat` ("pid (comm) state ppid ..."; comm may hold anything).
fn parse_stat(stat: &str) -> Option<(i32, bool)> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state == "Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        assert_eq!(parse_stat("12 (sh) S 7 12 12 0"), Some((7, false)));
        assert_eq!(parse_stat("12 (a) b) (c) Z 1 12 12 0"), Some((1, true)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn error_descriptions() {
        assert_eq!(
            describe(&io::Error::from_raw_os_error(2)),
            "No such file or directory"
        );
        assert_eq!(describe(&io::Error::other("plain")), "plain");
    }
}
