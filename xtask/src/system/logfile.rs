//! The services' logs (`.logs/`): their last lines, and what is appended
//! to them, read in bounded memory however big they grow.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A line longer than this is shown in pieces: a service may never end its
/// line (progress redrawn with `\r`), and a line is held whole until shown.
const MAX_LINE: usize = 64 << 10;

/// The last `n` lines of a log (none if it does not exist). Only its end is
/// read: the dashboard asks every second, and a log may be gigabytes.
pub fn last_lines(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return Vec::new();
    };
    last_lines_before(&mut file, n, len)
}

/// The last `n` lines of a log that contain `text` (none if it does not
/// exist). The whole log is read, a chunk at a time, up to where it ended
/// when asked; only `n` lines are kept.
pub fn last_lines_containing(path: &Path, n: usize, text: &str) -> Vec<String> {
    let mut found = VecDeque::new();
    let mut keep = |line: String| {
        if n > 0 && line.contains(text) {
            if found.len() == n {
                found.pop_front();
            }
            found.push_back(line);
        }
    };
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let end = file.metadata().map_or(0, |m| m.len());
    let mut cursor = Cursor::default();
    while cursor.offset < end {
        let before = cursor.offset;
        let Ok(lines) = cursor.read_new(&mut file) else { break };
        lines.into_iter().for_each(&mut keep);
        if cursor.offset == before {
            break; // cut shorter meanwhile
        }
    }
    // An unfinished last line counts, as in `last_lines`.
    if !cursor.pending.is_empty() {
        keep(String::from_utf8_lossy(&cursor.pending).into_owned());
    }
    found.into()
}

/// The last `n` lines of the first `until` bytes of a log.
pub fn last_lines_before(file: &mut File, n: usize, until: u64) -> Vec<String> {
    // n lines of MAX_LINE, and the end of the line before them, fit in this.
    let most = (n as u64).saturating_add(1).saturating_mul(MAX_LINE as u64);
    let mut size = MAX_LINE as u64;
    loop {
        let Ok((from, end)) = read_end(file, until, size) else {
            return Vec::new();
        };
        let (mut lines, used) = split(&end);
        if used < end.len() {
            lines.push(String::from_utf8_lossy(&end[used..]).into_owned());
        }
        // The first line read may have begun before `from`.
        if lines.len() > n || from == 0 || size >= most {
            return lines.split_off(lines.len().saturating_sub(n));
        }
        size *= 2;
    }
}

/// The `size` bytes of a file before `until`, and where they start.
fn read_end(file: &mut File, until: u64, size: u64) -> std::io::Result<(u64, Vec<u8>)> {
    let from = until.saturating_sub(size);
    file.seek(SeekFrom::Start(from))?;
    let mut end = Vec::new();
    file.take(until - from).read_to_end(&mut end)?;
    Ok((from, end))
}

/// The lines in `bytes`, non-UTF-8 bytes replaced, those longer than
/// MAX_LINE cut, and how many bytes they take: after them is an unfinished
/// line shorter than MAX_LINE.
fn split(bytes: &[u8]) -> (Vec<String>, usize) {
    let mut lines = Vec::new();
    let mut used = 0;
    loop {
        let rest = &bytes[used..];
        // Only as far as a line can go, so that a long line is not searched again for each piece.
        let (line, len) = match rest.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') {
            Some(i) => (rest[..i].strip_suffix(b"\r").unwrap_or(&rest[..i]), i + 1),
            None if rest.len() > MAX_LINE => (&rest[..MAX_LINE], MAX_LINE),
            None => return (lines, used),
        };
        lines.push(String::from_utf8_lossy(line).into_owned());
        used += len;
    }
}

