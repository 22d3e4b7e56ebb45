//! Boots real VMs (QEMU, TCG, Debian's kernel). Each test skips, printing and logging a
//! `CORRAL-SKIP` line, when QEMU, the kernel or busybox is missing.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use corral_vmtest::{run, Error, Guest};

/// Reports a skip (stderr and `$CORRAL_SKIP_LOG`) and returns true when no VM can run.
fn skip(name: &str) -> bool {
    let Err(reason) = corral_vmtest::available() else {
        return false;
    };
    let line = format!("CORRAL-SKIP {name}: {reason}");
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("CORRAL_SKIP_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
    true
}

fn must_run(guest: &Guest) -> corral_vmtest::Outcome {
    match run(guest) {
        Ok(out) => out,
        Err(e) => panic!("VM run failed: {e}"),
    }
}

/// A private host directory for test fixtures.
fn fixture_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corral-vmtest-fixture-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn boots_debian_kernel_with_bpf_lsm() {
    if skip("boots_debian_kernel_with_bpf_lsm") {
        return;
    }
    let out = must_run(&Guest::new("cat /sys/kernel/security/lsm; echo; uname -r"));
    eprintln!("boot_ms={} total_ms={}", out.boot_ms, out.total_ms);
    assert_eq!(
        out.exit_code, 0,
        "output: {}\nconsole: {}",
        out.output, out.console
    );
    let lsms = out.output.lines().next().unwrap_or_default();
    assert!(
        lsms.split(',').any(|l| l == "bpf"),
        "LSM list without bpf: {}",
        out.output
    );
    assert!(
        out.output.contains("6.1."),
        "not Debian's 6.1 kernel: {}",
        out.output
    );
    assert!(
        out.boot_ms > 0 && out.boot_ms <= out.total_ms,
        "{} / {}",
        out.boot_ms,
        out.total_ms
    );
    assert!(
        out.console.contains("CORRAL-VM-BEGIN"),
        "console: {}",
        out.console
    );
}

#[test]
fn payload_exit_code_propagates() {
    if skip("payload_exit_code_propagates") {
        return;
    }
    let out = must_run(&Guest::new("echo before; exit 7"));
    assert_eq!(out.exit_code, 7);
    assert_eq!(out.output, "before\n");
}

#[test]
fn dynamically_linked_host_binaries_run() {
    if skip("dynamically_linked_host_binaries_run") {
        return;
    }
    // This test binary is itself a Rust program linked dynamically against the host's glibc
    // (and libgcc_s), like the binaries corral's VM tests ship.
    let me = std::env::current_exe().unwrap();
    let mut guest = Guest::new(
        "/opt/corral/boot-tests --list 2>&1 | grep -c ': test$'\n\
         /opt/host/env --version | head -n1\n\
         /opt/host/env -i FOO=bar /opt/host/env\n",
    );
    guest.files.push((me, "/opt/corral/boot-tests".to_string()));
    guest
        .files
        .push((PathBuf::from("/usr/bin/env"), "/opt/host/env".to_string()));
    let out = must_run(&guest);
    assert_eq!(
        out.exit_code, 0,
        "output: {}\nconsole: {}",
        out.output, out.console
    );
    let mut lines = out.output.lines();
    let tests: u32 = lines.next().unwrap().trim().parse().unwrap();
    assert!(tests >= 5, "the test binary listed {tests} tests: {}", out.output);
    assert!(lines.next().unwrap().contains("GNU coreutils"), "{}", out.output);
    assert_eq!(lines.next(), Some("FOO=bar"), "{}", out.output);
}

#[test]
fn files_appear_at_guest_paths() {
    if skip("files_appear_at_guest_paths") {
        return;
    }
    let dir = fixture_dir("files");
    std::fs::write(dir.join("policy.cedar"), "permit(principal, action, resource);\n").unwrap();
    let tool = dir.join("tool.sh");
    std::fs::write(&tool, "#!/bin/sh\necho tool-ran \"$@\"\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o750)).unwrap();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/leaf"), "leaf\n").unwrap();
    std::os::unix::fs::symlink("sub/leaf", tree.join("link")).unwrap();

    let guest = Guest::new(
        "cat /etc/corral/policy.cedar\n\
         /usr/local/bin/tool x\n\
         stat -c '%a' /usr/local/bin/tool\n\
         cat /srv/tree/sub/leaf /srv/tree/link\n\
         cat /tmp/staged/policy\n\
         grep -c ' /tmp tmpfs' /proc/mounts\n",
    )
    .file(dir.join("policy.cedar"), "/etc/corral/policy.cedar")
    .file(&tool, "/usr/local/bin/tool")
    .file(&tree, "/srv/tree")
    .file(dir.join("policy.cedar"), "/tmp/staged/policy");
    let out = must_run(&guest);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.exit_code, 0,
        "output: {}\nconsole: {}",
        out.output, out.console
    );
    assert_eq!(
        out.output,
        "permit(principal, action, resource);\ntool-ran x\n750\nleaf\nleaf\n\
         permit(principal, action, resource);\n1\n"
    );
}

