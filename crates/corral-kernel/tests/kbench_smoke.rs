//! `corral-kbench --quick --layer net` runs and reports a ratio. No timing
//! is asserted: performance claims live in docs/BENCHMARKS.md, measured by
//! the full benchmark, not in tests.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

#[test]
fn kbench_quick_net_prints_a_ratio() {
    if !common::require_root("kbench_quick_net_prints_a_ratio") {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral-kbench"))
        .args(["--quick", "--layer", "net"])
        .output()
        .expect("run corral-kbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "corral-kbench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // `| connect+close, 127.0.0.1 | 100 | <base> | <enforced> | <ratio> | <range> |`
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| connect+close"))
        .unwrap_or_else(|| panic!("no connect row:\n{stdout}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let ratio: f64 = cells
        .get(5)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no ratio in `{row}`"));
    assert!(ratio.is_finite() && ratio > 0.0, "ratio {ratio} in `{row}`");
}
