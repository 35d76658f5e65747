//! Items at rest in the node's data directory, written atomically.
//!
//! Each item is a file `DATA/<kind>/<name>` holding a magic tag, the SHA-256 of the payload and
//! the payload. A write goes to a temporary file in the same directory, is fsynced, renamed over
//! the final name, and the directory is fsynced: a crash (SIGKILL, power loss on a filesystem
//! that honours fsync) at any moment leaves either the previous item or the new one, never a
//! mix. Leftover temporary files are removed when the store opens; an item whose checksum does
//! not match is reported, naming the file, never returned.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail, ensure};

const MAGIC: &[u8; 8] = b"MBRSTOR1";
const TMP_PREFIX: &str = ".tmp-";

/// The node's item store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    counter: AtomicU64,
}

fn check_component(s: &str, what: &str) -> anyhow::Result<()> {
    ensure!(
        !s.is_empty()
            && s.len() <= 128
            && !s.starts_with('.')
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
        "store {what} {s:?} must be 1-128 characters of A-Z, a-z, 0-9, '-', '_', '.' and not start with '.'"
    );
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing directory {}", dir.display()))
}

impl Store {
    /// Opens (creating it if needed) the store under `root`, removing temporary files a crash
    /// left behind.
    pub fn open(root: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create data directory {} (check [node] data_dir)", root.display()))?;
        for kind in std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
            let kind = kind?.path();
            if !kind.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&kind)? {
                let f = f?;
                if f.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    std::fs::remove_file(f.path())
                        .with_context(|| format!("removing leftover {}", f.path().display()))?;
                }
            }
        }
        Ok(Store { root: root.to_path_buf(), counter: AtomicU64::new(0) })
    }

    fn path(&self, kind: &str, name: &str) -> anyhow::Result<PathBuf> {
        check_component(kind, "kind")?;
        check_component(name, "name")?;
        Ok(self.root.join(kind).join(name))
    }

    /// Writes item `kind/name` atomically, replacing any previous version.
    pub fn put(&self, kind: &str, name: &str, payload: &[u8]) -> anyhow::Result<()> {
        let path = self.path(kind, name)?;
        let dir = path.parent().expect("item paths have a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TMP_PREFIX}{name}.{}.{n}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(ring::digest::digest(&ring::digest::SHA256, payload).as_ref())?;
            f.write_all(payload)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", tmp.display()));
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        sync_dir(dir)
    }

    /// Reads item `kind/name`; `None` if it does not exist.
    pub fn get(&self, kind: &str, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let path = self.path(kind, name)?;
        let raw = match std::fs::read(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if raw.len() < 40 || &raw[..8] != MAGIC {
            bail!("{} is not a store item (foreign or truncated file; move it away)", path.display());
        }
        let payload = &raw[40..];
        if ring::digest::digest(&ring::digest::SHA256, payload).as_ref() != &raw[8..40] {
            bail!("{} fails its checksum (corrupted on disk; restore it from a backup or delete it)", path.display());
        }
        Ok(Some(payload.to_vec()))
    }

    /// Names of the items of `kind`, sorted.
    pub fn list(&self, kind: &str) -> anyhow::Result<Vec<String>> {
        check_component(kind, "kind")?;
        let dir = self.root.join(kind);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut names = Vec::new();
        for e in entries {
            let name = e?.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_replace_list_and_reject_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get("shares", "a").unwrap(), None);
        s.put("shares", "a", b"one").unwrap();
        s.put("shares", "a", b"two").unwrap();
        s.put("shares", "b", b"").unwrap();
        assert_eq!(s.get("shares", "a").unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(s.list("shares").unwrap(), ["a", "b"]);
        let path = dir.path().join("shares/a");
        let mut raw = std::fs::read(&path).unwrap();
        *raw.last_mut().unwrap() ^= 1;
        std::fs::write(&path, raw).unwrap();
        let e = s.get("shares", "a").unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains("shares/a"), "{e}");
        assert!(s.put("shares", "../x", b"").is_err() && s.put("..", "x", b"").is_err());
    }

    #[test]
    fn leftover_temporary_files_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
        std::fs::write(dir.path().join("jobs/.tmp-x.1.0"), b"half").unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(!dir.path().join("jobs/.tmp-x.1.0").exists());
        assert!(s.list("jobs").unwrap().is_empty());
    }
}
