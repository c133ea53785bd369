//! Processes: whether one runs, which ones a checkout left behind,
//! children that a failed test does not leave running, and programs a test
//! writes to be run.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use procscan::{ProcId, Stat};
use rustix::process::{PidfdFlags, Signal};

use crate::wait::wait_for;

/// The `nobody` account: another user whose processes the runner must not kill.
pub const NOBODY: u32 = 65534;

pub fn is_root() -> bool {
    rustix::process::getuid().is_root()
}

/// Writes `text` to `path` as a program (mode 755), through a process of
/// its own. Written by this process, the
/// file would be open for writing in any child another test's thread forked
/// meanwhile, until that child execs, and running it would fail with
/// ETXTBSY ("Text file busy").
pub fn write_program(path: &Path, text: &str) {
    let script = "cat > \"$0\" && chmod 755 \"$0\"";
    let mut child = Command::new("sh").args(["-c", script]).arg(path).stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "writing {}", path.display());
}

/// `from`, a program, copied to `path` as `write_program` writes one.
pub fn copy_program(from: &Path, path: &Path) {
    assert!(Command::new("cp").arg(from).arg(path).status().unwrap().success(), "copying {}", from.display());
}

/// Is a process with this pid running? A zombie is not, unless its other
/// threads still run.
pub fn alive(pid: i32) -> bool {
    ProcId::of(pid).is_some()
}

/// A zombie with other threads still running.
pub fn main_thread_ended(pid: i32) -> bool {
    Stat::of(pid).is_some_and(|s| s.state == 'Z' && s.threads > 1)
}

/// Live processes (but this one) whose command line mentions `needle`, its
/// words joined by spaces.
pub fn processes_with(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let cmdline = |pid| procscan::process_file(pid, "cmdline").ok();
    let cmdlines = procscan::pids().into_iter().filter(|pid| *pid != me).filter_map(|pid| Some((pid, cmdline(pid)?)));
    let joined = cmdlines.map(|(pid, words)| (pid, String::from_utf8_lossy(&words).replace('\0', " ")));
    joined.filter(|(pid, cmdline)| cmdline.contains(needle) && alive(*pid)).collect()
}

/// Processes (but this one) whose working folder is in `dir`: what a
/// checkout's services would leave behind.
pub fn processes_in(dir: &Path) -> Vec<ProcId> {
    let me = std::process::id() as i32;
    let cwd = |pid: i32| std::fs::read_link(format!("/proc/{pid}/cwd"));
    let inside = |pid: &i32| *pid != me && cwd(*pid).is_ok_and(|cwd| cwd.starts_with(dir));
    procscan::pids().into_iter().filter(inside).filter_map(ProcId::of).collect()
}

/// KILLs those of `ids` still running, through pidfds (no newcomer that
/// reused a pid is hit), and waits up to 5 s for them to be gone.
pub(crate) fn kill_all(ids: &[ProcId]) {
    for id in ids {
        let pid = rustix::process::Pid::from_raw(id.pid).expect("a process's pid is positive");
        // Checked after the pidfd is open: it names what had the pid then.
        if let Ok(fd) = rustix::process::pidfd_open(pid, PidfdFlags::empty())
            && id.is_alive()
        {
            let _ = rustix::process::pidfd_send_signal(&fd, Signal::KILL);
        }
    }
    wait_for(Duration::from_secs(5), || ids.iter().all(|id| !id.is_alive()));
}

/// A child process that a failed test does not leave behind: killed, if it
/// still runs, when dropped.
pub struct Running(pub Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
