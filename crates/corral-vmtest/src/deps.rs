//! Finding the shared libraries (and the dynamic loader) a host executable needs, so that it
//! runs in the guest, whose root file system holds nothing but what we put there.
//!
//! `ldd` does the resolution (it runs the binary's own loader in trace mode, so DT_RUNPATH,
//! `$ORIGIN`, `/etc/ld.so.cache` and transitive dependencies are all handled the way they will
//! be at run time). Libraries loaded with `dlopen` at run time (NSS modules, for one) are not
//! listed and must be added to [`crate::Guest::files`] by hand.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// Whether `path` is an x86-64 ELF executable or shared object (the only kind that has
/// dynamic dependencies to resolve; relocatable objects such as BPF `.o` files are not).
pub fn is_loadable_elf(path: &Path) -> bool {
    let mut head = [0u8; 20];
    let Ok(mut f) = File::open(path) else { return false };
    if f.read_exact(&mut head).is_err() {
        return false;
    }
    let e_type = u16::from_le_bytes([head[16], head[17]]);
    let e_machine = u16::from_le_bytes([head[18], head[19]]);
    // ELFCLASS64 (2), little-endian (1), ET_EXEC (2) or ET_DYN (3), EM_X86_64 (62).
    head[..4] == *b"\x7fELF"
        && head[4] == 2
        && head[5] == 1
        && (e_type == 2 || e_type == 3)
        && e_machine == 62
}

/// The absolute paths of the libraries and loader `path` needs (empty when it is static).
pub fn shared_deps(path: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = Command::new("ldd")
        .arg(path)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::io(
                format!("running `ldd {}` (Debian package libc-bin)", path.display()),
                e,
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // ldd exits 1 for static executables and for what its loader cannot handle.
        if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(Error::Libraries {
            path: path.to_path_buf(),
            detail: format!("ldd failed ({}): {}{}", out.status, stdout.trim(), stderr.trim()),
        });
    }
    parse_ldd(&stdout).map_err(|detail| Error::Libraries {
        path: path.to_path_buf(),
        detail,
    })
}

/// Parses `ldd` output: `name => /path (0x…)`, `/loader/path (0x…)`, `linux-vdso.so.1 (0x…)`,
/// `statically linked`, or `name => not found` (an error).
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line == "statically linked" {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("library {} not found", name.trim()));
                }
                rest
            }
            None => line,
        };
        let path = target.rsplit_once(" (").map_or(target, |(p, _)| p).trim();
        if path.starts_with('/') {
            let path = PathBuf::from(path);
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_glibc_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd5a3e0000)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0c1a000000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c19e00000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f0c1a0a0000)\n";
        let got = parse_ldd(text).unwrap();
        assert_eq!(
            got,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn missing_library_is_an_error() {
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(err.contains("libfoo.so.1"));
    }

    #[test]
    fn static_binary_has_no_deps() {
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    #[test]
    fn recognises_elf_kinds() {
        assert!(is_loadable_elf(Path::new("/bin/busybox")) || !Path::new("/bin/busybox").exists());
        assert!(!is_loadable_elf(Path::new("/etc/hostname")));
        assert!(!is_loadable_elf(Path::new("/nonexistent")));
    }
}
