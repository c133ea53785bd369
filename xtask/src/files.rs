//! Atomic writes and file locks, shared by every file the runner generates:
//! a reader never sees half a file, and two runners never interleave.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Writes `contents` to a temporary file in the same folder, flushes it to
/// disk, then renames it over `path`: the old or the new file, never a mix.
pub fn write_atomic(path: &Path, contents: &str) -> anyhow::Result<()> {
    replace(path, contents, true)
}

/// `write_atomic` without waiting for the disk, for the record of a process
/// just started: it means nothing after a reboot, and until it is written a
/// crash of the runner would leave the process unknown (a flush took about
/// 1 ms here, much longer on a busy disk).
pub fn write_record(path: &Path, contents: &str) -> anyhow::Result<()> {
    replace(path, contents, false)
}

fn replace(path: &Path, contents: &str, flush: bool) -> anyhow::Result<()> {
    let dir = path.parent().context("a file to write has no folder")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().context("a file to write has no name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(contents.as_bytes())?;
        if flush {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Reads a file that may not exist yet.
pub fn read_optional(path: &Path) -> anyhow::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Removes a file that may already be gone.
pub fn remove_optional(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// An exclusive lock on a file, held until dropped (the kernel releases it
/// if the process dies, so a crash never leaves it stuck).
#[must_use = "the lock is released when dropped"]
pub struct Lock(#[allow(dead_code)] File);

impl Lock {
    pub fn acquire(path: &Path) -> anyhow::Result<Lock> {
        let file = Lock::open(path)?;
        file.lock().with_context(|| format!("locking {}", path.display()))?;
        Ok(Lock(file))
    }

    /// `acquire`, saying `waiting` first if someone else holds it.
    pub fn acquire_saying(path: &Path, waiting: &str) -> anyhow::Result<Lock> {
        let file = Lock::open(path)?;
        let locked = match file.try_lock() {
            Err(fs::TryLockError::WouldBlock) => {
                eprintln!("{waiting}");
                file.lock()
            }
            Err(fs::TryLockError::Error(e)) => Err(e),
            Ok(()) => Ok(()),
        };
        locked.with_context(|| format!("locking {}", path.display()))?;
        Ok(Lock(file))
    }

    fn open(path: &Path) -> anyhow::Result<File> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("xtask-files-{}", std::process::id()));
        let path = dir.join("a.json");
        write_atomic(&path, "one").unwrap();
        write_atomic(&path, "two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["a.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
