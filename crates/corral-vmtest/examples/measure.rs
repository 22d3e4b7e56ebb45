//! Measures boot and total time of the trivial payload under several machine settings:
//! `cargo run --release -p corral-vmtest --example measure [runs]`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use corral_vmtest::{run_on, Guest, Machine};

fn main() {
    if let Err(reason) = corral_vmtest::available() {
        eprintln!("CORRAL-SKIP measure: {reason}");
        return;
    }
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let guest = Guest::new("cat /sys/kernel/security/lsm; echo; uname -r");
    let base = Machine::default();
    let configs = [
        ("default (smp 1, cpu max, pvh)", base.clone()),
        (
            "smp 2, cpu max, pvh",
            Machine {
                smp: 2,
                ..base.clone()
            },
        ),
        (
            "smp 1, cpu qemu64, pvh",
            Machine {
                cpu: None,
                ..base.clone()
            },
        ),
        (
            "smp 2, cpu qemu64, pvh",
            Machine {
                smp: 2,
                cpu: None,
                ..base.clone()
            },
        ),
        (
            "smp 1, cpu max, bzImage",
            Machine {
                pvh: false,
                ..base.clone()
            },
        ),
        (
            "smp 2, cpu max, bzImage",
            Machine {
                smp: 2,
                pvh: false,
                ..base.clone()
            },
        ),
        (
            "smp 1, cpu max, pvh, mitigations=off",
            Machine {
                append: "mitigations=off".into(),
                ..base.clone()
            },
        ),
    ];
    for (name, machine) in &configs {
        let mut boots = Vec::new();
        let mut totals = Vec::new();
        for _ in 0..runs {
            let out = run_on(&guest, machine).expect("run");
            assert_eq!(out.exit_code, 0);
            assert!(out.output.contains("bpf"));
            boots.push(out.boot_ms);
            totals.push(out.total_ms);
        }
        boots.sort_unstable();
        totals.sort_unstable();
        println!(
            "{name:40} boot_ms median {:5} (min {:5})  total_ms median {:5} (min {:5})",
            boots[runs / 2],
            boots[0],
            totals[runs / 2],
            totals[0]
        );
    }
}
