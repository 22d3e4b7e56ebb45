//! `corral-abench --quick` runs to the end (the benchmark keeps building and
//! its overload accounting holds); its figures are for docs/BENCHMARKS.md.

#[test]
fn abench_quick_runs_and_accounts_for_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_corral-abench"))
        .args(["--quick", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("stored + dropped = sent: true"), "{out}");
    assert!(out.contains("queries   store of 200000 events"), "{out}");
    // Nothing left behind in the store directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{out}");
}
