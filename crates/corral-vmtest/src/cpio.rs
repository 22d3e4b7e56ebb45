//! A writer for the "newc" (SVR4, no CRC) cpio format, the format the kernel unpacks as an
//! initramfs (see Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! Each entry is a 110-byte ASCII header (`070701` then 13 eight-digit hex fields), the
//! NUL-terminated name padded to a multiple of 4, and the data padded to a multiple of 4.
//! The archive ends with an entry named `TRAILER!!!`.

use std::io::{self, Read, Write};

/// File type bits of `st_mode`.
pub const S_IFREG: u32 = 0o100_000;
/// Directory.
pub const S_IFDIR: u32 = 0o040_000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120_000;
/// Character device.
pub const S_IFCHR: u32 = 0o020_000;

/// Streams entries into a newc archive.
pub struct Writer<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

/// One entry's metadata.
struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
}

impl<W: Write> Writer<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        Writer {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    fn header(&mut self, h: &Header<'_>) -> io::Result<()> {
        // Names in the archive are relative ("bin/sh"); the kernel accepts either.
        let name = h.name.trim_start_matches('/');
        let name = if name.is_empty() { "." } else { name };
        let namesize = u32::try_from(name.len() + 1).map_err(|_| too_big(name))?;
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        let text = format!(
            "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}\
             {maj:08x}{min:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
            mode = h.mode,
            uid = 0,
            gid = 0,
            nlink = h.nlink,
            mtime = 0,
            size = h.size,
            maj = 0,
            min = 0,
            rmaj = h.rdev.0,
            rmin = h.rdev.1,
            check = 0,
        );
        self.put(text.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.written % 4) as usize;
        if rem != 0 {
            self.put(&[0u8; 4][..4 - rem])?;
        }
        Ok(())
    }

    /// Adds a directory.
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.header(&Header {
            name,
            mode: S_IFDIR | (perm & 0o7777),
            nlink: 2,
            size: 0,
            rdev: (0, 0),
        })
    }

    /// Adds a symbolic link `name` → `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        let size = u32::try_from(target.len()).map_err(|_| too_big(name))?;
        self.header(&Header {
            name,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            size,
            rdev: (0, 0),
        })?;
        self.put(target.as_bytes())?;
        self.pad()
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.header(&Header {
            name,
            mode: S_IFCHR | (perm & 0o7777),
            nlink: 1,
            size: 0,
            rdev: (major, minor),
        })
    }

    /// Adds a regular file of `size` bytes read from `data`; fails if `data` yields a
    /// different number of bytes (a file that changed while being archived).
    pub fn file(&mut self, name: &str, perm: u32, size: u64, data: &mut dyn Read) -> io::Result<()> {
        let size32 = u32::try_from(size).map_err(|_| too_big(name))?;
        self.header(&Header {
            name,
            mode: S_IFREG | (perm & 0o7777),
            nlink: 1,
            size: size32,
            rdev: (0, 0),
        })?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: expected {size} bytes, read {copied}"),
            ));
        }
        self.written += copied;
        self.pad()
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(&Header {
            name: "TRAILER!!!",
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        })?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn too_big(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{name}: too large for a newc cpio entry (4 GiB)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_padded_and_terminated() {
        let mut w = Writer::new(Vec::new());
        w.dir("/bin", 0o755).unwrap();
        w.file("/bin/x", 0o755, 3, &mut &b"abc"[..]).unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("070701"));
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("abc"));
        assert!(text.contains("TRAILER!!!\0"));
        // The first header: directory mode, name size 4 ("bin" + NUL).
        assert_eq!(&text[14..22], "000041ed");
        assert_eq!(&text[94..102], "00000004");
    }

    #[test]
    fn short_read_is_an_error() {
        let mut w = Writer::new(Vec::new());
        assert!(w.file("f", 0o644, 10, &mut &b"abc"[..]).is_err());
    }
}
