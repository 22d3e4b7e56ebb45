//! Shared by the kernel crate's integration tests: capability checks that
//! print and record a skip (never silent). `scripts/test.sh` counts the
//! lines appended to `$CORRAL_SKIP_LOG`.
#![allow(dead_code)]

use std::io::Write;

/// Records a skip: prints `CORRAL-SKIP <test>: <reason>` to stderr and
/// appends it to `$CORRAL_SKIP_LOG` when set.
pub fn skip(test: &str, reason: &str) {
    let line = format!("CORRAL-SKIP {test}: {reason}");
    eprintln!("{line}");
    if let Ok(path) = std::env::var("CORRAL_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// True when running as root; otherwise records a skip for `test`.
pub fn require_root(test: &str) -> bool {
    // SAFETY-free: geteuid via /proc.
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string));
    if uid.as_deref() == Some("0") {
        true
    } else {
        skip(test, "needs root");
        false
    }
}
