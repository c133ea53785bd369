//! The terminal: colours (only on a terminal, never with NO_COLOR) and the
//! y/N question.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Style {
    colour: bool,
}

impl Style {
    pub fn stdout() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style { colour: !no_color && std::io::stdout().is_terminal() }
    }

    pub fn paint(self, code: &str, text: &str) -> String {
        if self.colour { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }
    pub fn green(self, text: &str) -> String {
        self.paint("32", text)
    }
    pub fn yellow(self, text: &str) -> String {
        self.paint("33", text)
    }
    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// Asks a yes/no question on the terminal; anything but y/yes is no.
pub fn confirm(question: &str) -> bool {
    flush(FLUSH_LIMIT); // after what was said before it
    let mut out = std::io::stdout();
    let _ = write!(out, "{question} [y/N] ").and_then(|()| out.flush());
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
}

/// `println!` that never panics: the terminal may be gone (SIGHUP, a closed
/// pipe) while services still have to be stopped.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::system::term::say_line(format!($($arg)*))
    };
}
pub(crate) use say;

/// How long the end of a command waits for what it said to be written.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(2);

enum Said {
    Line(String),
    Flush(Sender<()>),
}

/// Set by `say_from_a_thread`: the thread that writes what is said.
static WRITER: OnceLock<Sender<Said>> = OnceLock::new();

/// From now on, `say!` hands its lines to a thread that writes them, in
/// order: a runner stopping services must not wait for a terminal that does
/// not read (Ctrl-S, a pager that waits), which blocks a write to it.
pub fn say_from_a_thread() {
    WRITER.get_or_init(|| {
        let (sender, said) = channel();
        std::thread::spawn(move || {
            for message in said {
                match message {
                    Said::Line(line) => drop(writeln!(std::io::stdout(), "{line}")),
                    Said::Flush(done) => drop(done.send(())),
                }
            }
        });
        sender
    });
}

/// What `say!` does with a line.
pub fn say_line(line: String) {
    match WRITER.get() {
        Some(writer) => drop(writer.send(Said::Line(line))),
        None => drop(writeln!(std::io::stdout(), "{line}")),
    }
}

/// Waits, `limit` at most, for what was said to be written.
pub fn flush(limit: Duration) {
    if let Some(writer) = WRITER.get() {
        let (done, flushed) = channel();
        if writer.send(Said::Flush(done)).is_ok() {
            let _ = flushed.recv_timeout(limit);
        }
    }
}
