//! Waiting for a condition, or for a line of a child's output.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// How long a test waits for what comes soon (a service up, a process
/// gone): ample on a loaded machine, and waited out only when the test fails.
pub const LONG: Duration = Duration::from_secs(30);

/// Polls `done` every 20 ms (a check may run a command) until it holds or
/// `limit` passes: whether it held.
pub fn wait_for(limit: Duration, done: impl FnMut() -> bool) -> bool {
    poll(Duration::from_millis(20), limit, done)
}

/// The same, polling every `every`: short where the wait is what is measured.
pub fn poll(every: Duration, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(every);
    }
    done()
}

/// A child's output, read line by line as it comes.
pub struct Said {
    lines: Receiver<String>,
    /// What was read so far.
    pub text: String,
}

impl Said {
    pub fn of(output: impl Read + Send + 'static) -> Said {
        let (send, lines) = channel();
        let output = BufReader::new(output);
        std::thread::spawn(move || output.lines().map_while(Result::ok).try_for_each(|l| send.send(l)));
        Said { lines, text: String::new() }
    }

    /// Reads until a line satisfies `wanted`: whether one did within `limit`
    /// (not when the output ends first).
    pub fn until(&mut self, limit: Duration, wanted: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.text += &format!("{line}\n");
            if wanted(&line) {
                return true;
            }
        }
        false
    }
}
