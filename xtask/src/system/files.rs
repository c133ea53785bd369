//! Atomic writes and file locks, shared by every file the runner generates:
//! a reader never sees half a file, and two runners never interleave.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};

/// Writes `contents` to a temporary file in the same folder, flushes it to
/// disk, then renames it over `path`: the old or the new file, never a mix.
pub fn write_atomic(path: &Path, contents: &str) -> anyhow::Result<()> {
    write_all_atomic(&[(path.to_path_buf(), contents.to_owned())])
}

/// `write_atomic` for files that must agree with each other: every one is
/// staged in full before any is renamed into place, so a failure (a folder
/// we may not write, a full disk) changes none of them.
pub fn write_all_atomic(files: &[(PathBuf, String)]) -> anyhow::Result<()> {
    let mut staged = Staged(Vec::new());
    for (path, contents) in files {
        staged.0.push(stage(path, contents, Kind::Durable)?);
    }
    staged.commit()
}

/// `write_atomic` without waiting for the disk, for the record of a process
/// just started: it means nothing after a reboot, and until it is written a
/// crash of the runner would leave the process unknown (a flush took about
/// 1 ms here, much longer on a busy disk).
pub fn write_record(path: &Path, contents: &str) -> anyhow::Result<()> {
    Staged(vec![stage(path, contents, Kind::Record)?]).commit()
}

/// `write_record` for what only this user may read (a secret), whatever the
/// umask or an older file allowed.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    Staged(vec![stage(path, contents, Kind::Private)?]).commit()
}

/// How a file is written: flushed to disk or not, and who may read it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Durable,
    Record,
    Private,
}

/// Temporary files written in full, each beside the file it is to replace.
/// Dropped before `commit`, they are removed: nothing has changed.
struct Staged(Vec<(PathBuf, PathBuf)>);

