//! Services in the background (left by `start`, or by a `dev` that is
//! gone), recorded in `.pids/`, their output in `.logs/`: what `start`,
//! `stop`, `restart`, `ports set`, the dashboard of `ui` and dev's guard do
//! to them. A `dev` in another terminal runs its own: a selection is refused
//! beside it, and a stop of everything stops it first.

use std::time::Duration;

use anyhow::{Context, bail};

use super::actions::{self, Action, Selection, Services};
use super::allocation::Allocation;
use super::launch;
use super::output::Printer;
use super::preflight;
use super::stopper::{self, Target, refuse_survivors};
use super::supervisor::Output;
use super::watch::{Unwatched, Watch};
use super::{Checkout, containers, running};
use crate::model::config::DEFAULT_STOP_GRACE;
use crate::model::policy::Mode;
use crate::system::paths::Project;
use crate::system::process::{self, Hurry, ProcId};
use crate::system::records::{self, Record};
use crate::system::term::say;

/// The background services of a checkout, how a start of them resolves
/// conflicts on their ports, and who follows that start.
pub struct Background<'a> {
    pub checkout: Checkout,
    pub mode: Mode,
    watch: &'a dyn Watch,
}

impl Background<'static> {
    pub fn new(checkout: Checkout, mode: Mode) -> Background<'static> {
        Background { checkout, mode, watch: &Unwatched }
    }
}

impl<'a> Background<'a> {
    /// The same, its starts followed (and maybe called off) by `watch`.
    pub fn watched(self, watch: &'a dyn Watch) -> Background<'a> {
        Background { watch, ..self }
    }
}

impl Services for Background<'_> {
    fn checkout(&self) -> &Checkout {
        &self.checkout
    }

    fn running(&mut self) -> Vec<String> {
        running(&self.checkout.project).into_iter().map(|r| r.service).collect()
    }

    fn check(&mut self, names: &[String]) -> anyhow::Result<()> {
        preflight::check(&self.checkout, names)
    }

    fn refuses(&mut self, selection: &Selection) -> anyhow::Result<()> {
        match (other_dev(&self.checkout.project), selection) {
            (Some(dev), Some(_)) => refuse_selection(dev),
            _ => Ok(()),
        }
    }

    fn stop(&mut self, selection: &Selection, say_idle: bool) -> anyhow::Result<Vec<String>> {
        stop(&self.checkout, selection, say_idle)
    }

    fn start(&mut self, names: &[String]) -> anyhow::Result<()> {
        let up = launch::up(&self.checkout, names, self.mode, Output::Files, self.watch)?;
        say!("running in the background: `cargo xtask status`, `cargo xtask logs`, `cargo xtask stop`");
        up.supervisor.detach();
        Ok(())
    }

    fn ports_changed(&mut self, allocation: &Allocation) {
        self.checkout.book = allocation.ports.clone();
        allocation.moves.iter().for_each(|moved| self.watch.moved(moved));
    }
}

/// `stop` of the background services of `selection` (every one when
/// `None`), for the command line and the agent interface; from the records
/// alone when `ports.toml` cannot be read. Says what it did.
pub fn stop_services(project: &Project, selection: &Selection) -> anyhow::Result<String> {
    let config = match super::load_config(project) {
        Ok(config) => config,
        Err(e) => return stop_from_records(project, selection, &e).map(|()| "every service stopped".into()),
    };
    // The port book plays no part in a stop: a broken one does not keep services running.
    let (book, _) = super::read_book(project, &config).unwrap_or_default();
    let mut background = Background::new(Checkout { project: project.clone(), config, book }, Mode::NoKill);
    actions::act(&mut background, &Action::Stop(selection.clone()))
}

