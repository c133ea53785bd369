//! `xtask guard`, dev's guard (started by `engine::guard`, hidden from the
//! help): once the `cargo xtask dev` it watches is gone, it stops what the
//! records of `.pids/` say that dev was running, as `stop` would, dependents
//! first, and removes dev's dashboard record. When dev stopped its services
//! itself, it finds nothing left and leaves.

use anyhow::Context;

use crate::engine::control;
use crate::system::paths::Project;
use crate::system::process::ProcId;
use crate::system::records;

/// The guard's side: waits until `runner` is gone, then stops the services
/// it left running.
pub fn run(project: &Project, runner: ProcId) -> anyhow::Result<()> {
    // Nothing is ever written: this returns when the last writer is gone.
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).context("waiting on the runner")?;
    let left: Vec<records::Record> = records::load_all(&project.root)
        .into_iter()
        .filter(|r| r.supervisor == Some(runner) && r.group.is_running())
        .collect();
    if !left.is_empty() {
        let names: Vec<&str> = left.iter().map(|r| r.service.as_str()).collect();
        println!("cargo xtask dev (pid {}) is gone without stopping {}: stopping them", runner.pid, names.join(", "));
        control::stop_left(project, left);
    }
    records::forget_dashboard(project, runner)
}