impl Staged {
    /// Renames each temporary over its file. A rename in one folder fails
    /// only if the folder changed since staging, or a file may not be
    /// replaced (immutable): asked of every file before the first rename.
    fn commit(mut self) -> anyhow::Result<()> {
        check_writable(&[], &self.0.iter().map(|(_, target)| target.clone()).collect::<Vec<_>>())?;
        for (tmp, target) in &self.0 {
            fs::rename(tmp, target).map_err(|e| explain(e, target))?;
        }
        self.0.clear();
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.0 {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Writes the temporary file for `path`; returns it and the file it replaces.
/// A symlink is written through (the link stays, its target gets the new
/// text), and the new file keeps the old one's permissions (a private file
/// stays private).
fn stage(path: &Path, contents: &str, kind: Kind) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = path.parent().context("a file to write has no folder")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = follow_links(path)?;
    let name = target.file_name().context("a file to write has no name")?.to_string_lossy();
    let tmp = target.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let old = match kind {
        Kind::Private => Some(fs::Permissions::from_mode(0o600)),
        _ => fs::metadata(&target).ok().map(|m| m.permissions()),
    };
    let result = (|| {
        // Never wider than the old file, even before its bits are copied (umask may narrow them).
        let mode = old.as_ref().map_or(0o666, |p| p.mode() & 0o7777);
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        if let Some(permissions) = &old {
            file.set_permissions(permissions.clone())?; // before the contents: a stale temporary keeps its mode
        }
        file.write_all(contents.as_bytes())?;
        if kind == Kind::Durable {
            file.sync_all()?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok((tmp, target)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(explain(e, &target))
        }
    }
}

/// The file a write to `path` lands in: `path` with its symlinks followed,
/// even to a target that does not exist yet.
fn follow_links(path: &Path) -> anyhow::Result<PathBuf> {
    let mut target = path.to_path_buf();
    for _ in 0..40 {
        match fs::read_link(&target) {
            // Relative to the link's folder; `join` keeps an absolute one as it is.
            Ok(link) => target = target.parent().unwrap_or(Path::new("")).join(link),
            Err(_) => return Ok(target),
        }
    }
    anyhow::bail!("writing {}: too many levels of symlinks: fix the link", path.display())
}

/// An error writing `target`, saying what to do when the fix is plain.
fn explain(e: std::io::Error, target: &Path) -> anyhow::Error {
    let dir = target.parent().unwrap_or(Path::new("/"));
    match e.kind() {
        _ if is_refusal(&e) => anyhow!("writing {}: {e}: {}", target.display(), remedy(&e)),
        ErrorKind::PermissionDenied => anyhow!(
            "writing {}: {e}\nthis user may not create files in {}: {}",
            target.display(),
            dir.display(),
            remedy(&e)
        ),
        _ => anyhow!("writing {}: {e}", target.display()),
    }
}

/// A write refused whatever the permissions say: an immutable file or
/// folder, a read-only mount.
fn is_refusal(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::ReadOnlyFilesystem || e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error())
}

fn remedy(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::ReadOnlyFilesystem => "mount it writable",
        _ if is_refusal(e) => "it may be immutable (lsattr shows it; chattr -i undoes it)",
        _ => "fix its permissions (or owner)",
    }
}

/// That this user may create files in each of `dirs` (or, for one not made
/// yet, in the folder it would be made in) and replace each of `files` (in
/// the folder a symlink leads to): a command asks before it stops or kills
/// anything, since a write that failed after would leave things so.
pub fn check_writable(dirs: &[PathBuf], files: &[PathBuf]) -> anyhow::Result<()> {
    use rustix::fs::{Access, access};
    use rustix::io::Errno;
    let files = files.iter().map(|f| follow_links(f)).collect::<anyhow::Result<Vec<_>>>()?;
    let folders = files.iter().filter_map(|f| f.parent().map(Path::to_path_buf));
    for dir in dirs.iter().cloned().chain(folders) {
        let existing = dir.ancestors().find(|d| fs::symlink_metadata(d).is_ok()).unwrap_or(Path::new("/"));
        if !existing.is_dir() {
            anyhow::bail!("{} is not a folder: the runner keeps files in it; move it away", existing.display());
        }
        if let Err(e) = access(existing, Access::WRITE_OK | Access::EXEC_OK) {
            let e = std::io::Error::from(e);
            anyhow::bail!("{}: {e}\nthis user may not create files in it: {}", existing.display(), remedy(&e));
        }
    }
    for file in &files {
        if file.is_dir() {
            anyhow::bail!("{} is a folder, where the runner writes a file: move it away", file.display());
        }
        // A file without write permission is replaced all the same (by a
        // rename); one that is immutable, or on a read-only mount, is not.
        if let Err(e @ (Errno::PERM | Errno::ROFS)) = access(file, Access::WRITE_OK) {
            return Err(explain(e.into(), file));
        }
    }
    Ok(())
}

/// That a write to each of `files`, files of the checkout at `root` that the
/// runner rewrites, lands in the checkout. A file there may be a symbolic
/// link, written through (a checkout that keeps them in a folder of its
/// own); one that leads out of the checkout is refused, or the write would
/// replace a file that is not the checkout's (someone's `.env`). In the
/// checkout means: the folder the write lands in (the link followed to its
/// end, to a file that may not exist yet), with every link on the way
/// resolved, is the root, resolved likewise, or below it.
pub fn check_inside(root: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let root = fs::canonicalize(root).with_context(|| format!("resolving {}", root.display()))?;
    for file in files {
        let target = follow_links(file)?;
        let name = target.file_name().context("a file to write has no name")?;
        let folder = target.parent().unwrap_or(Path::new("/"));
        let folder = fs::canonicalize(folder).map_err(|e| {
            anyhow!("{} is a symbolic link to {}: {e}: fix the link, or remove it", file.display(), target.display())
        })?;
        if !folder.starts_with(&root) {
            anyhow::bail!(
                "{} is a symbolic link to {}, outside the checkout {}: the runner rewrites it, and would replace \
                 that file; nothing was changed: remove the link (the runner then writes a file of its own \
                 there), or point it at a file inside the checkout",
                file.display(),
                folder.join(name).display(),
                root.display()
            );
        }
    }
    Ok(())
}

/// Reads a text file that may not exist yet (a byte-order mark, which some
/// editors write, is skipped).
pub fn read_optional(path: &Path) -> anyhow::Result<Option<String>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(text))),
        Err(e) => {
            let before = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let col = before.len() - before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) + 1;
            anyhow::bail!("{}:{line}:{col}: not UTF-8 text: fix it, or delete the file", path.display())
        }
    }
}

