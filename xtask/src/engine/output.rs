//! What is said about services, and their output, on the terminal: each line
//! after the service's name, padded and in its colour (`backend  | ...`), as
//! dev shows their logs, and copies of their output to it and to their logs.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use crate::model::config::Config;
use crate::system::term::Style;

/// The longest line of output passed on whole; longer ones go in pieces.
const LONGEST_LINE: u64 = 64 * 1024;

/// How long a stopped service's output may take to reach the terminal and its
/// log: a process that left its group (and is not ours to stop) may keep the
/// pipe open.
pub const COPY_WAIT: Duration = Duration::from_secs(2);

/// How lines about the services of one `ports.toml` are shown.
#[derive(Debug, Clone)]
pub struct Printer {
    pub style: Style,
    width: usize,
    /// The services in dependency order: each has its colour by its place.
    order: Vec<String>,
}

impl Printer {
    pub fn new(config: &Config) -> Printer {
        let width = config.services.keys().map(String::len).max().unwrap_or(0);
        Printer { style: Style::stdout(), width, order: config.order.clone() }
    }

    /// For services no `ports.toml` names (or when it cannot be read):
    /// their names as they are.
    pub fn plain() -> Printer {
        Printer { style: Style::stdout(), width: 0, order: Vec::new() }
    }

    /// `backend  |`, in the service's colour: what comes before each line of
    /// its output, and what is said about it.
    pub fn prefix(&self, name: &str) -> String {
        const COLOURS: [&str; 6] = ["36", "35", "34", "33", "32", "31"];
        let prefix = format!("{name:width$} |", width = self.width);
        // A service no ports.toml names has no place, and no colour.
        match self.order.iter().position(|n| n == name) {
            Some(i) => self.style.paint(COLOURS[i % COLOURS.len()], &prefix),
            None => prefix,
        }
    }

    /// A line about a service: its prefix, then `message`, dimmed.
    pub fn line(&self, name: &str, message: &str) -> String {
        format!("{} {}", self.prefix(name), self.style.dim(message))
    }
}

/// Copies the output of a service (or of its set-up) to its `log` and, each
/// line after `prefix`, to `say`. The receiver returned closes when the
/// copy has ended.
pub fn copy_lines(reader: std::io::PipeReader, prefix: String, mut log: Option<File>, say: fn(String)) -> Receiver<()> {
    let (done, copied) = channel::<()>();
    std::thread::spawn(move || {
        let _done = done;
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        // A line is cut at LONGEST_LINE: output without newlines must not fill the memory.
        while matches!((&mut reader).take(LONGEST_LINE).read_until(b'\n', &mut line), Ok(n) if n > 0) {
            if let Some(log) = &mut log {
                let _ = log.write_all(&line);
            }
            say(format!("{prefix} {}", String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r'])));
            line.clear();
        }
    });
    copied
}

/// Waits, until `deadline` at most, for a copy of output to end.
pub fn copied(copy: Option<&Receiver<()>>, deadline: Instant) {
    if let Some(copy) = copy {
        let _ = copy.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}
