//! Stopping services: the one stopper behind every stop (`dev` and its
//! dashboard, `stop`, `restart`, a start that takes over or clears
//! leftovers, dev's guard). Dependents first; those that nothing left
//! running depends on stop together, each within its grace; a service's
//! record goes once nothing of it is left, and stays while something is.
//! A service in a container is stopped through the engine first: its
//! client then leaves on its own (ARCHITECTURE.md, "Containers").

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::output::{COPY_WAIT, Printer, copied};
use anyhow::bail;

use crate::model::config::{Config, DEFAULT_STOP_GRACE};
use crate::system::containers::Backing;
use crate::system::group::{Group, Stopped};
use crate::system::paths::Project;
use crate::system::process::Hurry;
use crate::system::records::{self, Record};
use crate::system::term::say;

/// A service to stop.
pub struct Target {
    pub name: String,
    pub group: Group,
    /// How long it may take after TERM before it gets KILL.
    pub grace: Duration,
    /// This runner's own child, reaped once its group has stopped.
    pub handle: Option<Arc<duct::Handle>>,
    /// Closes when the copy of its output has ended: its last lines come
    /// before what is said next.
    pub copied: Option<Receiver<()>>,
    /// The container its group's client runs.
    pub container: Option<Backing>,
}

impl Target {
    /// A service this runner did not start (its record is all there is).
    pub fn recorded(record: &Record, grace: Duration) -> Target {
        let (name, group, container) = (record.service.clone(), record.group, record.container.clone());
        Target { name, group, grace, handle: None, copied: None, container }
    }
}

/// Stops a service: its container through the engine (a signal to its
/// client would not reach it), then its group, then the container again:
/// one the client had asked for while it was being stopped (a start called
/// off) is there only now. An error of the engine leaves the record for a
/// later stop (and the group running, when it comes first); it comes with
/// what the engine said.
pub fn stop_service(
    group: Group,
    container: Option<&Backing>,
    grace: Duration,
    hurry: &Hurry,
) -> (Stopped, Option<String>) {
    let ran = match container.map(|c| c.stop(grace, hurry)) {
        Some(Err(e)) => return (Stopped::Survived, Some(format!("{e:#}"))),
        Some(Ok(ran)) => ran,
        None => false,
    };
    let stopped = group.stop(grace, hurry);
    let late = match container.map(|c| c.stop(grace, hurry)) {
        Some(Err(e)) => return (Stopped::Survived, Some(format!("{e:#}"))),
        Some(Ok(late)) => late,
        None => false,
    };
    match stopped {
        Stopped::AlreadyGone | Stopped::NotOurs if ran || late => (Stopped::Terminated, None),
        stopped => (stopped, None),
    }
}

/// Stops `targets` in waves: dependents first, as `config` says (a service
/// it does not name, or all of them without it, go in the first wave).
/// Says a line for each; returns those that could not be stopped, whose
/// records stay for a later stop by someone allowed to.
pub fn stop(
    project: &Project,
    config: Option<&Config>,
    targets: Vec<Target>,
    hurry: &Hurry,
    printer: &Printer,
) -> Vec<String> {
    let depends_on = |name: &str| config.and_then(|c| c.services.get(name)).map(|s| s.depends_on.as_slice());
    let (mut left, mut survivors, mut copy_wait) = (targets, Vec::new(), COPY_WAIT);
    while !left.is_empty() {
        let depended_on: BTreeSet<&str> =
            left.iter().flat_map(|t| depends_on(&t.name).unwrap_or_default()).map(String::as_str).collect();
        let (wave, later): (Vec<Target>, Vec<Target>) =
            left.into_iter().partition(|t| !depended_on.contains(t.name.as_str()));
        left = later;
        let stopped: Vec<(Stopped, Option<String>)> = std::thread::scope(|scope| {
            let stopping: Vec<_> = (wave.iter())
                .map(|t| {
                    let (group, grace, handle, container) = (t.group, t.grace, t.handle.clone(), t.container.as_ref());
                    scope.spawn(move || {
                        let stopped = stop_service(group, container, grace, hurry);
                        if let (Some(handle), false) = (handle, stopped.0 == Stopped::Survived) {
                            let _ = handle.wait();
                        }
                        stopped
                    })
                })
                .collect();
            stopping.into_iter().map(|s| s.join().unwrap_or((Stopped::Survived, None))).collect()
        });
        // Their last lines reach the terminal before what is said next
        // (waited for COPY_WAIT at most in all, and not when hurried).
        let waited = Instant::now();
        let deadline = if hurry.is_on() { waited } else { waited + copy_wait };
        for (target, (stopped, _)) in wave.iter().zip(&stopped) {
            if *stopped != Stopped::Survived {
                copied(target.copied.as_ref(), deadline);
            }
        }
        copy_wait = copy_wait.saturating_sub(waited.elapsed());
        for (target, (stopped, why)) in wave.into_iter().zip(stopped) {
            if stopped == Stopped::Survived {
                let why = why.unwrap_or_else(|| format!("pid {} still runs", target.group.pgid()));
                say!("{}", printer.line(&target.name, &format!("could not be stopped: {why}")));
                survivors.push(target.name);
                continue;
            }
            let _ = records::remove(project, &target.name, target.group);
            say!("{}", printer.line(&target.name, "stopped"));
        }
    }
    survivors
}

/// Removes the record of a service whose group has no process left, after
/// stopping what it started in a session of its own (a daemon), or the
/// container its client ran (a client killed alone leaves it running),
/// which may still run: with the record gone, nothing would find it.
pub fn retire(project: &Project, config: &Config, record: &Record) -> anyhow::Result<()> {
    let grace = config.services.get(&record.service).map_or(DEFAULT_STOP_GRACE, |s| s.stop_grace);
    match stop_service(record.group, record.container.as_ref(), grace, &Hurry::default()) {
        (Stopped::Terminated | Stopped::Killed, _) => {
            say!("{}: stopped what it left running (pid {} is gone)", record.service, record.pid())
        }
        (Stopped::Survived, why) => {
            let why = why.map(|why| format!(" ({why})")).unwrap_or_default();
            bail!("{}: what it left running could not be stopped{why}", record.service)
        }
        (Stopped::AlreadyGone | Stopped::NotOurs, _) => {}
    }
    records::remove(project, &record.service, record.group)
}

/// An error naming the services that still run after a stop (each was said).
pub fn refuse_survivors(survivors: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(
        survivors.is_empty(),
        "{} could not be stopped: stop them as the user who started them (or as root)",
        survivors.join(", ")
    );
    Ok(())
}