/// Whether the file at `path` holds exactly `text` (one that does not
/// exist, or holds bytes that are not text, does not).
pub fn holds(path: &Path, text: &str) -> bool {
    fs::read(path).is_ok_and(|old| old == text.as_bytes())
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

/// Removes folder `dir`, which a command that failed made, if nothing in it
/// is in use: it holds only `files` (its locks, dev's guard log), and no one
/// holds them. They are removed while held here, so that whoever waits for
/// one takes the new one (`Lock`). The checkout is then as the command
/// found it.
pub fn remove_unused(dir: &Path, files: &[PathBuf]) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut held = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        match files.contains(&path).then(|| Lock::try_acquire(&path)) {
            Some(Ok(Some(lock))) => held.push((path, lock)),
            _ => return,
        }
    }
    for (path, _) in &held {
        let _ = fs::remove_file(path);
    }
    let _ = fs::remove_dir(dir); // not if someone wrote in it meanwhile
}

/// An exclusive lock on a file, held until dropped (the kernel releases it
/// if the process dies, so a crash never leaves it stuck).
#[must_use = "the lock is released when dropped"]
pub struct Lock(File);

impl Lock {
    pub fn acquire(path: &Path) -> anyhow::Result<Lock> {
        loop {
            let file = Lock::open(path)?;
            file.lock().with_context(|| format!("locking {}", path.display()))?;
            if Lock::still_at(&file, path) {
                return Ok(Lock(file));
            }
        }
    }

    /// `acquire`, saying `waiting` first if someone else holds it.
    pub fn acquire_saying(path: &Path, waiting: &str) -> anyhow::Result<Lock> {
        if let Some(lock) = Lock::try_acquire(path)? {
            return Ok(lock);
        }
        eprintln!("{waiting}");
        Lock::acquire(path)
    }

    /// `acquire`, or `None` at once if someone else holds it.
    pub fn try_acquire(path: &Path) -> anyhow::Result<Option<Lock>> {
        Lock::try_with(path, File::try_lock)
    }

    /// A shared hold of it, which others may hold too, or `None` at once if
    /// someone holds it exclusively.
    pub fn try_acquire_shared(path: &Path) -> anyhow::Result<Option<Lock>> {
        Lock::try_with(path, File::try_lock_shared)
    }

