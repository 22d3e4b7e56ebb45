//! The scenarios the BPF LSM test runs in a VM (src/bin/corral-kguest.rs),
//! run on this host through the fanotify fallback: the same allow/deny
//! outcomes from the other file layer, with real processes.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

#[test]
fn fanotify_fallback_scenarios() {
    if !common::require_root("fanotify_fallback_scenarios") {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral-kguest"))
        .arg(env!("CARGO_BIN_EXE_corral-kt"))
        .arg("--fanotify")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        text.contains("(\"file open\", \"fanotify (fallback)\")"),
        "{text}"
    );
    let cases: Vec<&str> = text.lines().filter(|l| l.starts_with("CASE ")).collect();
    assert!(cases.len() >= 20, "every case ran:\n{text}");
    let failed: Vec<&&str> = cases.iter().filter(|l| l.contains(" FAIL")).collect();
    let passed = cases.iter().filter(|l| l.contains(" PASS")).count();
    assert!(passed >= 23, "only {passed} cases passed:\n{cases:#?}");
    assert!(failed.is_empty(), "failed:\n{failed:#?}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
