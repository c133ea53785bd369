//! `cargo xtask start`, `stop` and `restart`: services in the background,
//! recorded in `.pids/`, their output in `.logs/`.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::{self, ConflictFlags};
use crate::engine::launch;
use crate::engine::setup;
use crate::engine::supervisor::{Output, Supervisor, refuse_survivors};
use crate::model::config::{Config, DEFAULT_STOP_GRACE};
use crate::system::paths::Project;
use crate::system::process::{self, ProcId, Stopped};
use crate::system::records;
use crate::system::term::say;

pub fn start(project: &Project, services: &[String], flags: ConflictFlags) -> anyhow::Result<()> {
    let sup = launch::up(project, services, flags, Output::Files)?;
    say!("running in the background: `cargo xtask status`, `cargo xtask logs`, `cargo xtask stop`");
    sup.detach();
    Ok(())
}

pub fn stop(project: &Project, services: &[String]) -> anyhow::Result<()> {
    let config = match crate::engine::load_config(project) {
        Ok(config) => config,
        Err(e) => return stop_from_records(project, services, &e),
    };
    records::check_all(&project.root)?;
    let names = to_stop(project, &config, services)?;
    let selected = |r: &records::Record| cli::selection(services).is_none_or(|s| s.contains(&r.service));
    let mut failed = Vec::new();
    for record in records::load_all(&project.root).iter().filter(|r| selected(r) && !r.group.is_running()) {
        if let Err(e) = launch::retire(project, &config, record) {
            say!("{e:#}");
            failed.push(record.service.clone());
        }
    }
    // A stop of everything also reaches what `ports.toml` no longer names (renamed, removed).
    let unnamed: Vec<records::Record> = match cli::selection(services) {
        None => running(project).into_iter().filter(|r| !config.services.contains_key(&r.service)).collect(),
        Some(_) => Vec::new(),
    };
    if names.is_empty() && unnamed.is_empty() {
        say!("nothing is running");
        return refuse_survivors(&failed);
    }
    failed.extend(Supervisor::background(project, config, running(project))?.stop(&names));
    failed.extend(stop_unnamed(project, unnamed)?);
    refuse_survivors(&failed)
}

/// `stop` when ports.toml cannot be read (a merge conflict, deleted): the
/// services its records name, all at once, as dev's guard stops them. What
/// depends on a service is not known then: a selection stops nothing.
fn stop_from_records(project: &Project, services: &[String], e: &anyhow::Error) -> anyhow::Result<()> {
    let why = format!("{e:#}");
    let why = why.lines().next().unwrap_or_default();
    records::check_all(&project.root)?;
    if let Some(names) = cli::selection(services) {
        bail!(
            "{why}\nports.toml could not be read, so what depends on {} is not known: fix it, \
             or stop everything with `cargo xtask stop`",
            names.join(", ")
        );
    }
    say!("{why}\nports.toml could not be read: stopping what the records of .pids/ name, all at once");
    if let Some(dev) = other_dev(project) {
        stop_dev(dev, DEFAULT_STOP_GRACE * running(project).len() as u32)?;
    }
    let records = records::load_all(&project.root);
    if records.is_empty() {
        say!("nothing is running");
        return Ok(());
    }
    refuse_survivors(&stop_unnamed(project, records)?)
}

/// Stops the services of `left`, the records of a `dev` that is gone (its
/// guard calls this): dependents first, as `ports.toml` says; what it no
/// longer names, or all of it when it cannot be read, after that.
pub fn stop_left(project: &Project, left: Vec<records::Record>) -> anyhow::Result<()> {
    let config = crate::engine::load_config(project);
    let named = |r: &records::Record| config.as_ref().is_ok_and(|c| c.services.contains_key(&r.service));
    let (known, unknown): (Vec<_>, Vec<_>) = left.into_iter().partition(named);
    match config {
        Ok(config) => {
            let names: Vec<String> =
                config.order.iter().filter(|n| known.iter().any(|r| &r.service == *n)).cloned().collect();
            Supervisor::background(project, config, known)?.stop(&names);
        }
        Err(e) => say!("{e:#}: stopping without the dependency order"),
    }
    stop_unnamed(project, unknown).map(drop)
}

