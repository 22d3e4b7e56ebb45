//! Session cgroups (v2): create, place processes, kill, remove.
//!
//! A session's processes live in one cgroup-v2 directory; enforcement
//! targets that directory and everything created beneath it later. On a
//! hybrid host (v1 controllers, v2 at `/sys/fs/cgroup/unified`) the v2
//! hierarchy is found from the mount table.

use crate::{sys, Error, Result};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The mount point of the cgroup-v2 hierarchy, from `/proc/self/mountinfo`.
pub fn v2_root() -> Result<PathBuf> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
    for line in info.lines() {
        // ... mount-point ... - fstype source options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2") {
            if let Some(mp) = left.split_whitespace().nth(4) {
                return Ok(PathBuf::from(unescape_mountinfo(mp)));
            }
        }
    }
    Err(Error::Unsupported(
        "no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)".into(),
    ))
}

/// Undoes `/proc/<pid>/mountinfo`'s escaping of space, tab, newline and
/// backslash (`\ooo`, octal).
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cgroup-v2 directory owned by corral: killed and removed on drop.
#[derive(Debug)]
pub struct Cgroup {
    root: PathBuf,
    path: PathBuf,
    owned: bool,
    /// The outermost directory `create` had to make (removed on drop when
    /// empty, so `a/b` leaves no `a` behind).
    made_from: Option<PathBuf>,
}

impl Cgroup {
    /// Creates `<v2 root>/<rel>` (parents included).
    pub fn create(rel: &str) -> Result<Cgroup> {
        let root = v2_root()?;
        let path = root.join(rel.trim_start_matches('/'));
        let made_from = path
            .ancestors()
            .take_while(|a| a.starts_with(&root) && *a != root.as_path())
            .filter(|a| !a.exists())
            .last()
            .map(Path::to_path_buf);
        fs::create_dir_all(&path).map_err(|e| Error::io(format!("create cgroup {}", path.display()), e))?;
        Ok(Cgroup {
            root,
            path,
            owned: true,
            made_from,
        })
    }

    /// An existing cgroup (e.g. a container's), not removed on drop.
    pub fn open(path: &Path) -> Result<Cgroup> {
        let root = v2_root()?;
        if !path.starts_with(&root) {
            return Err(Error::Unsupported(format!(
                "{} is not under the cgroup v2 hierarchy {}",
                path.display(),
                root.display()
            )));
        }
        fs::metadata(path).map_err(|e| Error::io(format!("cgroup {}", path.display()), e))?;
        Ok(Cgroup {
            root,
            path: path.to_path_buf(),
            owned: false,
            made_from: None,
        })
    }

    /// A child cgroup (created now), owned by its parent's lifetime.
    pub fn child(&self, name: &str) -> Result<Cgroup> {
        let path = self.path.join(name);
        fs::create_dir_all(&path).map_err(|e| Error::io(format!("create cgroup {}", path.display()), e))?;
        Ok(Cgroup {
            root: self.root.clone(),
            path,
            owned: true,
            made_from: None,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as `/proc/<pid>/cgroup` shows it (`/a/b`).
    pub fn rel(&self) -> String {
        let r = self
            .path
            .strip_prefix(&self.root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("/{r}")
    }

    /// The cgroup id the kernel uses (`bpf_get_current_cgroup_id`): the
    /// directory's inode number on cgroup2fs.
    pub fn id(&self) -> Result<u64> {
        fs::metadata(&self.path)
            .map(|m| m.ino())
            .map_err(|e| Error::io(format!("stat {}", self.path.display()), e))
    }

    /// Depth below the root (root = 0), the `level` of
    /// `bpf_get_current_ancestor_cgroup_id`.
    pub fn level(&self) -> u32 {
        self.rel().split('/').filter(|c| !c.is_empty()).count() as u32
    }

    /// Makes `cmd`'s child join this cgroup before it execs, so its first
    /// instruction already runs governed.
    pub fn place(&self, cmd: &mut Command) -> Result<()> {
        let procs = self.path.join("cgroup.procs");
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(|e| Error::io(format!("open {}", procs.display()), e))?;
        sys::pre_exec(cmd, move || sys::join_cgroup_fd(f.as_raw_fd()));
        Ok(())
    }

    /// Pids in this cgroup and every descendant.
    pub fn pids(&self) -> Vec<u32> {
        let mut out = Vec::new();
        walk(&self.path, &mut |d| {
            if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        });
        out
    }

    /// Kills every process in the cgroup and its descendants
    /// (`cgroup.kill`, or SIGKILL to each pid on kernels before 5.14).
    pub fn kill(&self) -> Result<()> {
        let k = self.path.join("cgroup.kill");
        if k.exists() {
            return fs::write(&k, "1").map_err(|e| Error::io(format!("write {}", k.display()), e));
        }
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        Ok(())
    }

    /// Kills everything and removes the directory tree (children first),
    /// waiting up to 2 s for the processes to go.
    pub fn destroy(&self) -> Result<()> {
        self.kill()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let mut dirs = Vec::new();
            walk(&self.path, &mut |d| dirs.push(d.to_path_buf()));
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            let mut err = None;
            for d in &dirs {
                if let Err(e) = fs::remove_dir(d) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        err = Some((d.clone(), e));
                    }
                }
            }
            match err {
                None => {
                    // Parents this cgroup's creation made, if now empty
                    // (another user of them makes rmdir fail: fine).
                    if let Some(top) = &self.made_from {
                        for a in self.path.ancestors().skip(1) {
                            if !a.starts_with(top) || fs::remove_dir(a).is_err() {
                                break;
                            }
                        }
                    }
                    return Ok(());
                }
                Some((d, e)) if std::time::Instant::now() > deadline => {
                    return Err(Error::io(format!("remove cgroup {}", d.display()), e))
                }
                Some(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    f(dir);
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&e.path(), f);
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if self.owned {
            let _ = self.destroy();
        }
    }
}

/// The cgroup-v2 path (`/a/b`) of a process, from `/proc/<pid>/cgroup`.
pub fn of_pid(pid: u32) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

/// Whether cgroup path `p` is `base` or lies beneath it.
pub fn is_within(p: &str, base: &str) -> bool {
    p == base || (p.starts_with(base) && (base.ends_with('/') || p.as_bytes().get(base.len()) == Some(&b'/')))
}
