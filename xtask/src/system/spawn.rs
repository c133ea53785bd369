//! Starting a service: its command in a process group of its own, stdin
//! null, output to a file or a pipe, and running only once its record is
//! written.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rustix::process::Signal;

use super::group::Group;
use super::process::{ProcId, new_mark};

/// What a service is started with.
pub struct Spec<'a> {
    pub argv: &'a [String],
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
    /// Run as this account (uid, gid) instead of ours.
    pub account: Option<(u32, u32)>,
}

/// The program to run for `program` in folder `dir`: a relative path like
/// `.venv/bin/uvicorn` means relative to `dir` (duct would resolve it against
/// the runner's folder, wherever `cargo xtask` was typed); a bare name is
/// looked up in PATH. (An OsString, not a Path: duct would read a Path
/// `postgres` as `./postgres`.)
pub fn program_in(dir: &Path, program: &str) -> std::ffi::OsString {
    match Path::new(program) {
        p if p.is_relative() && program.contains('/') => dir.join(p.strip_prefix(".").unwrap_or(p)).into_os_string(),
        _ => program.into(),
    }
}

/// The first file one may run named `name` in the folders of `path` (a `PATH`).
pub fn find_program(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

/// A file someone may run (exec needs an x bit, even for root).
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// Starts `spec` in its own process group, stdin null, stdout and stderr
/// both to `output`. `record` is given the group before the process runs the
/// command: a runner killed before the record is written leaves nothing
/// running that nothing would ever stop. Returns the handle and the group.
pub fn spawn(
    spec: &Spec,
    output: impl std::os::fd::IntoRawFd,
    record: impl FnOnce(Group) -> anyhow::Result<()> + Send,
) -> anyhow::Result<(duct::Handle, Group)> {
    let (program, args) = spec.argv.split_first().context("empty command")?;
    let program = program_in(spec.cwd, program);
    let account = spec.account;
    let (mark, (var, marked)) = new_mark();
    let env = spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain([(var, marked.as_str())]);
    // The new process says its pid on one pipe, then waits on another until
    // its record is written; if the runner dies first, that pipe ends empty.
    let (mut pid_reader, pid_writer) = std::io::pipe()?;
    let (go_reader, mut go_writer) = std::io::pipe()?;
    let (child_pid_writer, child_go_reader) = (pid_writer.as_raw_fd(), go_reader.as_raw_fd());
    let child_go_writer = go_writer.as_raw_fd();
    let expression = duct::cmd(program, args)
        .dir(spec.cwd)
        .full_env(env)
        .stdin_null()
        // duct applies the outer redirection first: stdout to `output`, then stderr to stdout.
        .stderr_to_stdout()
        .stdout_file(output)
        .unchecked()
        .before_spawn(move |command| {
            command.process_group(0);
            if let Some((uid, gid)) = account {
                command.uid(uid).gid(gid);
            }
            // SAFETY: only system calls between fork and exec, no allocation
            // (an io::Error of an OS error number holds only the number).
            unsafe {
                command.pre_exec(move || {
                    let (pid_writer, go) = (BorrowedFd::borrow_raw(child_pid_writer), child_go_reader);
                    rustix::io::close(child_go_writer); // or the wait would never see the runner die
                    rustix::io::write(pid_writer, &rustix::process::getpid().as_raw_nonzero().get().to_ne_bytes())?;
                    let mut byte = [0u8];
                    match rustix::io::read(BorrowedFd::borrow_raw(go), &mut byte) {
                        Ok(1) => Ok(()),
                        // The runner is gone, or failed (an OS error: std passes only those on).
                        _ => Err(io::Error::from_raw_os_error(rustix::io::Errno::PIPE.raw_os_error())),
                    }
                });
            }
            Ok(())
        });
    let recorded = std::thread::scope(|scope| {
        let recorder = scope.spawn(move || -> anyhow::Result<Group> {
            let mut pid = [0u8; 4];
            pid_reader.read_exact(&mut pid).context("the command did not start")?;
            let pid = i32::from_ne_bytes(pid);
            let leader = ProcId::of(pid).context("the command's process vanished before it ran")?;
            let group = Group { leader, mark };
            record(group)?;
            std::io::Write::write_all(&mut go_writer, &[1])?;
            Ok(group)
        });
        let started = expression.start();
        drop(pid_writer); // the recorder's read ends if no process said its pid
        (started, recorder.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    });
    drop(expression); // closes our copy of the output's write end
    let what = || format!("starting {}", spec.argv.join(" "));
    match recorded {
        (Ok(handle), Ok(group)) => Ok((handle, group)),
        // It stopped before the command, as its record could not be written.
        (Err(e), Err(why)) if e.kind() == io::ErrorKind::BrokenPipe => Err(why.context(what())),
        (Err(e), _) => Err(e).with_context(what),
        (Ok(_), Err(why)) => Err(why.context(what())),
    }
}

/// Has the process `command` starts get SIGTERM when this runner dies: a
/// set-up step must not run on after a runner killed meanwhile (SIGKILL, the
/// OOM killer, a SIGTERM before its handlers), nor beside the next runner's
/// run of it. Only that process is told: what it started, it stops itself
/// (npm, pip and initdb do). The signal comes when the thread that starts it
/// ends, so that thread must wait for it, as `duct::Expression::run` does.
pub fn term_with_runner(command: &mut std::process::Command) {
    let runner = rustix::process::getpid();
    // SAFETY: only system calls between fork and exec, no allocation. They
    // run after the change of user, which would clear the setting.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
            // The runner may have died before the setting took.
            match rustix::process::getppid() {
                Some(parent) if parent == runner => Ok(()),
                _ => Err(io::ErrorKind::NotFound.into()),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_command_runs_only_once_its_group_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        let argv = ["touch".into(), ran.to_string_lossy().into_owned()];
        let spec = Spec { argv: &argv, cwd: Path::new("."), env: &[], account: None };
        let null = || std::fs::File::create("/dev/null").unwrap();
        let record = |group: Group| {
            std::thread::sleep(Duration::from_millis(200));
            assert!(group.leader.is_alive() && !ran.exists(), "the command ran before its record was written");
            Ok(())
        };
        let (handle, _) = spawn(&spec, null(), record).unwrap();
        handle.wait().unwrap();
        assert!(ran.exists());
        // No record (the runner failed to write it, or died): the command never runs.
        std::fs::remove_file(&ran).unwrap();
        let e = spawn(&spec, null(), |_| anyhow::bail!("no space left")).map(drop).unwrap_err();
        assert!(format!("{e:#}").contains("no space left"), "{e:#}");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!ran.exists(), "the command ran without a record");
    }
}
