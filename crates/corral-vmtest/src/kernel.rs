//! Choosing the guest kernel, and unpacking it for PVH boot.
//!
//! Debian ships its kernel as a bzImage (`/boot/vmlinuz-<ver>-amd64`): a real-mode setup
//! stub plus an xz-compressed ELF `vmlinux`. Booting the bzImage runs SeaBIOS, the setup code
//! and the in-guest xz decompressor, all under TCG emulation; that costs about 1.5–2 s per
//! boot on this kind of machine. The same kernel also carries a Xen PVH entry point (an ELF
//! note, `CONFIG_PVH=y`), and QEMU boots an ELF `vmlinux` with that note directly, skipping
//! all three. So the first run unpacks the vmlinux on the host (pure Rust xz with the x86
//! BCJ filter) into a cache file next to the system temp directory, and later runs reuse it.
//! Anything unexpected in that path falls back to booting the bzImage.

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::Error;

/// Environment variable naming a kernel image to use instead of the newest Debian one.
pub const KERNEL_ENV: &str = "CORRAL_VM_KERNEL";

/// Finds the newest `/boot/vmlinuz-*-amd64` that is not the host's running kernel.
pub fn find_kernel() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(KERNEL_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::NoKernel {
                detail: format!("{KERNEL_ENV}={} is not a file", path.display()),
            })
        };
    }
    let running = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let running = running.trim();
    let entries = fs::read_dir("/boot").map_err(|e| Error::NoKernel {
        detail: format!("cannot list /boot: {e}"),
    })?;
    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(version) = name.strip_prefix("vmlinuz-") else {
            continue;
        };
        if !version.ends_with("-amd64") || version == running || !entry.path().is_file() {
            continue;
        }
        let key = version_key(version);
        if best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((key, entry.path()));
        }
    }
    best.map(|(_, path)| path).ok_or_else(|| Error::NoKernel {
        detail: "no /boot/vmlinuz-*-amd64 (other than the running kernel's)".to_string(),
    })
}

/// Orders "6.1.0-56-amd64" after "6.1.0-9-amd64": the numbers in the name, compared in order.
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// The cached, unpacked PVH-bootable vmlinux of `bzimage`, creating it on first use.
pub fn pvh_image(bzimage: &Path) -> Result<PathBuf, String> {
    let meta = fs::metadata(bzimage).map_err(|e| format!("{}: {e}", bzimage.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let base = bzimage.file_name().and_then(|n| n.to_str()).unwrap_or("kernel");
    let dir = std::env::temp_dir().join("corral-vmtest-cache");
    let cached = dir.join(format!("{base}-{}-{mtime}.pvh.elf", meta.len()));
    if cached.is_file() {
        return Ok(cached);
    }
    let image = fs::read(bzimage).map_err(|e| format!("{}: {e}", bzimage.display()))?;
    let vmlinux = unpack_bzimage(&image)?;
    if !has_pvh_note(&vmlinux) {
        return Err("the kernel has no PVH entry point (CONFIG_PVH)".to_string());
    }
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Concurrent test processes may race here; each writes its own file and renames it into
    // place atomically, so a reader never sees a partial image.
    let tmp = dir.join(format!(".{base}.{}.{}", std::process::id(), crate::nonce()));
    fs::write(&tmp, &vmlinux).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, &cached).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("{}: {e}", cached.display())
    })?;
    Ok(cached)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Extracts the compressed payload named by the x86 boot protocol header (2.08+:
/// `payload_offset`/`payload_length`) and decompresses it (xz only: Debian's choice).
fn unpack_bzimage(image: &[u8]) -> Result<Vec<u8>, String> {
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not a bzImage (no HdrS boot header)".to_string());
    }
    let protocol = le16(image, 0x206).ok_or("truncated boot header")?;
    if protocol < 0x208 {
        return Err(format!("boot protocol {protocol:#x} has no payload fields"));
    }
    let setup_sects = match image.get(0x1f1).copied().ok_or("truncated boot header")? {
        0 => 4,
        n => usize::from(n),
    };
    let offset = le32(image, 0x248).ok_or("truncated boot header")? as usize;
    let length = le32(image, 0x24c).ok_or("truncated boot header")? as usize;
    let start = (setup_sects + 1) * 512 + offset;
    let payload = image
        .get(start..start + length)
        .ok_or("payload lies outside the image")?;
    if !payload.starts_with(b"\xfd7zXZ\0") {
        return Err("kernel payload is not xz-compressed".to_string());
    }
    // The build appends the uncompressed size (4 bytes) after the xz stream; read one
    // stream only.
    let mut reader = lzma_rust2::XzReader::new(BufReader::new(payload), false);
    let mut out = Vec::with_capacity(le32(payload, payload.len().saturating_sub(4)).unwrap_or(0) as usize);
    reader
        .read_to_end(&mut out)
        .map_err(|e| format!("decompressing the kernel: {e}"))?;
    Ok(out)
}

/// Whether an ELF64 image has the Xen `XEN_ELFNOTE_PHYS32_ENTRY` note (type 18) QEMU needs
/// to boot it in PVH mode.
fn has_pvh_note(elf: &[u8]) -> bool {
    fn scan(elf: &[u8]) -> Option<bool> {
        if elf.get(..5)? != b"\x7fELF\x02" {
            return Some(false);
        }
        let phoff = usize::try_from(le64(elf, 0x20)?).ok()?;
        let phentsize = usize::from(le16(elf, 0x36)?);
        let phnum = usize::from(le16(elf, 0x38)?);
        for i in 0..phnum {
            let ph = phoff + i * phentsize;
            if le32(elf, ph)? != 4 {
                continue; // not PT_NOTE
            }
            let off = usize::try_from(le64(elf, ph + 8)?).ok()?;
            let size = usize::try_from(le64(elf, ph + 32)?).ok()?;
            let notes = elf.get(off..off + size)?;
            let mut at = 0;
            while at + 12 <= notes.len() {
                let namesz = le32(notes, at)? as usize;
                let descsz = le32(notes, at + 4)? as usize;
                let kind = le32(notes, at + 8)?;
                let name = notes.get(at + 12..at + 12 + namesz)?;
                if name == b"Xen\0" && kind == 18 {
                    return Some(true);
                }
                at += 12 + namesz.div_ceil(4) * 4 + descsz.div_ceil(4) * 4;
            }
        }
        Some(false)
    }
    scan(elf).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("6.1.0-56-amd64") > version_key("6.1.0-9-amd64"));
        assert!(version_key("6.10.0-1-amd64") > version_key("6.9.0-30-amd64"));
    }

    #[test]
    fn rejects_non_bzimage() {
        assert!(unpack_bzimage(b"not a kernel").is_err());
        assert!(!has_pvh_note(b"\x7fELF\x02garbage"));
    }
}
