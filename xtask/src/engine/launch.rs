//! What `dev`, `start` and `restart` do before starting anything: check the
//! input, stop the leftovers of a runner that was killed, settle who may keep
//! running, set up, resolve conflicts on the services' ports, and allocate.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::IsTerminal;

use anyhow::bail;

use crate::cli::guard;
use crate::cli::{ConflictFlags, Mode};
use crate::engine::allocation;
use crate::engine::conflict;
use crate::engine::setup;
use crate::engine::supervisor::{self, Output, Supervisor};
use crate::model::alloc;
use crate::model::book::{self, Ports};
use crate::model::config::{Config, DEFAULT_STOP_GRACE};
use crate::system::files::Lock;
use crate::system::paths::Project;
use crate::system::probe;
use crate::system::process::{ProcId, Stopped};
use crate::system::records;
use crate::system::registry::Registry;
use crate::system::term::say;

/// Prepares `names` (already closed over their dependencies, and checked)
/// to start. With `Output::Terminal` (dev) services that run in the
/// background are taken over; with `Output::Files` (start) they keep running.
fn prepare(
    project: &Project,
    config: Config,
    names: &[String],
    mode: Mode,
    output: Output,
    path: &OsString,
) -> anyhow::Result<Supervisor> {
    let me = ProcId::myself();
    let (records, stale): (Vec<_>, Vec<_>) =
        records::load_all(&project.root).into_iter().partition(|r| r.group.is_running());
    // Before any record is acted on: refusing halfway would leave some stopped.
    if let Some((name, dev)) = records
        .iter()
        .find_map(|r| r.supervisor.filter(|dev| dev.is_alive() && *dev != me).map(|dev| (&r.service, dev)))
    {
        bail!(
            "{name} is run by `cargo xtask dev` (pid {}) in another terminal: stop that one first \
             (Ctrl-C there, or `cargo xtask stop`)",
            dev.pid
        );
    }
    // Who stays and who goes is decided before anything is done.
    let mut kept = BTreeMap::new();
    let mut going = Vec::new();
    for record in records {
        let name = &record.service;
        match record.supervisor {
            Some(_) => going.push((record, "stopping the leftover of a runner that was killed")),
            None if output == Output::Terminal && names.contains(name) => {
                going.push((record, "stopping the background instance to run it here"))
            }
            None => {
                if names.contains(name) {
                    say!("{name}: already running (pid {})", record.pid());
                }
                kept.insert(name.clone(), record);
            }
        }
    }
    let to_start: Vec<String> = names.iter().filter(|n| !kept.contains_key(*n)).cloned().collect();
    let fixed: Ports = kept.values().map(|r| (r.service.clone(), r.port)).collect();
    // Would every service get a port, were the ports the policy may free
    // freed? If not, fail now, while nothing is stopped or killed.
    // What is about to be stopped frees its port too.
    let mut freeable: BTreeSet<u16> = going.iter().map(|(r, _)| r.port).collect();
    for (name, port) in contested(project, &config, &to_start)? {
        if conflict::may_free(project, &name, port, mode, &config)? {
            freeable.insert(port);
        }
    }
    allocation::check_allocatable(project, &config, &fixed, &freeable)?;

    for record in stale {
        retire(project, &config, &record)?;
    }
    // Stopped as any stop: dependents first, what depends on nothing left together.
    for (record, doing) in &going {
        say!("{}: {doing} (pid {})", record.service, record.pid());
    }
    let names: Vec<String> = going.iter().map(|(r, _)| r.service.clone()).collect();
    let records = going.into_iter().map(|(r, _)| r).collect();
    supervisor::refuse_survivors(&Supervisor::background(project, config.clone(), records)?.stop(&names))?;
    // Before any holder of a port is killed: a step that fails leaves it be.
    setup::prepare(project, &config, &to_start, path)?;
    let mut busy = BTreeMap::new();
    for (name, port) in contested(project, &config, &to_start)? {
        busy.extend(conflict::resolve(project, &name, port, mode, &config)?.map(|why| (name, why)));
    }
    let ports = allocation::allocate_and_write(project, &config, &fixed, &busy)?;

    let mut supervisor = Supervisor::new(project.clone(), config, ports, output)?;
    supervisor.kept = kept.into_iter().map(|(name, record)| (name, record.group)).collect();
    Ok(supervisor)
}

/// The busy ports of `to_start` that the allocation would give as they are,
/// so that their holders may be asked to go. One below the range, say, is
/// moved past whoever holds it: nobody is killed for it.
fn contested(project: &Project, config: &Config, to_start: &[String]) -> anyhow::Result<Vec<(String, u16)>> {
    let current = book::load(&project.ports_json(), config)?;
    let as_is = |p: u16| alloc::in_range(p, config.range) && !alloc::is_browser_blocked(p);
    Ok(to_start
        .iter()
        .map(|n| (n.clone(), current.get(n).copied().unwrap_or(config.services[n].port)))
        .filter(|(_, p)| as_is(*p) && !probe::is_free(*p))
        .collect())
}

