//! `corral doctor` end to end on the real kernel (root): JSON fields, exit
//! code, and the human table naming the file-open layer.

// Test code: a panic is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::{Command, Output, Stdio};

/// Runs `corral args`; returns its output and pid.
fn corral(args: &[&str]) -> (Output, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (child.wait_with_output().unwrap(), pid)
}

/// Cgroups a probe run by `pid` left under the cgroup-v2 root.
fn left_cgroups(pid: u32) -> Vec<String> {
    let root = corral_kernel::cgroup::v2_root().unwrap();
    let mine = format!("corral-probe-{pid}-");
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&mine))
        .collect()
}

fn is_root() -> bool {
    if corral_vmtest::is_root() {
        true
    } else {
        corral_vmtest::skip("doctor", "needs root");
        false
    }
}

#[test]
fn doctor_json_and_table_agree_with_the_host() {
    if !is_root() {
        return;
    }
    let (o, pid1) = corral(&["doctor", "--json"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));

    let complete = v["complete"].as_bool().unwrap();
    assert_eq!(o.status.code(), Some(if complete { 0 } else { 1 }), "{out}");
    // On this kind of host every kind has a layer (DESIGN.md §8).
    assert!(complete, "{out}");
    assert!(!v["kernel"].as_str().unwrap().is_empty());
    for k in [
        "bpf_lsm",
        "btf",
        "cgroup_v2",
        "ringbuf",
        "tracepoint",
        "fanotify",
        "landlock",
        "podman",
        "docker",
    ] {
        let s = v["checks"][k]["status"]
            .as_str()
            .unwrap_or_else(|| panic!("no {k}: {out}"));
        assert!(["ok", "fail", "absent"].contains(&s), "{k}: {s}");
        assert!(!v["checks"][k]["detail"].as_str().unwrap().is_empty());
        assert!(v["checks"][k]["ms"].as_f64().is_some());
    }
    assert_eq!(v["checks"]["cgroup_v2"]["status"], "ok", "{out}");
    assert_eq!(v["checks"]["fanotify"]["status"], "ok", "{out}");

    let layers = v["layers"].as_array().unwrap();
    let layer = |kind: &str| {
        layers
            .iter()
            .find(|l| l["kind"] == kind)
            .unwrap_or_else(|| panic!("{kind}: {out}"))
    };
    assert_eq!(layers.len(), 5);
    assert_eq!(layer("network")["layer"], "cgroup-bpf");
    let lsm_ok = v["checks"]["bpf_lsm"]["status"] == "ok";
    let file = layer("file_open");
    if lsm_ok {
        assert_eq!(file["layer"], "bpf-lsm");
        assert_eq!(file["fallback"], false);
    } else {
        assert_eq!(file["layer"], "fanotify");
        assert_eq!(file["fallback"], true);
        assert!(!v["checks"]["bpf_lsm"]["detail"].as_str().unwrap().is_empty());
    }

    let (o, pid2) = corral(&["doctor"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("file open"))
        .unwrap_or_else(|| panic!("{table}"));
    if lsm_ok {
        assert!(row.contains("bpf-lsm"), "{row}");
    } else {
        assert!(row.contains("fanotify (fallback)"), "{row}");
        assert!(table.contains("fallbacks in use for: file open, exec"), "{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("network connect/send") && l.contains("cgroup-bpf")),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("bpf-lsm (lsm/file_open)")),
        "{table}"
    );
    assert!(table.contains("Every decision kind has a layer"), "{table}");

    // Nothing left behind by either run.
    assert!(left_cgroups(pid1).is_empty(), "{:?}", left_cgroups(pid1));
    assert!(left_cgroups(pid2).is_empty(), "{:?}", left_cgroups(pid2));
}
