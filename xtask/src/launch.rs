//! What `dev`, `start` and `restart` do before starting anything: check the
//! input, stop the leftovers of a runner that was killed, settle who may keep
//! running, set up, resolve conflicts on the services' ports, and allocate.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::IsTerminal;

use anyhow::bail;

use crate::alloc;
use crate::cli::{ConflictFlags, Mode};
use crate::config::{Config, DEFAULT_STOP_GRACE};
use crate::conflict;
use crate::files::Lock;
use crate::guard;
use crate::paths::Project;
use crate::pids;
use crate::ports;
use crate::process::{ProcId, Stopped};
use crate::registry::Registry;
use crate::setup;
use crate::state::{self, Ports};
use crate::supervisor::{self, Output, Supervisor};
use crate::term::say;

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
        pids::load_all(&project.root).into_iter().partition(|r| r.group.is_running());
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
    for record in stale {
        pids::remove(project, &record.service, record.group)?; // it exited
    }
    let mut kept = BTreeMap::new();
    for record in records {
        let name = &record.service;
        let grace = config.services.get(name).map_or(DEFAULT_STOP_GRACE, |s| s.stop_grace);
        match record.supervisor {
            Some(_) => {
                say!("{name}: stopping the leftover of a runner that was killed (pid {})", record.pid());
                stop(project, &record, grace)?;
            }
            None if output == Output::Terminal && names.contains(name) => {
                say!("{name}: stopping the background instance (pid {}) to run it here", record.pid());
                stop(project, &record, grace)?;
            }
            None => {
                if names.contains(name) {
                    say!("{name}: already running (pid {})", record.pid());
                }
                kept.insert(name.clone(), record.group);
            }
        }
    }
    let to_start: Vec<String> = names.iter().filter(|n| !kept.contains_key(*n)).cloned().collect();
    // Before any holder of a port is killed: a step that fails leaves it be.
    for name in &to_start {
        setup::prepare(project, &config, name, path)?;
    }

    // A busy port of a service about to start: free it if the policy allows,
    // unless some service would get no port even then.
    let current = state::load(&project.ports_json(), &config)?;
    let wanted: BTreeMap<&String, u16> =
        to_start.iter().map(|n| (n, current.get(n).copied().unwrap_or(config.services[n].port))).collect();
    let contested: BTreeMap<&String, u16> = wanted.into_iter().filter(|(_, p)| !alloc::is_free(*p)).collect();
    let running = || -> Ports { pids::load_all(&project.root).into_iter().map(|r| (r.service, r.port)).collect() };
    if !contested.is_empty() {
        let mut freeable = BTreeSet::new();
        for (name, port) in &contested {
            if conflict::may_free(project, name, *port, mode, &config)? {
                freeable.insert(*port);
            }
        }
        ports::check_allocatable(project, &config, &running(), &freeable)?;
    }
    let mut busy = BTreeMap::new();
    for (name, port) in contested {
        busy.extend(conflict::resolve(project, name, port, mode, &config)?.map(|why| (name.clone(), why)));
    }
    let ports = ports::allocate_and_write(project, &config, &running(), &busy)?;

    let mut supervisor = Supervisor::new(project.clone(), config, ports, output)?;
    supervisor.kept = kept;
    Ok(supervisor)
}

/// Stops a recorded service before starting anew: one still running would
/// be started twice.
fn stop(project: &Project, record: &pids::Record, grace: std::time::Duration) -> anyhow::Result<()> {
    if record.group.stop(grace) == Stopped::Survived {
        bail!("{} (pid {}) could not be stopped: it still runs (stop it as its user)", record.service, record.pid());
    }
    pids::remove(project, &record.service, record.group)
}

/// The services to start for a selection, with their dependencies, in order.
pub fn selected(config: &Config, names: &[String]) -> anyhow::Result<Vec<String>> {
    config.closure(crate::cli::selection(names))
}

/// Bad input changes nothing: what would keep `names` from starting is
/// found before anything is stopped, killed or written (ports.toml's steps
/// and programs, `.ports.json`, the registry).
pub fn check(project: &Project, config: &Config, names: &[String], path: &OsString) -> anyhow::Result<()> {
    setup::check(project, config, names, path)?;
    state::load(&project.ports_json(), config)?;
    Registry::open()?;
    Ok(())
}

/// What `dev` and `start` share: prepare the selected services and their
/// dependencies, then start them and wait until they are ready.
pub fn up(project: &Project, services: &[String], flags: ConflictFlags, output: Output) -> anyhow::Result<Supervisor> {
    let config = crate::config::load(&project.ports_toml())?;
    let names = selected(&config, services)?;
    let path = setup::search_path(&config);
    check(project, &config, &names, &path)?;
    // One launch at a time in a checkout: two at once would each find a
    // service not running, and start it twice.
    let waiting = "waiting for another `cargo xtask` of this checkout to finish starting services";
    let _launch = Lock::acquire_saying(&project.launch_lock(), waiting)?;
    let mode = flags.mode(std::env::var("FORCE_MODE").ok().as_deref(), std::io::stdin().is_terminal());
    // dev's services must not outlive it: its guard watches before the first starts.
    let guard = match output {
        Output::Terminal => Some(guard::spawn(project)?),
        Output::Files => None,
    };
    let mut sup = prepare(project, config, &names, mode, output, &path)?;
    sup.guard = guard;
    supervisor::forward_signals(sup.sender())?;
    sup.start_all(&names)?;
    Ok(sup)
}