/// Stops the running services of `selection` and what depends on them, and
/// what is left of services whose first process has gone; a stop of
/// everything also stops a `dev` in another terminal, and what `ports.toml`
/// no longer names (renamed, removed). Returns those that still run.
pub fn stop(checkout: &Checkout, selection: &Selection, say_idle: bool) -> anyhow::Result<Vec<String>> {
    let (project, config) = (&checkout.project, &checkout.config);
    records::check_all(&project.root)?;
    let chosen = |r: &Record| selection.as_ref().is_none_or(|s| s.contains(&r.service));
    let reached = super::reach(config, selection, &running(project))?;
    // Before anything is stopped (a `dev` in another terminal neither).
    let stopping = records::load_all(&project.root);
    containers::check_stoppable(stopping.iter().filter(|r| chosen(r) || reached.contains(&r.service)))?;
    if let Some(dev) = other_dev(project) {
        if selection.is_some() {
            refuse_selection(dev)?;
        }
        stop_dev(dev, config.services.values().map(|s| s.stop_grace).sum())?;
    }
    let mut survivors = Vec::new();
    for record in records::load_all(&project.root).iter().filter(|r| chosen(r) && !r.group.is_running()) {
        if let Err(e) = stopper::retire(project, config, record) {
            say!("{e:#}");
            survivors.push(record.service.clone());
        }
    }
    let names = super::reach(config, selection, &running(project))?;
    let (named, unnamed): (Vec<Record>, Vec<Record>) = running(project)
        .into_iter()
        .filter(|r| names.contains(&r.service) || selection.is_none())
        .partition(|r| config.services.contains_key(&r.service));
    if named.is_empty() && unnamed.is_empty() {
        if say_idle {
            say!("nothing is running");
        }
    } else {
        let grace = |r: &Record| config.services.get(&r.service).map_or(DEFAULT_STOP_GRACE, |s| s.stop_grace);
        let targets = named.iter().map(|r| Target::recorded(r, grace(r))).collect();
        let hurry = Hurry::default();
        survivors.extend(stopper::stop(project, Some(config), targets, &hurry, &Printer::new(config)));
        survivors.extend(stop_unordered(project, unnamed));
    }
    // A stop of everything also removes the containers no record names: a
    // runner killed with its guard left them.
    if selection.is_none() {
        containers::sweep(checkout)?;
    }
    Ok(survivors)
}

/// `stop` when ports.toml cannot be read (a merge conflict, deleted): the
/// services its records name, all at once, as dev's guard stops them. What
/// depends on a service is not known then: a selection stops nothing.
fn stop_from_records(project: &Project, selection: &Selection, e: &anyhow::Error) -> anyhow::Result<()> {
    let why = format!("{e:#}");
    let why = why.lines().next().unwrap_or_default();
    records::check_all(&project.root)?;
    if let Some(names) = selection {
        bail!(
            "{why}\nports.toml could not be read, so what depends on {} is not known: fix it, \
             or stop everything with `cargo xtask stop`",
            names.join(", ")
        );
    }
    containers::check_stoppable(&records::load_all(&project.root))?;
    say!("{why}\nports.toml could not be read: stopping what the records of .pids/ name, all at once");
    if let Some(dev) = other_dev(project) {
        stop_dev(dev, DEFAULT_STOP_GRACE * running(project).len() as u32)?;
    }
    let records = records::load_all(&project.root);
    if records.is_empty() {
        say!("nothing is running");
        return Ok(());
    }
    refuse_survivors(&stop_unordered(project, records))
}

/// Stops the services of `left`, the records of a `dev` that is gone (its
/// guard calls this): dependents first, as `ports.toml` says; what it no
/// longer names, or all of it when it cannot be read, after that.
pub fn stop_left(project: &Project, left: Vec<Record>) {
    let config = super::load_config(project);
    let named = |r: &Record| config.as_ref().is_ok_and(|c| c.services.contains_key(&r.service));
    let (known, unknown): (Vec<_>, Vec<_>) = left.into_iter().partition(named);
    match &config {
        Ok(config) => {
            let targets = known.iter().map(|r| Target::recorded(r, config.services[&r.service].stop_grace));
            stopper::stop(project, Some(config), targets.collect(), &Hurry::default(), &Printer::new(config));
        }
        Err(e) => say!("{e:#}: stopping without the dependency order"),
    }
    stop_unordered(project, unknown);
}

/// Stops services that `ports.toml` does not name (or cannot say the order
/// of), all at once with the default grace. Returns those that still run.
fn stop_unordered(project: &Project, records: Vec<Record>) -> Vec<String> {
    let targets = records.iter().map(|r| Target::recorded(r, DEFAULT_STOP_GRACE)).collect();
    stopper::stop(project, None, targets, &Hurry::default(), &Printer::plain())
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
pub fn other_dev(project: &Project) -> Option<ProcId> {
    let of_a_service = || running(project).iter().find_map(|r| r.supervisor.filter(|dev| dev.is_alive()));
    records::running_dev(project).or_else(of_a_service)
}

/// Beside a `dev`, services are stopped and restarted there, or all at once.
fn refuse_selection(dev: ProcId) -> anyhow::Result<()> {
    bail!(
        "`cargo xtask dev` (pid {}) runs this checkout in another terminal: stop or restart services \
         there (on its dashboard), or stop everything with `cargo xtask stop`",
        dev.pid
    )
}
