//! Compiles corral-init (`../corral-init/src/main.rs`, a crate without
//! dependencies) on its own with `$RUSTC` into a static executable,
//! `$OUT_DIR/corral-init`, which src/init.rs embeds with `include_bytes!`.
//! Static because the container image may have any libc, or none: glibc's
//! libc.a is linked in (`+crt-static`); the result is a static PIE, with no
//! program interpreter.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(env("OUT_DIR"));
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let src = manifest.join("../corral-init/src");
    println!("cargo:rerun-if-changed={}", src.display());
    for file in sources(&src) {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env("TARGET");
    let binary = out.join("corral-init");
    let output = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--crate-name",
            "corral_init",
        ])
        .args(["--target", &target])
        .args(["-C", "opt-level=s", "-C", "panic=abort", "-C", "strip=symbols"])
        .args(["-C", "lto=fat", "-C", "codegen-units=1"])
        .args(["-C", "target-feature=+crt-static"])
        .arg("-o")
        .arg(&binary)
        .arg(src.join("main.rs"))
        .output()
        .unwrap_or_else(|err| fail(&format!("cannot run `{}`: {err}", rustc.to_string_lossy())));
    if !output.status.success() {
        fail(&format!(
            "compiling the static corral-init failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if !binary.is_file() {
        fail(&format!("rustc succeeded but left no `{}`", binary.display()));
    }
}

/// The `.rs` files under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|err| fail(&format!("read {}: {err}", dir.display())));
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .unwrap_or_else(|err| fail(&format!("read {}: {err}", dir.display())))
            .path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(&format!("{name} is not set")))
}

fn fail(msg: &str) -> ! {
    eprintln!("corral-runtime build: {msg}");
    std::process::exit(1)
}
