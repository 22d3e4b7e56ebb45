//! BPF LSM enforcement, proved inside a VM: this host's kernel refuses BPF
//! LSM programs, so the test boots Debian's `linux-image-amd64` under
//! QEMU (TCG) with an initramfs holding `corral-kguest` and `corral-kt`, runs
//! every scenario there through the LSM programs, and reads the results
//! back from the guest's serial port.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

#[test]
fn bpf_lsm_scenarios_in_a_vm() {
    if let Err(reason) = corral_vmtest::available() {
        common::skip("bpf_lsm_scenarios_in_a_vm", &reason);
        return;
    }
    let mut guest = corral_vmtest::Guest::new("/opt/corral/corral-kguest /opt/corral/corral-kt")
        .file(env!("CARGO_BIN_EXE_corral-kguest"), "/opt/corral/corral-kguest")
        .file(env!("CARGO_BIN_EXE_corral-kt"), "/opt/corral/corral-kt");
    guest.timeout = Duration::from_secs(300);
    let out = corral_vmtest::run(&guest).unwrap_or_else(|e| panic!("VM run failed: {e}"));
    eprintln!("{}", out.output);
    eprintln!("boot {} ms, total {} ms", out.boot_ms, out.total_ms);
    assert!(
        out.output.contains("(\"file open\", \"bpf-lsm\")"),
        "the file layer was BPF LSM:\n{}",
        out.output
    );
    let cases: Vec<&str> = out.output.lines().filter(|l| l.starts_with("CASE ")).collect();
    assert!(cases.len() >= 20, "every case ran:\n{}", out.output);
    let failed: Vec<&&str> = cases.iter().filter(|l| l.contains(" FAIL")).collect();
    let passed = cases.iter().filter(|l| l.contains(" PASS")).count();
    assert!(passed >= 24, "only {passed} cases passed:\n{cases:#?}");
    assert!(
        failed.is_empty(),
        "failed in the VM:\n{}",
        failed
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(out.exit_code, 0, "{}", out.output);
}
