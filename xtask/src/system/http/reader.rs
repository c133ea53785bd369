//! The client's side of a connection as its reader sees it: bytes read and
//! not yet forwarded, in a buffer that grows for a large head, and reads
//! that wait no longer than a head's deadline or the idle limit allow.

use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::head::MAX_HEAD;

/// The buffer's first size; it grows up to MAX_HEAD for a larger head.
const FIRST_BUFFER: usize = 8 * 1024;

/// How long a read of the client may wait.
#[derive(Clone, Copy)]
pub enum Wait {
    /// Until this instant (a head that is due).
    Until(Instant),
    /// Until the connection has been silent both ways for the idle limit.
    Idle,
}

/// When bytes last went either way on a connection: the reader and the
/// copier both write it, the reader's idle limit reads it.
pub struct Clock {
    start: Instant,
    last: AtomicU64, // milliseconds since start
}

impl Clock {
    pub fn touch(&self) {
        self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn silent_for(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// The client's socket, and what was read from it and not yet forwarded.
pub struct Reader {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    pub clock: Arc<Clock>,
    idle: Duration,
    /// The read timeout set on the socket, to set it only when it changes.
    timeout: Option<Duration>,
}

impl Reader {
    pub fn new(stream: TcpStream, idle: Duration) -> Reader {
        let clock = Arc::new(Clock { start: Instant::now(), last: AtomicU64::new(0) });
        Reader { stream, buf: vec![0; FIRST_BUFFER], start: 0, end: 0, clock, idle, timeout: None }
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    pub fn is_full(&self) -> bool {
        self.end - self.start == MAX_HEAD
    }

    /// Reads more; 0 when the client is done sending. A read that waits
    /// past `wait` is an error (TimedOut).
    pub fn fill(&mut self, wait: Wait) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else if self.buf.len() < MAX_HEAD {
                self.buf.resize((self.buf.len() * 2).min(MAX_HEAD), 0);
            } else {
                return Err(io::Error::other("the request buffer is full")); // callers see to it first
            }
        }
        loop {
            // The idle limit is set as is, not as what is left of it: one
            // timeout for every read of a busy connection, no system call to
            // change it. The connection ends after one to two idle limits.
            let timeout = match wait {
                Wait::Until(deadline) => deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero()),
                Wait::Idle => (self.clock.silent_for() < self.idle).then_some(self.idle),
            };
            let Some(timeout) = timeout else { return Err(ErrorKind::TimedOut.into()) };
            if self.timeout != Some(timeout) {
                self.stream.set_read_timeout(Some(timeout))?;
                self.timeout = Some(timeout);
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    self.clock.touch();
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => return Err(e),
            }
        }
    }
}
