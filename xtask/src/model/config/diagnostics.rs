//! What is wrong in `ports.toml`, said where it is (`file:line:col`) and in
//! the words of the file, not of the Rust types serde reads it into.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The text of `ports.toml`, or an error at its first byte that is not UTF-8.
pub fn decode(bytes: Vec<u8>) -> Result<String, Errors> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let mut bytes = e.into_bytes();
        let message = format!("the byte 0x{:02x} is not UTF-8: save ports.toml as UTF-8", bytes[valid]);
        bytes.truncate(valid);
        let text = String::from_utf8(bytes).expect("valid up to there");
        Errors { text, errors: vec![(valid..valid, message)], path: None }
    })
}

/// Errors found in `ports.toml`, each with its place in the text.
#[derive(Debug)]
pub struct Errors {
    text: String,
    errors: Vec<(Range<usize>, String)>,
    path: Option<PathBuf>,
}

impl Errors {
    /// The errors found in `text`, each at its span, in the order of the text.
    pub(super) fn new(text: &str, mut errors: Vec<(Range<usize>, String)>) -> Errors {
        errors.sort_by_key(|(span, _)| span.start);
        Errors { text: text.to_owned(), errors, path: None }
    }
}

impl Errors {
    pub fn with_path(mut self, path: &Path) -> Errors {
        self.path = Some(path.to_path_buf());
        self
    }

    /// `(line, column)` of each error, 1-based, with its message; for tests.
    pub fn located(&self) -> Vec<(usize, usize, &str)> {
        let lines = Lines::of(&self.text);
        self.errors
            .iter()
            .map(|(span, msg)| {
                let (line, col) = lines.place(&self.text, span.start);
                (line, col, msg.as_str())
            })
            .collect()
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.as_deref().unwrap_or(Path::new("ports.toml"));
        for (i, (line, col, msg)) in self.located().into_iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{line}:{col}: {msg}", path.display())?;
        }
        write!(f, "\nnothing was started or written: fix ports.toml and run the command again")
    }
}

impl std::error::Error for Errors {}

/// Where each line of a text starts: a place in it is found without
/// reading the text from its start each time (for each service of a file
/// of thousands, that took seconds).
pub(super) struct Lines(Vec<usize>);

impl Lines {
    pub(super) fn of(text: &str) -> Lines {
        Lines(std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect())
    }

    /// The line and column (in characters) of byte `offset`, 1-based.
    pub(super) fn place(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let line = self.0.partition_point(|start| *start <= offset);
        (line, text[self.0[line - 1]..offset].chars().count() + 1)
    }
}

/// toml says only "duplicate key": name it, and where it was first written
/// when an earlier line of its table starts the same way.
pub(super) fn duplicate_key(text: &str, span: &Range<usize>) -> String {
    let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    // `port`, `env.X`, or `[services.api` for a table defined twice.
    let written = text[line_start..span.end].trim_start();
    let header = written.starts_with('[');
    let ends: &[char] = if header { &[']', ' ', '\t'] } else { &['=', '.', ' ', '\t'] };
    let mut end = line_start;
    let first = text[..line_start]
        .split_inclusive('\n')
        .rev()
        .map(|line| {
            end -= line.len();
            (end + line.len() - line.trim_start().len(), line.trim_start())
        })
        .take_while(|(_, line)| header || !line.starts_with('['))
        .find(|(_, line)| line.strip_prefix(written).is_some_and(|rest| rest.starts_with(ends)));
    match first {
        Some((at, _)) => {
            let (line, col) = Lines::of(text).place(text, at);
            format!("{} is defined twice, first at {line}:{col}: keep one", written.trim_start_matches('['))
        }
        None => format!("{} is defined twice: keep one", &text[span.clone()]),
    }
}

/// serde's words for a value of the wrong type name Rust types (`i64`, `a
/// sequence`, `integer as i128`): say instead which key, what is written
/// there, and what to write.
pub(super) fn wrong_type(text: &str, e: &toml::de::Error, span: &Range<usize>) -> Option<String> {
    let message = e.message();
    let wrong = message.strip_prefix("invalid type: ").or_else(|| message.strip_prefix("invalid value: "))?;
    let expected = match wrong.rsplit_once(", expected ")?.1 {
        // Every whole number of ports.toml is a port or a count of ports.
        "i64" => "a whole number from 1 to 65535",
        "f64" => "a number",
        "a sequence" => "an array",
        "a map" => "a table",
        other => other,
    };
    // toml keeps the key's path private, but shows it when it has no source to quote.
    let mut bare = e.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    let key = shown.lines().find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))?;
    let written = text.get(span.clone())?.lines().next()?;
    if written.starts_with("[[") {
        return Some(format!("[[{key}]] makes {key} an array of tables, but it must be one table: write [{key}]"));
    }
    let subject =
        if text[..span.start].trim_end().ends_with('=') { key.to_owned() } else { format!("an item of {key}") };
    Some(format!("{subject} is {written}, but must be {expected}"))
}
