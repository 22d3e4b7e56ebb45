//! The `lsm` layer of `corral-kbench`, measured inside the BPF LSM VM: this
//! host's kernel refuses BPF LSM programs, so the benchmark binary is
//! shipped into Debian's kernel under QEMU (TCG) by `corral-vmtest` (a
//! dev-dependency, hence this target) and runs there with
//! `--layer lsm --in-vm`.
//!
//! Not run by `cargo bench` or `cargo test` (it is ignored: it boots a VM
//! for many minutes). `corral-kbench --layer lsm` (or `all`) runs it through
//! cargo; by hand:
//!
//! ```sh
//! cargo test --release -p corral-kernel --bench kbench_vm -- --ignored --nocapture
//! ```
//!
//! Environment: `CORRAL_KBENCH_VM_ARGS` (extra arguments for the guest,
//! e.g. `--quick`), `CORRAL_KBENCH_VM_OUT` (a file to write the guest's
//! output to, read back by `corral-kbench`).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

#[test]
#[ignore = "boots a QEMU VM for many minutes; run through `corral-kbench --layer lsm`"]
fn lsm_layer_in_vm() {
    if let Err(reason) = corral_vmtest::available() {
        panic!("cannot boot the VM: {reason}");
    }
    let extra = std::env::var("CORRAL_KBENCH_VM_ARGS").unwrap_or_default();
    let quick = extra.split_whitespace().any(|a| a == "--quick");
    let mut guest =
        corral_vmtest::Guest::new(format!("/opt/corral/corral-kbench --layer lsm --in-vm {extra}"))
            .file(env!("CARGO_BIN_EXE_corral-kbench"), "/opt/corral/corral-kbench");
    guest.timeout = Duration::from_secs(if quick { 900 } else { 3600 });
    let out = corral_vmtest::run(&guest).unwrap_or_else(|e| panic!("VM run failed: {e}"));
    let text = format!(
        "{}\nKBENCH-VM boot_ms={} total_ms={} rc={}\n",
        out.output, out.boot_ms, out.total_ms, out.exit_code
    );
    eprintln!("{text}");
    if let Ok(path) = std::env::var("CORRAL_KBENCH_VM_OUT") {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
    assert_eq!(
        out.exit_code, 0,
        "the benchmark failed in the VM:\n{}",
        out.output
    );
}
