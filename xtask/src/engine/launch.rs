//! Bringing services up, for `dev` and `start`: check the input, take the
//! checkout's locks, stop the leftovers of a runner that was killed (and
//! remove the containers no record names), settle
//! who may keep running, set up, resolve conflicts on the services' ports,
//! allocate, see that the proxy of the named URLs runs, then start them in
//! dependency order and wait until they are ready.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::bail;

use super::guard::{self, Guard};
use super::output::Printer;
use super::stopper::{self, Target, refuse_survivors};
use super::supervisor::{self, Output, Supervisor};
use super::watch::Watch;
use super::{Checkout, allocation, conflict, containers, preflight, proxy, setup};
use crate::model::alloc;
use crate::model::book::Ports;
use crate::model::config::DEFAULT_STOP_GRACE;
use crate::model::policy::Mode;
use crate::system::files::Lock;
use crate::system::paths::Project;
use crate::system::process::{Hurry, ProcId};
use crate::system::records::{self, Record};
use crate::system::term::say;

/// Services brought up, and, for `dev`, what it holds while it runs: its
/// guard, and its lock on the checkout.
pub struct Up {
    pub supervisor: Supervisor,
    /// Held until the end: dropped, they let the guard go and the lock free.
    pub _guard: Option<Guard>,
    pub _dev_lock: Option<Lock>,
}

/// Starts `names` (closed over their dependencies, in order) and waits until
/// they are ready. With `Output::Terminal` (dev) services of the selection
/// that run in the background are taken over; with `Output::Files` (start)
/// they keep running. `watch` is told of each service moved, starting and
/// ready, and may call the start off.
pub fn up(checkout: &Checkout, names: &[String], mode: Mode, output: Output, watch: &dyn Watch) -> anyhow::Result<Up> {
    crate::system::term::say_from_a_thread(); // a signal stops the services even while stdout blocks
    let project = &checkout.project;
    preflight::check(checkout, names)?;
    let dev_lock = dev_lock(project, output)?;
    // One launch at a time in a checkout: two at once would each find a
    // service not running, and start it twice.
    let waiting = "waiting for another `cargo xtask` of this checkout to finish starting services";
    let _launch = Lock::acquire_saying(&project.launch_lock(), waiting)?;
    // The book again, now that no other launch runs: one that held the lock
    // may have moved services since it was read, and a port it left is not
    // worth anyone's process (`contested`, `check_allocatable`).
    let checkout = &Checkout { book: super::read_book(project, &checkout.config)?.0, ..checkout.clone() };
    // dev's services must not outlive it: its guard watches before the first starts.
    let guard = match output {
        Output::Terminal => Some(guard::spawn(project)?),
        Output::Files => None,
    };
    let hurry = Hurry::default();
    let (ports, kept) = prepare(checkout, names, mode, output, watch)?;
    let mut supervisor = Supervisor::new(checkout.clone(), ports, output, kept, hurry.clone());
    // Ctrl-C, SIGTERM and SIGHUP stop what this runner starts; a second
    // Ctrl-C cuts the graces short (`start` too, while it stops what it began).
    supervisor::forward_signals(supervisor.sender(), Some(hurry))?;
    supervisor.start_all(names, watch)?;
    Ok(Up { supervisor, _guard: guard, _dev_lock: dev_lock })
}

/// Settles what must change before `names` start: returns the ports they
/// start on, and the services that run in the background and stay.
fn prepare(
    checkout: &Checkout,
    names: &[String],
    mode: Mode,
    output: Output,
    watch: &dyn Watch,
) -> anyhow::Result<(Ports, BTreeMap<String, Record>)> {
    let (project, config) = (&checkout.project, &checkout.config);
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
    containers::check_stoppable(stale.iter().chain(going.iter().map(|(r, _)| r)))?;
    let to_start: Vec<String> = names.iter().filter(|n| !kept.contains_key(*n)).cloned().collect();
    let fixed: Ports = kept.values().map(|r| (r.service.clone(), r.port)).collect();
    // Would every service get a port, were the ports the policy may free
    // freed? If not, fail now, while nothing is stopped or killed.
    // What is about to be stopped frees its port too.
    let mut freeable: BTreeSet<u16> = going.iter().map(|(r, _)| r.port).collect();
    for (name, port) in contested(checkout, &to_start)? {
        if conflict::may_free(checkout, &name, port, mode)? {
            freeable.insert(port);
        }
    }
    allocation::check_allocatable(checkout, &fixed, &freeable)?;

    for record in stale {
        stopper::retire(project, config, &record)?;
    }
    // Stopped as any stop: dependents first, what depends on nothing left together.
    for (record, doing) in &going {
        say!("{}: {doing} (pid {})", record.service, record.pid());
    }
    let grace = |r: &Record| config.services.get(&r.service).map_or(DEFAULT_STOP_GRACE, |s| s.stop_grace);
    let targets = going.iter().map(|(r, _)| Target::recorded(r, grace(r))).collect();
    let printer = Printer::new(config);
    refuse_survivors(&stopper::stop(project, Some(config), targets, &Hurry::default(), &printer))?;
    // What no record names any more: containers of a runner killed with its guard.
    containers::sweep(checkout)?;
    // Before any holder of a port is killed: a step that fails leaves it be.
    setup::prepare(checkout, &to_start)?;
    let mut busy = BTreeMap::new();
    for (name, port) in contested(checkout, &to_start)? {
        busy.extend(conflict::resolve(checkout, &name, port, mode)?.map(|why| (name, why)));
    }
    // The proxy first: should its port move, the names written with the
    // allocation have its new one.
    proxy::start_if_needed();
    let allocation = allocation::allocate_and_write(checkout, &fixed, &busy)?;
    allocation.moves.iter().for_each(|moved| watch.moved(moved));
    Ok((allocation.ports, kept))
}

/// The busy ports of `to_start` that the allocation would give as they are,
/// so that their holders may be asked to go. One below the range, say, is
/// moved past whoever holds it: nobody is killed for it.
fn contested(checkout: &Checkout, to_start: &[String]) -> anyhow::Result<Vec<(String, u16)>> {
    let config = &checkout.config;
    let ports = checkout.ports(&Ports::new());
    let as_is = |p: u16| alloc::in_range(p, config.range) && !alloc::is_browser_blocked(p);
    let free = containers::free(config)?;
    Ok(to_start.iter().map(|n| (n.clone(), ports[n])).filter(|(_, p)| as_is(*p) && !free(*p)).collect())
}

/// One `dev` per checkout, and no `start` or `restart` beside it (it takes
/// over what runs here), even while it runs no service: a `dev` holds this
/// lock for as long as it runs, and says in it who it is. The others only
/// look, with a shared hold for a moment, which many may take at once.
fn dev_lock(project: &Project, output: Output) -> anyhow::Result<Option<Lock>> {
    let path = project.dev_lock();
    let refuse = || {
        let who = records::running_dev(project).map_or(String::new(), |dev| format!(" (pid {})", dev.pid));
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
