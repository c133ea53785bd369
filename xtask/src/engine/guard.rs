//! dev's guard, from dev's side: a second process, started before dev's
//! first service, that stops dev's services when dev ends without stopping
//! them (SIGKILL, a crash, the OOM killer). It waits on a pipe whose only
//! writer is dev: the kernel closes it when dev ends, however it ends. Then
//! it runs `xtask guard` (the command's side: `cli::guard`).

use std::io::PipeWriter;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use anyhow::Context;

use crate::system::paths::Project;
use crate::system::process::ProcId;

/// What waits: a shell (a fourth of this program's memory), holding this
/// program open so that a rebuild meanwhile does not change what it becomes
/// once the pipe closes: `xtask guard RUNNER_PID RUNNER_START`.
pub const WAITER: &str = r#"exec 3<"$0"; while read -r _; do :; done; exec /proc/self/fd/3 guard "$1" "$2""#;

/// Held by dev's supervisor for as long as it runs services.
pub struct Guard {
    pipe: Option<PipeWriter>,
    child: Child,
}

/// Starts the guard of this process, before it starts any service.
pub fn spawn(project: &Project) -> anyhow::Result<Guard> {
    let me = ProcId::myself();
    // Both ends are close-on-exec: no service inherits the writer, which
    // would keep the pipe open after dev is gone.
    let (reader, pipe) = std::io::pipe().context("creating the guard's pipe")?;
    std::fs::create_dir_all(project.logs_dir())?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(project.guard_log())?;
    let exe = std::env::current_exe().context("finding this program")?;
    let child = Command::new("/bin/sh")
        .args(["-c", WAITER])
        .arg(exe)
        .args([me.pid.to_string(), me.start.to_string()])
        .current_dir(&project.root)
        .stdin(reader)
        .stdout(log.try_clone()?)
        .stderr(log)
        // Ctrl-C on the terminal is for dev, which stops everything itself.
        .process_group(0)
        .spawn()
        .context("starting the guard")?;
    Ok(Guard { pipe: Some(pipe), child })
}

impl Drop for Guard {
    /// Wakes the guard and waits for it: nothing of dev's outlives dev. After
    /// dev stopped its services itself, the guard finds nothing to do.
    fn drop(&mut self) {
        self.pipe.take();
        let _ = self.child.wait();
    }
}
