//! Installs corral's egress-proxy CA into the image's CA bundles, so that
//! tools which ignore SSL_CERT_FILE (set separately by the supervisor) trust
//! the proxy too. Best effort: a bundle that cannot be written (read-only
//! root, missing distribution bundle) is skipped, noted only in verbose mode.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The bundles of the common distributions: Debian/Ubuntu/Alpine, Fedora/RHEL,
/// and the OpenSSL default of several others.
const BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Appends the PEM at `ca` to every existing, writable bundle that does not
/// already contain it. `bundles` replaces the default list (for tests).
/// Nothing happens if `ca` does not exist.
pub fn install(ca: &Path, bundles: Option<&str>, verbose: bool) {
    let note = |msg: String| {
        if verbose {
            crate::say(&msg);
        }
    };
    let pem = match fs::read(ca) {
        Ok(pem) => pem,
        Err(err) => {
            note(format!("no CA installed: cannot read `{}`: {err}", ca.display()));
            return;
        }
    };
    let pem = trim(&pem);
    if pem.is_empty() {
        note(format!("no CA installed: `{}` is empty", ca.display()));
        return;
    }
    let bundles: Vec<PathBuf> = match bundles {
        Some(list) => list
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect(),
        None => BUNDLES.iter().map(PathBuf::from).collect(),
    };
    for bundle in bundles {
        if !bundle.is_file() {
            continue;
        }
        let current = match fs::read(&bundle) {
            Ok(current) => current,
            Err(err) => {
                note(format!("cannot read CA bundle `{}`: {err}", bundle.display()));
                continue;
            }
        };
        let Some(addition) = addition(&current, pem) else {
            continue;
        };
        let written = OpenOptions::new()
            .append(true)
            .open(&bundle)
            .and_then(|mut file| file.write_all(&addition));
        match written {
            Ok(()) => note(format!("installed the CA in `{}`", bundle.display())),
            Err(err) => note(format!("cannot add the CA to `{}`: {err}", bundle.display())),
        }
    }
}

/// What to append to `bundle` so that it contains `pem` (already trimmed),
/// or `None` if it already does.
fn addition(bundle: &[u8], pem: &[u8]) -> Option<Vec<u8>> {
    if bundle.windows(pem.len()).any(|w| w == pem) {
        return None;
    }
    let mut out = Vec::with_capacity(pem.len() + 2);
    if !bundle.is_empty() && !bundle.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(pem);
    out.push(b'\n');
    Some(out)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &[u8] = b"-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----";

    #[test]
    fn appends_once() {
        let bundle = b"-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----".to_vec();
        let add = addition(&bundle, PEM).unwrap();
        assert_eq!(add.first(), Some(&b'\n'));
        let mut merged = bundle.clone();
        merged.extend_from_slice(&add);
        assert!(merged.ends_with(b"-----END CERTIFICATE-----\n"));
        assert_eq!(addition(&merged, PEM), None);
    }

    #[test]
    fn empty_bundle_gets_no_leading_newline() {
        assert_eq!(addition(b"", PEM).unwrap().first(), Some(&b'-'));
    }

    #[test]
    fn trims_whitespace() {
        assert_eq!(trim(b"\n  x y \n\n"), b"x y");
        assert_eq!(trim(b" \n"), b"");
        assert_eq!(trim(b""), b"");
    }
}