pub fn indented(lines: &[String]) -> String {
    if lines.is_empty() {
        return "  (no output)".into();
    }
    lines.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

/// How many bytes before its offset a cursor remembers, to notice a log that
/// was rewritten rather than appended to.
const TAIL: usize = 64;

/// At most this much of a log is read at a time, so that a burst is printed
/// in bounded memory.
const CHUNK: u64 = 1 << 20;

/// How far a followed log has been read.
#[derive(Debug, Default)]
pub struct Cursor {
    pub offset: u64,
    /// Device and inode of the file read: a restart may make a new one.
    id: Option<(u64, u64)>,
    /// The bytes just before `offset`.
    tail: Vec<u8>,
    /// The start of an unfinished line, read up to `offset`: shown once it
    /// ends or grows past MAX_LINE.
    pending: Vec<u8>,
}

impl Cursor {
    /// Past what a log holds now, so that only what is appended is printed.
    pub fn at_end(path: &Path) -> Cursor {
        let mut cursor = Cursor::default();
        if let Ok(mut file) = File::open(path)
            && let Ok(meta) = file.metadata()
        {
            // Only the end: an unfinished last line is kept, as much of it as
            // MAX_LINE allows, to be shown whole once it ends, as if the log had
            // been followed from the start.
            cursor.offset = meta.len().saturating_sub(MAX_LINE as u64);
            cursor.id = Some((meta.dev(), meta.ino()));
            let _ = cursor.read_new(&mut file);
        }
        cursor
    }

    /// Where the last finished line read ends.
    pub fn finished(&self) -> u64 {
        self.offset - self.pending.len() as u64
    }

    /// The lines appended since the last call, as `split` cuts them, from at
    /// most CHUNK bytes. A log that was replaced, truncated or rewritten (a
    /// service restarted) is read again from its beginning.
    pub fn read_new(&mut self, file: &mut File) -> std::io::Result<Vec<String>> {
        let meta = file.metadata()?;
        let id = Some((meta.dev(), meta.ino()));
        if self.id != id || meta.len() < self.offset || !self.tail_matches(file)? {
            *self = Cursor { id, ..Cursor::default() };
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut new = Vec::new();
        file.take(CHUNK).read_to_end(&mut new)?;
        self.offset += new.len() as u64;
        self.tail.extend_from_slice(&new[new.len().saturating_sub(TAIL)..]);
        self.tail.drain(..self.tail.len().saturating_sub(TAIL));
        self.pending.extend_from_slice(&new);
        let (lines, used) = split(&self.pending);
        self.pending.drain(..used);
        Ok(lines)
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
    use std::io::Write;

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

    /// Bytes this thread has read so far: how much of a log a call reads.
    fn bytes_read() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines().find_map(|l| l.strip_prefix("rchar: ")).unwrap().parse().unwrap()
    }

    fn reading<T>(f: impl FnOnce() -> T) -> (T, u64) {
        let before = bytes_read();
        let result = f();
        (result, bytes_read() - before)
    }

    /// `count` numbered lines, 12 bytes each.
    fn numbered(count: usize) -> Vec<u8> {
        (0..count).flat_map(|i| format!("line {i:06}\n").into_bytes()).collect()
    }

    #[test]
    fn last_lines_reads_only_the_end() {
        let log = Log::new();
        log.append(&numbered(400_000));
        let (lines, read) = reading(|| last_lines(&log.path, 2));
        assert_eq!(lines, ["line 399998", "line 399999"]);
        assert!(read <= 2 * MAX_LINE as u64, "read {read} bytes for 2 lines");
    }

    #[test]
    fn last_lines_cuts_a_huge_line() {
        let log = Log::new();
        log.append(b"before\n");
        log.append(&vec![b'x'; 4 << 20]);
        log.append(b"\nlast");
        let (lines, read) = reading(|| last_lines(&log.path, 3));
        assert_eq!(lines.len(), 3);
        // Cut where the reading began, not where the line did.
        assert!(lines[..2].iter().all(|l| l.len() <= MAX_LINE && l.bytes().all(|b| b == b'x')));
        assert_eq!(lines[2], "last");
        assert!(read <= 8 * MAX_LINE as u64, "read {read} bytes for 3 lines");
    }

    #[test]
    fn last_lines_of_a_short_log() {
        let log = Log::new();
        assert!(last_lines(&log.path, 5).is_empty());
        log.append(b"a\r\nb\n\nc");
        assert_eq!(last_lines(&log.path, 10), ["a", "b", "", "c"]);
        assert_eq!(last_lines(&log.path, 2), ["", "c"]);
        assert!(last_lines(&log.path, 0).is_empty());
        assert_eq!(last_lines(&log.path, usize::MAX), ["a", "b", "", "c"]);
    }

    #[test]
    fn the_last_lines_containing_a_text() {
        let log = Log::new();
        assert!(last_lines_containing(&log.path, 5, "x").is_empty());
        log.append(b"GET /a 200\nPOST /b 500\nGET /c 404\r\nstarted\nGET /d 200\nGET /e");
        let cases: [(usize, &str, &[&str]); 6] = [
            (2, "GET", &["GET /d 200", "GET /e"]),
            (10, "GET", &["GET /a 200", "GET /c 404", "GET /d 200", "GET /e"]),
            (10, " 200", &["GET /a 200", "GET /d 200"]),
            (3, "", &["started", "GET /d 200", "GET /e"]),
            (0, "GET", &[]),
            (5, "DELETE", &[]),
        ];
        for (n, text, want) in cases {
            assert_eq!(last_lines_containing(&log.path, n, text), want, "{n} lines containing {text:?}");
        }
    }

    #[test]
    fn the_last_lines_containing_a_text_are_found_past_many_chunks() {
        let log = Log::new();
        log.append(b"needle first\n");
        log.append(&numbered(300_000)); // 3.6 MB: several chunks
        log.append(b"needle last\n");
        assert_eq!(last_lines_containing(&log.path, 5, "needle"), ["needle first", "needle last"]);
        assert_eq!(last_lines_containing(&log.path, 2, "line 2999"), ["line 299998", "line 299999"]);
    }

    #[test]
    fn an_unfinished_line_is_read_once() {
        let log = Log::new();
        let mut cursor = Cursor::default();
        log.append(&b"50%\r".repeat(10_000));
        assert!(log.read(&mut cursor).is_empty());
        let (lines, read) = reading(|| log.read(&mut cursor));
        assert!(lines.is_empty());
        assert!(read < 1024, "read {read} bytes again");
        log.append(b"done\n");
        assert_eq!(log.read(&mut cursor), [format!("{}done", "50%\r".repeat(10_000))]);
    }

    #[test]
    fn a_line_without_end_is_shown_in_pieces() {
        let log = Log::new();
        let mut cursor = Cursor::default();
        log.append(&vec![b'x'; 3 * MAX_LINE + 10]);
        let pieces = log.read(&mut cursor);
        assert_eq!(pieces.iter().map(String::len).collect::<Vec<_>>(), [MAX_LINE; 3]);
        log.append(b"y\n");
        assert_eq!(log.read(&mut cursor), ["xxxxxxxxxxy"]);
    }

    #[test]
    fn a_burst_is_read_a_chunk_at_a_time() {
        let log = Log::new();
        let mut cursor = Cursor::default();
        log.append(&numbered(300_000));
        let (first, read) = reading(|| log.read(&mut cursor));
        assert!(read < CHUNK + 1024, "read {read} bytes at once");
        let mut count = first.len();
        loop {
            let lines = log.read(&mut cursor);
            if lines.is_empty() {
                break;
            }
            count += lines.len();
        }
        assert_eq!(count, 300_000);
    }

    #[test]
    fn starts_by_reading_only_the_end() {
        let log = Log::new();
        log.append(&numbered(400_000));
        log.append(b"half");
        let (mut cursor, read) = reading(|| Cursor::at_end(&log.path));
        assert!(read <= 2 * MAX_LINE as u64, "read {read} bytes");
        let tail = last_lines_before(&mut File::open(&log.path).unwrap(), 2, cursor.finished());
        assert_eq!(tail, ["line 399998", "line 399999"], "the unfinished line is shown before it ends");
        log.append(b" line\n");
        assert_eq!(log.read(&mut cursor), ["half line"]);
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
    fn a_tail_ends_where_following_starts() {
        let log = Log::new();
        log.append(b"one\ntwo\n");
        let mut cursor = Cursor::at_end(&log.path);
        // Written after following began, before the tail is read: shown by the following only.
        log.append(b"three\n");
        let tail = last_lines_before(&mut File::open(&log.path).unwrap(), 50, cursor.offset);
        assert_eq!(tail, ["one", "two"]);
        assert_eq!(log.read(&mut cursor), ["three"]);
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
