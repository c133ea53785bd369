//! Processes: who one is (its pid and start time, which survive pid reuse
//! together: read by `procscan`, shared with the tests' harness, and
//! re-exported here), the mark in the environment of all a service forks,
//! the runner's ancestors, and stopping one process that is not ours.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal};

pub use procscan::{ProcId, Stat, argv, group_members};

/// Marks close-on-exec every descriptor this program inherited beyond
/// stdin, stdout and stderr (an IDE's or a CI runner's pipes), so that no
/// service, set-up step or test gets them: a background service holding the
/// write end of its caller's pipe would keep the caller waiting for as long as
/// it runs. Called first thing in `main`, while the program has opened nothing.
pub fn keep_inherited_descriptors() {
    use std::mem::MaybeUninit;
    use std::os::fd::{AsRawFd, BorrowedFd};

    use rustix::fs::{Mode, OFlags, RawDir};
    use rustix::io::FdFlags;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(dir) = rustix::fs::open("/proc/self/fd", flags, Mode::empty()) else { return };
    let mut buffer = [MaybeUninit::uninit(); 4096];
    let mut entries = RawDir::new(&dir, &mut buffer);
    while let Some(Ok(entry)) = entries.next() {
        let fd = std::str::from_utf8(entry.file_name().to_bytes()).ok().and_then(|n| n.parse::<i32>().ok());
        if let Some(fd) = fd.filter(|fd| *fd > 2 && *fd != dir.as_raw_fd()) {
            // SAFETY: listed as open just now by this single-threaded start,
            // which closes nothing: it stays open while borrowed.
            let _ = rustix::io::fcntl_setfd(unsafe { BorrowedFd::borrow_raw(fd) }, FdFlags::CLOEXEC);
        }
    }
}

/// The pid of every process, from the folders of `/proc`.
pub fn all_pids() -> Vec<i32> {
    procscan::pids()
}

/// The environment variable that marks every process of a group we start.
const MARK: &str = "XTASK_GROUP";

/// A new group mark, and the environment variable that carries it. Unique,
/// not secret: the time hashed with a fresh random key (never 0, which
/// means unmarked).
pub fn new_mark() -> (u64, (&'static str, String)) {
    let mark = std::hash::RandomState::new().hash_one(std::time::SystemTime::now()) | 1;
    (mark, (MARK, format!("{mark:016x}")))
}

/// The group mark in the environment of process `pid`, if it has one.
pub fn mark_of(pid: i32) -> Option<u64> {
    // A process in the middle of an exec shows an empty environment for a
    // moment (measured: a few hundred µs): asked again, a few times.
    let mut tries = 0;
    let environ = loop {
        match procscan::process_file(pid, "environ") {
            Ok(bytes) if bytes.is_empty() && tries < 5 => tries += 1,
            read => break read.unwrap_or_default(),
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let value = environ.split(|b| *b == 0).find_map(|var| var.strip_prefix(MARK.as_bytes())?.strip_prefix(b"="))?;
    u64::from_str_radix(std::str::from_utf8(value).ok()?, 16).ok()
}

/// Stops one process that is not ours (a holder of a port): through a pidfd,
/// so the signal cannot reach a newcomer that reused the pid. TERM, grace, KILL.
pub fn kill(id: ProcId, grace: Duration) -> io::Result<()> {
    let Some(fd) = pidfd(id)? else { return Ok(()) }; // gone already
    rustix::process::pidfd_send_signal(&fd, Signal::TERM)?;
    if wait_until(grace, || !id.is_alive()) {
        return Ok(());
    }
    rustix::process::pidfd_send_signal(&fd, Signal::KILL)?;
    if wait_until(Duration::from_secs(5), || !id.is_alive()) {
        Ok(())
    } else {
        Err(io::Error::other(format!("pid {} is still running after KILL", id.pid)))
    }
}

/// A pidfd of process `id`, `None` if it is gone. Signals sent through it
/// cannot reach a newcomer that reused the pid: it names whatever had the pid
/// when it was opened, and that is checked to be `id` after.
/// An error is one of the system's (pidfds unsupported, or forbidden by a
/// seccomp filter): nothing is signalled then, and the caller says so.
pub fn pidfd(id: ProcId) -> io::Result<Option<OwnedFd>> {
    let pid = Pid::from_raw(id.pid).ok_or(io::ErrorKind::InvalidInput)?;
    match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => Ok(id.is_alive().then_some(fd)),
        Err(rustix::io::Errno::SRCH) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Polls `done` until it holds or `limit` passes. Used only while stopping,
/// never while idle.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The runner's ancestors (parent, grandparent, ... up to PID 1): never killed.
pub fn ancestors() -> BTreeSet<i32> {
    let mut found = BTreeSet::new();
    let mut pid = std::process::id() as i32;
    while let Some(stat) = Stat::of(pid) {
        if stat.ppid <= 0 || !found.insert(stat.ppid) {
            break;
        }
        pid = stat.ppid;
    }
    found
}

/// Set by a second Ctrl-C while stopping: whoever sent it will not wait
/// out the graces, so a stop KILLs at once. Cloned into whatever stops
/// services for the one who forwards signals; a fresh one is never set.
#[derive(Debug, Clone, Default)]
pub struct Hurry(Arc<AtomicBool>);

impl Hurry {
    pub fn now(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_end_at_pid_1() {
        assert!(ancestors().contains(&1) || ancestors().is_empty());
    }
}
