//! Crash safety: a child writes batches and acknowledges each commit; the
//! parent SIGKILLs it mid-stream; every acknowledged row must be there.

use crate::util::{one_of_each, stored};
use corral_audit::{Store, Stored};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const CHILD_ENV: &str = "CORRAL_AUDIT_CRASH_CHILD";
const BATCH: usize = 500;

/// In the child (the env var set): write batches forever, printing
/// `ACK <rows committed>` after each commit. Otherwise does nothing.
#[test]
fn crash_child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut store = Store::open(std::path::Path::new(&path)).unwrap();
    let kinds = one_of_each(4);
    let batch: Vec<Stored> = (0..BATCH)
        .map(|i| stored(i as u64, kinds[i % kinds.len()].clone()))
        .collect();
    let mut out = std::io::stdout().lock();
    let mut committed = 0;
    loop {
        committed += store.insert(&batch).unwrap();
        writeln!(out, "ACK {committed}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_mid_stream_loses_nothing_acknowledged() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = 0u64;
    let mut acks = 0;
    while acks < 40 {
        let line = lines.next().expect("child ended early").unwrap();
        if let Some(n) = line.strip_prefix("ACK ") {
            acked = n.parse().unwrap();
            acks += 1;
        }
    }
    child.kill().unwrap(); // SIGKILL
                           // Acknowledgements already in the pipe were commits too.
    for line in lines {
        if let Some(n) = line.unwrap().strip_prefix("ACK ") {
            acked = n.parse().unwrap();
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed");

    let store = Store::open(&path).unwrap();
    assert_eq!(store.integrity_check().unwrap(), vec!["ok".to_string()]);
    let rows = store.count().unwrap();
    assert!(rows >= acked, "{rows} rows < {acked} acknowledged");
    assert_eq!(rows % BATCH as u64, 0, "a batch is all or nothing");
    eprintln!("crash: {acked} acknowledged, {rows} present after SIGKILL");
}
