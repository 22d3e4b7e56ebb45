//! Builds the control UI (`scripts/ui.sh build $OUT_DIR/ui`: npm ci from the
//! pinned lock, tsc, esbuild) and writes `$OUT_DIR/assets.rs`, the table of
//! embedded files that `src/assets.rs` serves. Needs node >= 18 and npm;
//! `CORRAL_UI_DIST=<dir>` embeds an already built UI instead (no node).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fail(msg: &str) -> ! {
    eprintln!("error: corral-server: {msg}");
    std::process::exit(1);
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("woff2") => "font/woff2",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn build_ui(root: &Path, out: &Path) {
    let script = root.join("scripts/ui.sh");
    let status = Command::new("bash").arg(&script).arg("build").arg(out).status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "building the UI failed ({s}): `{} build {}` said why above; it needs node >= 18 and npm \
             (Debian: apt-get install -y nodejs npm), or set CORRAL_UI_DIST to a built UI",
            script.display(),
            out.display()
        )),
        Err(e) => fail(&format!("cannot run bash for `{}`: {e}", script.display())),
    }
}

fn main() {
    let manifest = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| fail("CARGO_MANIFEST_DIR unset")),
    );
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| fail("OUT_DIR unset")));
    let root = manifest.join("../..");
    for p in [
        "ui/src",
        "ui/index.html",
        "ui/package.json",
        "ui/package-lock.json",
        "ui/tsconfig.json",
        "scripts/ui.sh",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=CORRAL_UI_DIST");
    let dist = match std::env::var_os("CORRAL_UI_DIST") {
        Some(d) => PathBuf::from(d),
        None => {
            let d = out_dir.join("ui");
            build_ui(&root, &d);
            d
        }
    };
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dist)
        .unwrap_or_else(|e| fail(&format!("cannot read the built UI in `{}`: {e}", dist.display())))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    files.sort();
    if !files.iter().any(|(n, _)| n == "index.html") {
        fail(&format!("the built UI in `{}` has no index.html", dist.display()));
    }
    let mut table = String::from(
        "/// The embedded UI files: (name, content type, bytes).\n\
         pub(crate) static FILES: &[(&str, &str, &[u8])] = &[\n",
    );
    for (name, path) in &files {
        let abs = path
            .canonicalize()
            .unwrap_or_else(|e| fail(&format!("cannot resolve `{}`: {e}", path.display())));
        let _ = writeln!(
            table,
            "    ({name:?}, {:?}, include_bytes!({:?})),",
            content_type(name),
            abs.display().to_string()
        );
    }
    table.push_str("];\n");
    let dest = out_dir.join("assets.rs");
    std::fs::write(&dest, table).unwrap_or_else(|e| fail(&format!("cannot write `{}`: {e}", dest.display())));
}