/// Removes the record of a service whose group has no process left, after
/// stopping what it started in a session of its own (a daemon), which may
/// still run: with the record gone, nothing would find it.
pub fn retire(project: &Project, config: &Config, record: &records::Record) -> anyhow::Result<()> {
    match record.group.stop(grace_of(config, &record.service)) {
        Stopped::Terminated | Stopped::Killed => {
            say!("{}: stopped what it left running (pid {} is gone)", record.service, record.pid())
        }
        Stopped::Survived => bail!("{}: what it left running could not be stopped", record.service),
        Stopped::AlreadyGone | Stopped::NotOurs => {}
    }
    records::remove(project, &record.service, record.group)
}

fn grace_of(config: &Config, service: &str) -> std::time::Duration {
    config.services.get(service).map_or(DEFAULT_STOP_GRACE, |s| s.stop_grace)
}

/// The services to start for a selection, with their dependencies, in order.
pub fn selected(config: &Config, names: &[String]) -> anyhow::Result<Vec<String>> {
    config.closure(crate::cli::selection(names))
}

/// One `dev` per checkout, and no `start` or `restart` beside it (it takes
/// over what runs here), even while it runs no service: a `dev` holds this
/// lock for as long as it runs, and says in it who it is. The others only
/// look, with a shared hold for a moment, which many may take at once.
fn dev_lock(project: &Project, output: Output) -> anyhow::Result<Option<Lock>> {
    let path = project.dev_lock();
    let refuse = || {
        let who = running_dev(project).map_or(String::new(), |dev| format!(" (pid {})", dev.pid));
        anyhow::anyhow!(
            "`cargo xtask dev`{who} runs this checkout in another terminal: \
             stop it first (Ctrl-C there, or `cargo xtask stop`)"
        )
    };
    if output == Output::Files {
        return Lock::try_acquire_shared(&path)?.map(|_| None).ok_or_else(refuse);
    }
    // Held for longer than another command's look at it: by a dev.
    for _ in 0..10 {
        if let Some(lock) = Lock::try_acquire(&path)? {
            let me = ProcId::myself();
            return lock.say_holder(&format!("{} {}", me.pid, me.start)).map(|()| Some(lock));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(refuse())
}

/// The `cargo xtask dev` that runs in this checkout, if one does.
pub fn running_dev(project: &Project) -> Option<ProcId> {
    let path = project.dev_lock();
    if !path.exists() || Lock::try_acquire_shared(&path).ok()?.is_some() {
        return None;
    }
    let text = crate::system::files::read_optional(&path).ok()??;
    let (pid, start) = text.trim().split_once(' ')?;
    Some(ProcId { pid: pid.parse().ok()?, start: start.parse().ok()? }).filter(|dev| dev.is_alive())
}

/// Bad input changes nothing: what would keep `names` from starting is
/// found before anything is stopped, killed or written (ports.toml's steps
/// and programs, `.ports.json`, the registry).
pub fn check(project: &Project, config: &Config, names: &[String], path: &OsString) -> anyhow::Result<()> {
    crate::cli::force_env()?;
    setup::check(project, config, names, path)?;
    book::load(&project.ports_json(), config)?;
    records::check_all(&project.root)?;
    Registry::open()?;
    crate::system::files::check_inside(&project.root, &[project.ports_json(), project.env_runtime()])?;
    let files = [project.ports_json(), project.env_runtime(), Registry::file()?];
    crate::system::files::check_writable(&[project.pids_dir(), project.logs_dir()], &files)
}

/// What `dev` and `start` share: prepare the selected services and their
/// dependencies, then start them and wait until they are ready.
pub fn up(project: &Project, services: &[String], flags: ConflictFlags, output: Output) -> anyhow::Result<Supervisor> {
    crate::system::term::say_from_a_thread(); // a signal stops the services even while stdout blocks
    let config = crate::engine::load_config(project)?;
    let names = selected(&config, services)?;
    let path = setup::search_path(&config);
    check(project, &config, &names, &path)?;
    let dev = dev_lock(project, output)?;
    // One launch at a time in a checkout: two at once would each find a
    // service not running, and start it twice.
    let waiting = "waiting for another `cargo xtask` of this checkout to finish starting services";
    let _launch = Lock::acquire_saying(&project.launch_lock(), waiting)?;
    let mode = flags.mode(crate::cli::force_env()?, std::io::stdin().is_terminal());
    // dev's services must not outlive it: its guard watches before the first starts.
    let guard = match output {
        Output::Terminal => Some(guard::spawn(project)?),
        Output::Files => None,
    };
    let mut sup = prepare(project, config, &names, mode, output, &path)?;
    sup.guard = guard;
    sup.dev = dev;
    supervisor::forward_signals(sup.sender(), true)?;
    sup.start_all(&names)?;
    Ok(sup)
}
