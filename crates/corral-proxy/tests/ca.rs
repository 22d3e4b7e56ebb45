//! The interception CA on disk: file modes, reload, refusal of loose keys,
//! racing creators, leaf issuance and the leaf cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use corral_proxy::certs::LeafCerts;
use corral_proxy::{Ca, CaError};
use rustls::client::danger::ServerCertVerifier;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn ca_is_created_with_private_key_modes_and_reloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("corral-ca");
    let ca = Ca::load_or_create(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir.join("ca.pem")), 0o644);
    let pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    assert_eq!(pem, ca.cert_pem());
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(!pem.contains("PRIVATE KEY"));
    // Reloading gives the same CA.
    let again = Ca::load_or_create(&dir).unwrap();
    assert_eq!(again.cert_der(), ca.cert_der());
    // A deleted ca.pem is restored from ca.key.
    std::fs::remove_file(dir.join("ca.pem")).unwrap();
    let third = Ca::load_or_create(&dir).unwrap();
    assert_eq!(third.cert_der(), ca.cert_der());
    assert_eq!(std::fs::read_to_string(dir.join("ca.pem")).unwrap(), pem);
    // The common name says what it is.
    let der = ca.cert_der().as_ref();
    let needle = b"corral interception CA (";
    assert!(der.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn group_readable_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    Ca::load_or_create(&dir).unwrap();
    let key = dir.join("ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = Ca::load_or_create(&dir).unwrap_err();
    assert!(matches!(err, CaError::KeyMode { mode: 0o640, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&key.display().to_string()), "{msg}");
    assert!(msg.contains("0640"), "{msg}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).unwrap();
    assert!(matches!(Ca::load_or_create(&dir), Err(CaError::KeyMode { .. })));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Ca::load_or_create(&dir).is_ok());
}

#[test]
fn world_writable_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(matches!(Ca::load_or_create(&dir), Err(CaError::DirMode { .. })));
}

#[test]
fn racing_creators_end_with_one_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Arc::new(tmp.path().join("ca"));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let d = dir.clone();
            std::thread::spawn(move || Ca::load_or_create(&d).unwrap().cert_der().clone())
        })
        .collect();
    let certs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        certs.windows(2).all(|w| w[0] == w[1]),
        "racers disagree on the CA"
    );
    let on_disk = Ca::load_or_create(&dir).unwrap();
    assert_eq!(on_disk.cert_der(), &certs[0]);
    // No temporary files are left behind.
    let mut names: Vec<String> = std::fs::read_dir(&*dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.key", "ca.pem"]);
}

#[test]
fn leaves_verify_against_the_ca_and_are_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::load_or_create(&tmp.path().join("ca")).unwrap());
    let leaf = ca.issue_leaf("api.example.com").unwrap();
    assert_eq!(leaf.chain.len(), 2);
    assert_eq!(&leaf.chain[1], ca.cert_der());
    assert!(format!("{leaf:?}").contains("<redacted>"));
    // rustls's own verifier accepts it for the name, and not for another.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let now = rustls_pki_types::UnixTime::now();
    let name = rustls_pki_types::ServerName::try_from("api.example.com").unwrap();
    assert!(verifier
        .verify_server_cert(&leaf.chain[0], &[], &name, &[], now)
        .is_ok());
    let other = rustls_pki_types::ServerName::try_from("evil.example.com").unwrap();
    assert!(verifier
        .verify_server_cert(&leaf.chain[0], &[], &other, &[], now)
        .is_err());
    let ip_leaf = ca.issue_leaf("10.0.0.7").unwrap();
    let ip = rustls_pki_types::ServerName::try_from("10.0.0.7").unwrap();
    assert!(verifier
        .verify_server_cert(&ip_leaf.chain[0], &[], &ip, &[], now)
        .is_ok());

    let cache = LeafCerts::new(ca, 2);
    let a = cache.get("a.test").unwrap();
    assert!(Arc::ptr_eq(&a, &cache.get("a.test").unwrap()));
    cache.get("b.test").unwrap();
    cache.get("a.test").unwrap(); // a is now the most recent
    cache.get("c.test").unwrap(); // evicts b
    assert_eq!(cache.len(), 2);
    assert!(cache.contains("a.test") && cache.contains("c.test") && !cache.contains("b.test"));
}