/// Stops services that `ports.toml` does not name (or cannot say the order
/// of), all at once with the default grace. Returns those that still run.
fn stop_unnamed(project: &Project, records: Vec<records::Record>) -> anyhow::Result<Vec<String>> {
    let mut failed = Vec::new();
    let stopped: Vec<Stopped> = std::thread::scope(|scope| {
        let stopping: Vec<_> = records.iter().map(|r| scope.spawn(|| r.group.stop(DEFAULT_STOP_GRACE))).collect();
        stopping.into_iter().map(|t| t.join().unwrap_or(Stopped::Survived)).collect()
    });
    for (record, stopped) in records.into_iter().zip(stopped) {
        if stopped == Stopped::Survived {
            say!("{} | could not be stopped: pid {} still runs", record.service, record.pid());
            failed.push(record.service); // its record stays, for a later stop
            continue;
        }
        records::remove(project, &record.service, record.group)?;
        say!("{} | stopped", record.service);
    }
    Ok(failed)
}

pub fn restart(project: &Project, services: &[String], flags: ConflictFlags) -> anyhow::Result<()> {
    let config = crate::engine::load_config(project)?;
    let mut names = launch::selected(&config, services)?;
    names.extend(reach(project, &config, services)?);
    let names: Vec<String> = config.order.iter().filter(|n| names.contains(n)).cloned().collect();
    // Bad input stops nothing (not even a `dev` in another terminal): what
    // would keep them from starting again is found first.
    launch::check(project, &config, &names, &setup::search_path(&config))?;
    let stopping = to_stop(project, &config, services)?;
    refuse_survivors(&Supervisor::background(project, config.clone(), running(project))?.stop(&stopping))?;
    start(project, &names, flags)
}

/// What a stop of `services` reaches (`reach`), after stopping a `dev` in
/// another terminal that runs them (only as a whole).
fn to_stop(project: &Project, config: &Config, services: &[String]) -> anyhow::Result<Vec<String>> {
    if let Some(dev) = other_dev(project) {
        if cli::selection(services).is_some() {
            refuse_selection(dev)?;
        }
        stop_dev(dev, config.services.values().map(|s| s.stop_grace).sum())?;
    }
    reach(project, config, services)
}

/// Stops a `cargo xtask dev` in another terminal, whose services' graces add up to `graces`.
fn stop_dev(dev: ProcId, graces: Duration) -> anyhow::Result<()> {
    say!("stopping `cargo xtask dev` (pid {})", dev.pid);
    if let Some(fd) = process::pidfd(dev).context("signalling cargo xtask dev")? {
        rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::TERM).context("signalling cargo xtask dev")?;
    }
    // It stops its services one wave after another, each within its grace.
    let limit = graces + Duration::from_secs(60);
    if !process::wait_until(limit, || !dev.is_alive()) {
        bail!("`cargo xtask dev` (pid {}) did not stop within {} s", dev.pid, limit.as_secs());
    }
    Ok(())
}

/// A `cargo xtask dev` in another terminal: the one holding the dev lock,
/// or one that runs services of this checkout.
fn other_dev(project: &Project) -> Option<ProcId> {
    let of_a_service = || running(project).iter().find_map(|r| r.supervisor.filter(|dev| dev.is_alive()));
    launch::running_dev(project).or_else(of_a_service)
}

/// Beside a `dev`, services are stopped and restarted there, or all at once.
fn refuse_selection(dev: ProcId) -> anyhow::Result<()> {
    bail!(
        "`cargo xtask dev` (pid {}) runs this checkout in another terminal: stop or restart services \
         there (on its dashboard), or stop everything with `cargo xtask stop`",
        dev.pid
    )
}

/// What `restart` of `services` would refuse, found before anything changes
/// (`ports set` asks before it writes the new port).
pub fn check_restartable(project: &Project) -> anyhow::Result<()> {
    other_dev(project).map_or(Ok(()), refuse_selection)
}

/// The running services a stop of `services` reaches: they and what depends on them.
fn reach(project: &Project, config: &Config, services: &[String]) -> anyhow::Result<Vec<String>> {
    let selected = match cli::selection(services) {
        None => config.order.clone(),
        Some(names) => {
            for name in names {
                config.closure(Some(std::slice::from_ref(name)))?; // checks the name
            }
            config.dependents_closure(names)
        }
    };
    let running: Vec<String> = running(project).into_iter().map(|r| r.service).collect();
    Ok(selected.into_iter().filter(|n| running.contains(n)).collect())
}

/// The records of the services that are running.
fn running(project: &Project) -> Vec<records::Record> {
    records::load_all(&project.root).into_iter().filter(|r| r.group.is_running()).collect()
}
