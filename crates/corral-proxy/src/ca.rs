//! The per-install interception CA: created once, kept on disk with a
//! private key only its owner can read, and used to sign short-lived leaf
//! certificates for the hosts the proxy intercepts.
//!
//! This module owns the CA files. It never hands the key to anything but the
//! signer, and the key is never meant to be mounted into a session (only
//! `ca.pem`, the public certificate, is).
//!
//! Layout of `dir` (mode 0700): `ca.key` (0600: the PKCS#8 key followed by
//! the certificate) and `ca.pem` (0644: the certificate alone, the file to
//! hand to clients). `ca.key` is authoritative: it is created with an
//! exclusive hard link from a temporary file, so of two processes racing to
//! create the CA exactly one wins and the other loads the winner's pair
//! (two `rename`s could leave the key of one and the certificate of the
//! other). `ca.pem` is then (re)written from `ca.key` by temp + rename.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Validity of the CA certificate.
const CA_VALIDITY: time::Duration = time::Duration::days(3650);
/// Validity of a leaf certificate (after backdating).
const LEAF_VALIDITY: time::Duration = time::Duration::days(7);
/// Leaves are backdated by this much, for clients with a slow clock.
const LEAF_BACKDATE: time::Duration = time::Duration::hours(1);

/// Why the CA could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file operation failed.
    #[error("cannot {what} `{path}`: {source}")]
    Io {
        /// What was attempted (`read`, `create`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key file is readable or writable by group or others.
    #[error("`{path}` has mode {mode:04o}: the CA key must be readable by its owner only (chmod 600)")]
    KeyMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file (or the directory) belongs to another user.
    #[error("`{path}` is owned by uid {owner}, not by the current user (uid {uid})")]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The current user.
        uid: u32,
    },
    /// The CA directory is writable by group or others.
    #[error("`{path}` has mode {mode:04o}: the CA directory must be writable by its owner only (chmod 700)")]
    DirMode {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file does not hold what it should.
    #[error("`{path}` is not a valid CA file: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Certificate generation or signing failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Another process holds `ca.key` but never wrote a certificate.
    #[error("`{0}` holds no certificate and `ca.pem` is missing")]
    NoCertificate(PathBuf),
}

/// A leaf certificate with its chain and key, ready for rustls.
pub struct Leaf {
    /// The leaf, then the CA certificate.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("chain", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The interception CA.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    pem_path: PathBuf,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("pem_path", &self.pem_path)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CaError + 'a {
    move |source| CaError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// This host's name, for the CA's common name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A name for a temporary file next to `path`, unique to this process and call.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp.{}.{n}.{nanos}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `data` to a new temporary file with `mode`, synced.
fn write_temp(path: &Path, data: &[u8], mode: u32) -> Result<PathBuf, CaError> {
    let tmp = temp_path(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    // The umask may have removed bits we want (0644 for the certificate).
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", &tmp))?;
    f.write_all(data).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    Ok(tmp)
}

impl Ca {
    /// Loads the CA from `dir`, creating the directory (0700) and a new CA
    /// (ECDSA P-256, 10 years) if there is none.
    ///
    /// Refuses a key file that group or others can access, a key file or
    /// directory owned by another user, and a directory others can write.
    pub fn load_or_create(dir: &Path) -> Result<Ca, CaError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create directory", dir))?;
        let meta = std::fs::metadata(dir).map_err(io("stat", dir))?;
        let uid = current_uid();
        if meta.uid() != uid {
            return Err(CaError::Owner {
                path: dir.to_path_buf(),
                owner: meta.uid(),
                uid,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(CaError::DirMode {
                path: dir.to_path_buf(),
                mode,
            });
        }
        let key_path = dir.join("ca.key");
        let pem_path = dir.join("ca.pem");
        if !key_path.exists() {
            Self::create(&key_path)?;
        }
        Self::load(&key_path, &pem_path)
    }

    /// Generates a CA and links it into place as `key_path`, unless another
    /// process got there first (then its CA stands).
    fn create(key_path: &Path) -> Result<(), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("corral interception CA ({})", hostname()),
        );
        dn.push(DnType::OrganizationName, "corral");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key)?;
        let mut text = key.serialize_pem();
        text.push_str(&cert.pem());
        let tmp = write_temp(key_path, text.as_bytes(), 0o600)?;
        let linked = std::fs::hard_link(&tmp, key_path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            // Another process created the CA between our check and our link.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io("link", key_path)(e)),
        }
    }

