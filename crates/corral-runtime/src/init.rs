//! The static `corral-init` entrypoint (crates/corral-init), compiled by
//! this crate's build script and embedded here, and its installation on
//! the host so that a session can mount it into the container.
//!
//! The supervisor side of the go/exit protocol lives with the session; the
//! protocol itself is documented in corral-init's `protocol` module.
//!
//! In a session's run directory (mounted at `/run/corral` in the
//! container) the binary is `init`, the entrypoint, and `bin/corral`, the
//! same file under the name that makes it the relay of `corral mcp wrap`
//! (corral-init appends `/run/corral/bin` to the agent's `PATH`); see
//! [`install_into_run_dir`].

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

static BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/corral-init"));

/// The static corral-init binary.
pub fn binary() -> &'static [u8] {
    BINARY
}

/// Writes the binary, content-addressed, to
/// `dir/corral-init-<first 16 hex digits of its SHA-256>` with mode 0755,
/// and returns that path. An existing identical file is reused; otherwise
/// the file is written under a temporary name and renamed into place, so
/// that concurrent sessions never see a partial binary. `dir` is created
/// if missing.
///
/// Before the rename, the new file is run once (without arguments, so it
/// exits at once), retrying while exec fails with ETXTBSY: a child forked
/// by another thread of this process while the file was being written
/// holds the write descriptor until its own exec closes it. Once one exec
/// succeeds, nothing holds it open for writing any more, so the container
/// engine will not meet ETXTBSY either.
pub fn install(dir: &Path) -> io::Result<PathBuf> {
    let digest = Sha256::digest(BINARY);
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("corral-init-{hex}"));
    if is_installed(&path) {
        return Ok(path);
    }
    fs::create_dir_all(dir).map_err(|err| context(err, "create", dir))?;
    let tmp = dir.join(format!(
        ".corral-init-{hex}.{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = write_executable(&tmp).and_then(|()| {
        wait_until_executable(&tmp)?;
        fs::rename(&tmp, &path).map_err(|err| context(err, &format!("rename to `{}`", path.display()), &tmp))
    });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| path)
}

/// Where the relay appears in a run directory, relative to it.
pub const RELAY_PATH: &str = "bin/corral";

/// Puts corral-init into a session's run directory: copies `init_bin` (as
/// installed by [`install`]) to `<run_dir>/init` and makes
/// `<run_dir>/bin/corral` (a hard link to it, or a copy where linking
/// fails), both mode 0755, `bin` too. Returns the path of `init`. Like
/// [`install`], it returns once the copy can be executed (no ETXTBSY from
/// a child forked while it was being written).
pub fn install_into_run_dir(init_bin: &Path, run_dir: &Path) -> io::Result<PathBuf> {
    let init = run_dir.join("init");
    fs::copy(init_bin, &init)
        .map_err(|err| context(err, &format!("copy `{}` to", init_bin.display()), &init))?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))
        .map_err(|err| context(err, "chmod", &init))?;
    wait_until_executable(&init)?;
    let relay = run_dir.join(RELAY_PATH);
    let bin = relay.parent().unwrap_or(run_dir);
    fs::create_dir_all(bin).map_err(|err| context(err, "create", bin))?;
    fs::set_permissions(bin, fs::Permissions::from_mode(0o755)).map_err(|err| context(err, "chmod", bin))?;
    match fs::remove_file(&relay) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(context(err, "replace", &relay)),
    }
    if fs::hard_link(&init, &relay).is_err() {
        fs::copy(&init, &relay)
            .map_err(|err| context(err, &format!("copy `{}` to", init.display()), &relay))?;
        fs::set_permissions(&relay, fs::Permissions::from_mode(0o755))
            .map_err(|err| context(err, "chmod", &relay))?;
    }
    Ok(init)
}

/// Whether `path` already holds the binary, executable.
fn is_installed(path: &Path) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    meta.is_file()
        && meta.len() == BINARY.len() as u64
        && meta.permissions().mode() & 0o777 == 0o755
        && fs::read(path).is_ok_and(|bytes| bytes == BINARY)
}

fn write_executable(tmp: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(tmp)
        .map_err(|err| context(err, "create", tmp))?;
    file.write_all(BINARY).map_err(|err| context(err, "write", tmp))?;
    // The umask may have removed bits from the mode given to open.
    file.set_permissions(fs::Permissions::from_mode(0o755))
        .map_err(|err| context(err, "chmod", tmp))?;
    file.sync_all().map_err(|err| context(err, "sync", tmp))
}

/// Runs `file` until exec stops failing with ETXTBSY (for at most 5 s).
/// Other spawn errors (a noexec mount, say) are left for the container
/// engine to report, as the container may see the file differently.
fn wait_until_executable(file: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let spawned = Command::new(file)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(mut child) => {
                child.wait().map_err(|err| context(err, "wait for", file))?;
                return Ok(());
            }
            Err(err) if err.kind() == io::ErrorKind::ExecutableFileBusy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(err) if err.kind() == io::ErrorKind::ExecutableFileBusy => {
                return Err(context(err, "run", file));
            }
            Err(_) => return Ok(()),
        }
    }
}

fn context(err: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("cannot {what} `{}`: {err}", path.display()))
}
