//! The capability probe against the real kernel (root): what it reports is
//! consistent with the host, and it leaves nothing behind.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use corral_kernel::cgroup::Cgroup;
use corral_kernel::probe::{self, layer, DecisionKind, ProbeOptions, Status};
use std::path::Path;

fn children(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn lsm_list_has_bpf() -> Option<bool> {
    std::fs::read_to_string("/sys/kernel/security/lsm")
        .ok()
        .map(|s| s.trim().split(',').any(|l| l == "bpf"))
}

fn fanotify_marks_of_self() -> usize {
    // fdinfo of a fanotify fd lists its marks; none may remain open.
    let mut n = 0;
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(t) = std::fs::read_link(e.path()) {
            if t.to_string_lossy().contains("fanotify") {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn probe_reports_this_host_and_leaves_nothing_behind() {
    if !common::require_root("probe_reports_this_host_and_leaves_nothing_behind") {
        return;
    }
    let parent = Cgroup::create(&format!("corral-test-probe-{}", std::process::id())).unwrap();
    let opts = ProbeOptions {
        cgroup_parent: Some(parent.path().to_path_buf()),
        ..ProbeOptions::default()
    };
    let mounted_before = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(" securityfs ");

    let caps = probe::probe_with(&opts);
    eprintln!("{}", serde_json::to_string_pretty(&caps).unwrap());

    // Nothing left behind: no cgroup under the temp parent, no fanotify
    // group, securityfs mounted exactly as before, no temp file.
    assert!(
        children(parent.path()).is_empty(),
        "left cgroups: {:?}",
        children(parent.path())
    );
    assert_eq!(fanotify_marks_of_self(), 0);
    let mounted_after = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(" securityfs ");
    assert_eq!(mounted_before, mounted_after, "securityfs mount state changed");
    let tmp_left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("corral-probe-fanotify-{}-", std::process::id())))
        .collect();
    assert!(tmp_left.is_empty(), "{tmp_left:?}");

    // What this kind of host supports (DESIGN.md §8), each with its reason.
    assert_eq!(
        caps.checks.cgroup_v2.status,
        Status::Ok,
        "{}",
        caps.checks.cgroup_v2.detail
    );
    assert!(caps.cgroup_v2_root.is_some());
    assert_eq!(
        caps.checks.tracepoint.status,
        Status::Ok,
        "{}",
        caps.checks.tracepoint.detail
    );
    assert_eq!(
        caps.checks.fanotify.status,
        Status::Ok,
        "{}",
        caps.checks.fanotify.detail
    );
    assert_eq!(caps.checks.btf.status, Status::Ok, "{}", caps.checks.btf.detail);
    assert_eq!(
        caps.checks.ringbuf.status,
        Status::Ok,
        "{}",
        caps.checks.ringbuf.detail
    );
    assert_eq!(
        caps.checks.send_signal.status,
        Status::Ok,
        "{}",
        caps.checks.send_signal.detail
    );
    assert!(
        caps.landlock_abi.is_some_and(|v| v >= 1),
        "{}",
        caps.checks.landlock.detail
    );
    assert!(!caps.kernel.is_empty());
    for (name, c) in caps.checks.rows() {
        assert!(!c.detail.is_empty(), "{name} has no detail");
        assert!(c.ms >= 0.0);
    }

    // BPF LSM: attachable only where `bpf` is an active LSM, and a failure
    // always says why (holds on hosts where LSM works, too).
    let listed = caps.bpf_lsm_listed.or_else(lsm_list_has_bpf);
    if caps.lsm_attachable() {
        assert_ne!(listed, Some(false), "attachable but bpf not in the LSM list");
    } else {
        assert_ne!(caps.checks.bpf_lsm.status, Status::Ok);
        assert!(
            caps.checks.bpf_lsm.detail.len() > 10,
            "{}",
            caps.checks.bpf_lsm.detail
        );
        if listed == Some(true) {
            // Listed but refused: the reason carries the errno or loader message.
            assert!(
                caps.checks.bpf_lsm.detail.contains('E') || caps.checks.bpf_lsm.detail.contains("hook"),
                "{}",
                caps.checks.bpf_lsm.detail
            );
        }
    }
    if caps.bpf_lsm_listed.is_none() {
        assert!(
            caps.checks.bpf_lsm.detail.contains("LSM list"),
            "{}",
            caps.checks.bpf_lsm.detail
        );
    }

    // Layers are consistent with the checks.
    let file = caps.layer_for(DecisionKind::FileOpen);
    assert_eq!(
        file.layer.as_deref() == Some(layer::BPF_LSM),
        caps.lsm_attachable(),
        "{file:?}"
    );
    if !caps.lsm_attachable() {
        assert_eq!(file.layer.as_deref(), Some(layer::FANOTIFY));
        assert!(file.fallback);
        let exec = caps.layer_for(DecisionKind::Exec);
        assert_eq!(exec.layer.as_deref(), Some(layer::FANOTIFY), "{exec:?}");
        assert!(exec.fallback);
    }
    let net = caps.layer_for(DecisionKind::Network);
    assert_eq!(net.layer.as_deref(), Some(layer::CGROUP_BPF));
    assert!(!net.fallback);
    assert_eq!(
        caps.layer_for(DecisionKind::ExecArgs).layer.as_deref(),
        Some(layer::TRACEPOINT_STOP)
    );
    assert_eq!(
        caps.layer_for(DecisionKind::Telemetry).layer.as_deref(),
        Some(layer::TRACEPOINTS_RINGBUF)
    );
    assert!(caps.complete());
    assert_eq!(caps.layers().len(), DecisionKind::ALL.len());

    // JSON round trip.
    let json = serde_json::to_string(&caps).unwrap();
    let back: probe::Capabilities = serde_json::from_str(&json).unwrap();
    assert_eq!(back, caps);

    drop(parent);

    // With the default parent (the cgroup-v2 root) too; run here rather
    // than in a parallel test so the securityfs check above is not racy.
    let root = corral_kernel::cgroup::v2_root().unwrap();
    let caps = probe::probe_with(&ProbeOptions {
        engines: false,
        ..ProbeOptions::default()
    });
    assert_eq!(
        caps.checks.cgroup_v2.status,
        Status::Ok,
        "{}",
        caps.checks.cgroup_v2.detail
    );
    let mine = format!("corral-probe-{}-", std::process::id());
    let left: Vec<_> = children(&root)
        .into_iter()
        .filter(|n| n.starts_with(&mine))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(caps.checks.podman.detail, "not probed");
}
