//! Session start-up benchmark: `corral run -- true` against
//! `podman run --rm` with the same setup (same rootfs, binds, tmpfs HOME,
//! read-only root, caps), and the time from launch to the command's first
//! instruction. Runs are interleaved so machine noise hits both sides.
//!
//! ```text
//! cargo build --release -p corral-cli -p corral-runtime --bins
//! target/release/corral-rbench [--runs N]
//! ```
//!
//! Needs root, podman and runc. Finds `corral` beside itself (or
//! `$CORRAL_BIN`).

use anyhow::{bail, Context as _, Result};
use corral_runtime::engine;
use corral_runtime::session::host_root;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const POLICY: &str = r#"
@id("read-all")
permit (principal, action == Action::"FileOpenReadOnly", resource)
when { resource in Dir::"/" };
@id("write-tmp")
permit (principal, action in Action::"FileOpen", resource)
when { resource in [Dir::"/tmp/", Dir::"/dev/"] };
@id("exec-system")
permit (principal, action == Action::"ProcessExec", resource)
when { resource in [Dir::"/usr/", Dir::"/run/corral/"] };
"#;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn corral_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CORRAL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().context("current_exe")?;
    let p = me.with_file_name("corral");
    if !p.exists() {
        bail!(
            "{} not found: build corral-cli too, or set CORRAL_BIN",
            p.display()
        );
    }
    Ok(p)
}

struct Sample {
    wall_ms: f64,
    first_ms: f64,
}

/// Runs a command that prints `date +%s%N` as its first (and only) act.
fn timed(mut c: Command) -> Result<Sample> {
    let t0 = now_ns();
    let start = Instant::now();
    let out = c
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("spawn")?;
    let wall = start.elapsed();
    if !out.status.success() {
        bail!(
            "failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t1: u128 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("date printed {:?}", String::from_utf8_lossy(&out.stdout)))?;
    Ok(Sample {
        wall_ms: wall.as_secs_f64() * 1e3,
        first_ms: (t1.saturating_sub(t0)) as f64 / 1e6,
    })
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()
        .context("--runs N")?
        .unwrap_or(20);
    let corral = corral_bin()?;
    let work = std::env::temp_dir().join(format!("corral-rbench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let policy = work.join("bench.cedar");
    std::fs::write(&policy, POLICY)?;
    let state = work.join("state");
    let eng = engine::detect(Some(engine::Kind::Podman), &state)?;

    // The baseline: the same container corral makes, without corral.
    let rootfs = work.join("rootfs");
    let binds = host_root(&rootfs)?;
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let baseline = |name: &str| -> Command {
        let mut c = eng.command();
        c.args([
            "run",
            "--rm",
            "--name",
            name,
            "--log-driver=none",
            "--security-opt=no-new-privileges",
        ])
        .args([
            "--cap-drop=NET_RAW,MKNOD,AUDIT_WRITE,SYS_CHROOT,SETFCAP",
            "--read-only",
            "-i",
        ])
        .arg("--read-only-tmpfs=false")
        .args(["--tmpfs", "/tmp:rw,exec,nosuid,nodev,notmpcopyup,mode=1777"])
        .args(["--tmpfs", "/var/tmp:rw,exec,nosuid,nodev,notmpcopyup,mode=1777"])
        .args(["--tmpfs", "/run:rw,exec,nosuid,nodev,notmpcopyup,mode=0755"])
        .arg("--tmpfs")
        .arg(format!("{home}:rw,exec,nosuid,nodev,mode=0700"))
        .arg("-w")
        .arg(&work);
        for b in &binds {
            c.arg("-v")
                .arg(format!("{}:{}:ro,bind", b.src.display(), b.dst.display()));
        }
        c.arg("-v")
            .arg(format!("{}:{}:rw", work.display(), work.display()));
        c.arg("--rootfs").arg(&rootfs).args(["/usr/bin/date", "+%s%N"]);
        c
    };
    let corral_cmd = |no_container: bool| -> Command {
        let mut c = Command::new(&corral);
        c.args(["run", "-q", "--no-ui"]);
        if no_container {
            c.arg("--no-container");
        }
        c.arg("--policy")
            .arg(&policy)
            .arg("--project")
            .arg(&work)
            .arg("--events")
            .arg(work.join("events.jsonl"))
            .env("XDG_STATE_HOME", &state)
            .args(["--", "/usr/bin/date", "+%s%N"])
            .current_dir(&work);
        c
    };

    // Warm-up (page cache, podman's storage init).
    timed(baseline("corral-rbench-warm"))?;
    timed(corral_cmd(false))?;

    let (mut pw, mut pf, mut cw, mut cf, mut bw, mut bf) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        let p = timed(baseline(&format!("corral-rbench-{i}")))?;
        let c = timed(corral_cmd(false))?;
        let b = timed(corral_cmd(true))?;
        pw.push(p.wall_ms);
        pf.push(p.first_ms);
        cw.push(c.wall_ms);
        cf.push(c.first_ms);
        bw.push(b.wall_ms);
        bf.push(b.first_ms);
    }
    let _ = std::fs::remove_dir_all(&work);
    let med = |v: &mut Vec<f64>| pct(v, 0.5);
    let p90 = |v: &mut Vec<f64>| pct(v, 0.9);
    println!("runs: {runs} (interleaved), command: date +%s%N");
    println!(
        "{:<44} {:>10} {:>10} {:>14} {:>14}",
        "", "wall p50", "wall p90", "first-insn p50", "first-insn p90"
    );
    for (name, w, f) in [
        ("podman run --rm (same setup, no corral)", &mut pw, &mut pf),
        ("corral run (podman, all layers)", &mut cw, &mut cf),
        ("corral run --no-container", &mut bw, &mut bf),
    ] {
        println!(
            "{name:<44} {:>8.0}ms {:>8.0}ms {:>12.0}ms {:>12.0}ms",
            med(w),
            p90(w),
            med(f),
            p90(f)
        );
    }
    println!(
        "ratio corral/podman (wall p50): {:.2}x",
        med(&mut cw) / med(&mut pw)
    );
    println!(
        "ratio corral/podman (first instruction p50): {:.2}x",
        med(&mut cf) / med(&mut pf)
    );
    Ok(())
}
