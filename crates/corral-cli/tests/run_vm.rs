//! `corral run --no-container` under real BPF LSM: this host's kernel
//! refuses BPF LSM programs, so the test boots Debian's kernel under QEMU
//! (TCG) with the `corral` binary inside and runs a session there. The same
//! binary, the same embedded corral-init, the same go protocol as on the
//! host; only the file layer differs (`--file-layer lsm`: BPF LSM or
//! nothing).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use corral_vmtest::skip;
use std::time::Duration;

const SCRIPT: &str = r#"
set -u
mkdir -p /w/state
echo TOP-SECRET > /w/secret
echo fine > /w/allowed
cat > /w/p.cedar <<'POLICY'
@id("read-all")
permit (principal, action == Action::"FileOpenReadOnly", resource)
when { resource in Dir::"/" };

@id("forbid-secret")
forbid (principal, action in Action::"FileOpen", resource)
when { resource == File::"/w/secret" };

@id("exec-bin")
permit (principal, action == Action::"ProcessExec", resource)
when { resource in [Dir::"/bin/", Dir::"/usr/", Dir::"/w/state/"] };
POLICY
cd /w
run() {
    XDG_STATE_HOME=/w/state HOME=/w /opt/corral/corral run --no-container --file-layer lsm \
        --policy /w/p.cedar --project /w --events /w/ev.jsonl "$@"
}
run -- /bin/sh -c 'cat /w/secret; echo "secret rc=$?"; cat /w/allowed; exit 42'
echo "session exit=$?"
grep -c '"decision":"deny"' /w/ev.jsonl | sed 's/^/deny events: /'
grep '"decision":"deny"' /w/ev.jsonl | head -n 1
run -- /bin/sh -c 'kill -9 $$'
echo "signal session exit=$?"
"#;

#[test]
fn no_container_session_under_bpf_lsm_in_a_vm() {
    let t = "no_container_session_under_bpf_lsm_in_a_vm";
    if let Err(reason) = corral_vmtest::available() {
        skip(t, &reason);
        return;
    }
    // The test-profile binary carries ~300 MB of debug info; the VM needs
    // none of it.
    let stripped = std::env::temp_dir().join(format!("corral-vm-{}", std::process::id()));
    let st = std::process::Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(env!("CARGO_BIN_EXE_corral"))
        .status()
        .expect("strip");
    assert!(st.success(), "strip failed");
    let mut guest = corral_vmtest::Guest::new(SCRIPT).file(&stripped, "/opt/corral/corral");
    guest.timeout = Duration::from_secs(240);
    let out = corral_vmtest::run(&guest);
    let _ = std::fs::remove_file(&stripped);
    let out = out.unwrap_or_else(|e| panic!("VM run failed: {e}"));
    eprintln!("{}", out.output);
    eprintln!("boot {} ms, total {} ms", out.boot_ms, out.total_ms);
    let o = &out.output;
    assert!(o.contains("file: bpf-lsm"), "the banner names BPF LSM:\n{o}");
    assert!(
        o.contains("can't open '/w/secret': Operation not permitted"),
        "EPERM from BPF LSM:\n{o}"
    );
    assert!(o.contains("secret rc=1"), "{o}");
    assert!(o.contains("fine\n"), "the allowed file was read:\n{o}");
    assert!(!o.contains("TOP-SECRET"), "the secret leaked:\n{o}");
    assert!(o.contains("session exit=42"), "exit code passed through:\n{o}");
    assert!(o.contains("deny events: 1"), "one deny recorded:\n{o}");
    assert!(o.contains("\"layer\":\"bpf_lsm\""), "{o}");
    assert!(
        o.contains("signal session exit=137"),
        "death by SIGKILL passed through:\n{o}"
    );
}