    fn load(key_path: &Path, pem_path: &Path) -> Result<Ca, CaError> {
        let meta = std::fs::metadata(key_path).map_err(io("stat", key_path))?;
        let uid = current_uid();
        if meta.uid() != uid {
            return Err(CaError::Owner {
                path: key_path.to_path_buf(),
                owner: meta.uid(),
                uid,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CaError::KeyMode {
                path: key_path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read(key_path).map_err(io("read", key_path))?;
        let bad = |reason: String| CaError::BadFile {
            path: key_path.to_path_buf(),
            reason,
        };
        let key_der =
            PrivateKeyDer::from_pem_slice(&text).map_err(|e| bad(format!("no private key: {e}")))?;
        let key = KeyPair::try_from(&key_der).map_err(|e| bad(format!("unusable key: {e}")))?;
        // The certificate lives in `ca.key` for a CA corral created; a pair
        // placed there by hand may keep it in `ca.pem` only.
        let in_key = CertificateDer::pem_slice_iter(&text).next().transpose();
        let (cert_der, source) = match in_key {
            Ok(Some(c)) => (c, text.clone()),
            Ok(None) => {
                let pem = std::fs::read(pem_path).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => CaError::NoCertificate(key_path.to_path_buf()),
                    _ => io("read", pem_path)(e),
                })?;
                let c = CertificateDer::from_pem_slice(&pem).map_err(|e| CaError::BadFile {
                    path: pem_path.to_path_buf(),
                    reason: format!("no certificate: {e}"),
                })?;
                (c, pem)
            }
            Err(e) => return Err(bad(format!("bad certificate: {e}"))),
        };
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| bad(format!("unusable certificate: {e}")))?;
        let cert_pem = cert_block(&String::from_utf8_lossy(&source))
            .ok_or_else(|| bad("no certificate block".to_string()))?;
        // Keep `ca.pem` in step with the key file (created on first load,
        // repaired if it was replaced).
        let current = std::fs::read_to_string(pem_path).ok();
        if current.as_deref() != Some(cert_pem.as_str()) {
            let tmp = write_temp(pem_path, cert_pem.as_bytes(), 0o644)?;
            std::fs::rename(&tmp, pem_path).map_err(io("rename into", pem_path))?;
        }
        Ok(Ca {
            cert_pem,
            cert_der,
            issuer,
            pem_path: pem_path.to_path_buf(),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Path of `ca.pem` (the file to trust inside a session).
    pub fn pem_path(&self) -> &Path {
        &self.pem_path
    }

    /// Issues a leaf for a host name or IP address (as its only SAN), valid
    /// for 7 days from an hour ago, with a fresh P-256 key.
    pub fn issue_leaf(&self, name: &str) -> Result<Leaf, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.to_string().try_into()?),
        };
        params.subject_alt_names = vec![san];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = now - LEAF_BACKDATE + LEAF_VALIDITY;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// How long an issued leaf stays valid (after backdating).
    pub fn leaf_validity() -> Duration {
        Duration::from_secs(LEAF_VALIDITY.whole_seconds().unsigned_abs())
    }
}

/// The first `CERTIFICATE` PEM block of a text, normalised to end with a newline.
fn cert_block(text: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = text.find(BEGIN)?;
    let rest = text.get(start..)?;
    let end = rest.find(END)? + END.len();
    Some(format!("{}\n", rest.get(..end)?))
}
