//! `cargo xtask logs`: what services wrote to `.logs/`, optionally followed.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::ensure;

use crate::paths::Project;
use crate::term::say;

pub fn run(project: &Project, service: Option<&str>, follow: bool, lines: usize) -> anyhow::Result<()> {
    let config = crate::config::load(&project.ports_toml())?;
    let names: Vec<String> = match service {
        Some(name) => {
            ensure!(
                config.services.contains_key(name),
                "unknown service {name:?}: ports.toml has {}",
                config.names().join(", ")
            );
            vec![name.to_owned()]
        }
        None => config.order.clone(),
    };
    for name in &names {
        let path = project.log_file(name);
        if path.exists() {
            say!("==> {name} ({}) <==\n{}", path.display(), indented(&last_lines(&path, lines)));
        }
    }
    if follow {
        follow_files(project, &names)?;
    }
    Ok(())
}

/// The last `n` lines of a log (none if it does not exist).
pub fn last_lines(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect()
}

pub fn indented(lines: &[String]) -> String {
    if lines.is_empty() {
        return "  (no output)".into();
    }
    lines.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

/// Prints what is appended to the logs, prefixed, until interrupted. Logs are
/// files written by services that outlive us, so this polls them.
fn follow_files(project: &Project, names: &[String]) -> anyhow::Result<()> {
    let mut cursors: Vec<Cursor> = names.iter().map(|n| Cursor::at_end(&project.log_file(n))).collect();
    let width = names.iter().map(String::len).max().unwrap_or(0);
    loop {
        for (name, cursor) in names.iter().zip(cursors.iter_mut()) {
            let Ok(mut file) = File::open(project.log_file(name)) else {
                continue;
            };
            let lines = cursor.read_new(&mut file)?;
            let mut out = std::io::stdout().lock();
            for line in lines {
                writeln!(out, "{name:width$} | {line}")?;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many bytes before its offset a cursor remembers, to notice a log that
/// was rewritten rather than appended to.
const TAIL: usize = 64;

/// How far a followed log has been printed.
#[derive(Debug, Default)]
struct Cursor {
    offset: u64,
    /// Device and inode of the file read: a restart may make a new one.
    id: Option<(u64, u64)>,
    /// The bytes just before `offset`.
    tail: Vec<u8>,
}

impl Cursor {
    /// Past what a log holds now, so that only what is appended is printed.
    fn at_end(path: &Path) -> Cursor {
        let mut cursor = Cursor::default();
        if let Ok(mut file) = File::open(path) {
            // Only complete lines, as if it had been followed from the start.
            let _ = cursor.read_new(&mut file);
        }
        cursor
    }

    /// The complete lines appended since the last call, non-UTF-8 bytes
    /// replaced. A log that was replaced, truncated or rewritten (a service
    /// restarted) is read again from its beginning.
    fn read_new(&mut self, file: &mut File) -> std::io::Result<Vec<String>> {
        let meta = file.metadata()?;
        let id = Some((meta.dev(), meta.ino()));
        if self.id != id || meta.len() < self.offset || !self.tail_matches(file)? {
            *self = Cursor { id, ..Cursor::default() };
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut new = Vec::new();
        file.read_to_end(&mut new)?;
        let complete = new.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete == 0 {
            return Ok(Vec::new());
        }
        self.offset += complete as u64;
        self.tail.extend_from_slice(&new[complete.saturating_sub(TAIL)..complete]);
        self.tail.drain(..self.tail.len().saturating_sub(TAIL));
        Ok(String::from_utf8_lossy(&new[..complete]).lines().map(str::to_owned).collect())
    }

    fn tail_matches(&self, file: &mut File) -> std::io::Result<bool> {
        let mut now = vec![0; self.tail.len()];
        file.seek(SeekFrom::Start(self.offset - self.tail.len() as u64))?;
        match file.read_exact(&mut now) {
            Ok(()) => Ok(now == self.tail),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs::OpenOptions;

    struct Log {
        path: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Log {
        fn new() -> Log {
            let dir = tempfile::tempdir().unwrap();
            Log { path: dir.path().join("a.log"), _dir: dir }
        }
        fn append(&self, bytes: &[u8]) {
            OpenOptions::new().create(true).append(true).open(&self.path).unwrap().write_all(bytes).unwrap();
        }
        /// As a restarted service does: `File::create`, the same inode emptied.
        fn truncate(&self, bytes: &[u8]) {
            File::create(&self.path).unwrap().write_all(bytes).unwrap();
        }
        fn read(&self, cursor: &mut Cursor) -> Vec<String> {
            cursor.read_new(&mut File::open(&self.path).unwrap()).unwrap()
        }
    }

    #[test]
    fn prints_complete_lines_only() {
        let log = Log::new();
        let mut cursor = Cursor::default();
        log.append(b"one\ntw");
        assert_eq!(log.read(&mut cursor), ["one"]);
        assert!(log.read(&mut cursor).is_empty());
        log.append(b"o\r\nthree\n");
        assert_eq!(log.read(&mut cursor), ["two", "three"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_split_characters_are_joined() {
        let log = Log::new();
        let mut cursor = Cursor::default();
        log.append(b"bad \xff byte\ncaf\xc3");
        assert_eq!(log.read(&mut cursor), ["bad \u{fffd} byte"]);
        log.append(b"\xa9\n");
        assert_eq!(log.read(&mut cursor), ["caf\u{e9}"]);
    }

    #[test]
    fn starts_at_the_end_of_what_is_there() {
        let log = Log::new();
        log.append(b"old\nhalf");
        let mut cursor = Cursor::at_end(&log.path);
        log.append(b" line\nnew\n");
        assert_eq!(log.read(&mut cursor), ["half line", "new"]);
    }

    #[test]
    fn a_truncated_log_is_read_from_its_beginning() {
        let log = Log::new();
        let mut cursor = Cursor::default();
        log.append(b"a long first line\n");
        log.read(&mut cursor);
        log.truncate(b"short\n");
        assert_eq!(log.read(&mut cursor), ["short"]);
        // Rewritten past where it was read, between two polls.
        log.truncate(b"restarted, and already longer\nthan before\n");
        assert_eq!(log.read(&mut cursor), ["restarted, and already longer", "than before"]);
    }

    #[test]
    fn a_replaced_log_is_read_from_its_beginning() {
        let log = Log::new();
        let mut cursor = Cursor::default();
        log.append(b"first\n");
        log.read(&mut cursor);
        // Kept, so that the new file cannot get the old one's inode.
        std::fs::rename(&log.path, log.path.with_extension("old")).unwrap();
        log.append(b"first\nsecond\n");
        assert_eq!(log.read(&mut cursor), ["first", "second"]);
    }
}