#[test]
fn output_is_captured_exactly() {
    if skip("output_is_captured_exactly") {
        return;
    }
    // CR/LF untouched, stderr included, no trailing newline added, and a large volume
    // (ttyS1 is drained before power-off).
    let out = must_run(&Guest::new(
        "printf 'a\\r\\nb'; echo ' err' >&2; head -c 300000 /dev/zero | tr '\\0' x; printf '\\n%s' end",
    ));
    assert_eq!(out.exit_code, 0);
    let expected = format!("a\r\nb err\n{}\nend", "x".repeat(300_000));
    assert_eq!(out.output.len(), expected.len());
    assert!(
        out.output == expected,
        "output differs: starts {:?}",
        &out.output[..40]
    );
}

#[test]
fn guest_environment_is_set_up() {
    if skip("guest_environment_is_set_up") {
        return;
    }
    let out = must_run(&Guest::new(
        "for m in /sys/kernel/security /sys/fs/bpf /sys/fs/cgroup /tmp /run /proc /sys /dev; do\n\
           grep -q \" $m \" /proc/mounts && echo \"mounted $m\"\n\
         done\n\
         grep -q cgroup2 /proc/mounts && echo cgroup2\n\
         ip -o link show lo | grep -q UP && echo lo-up\n\
         ping -c1 -W2 127.0.0.1 >/dev/null && echo ping-ok\n\
         test -e /sys/kernel/btf/vmlinux && echo btf\n\
         grep -q '^CONFIG_BPF_LSM=y' /boot/config-$(uname -r) && echo kconfig\n\
         id -u\n",
    ));
    assert_eq!(
        out.exit_code, 0,
        "output: {}\nconsole: {}",
        out.output, out.console
    );
    for want in [
        "mounted /sys/kernel/security",
        "mounted /sys/fs/bpf",
        "mounted /sys/fs/cgroup",
        "mounted /tmp",
        "mounted /run",
        "cgroup2",
        "lo-up",
        "ping-ok",
        "btf",
        "kconfig",
    ] {
        assert!(
            out.output.lines().any(|l| l == want),
            "missing {want:?} in:\n{}",
            out.output
        );
    }
    assert_eq!(out.output.lines().last(), Some("0"));
}

#[test]
fn timeout_kills_the_vm_and_reports_the_console() {
    if skip("timeout_kills_the_vm_and_reports_the_console") {
        return;
    }
    let mut guest = Guest::new("sleep 1000");
    guest.timeout = Duration::from_secs(15);
    let started = std::time::Instant::now();
    match run(&guest) {
        Err(Error::Timeout { tail, .. }) => {
            assert!(tail.contains("CORRAL-VM-BEGIN"), "tail: {tail}");
            assert!(started.elapsed() < Duration::from_secs(25));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn bad_guest_path_is_rejected_before_booting() {
    if skip("bad_guest_path_is_rejected_before_booting") {
        return;
    }
    let guest = Guest::new("true").file("/usr/bin/env", "relative/env");
    assert!(matches!(run(&guest), Err(Error::GuestPath { .. })));
}