    fn try_with(path: &Path, lock: fn(&File) -> Result<(), fs::TryLockError>) -> anyhow::Result<Option<Lock>> {
        loop {
            let file = Lock::open(path)?;
            match lock(&file) {
                Ok(()) if Lock::still_at(&file, path) => return Ok(Some(Lock(file))),
                Ok(()) => {} // its file went meanwhile: again, on the one there now
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()));
                }
            }
        }
    }

    /// Whether `path` still names the locked `file`. A command that fails
    /// removes the lock files it made (`remove_unused`), and a lock on a file
    /// that no path names any more keeps no one out: it is taken again, on
    /// the file there now.
    fn still_at(file: &File, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), fs::metadata(path)) {
            (Ok(held), Ok(named)) => (held.dev(), held.ino()) == (named.dev(), named.ino()),
            _ => false,
        }
    }

    /// Says who holds it (in the lock file), for whoever finds it held.
    pub fn say_holder(&self, holder: &str) -> anyhow::Result<()> {
        use std::io::Write;
        self.0.set_len(0).and_then(|()| (&self.0).write_all(holder.as_bytes())).context("writing a lock file")
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

    /// A fresh folder for one test.
    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_where_it_goes_wrong() {
        let dir = folder("utf8");
        let path = dir.join("a.json");
        assert_eq!(read_optional(&path).unwrap(), None);
        fs::write(&path, b"{\n  \"api\xff\": 1\n}").unwrap();
        let error = read_optional(&path).unwrap_err().to_string();
        assert_eq!(error, format!("{}:2:7: not UTF-8 text: fix it, or delete the file", path.display()));
        fs::write(&path, "\u{feff}{}").unwrap();
        assert_eq!(read_optional(&path).unwrap().as_deref(), Some("{}"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn holds_only_what_it_holds_exactly() {
        let dir = folder("holds");
        let path = dir.join(".env.runtime");
        assert!(!holds(&path, "A_PORT=8000\n"), "missing");
        fs::write(&path, "A_PORT=8000\n").unwrap();
        assert!(holds(&path, "A_PORT=8000\n"));
        assert!(!holds(&path, "A_PORT=8001\n"));
        fs::write(&path, b"A_PORT=8000\xff\n").unwrap();
        assert!(!holds(&path, "A_PORT=8000\n"), "bytes that are not text");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = folder("replace");
        let path = dir.join("a.json");
        write_atomic(&path, "one").unwrap();
        write_atomic(&path, "two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(names(&dir), ["a.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writes_through_a_symlink_and_keeps_the_permissions() {
        let dir = folder("link");
        fs::create_dir(dir.join("shared")).unwrap();
        let target = dir.join("shared/a.json");
        fs::write(&target, "one").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("shared/a.json", dir.join("a.json")).unwrap();
        write_atomic(&dir.join("a.json"), "two").unwrap();
        assert!(fs::symlink_metadata(dir.join("a.json")).unwrap().is_symlink(), "the link was replaced");
        assert_eq!(fs::read_to_string(&target).unwrap(), "two");
        assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(names(&dir.join("shared")), ["a.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_through_a_link_must_land_inside_the_checkout() {
        use std::os::unix::fs::symlink;
        let dir = folder("inside");
        let root = dir.join("checkout");
        fs::create_dir_all(root.join("kept")).unwrap();
        fs::create_dir(dir.join("elsewhere")).unwrap();
        fs::write(root.join("plain"), "").unwrap();
        let links = [
            ("out", PathBuf::from("../elsewhere")), // a folder
            ("up", dir.clone()),                    // a folder
            ("kept-link", "kept/a".into()),
            ("absolute", root.join("kept/b")),
            ("climbs-back", "up/checkout/kept/c".into()),
            ("chain", "kept-link".into()),
            ("relative", "../elsewhere/secrets.env".into()),
            ("through-a-folder-link", "out/secrets.env".into()),
            ("absolute-out", dir.join("elsewhere/x")),
            ("chain-out", "relative".into()),
            ("dangling", "missing/x".into()),
        ];
        for (name, link) in &links {
            symlink(link, root.join(name)).unwrap();
        }
        symlink(&root, dir.join("via")).unwrap();
        for name in ["plain", "new", "kept-link", "absolute", "climbs-back", "chain"] {
            check_inside(&root, &[root.join(name)]).unwrap_or_else(|e| panic!("{name}: {e}"));
            // The root reached through a link is the same checkout.
            check_inside(&dir.join("via"), &[dir.join("via").join(name)]).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let out = fs::canonicalize(dir.join("elsewhere")).unwrap();
        for name in ["relative", "through-a-folder-link", "absolute-out", "chain-out"] {
            let e = check_inside(&root, &[root.join("plain"), root.join(name)]).unwrap_err().to_string();
            let link = format!("{} is a symbolic link to {}/", root.join(name).display(), out.display());
            assert!(e.starts_with(&link) && e.contains("outside the checkout"), "{name}: {e}");
            assert!(e.contains("nothing was changed: remove the link"), "{name}: {e}");
        }
        let e = check_inside(&root, &[root.join("dangling")]).unwrap_err().to_string();
        assert!(e.contains("No such file or directory") && e.contains("fix the link"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_cannot_be_staged_leaves_every_file_as_it_was() {
        let dir = folder("all");
        fs::write(dir.join("a.json"), "old").unwrap();
        fs::write(dir.join("not-a-folder"), "").unwrap();
        let files = [(dir.join("a.json"), "new".to_owned()), (dir.join("not-a-folder/b.json"), "new".to_owned())];
        assert!(write_all_atomic(&files).is_err());
        assert_eq!(fs::read_to_string(dir.join("a.json")).unwrap(), "old");
        assert_eq!(names(&dir), ["a.json", "not-a-folder"], "a temporary file was left");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// One who waited for a lock whose file was removed meanwhile (by a
    /// failed command, `remove_unused`) takes it again, on the file there
    /// now: a lock on a removed file would keep no one out.
    #[test]
    fn a_lock_whose_file_went_while_waited_for_is_taken_on_the_new_one() {
        let dir = folder("relock");
        let path = dir.join("launch.lock");
        let first = Lock::acquire(&path).unwrap();
        let waiting = std::thread::spawn({
            let path = path.clone();
            move || Lock::acquire(&path).unwrap()
        });
        std::thread::sleep(std::time::Duration::from_millis(200)); // it waits on the file
        fs::remove_file(&path).unwrap();
        drop(first);
        let second = waiting.join().unwrap();
        assert!(Lock::try_acquire(&path).unwrap().is_none(), "two hold the lock at once");
        drop(second);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_is_taken_back_only_if_nothing_in_it_is_in_use() {
        let dir = folder("unused");
        let (lock, log) = (dir.join("dev.lock"), dir.join("guard.log"));
        fs::write(&log, "").unwrap();
        let held = Lock::acquire(&lock).unwrap();
        remove_unused(&dir, &[lock.clone(), log.clone()]);
        assert_eq!(names(&dir), ["dev.lock", "guard.log"], "a lock in use went");
        drop(held);
        fs::write(dir.join("a.json"), "{}").unwrap();
        remove_unused(&dir, &[lock.clone(), log.clone()]);
        assert_eq!(names(&dir), ["a.json", "dev.lock", "guard.log"], "a folder with a record went");
        fs::remove_file(dir.join("a.json")).unwrap();
        remove_unused(&dir, &[lock, log]);
        assert!(!dir.exists());
    }

    /// What only root may do here: make a file immutable.
    mod needs_root {
        use super::*;

        #[test]
        #[ignore = "needs root: `cargo xtask test` runs it as root"]
        fn a_file_that_may_not_be_replaced_leaves_every_file_as_it_was() {
            let dir = folder("immutable");
            fs::write(dir.join("a.json"), "old").unwrap();
            fs::write(dir.join("b.json"), "old").unwrap();
            let chattr = |flag| std::process::Command::new("chattr").arg(flag).arg(dir.join("b.json")).status();
            assert!(
                chattr("+i").is_ok_and(|s| s.success()),
                "chattr +i needs root, and a file system that has the flag"
            );
            let files = [(dir.join("a.json"), "new".to_owned()), (dir.join("b.json"), "new".to_owned())];
            let result = write_all_atomic(&files);
            chattr("-i").unwrap();
            let e = result.unwrap_err().to_string();
            assert!(e.contains("b.json") && e.contains("chattr -i"), "{e}");
            assert_eq!(fs::read_to_string(dir.join("a.json")).unwrap(), "old", "a file was replaced");
            assert_eq!(names(&dir), ["a.json", "b.json"], "a temporary file was left");
            fs::remove_dir_all(&dir).unwrap();
        }
    }
}
