#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Pids above any pid_max: never in /proc, so only the log answers.
const RELAY: u32 = 4_100_000_000;
const SERVER: u32 = RELAY + 1;
const GRANDCHILD: u32 = RELAY + 2;
const STRANGER: u32 = RELAY + 9;

#[test]
fn calls_in_flight_are_linked_by_time() {
    let log = CallLog::new();
    log.register(RELAY);
    assert_eq!(log.link(RELAY, 0, 5), None, "no call yet");
    log.started(RELAY, "m1#1", 10);
    assert_eq!(log.link(RELAY, 0, 9), None);
    assert_eq!(log.link(RELAY, 0, 10).as_deref(), Some("m1#1"));
    log.started(RELAY, "m1#2", 20);
    assert_eq!(log.link(RELAY, 0, 25).as_deref(), Some("m1#1,m1#2"));
    log.finished(RELAY, "m1#1", 30);
    assert_eq!(
        log.link(RELAY, 0, 25).as_deref(),
        Some("m1#1,m1#2"),
        "history kept"
    );
    assert_eq!(log.link(RELAY, 0, 30).as_deref(), Some("m1#1,m1#2"));
    assert_eq!(log.link(RELAY, 0, 31).as_deref(), Some("m1#2"));
    log.finished(RELAY, "m1#2", 40);
    assert_eq!(log.link(RELAY, 0, 41), None, "after every call");
    // A stranger is never linked, even during a call.
    log.started(RELAY, "m1#3", 50);
    assert_eq!(log.link(STRANGER, 0, 55), None);
    // Finishing an unknown call or a call of an unknown relay changes nothing.
    log.finished(RELAY, "m1#9", 56);
    log.finished(STRANGER, "m1#3", 56);
    assert_eq!(log.link(RELAY, 0, 57).as_deref(), Some("m1#3"));
}

#[test]
fn descendants_are_known_from_forks_even_after_reparenting() {
    let log = CallLog::new();
    log.register(RELAY);
    log.note_fork(RELAY, SERVER);
    log.note_fork(SERVER, GRANDCHILD);
    log.note_fork(STRANGER, STRANGER + 1);
    log.started(RELAY, "m1#1", 100);
    log.finished(RELAY, "m1#1", 200);
    assert_eq!(log.link(SERVER, RELAY, 150).as_deref(), Some("m1#1"));
    // The server exits; its child lives on, reparented elsewhere.
    log.note_exit(SERVER);
    assert_eq!(log.link(GRANDCHILD, 1, 150).as_deref(), Some("m1#1"));
    assert_eq!(log.link(GRANDCHILD, 1, 250), None);
    assert_eq!(log.link(STRANGER + 1, STRANGER, 150), None);
    // An event whose process is unknown but whose parent is a descendant.
    assert_eq!(log.link(RELAY + 50, GRANDCHILD, 150).as_deref(), Some("m1#1"));
    // After its exit a reused pid is nobody's.
    log.note_exit(GRANDCHILD);
    assert_eq!(log.link(GRANDCHILD, 1, 150), None);
    // A pid forked by a stranger drops a stale owner.
    log.note_fork(SERVER, GRANDCHILD);
    log.note_fork(STRANGER, GRANDCHILD);
    assert_eq!(log.link(GRANDCHILD, STRANGER, 150), None);
}

#[test]
fn history_is_bounded_and_a_gone_relay_is_forgotten_later() {
    let log = CallLog::new();
    log.register(RELAY);
    for i in 0..(MAX_INTERVALS as u64 + 10) {
        let id = format!("m1#{i}");
        log.started(RELAY, &id, i * 10);
        log.finished(RELAY, &id, i * 10 + 5);
    }
    assert_eq!(log.lock().relays[&RELAY].done.len(), MAX_INTERVALS);
    assert_eq!(log.link(RELAY, 0, 3), None, "the oldest interval was kept");
    let last = MAX_INTERVALS as u64 + 9;
    assert_eq!(log.link(RELAY, 0, last * 10 + 1), Some(format!("m1#{last}")));

    // Disconnecting ends open calls, and the relay stays answerable for a
    // while.
    log.note_fork(RELAY, SERVER);
    log.started(RELAY, "m1#open", 1_000_000);
    log.disconnect(RELAY, 2_000_000);
    assert_eq!(log.link(SERVER, 0, 1_500_000).as_deref(), Some("m1#open"));
    assert_eq!(log.link(SERVER, 0, 2_000_001), None);
    log.lock()
        .expire(Instant::now() + RETAIN + Duration::from_millis(1));
    assert!(log.lock().relays.is_empty());
    assert!(
        log.lock().owner.is_empty(),
        "descendants of a forgotten relay kept"
    );
    assert_eq!(log.link(SERVER, 0, 1_500_000), None);
}

#[test]
fn stat_lines() {
    assert_eq!(parse_ppid("12 (sh) S 7 12 12 0"), Some(7));
    assert_eq!(parse_ppid("12 (a) b) (c) Z 1 12 12 0"), Some(1));
    assert_eq!(parse_ppid("12 (x) S"), None);
    assert_eq!(parse_ppid("garbage"), None);
    assert!(monotonic_ns() > 0);
}

/// A real process tree, never announced by fork events: relay (a shell) →
/// subshell → sleep. The sleep is found through /proc.
/// Kills a process group and reaps its leader when dropped (test passed or
/// not).
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(-(self.0.id() as i32));
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::SIGKILL);
        let _ = self.0.wait();
    }
}

#[test]
fn descendants_are_found_through_proc() {
    let mut relay = Group(
        Command::new("sh")
            .args(["-c", "(sleep 30 & echo $!; wait) & wait"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(relay.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let sleep: u32 = line.trim().parse().unwrap();
    let pid = relay.0.id();
    let subshell = parent_of(sleep).unwrap();
    assert_ne!(subshell, pid, "the sleep should be a grandchild");
    assert_eq!(parent_of(subshell), Some(pid));

    let log = CallLog::new();
    log.register(pid);
    let t0 = monotonic_ns();
    log.started(pid, "m1#1", t0);
    assert_eq!(log.link(sleep, 0, t0 + 1).as_deref(), Some("m1#1"));
    // Through the event's ppid when the pid itself is gone.
    assert_eq!(log.link(RELAY + 77, sleep, t0 + 1).as_deref(), Some("m1#1"));
    // Not the test process, the relay's parent.
    assert_eq!(log.link(std::process::id(), 0, t0 + 1), None);
    log.finished(pid, "m1#1", t0 + 10);
    assert_eq!(log.link(sleep, 0, t0 + 11), None);
}
