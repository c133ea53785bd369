//! Giving services ports, and writing what was given: `.ports.json`,
//! `.env.runtime` and this checkout's registry entry (with its names, and
//! the proxy's port), together, under the checkout's lock and the
//! registry's. The one place that allocates and writes, for every operation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::{bail, ensure};
use serde::Serialize;

use super::{Checkout, containers, proxy};
use crate::model::alloc::{self, Exhausted, KernelPorts};
use crate::model::book::{self, Ports};
use crate::model::config::{Config, MIN_PORT};
use crate::model::envfile;
use crate::system::files::{self, Lock};
use crate::system::holder::{self, Holder};
use crate::system::paths::Project;
use crate::system::probe;
use crate::system::registry::Registry;
use crate::system::term::say;

/// What an allocation gave: every service's port, and the services it moved.
#[derive(Debug, Clone)]
pub struct Allocation {
    pub ports: Ports,
    pub moves: Vec<Move>,
}

/// A service given another port than the one it would have had (the book's,
/// else its preferred one), and why: what the runner says in one line, and
/// what the agent interface returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub service: String,
    pub from: u16,
    pub to: u16,
    /// Why `from` could not be used: "is held by pid 4242 (python3 -m
    /// http.server 8000, user ann); not killing it: --no-kill".
    pub why: String,
    /// Why the walk to `to` went around the kernel's ephemeral range, when it did.
    pub around: Option<String>,
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Move { service, from, to, why, around } = self;
        write!(f, "{service}: port {from} {why}; using {to}")?;
        around.as_ref().map_or(Ok(()), |around| write!(f, ", as {around}"))
    }
}

/// Allocates a port for every service and writes `.ports.json`,
/// `.env.runtime` and this checkout's registry entry, under the checkout's
/// lock and the registry's, so concurrent runs here or in other checkouts
/// never hand out one port twice. Services in `running` keep their port.
/// Each move is said in one line, with the reason from `why_busy` when the
/// caller knows it, and returned. On failure nothing is written.
pub fn allocate_and_write(
    checkout: &Checkout,
    running: &Ports,
    why_busy: &BTreeMap<String, String>,
) -> anyhow::Result<Allocation> {
    let (project, config) = (&checkout.project, &checkout.config);
    let _lock = Lock::acquire(&project.lock_file())?;
    let mut registry = Registry::open()?;
    // Again, under the lock: another command may have written it since.
    let (allocated, _) = super::read_book(project, config)?;
    for (name, port) in running.iter().filter(|(name, port)| allocated.get(*name).is_some_and(|p| p != *port)) {
        say!(
            "{name}: keeps port {port} while it runs, not the {} of .ports.json: to move it, `cargo xtask ports set {name} PORT`",
            allocated[name]
        );
    }
    let current = book::effective(config, &allocated, &Ports::new());
    allocate_locked(checkout, &mut registry, &current, running, why_busy)
}

/// Fails, as `allocate_and_write` would, if some service would get no port
/// even were every port in `freeable` free: said before a holder of one of
/// them is killed, when nothing has changed yet. Writes nothing.
pub fn check_allocatable(checkout: &Checkout, running: &Ports, freeable: &BTreeSet<u16>) -> anyhow::Result<()> {
    let (project, config) = (&checkout.project, &checkout.config);
    let registry = Registry::open()?;
    let current = checkout.ports(&Ports::new());
    let reserved = registry.entries.reserved_by_others(&project.root);
    let free = containers::free(config)?;
    let usable = |port| freeable.contains(&port) || free(port);
    match alloc::allocate(config, &current, running, &reserved, &probe::kernel_ports(), usable) {
        Ok(_) => Ok(()),
        Err(exhausted) => bail!(explain_exhausted(&exhausted, &registry, project)),
    }
}

/// The part of `allocate_and_write` and `pin` done under both locks: every
/// service gets a port from its `current` one, those in `fixed` keep theirs;
/// then the files are written, each move said, and each port inside the
/// kernel's ephemeral range (one the user chose) said to be fragile.
fn allocate_locked(
    checkout: &Checkout,
    registry: &mut Registry,
    current: &Ports,
    fixed: &Ports,
    why_busy: &BTreeMap<String, String>,
) -> anyhow::Result<Allocation> {
    let (project, config) = (&checkout.project, &checkout.config);
    let reserved = registry.entries.reserved_by_others(&project.root);
    let kernel = probe::kernel_ports();
    let ports = match alloc::allocate(config, current, fixed, &reserved, &kernel, containers::free(config)?) {
        Ok(ports) => ports,
        Err(exhausted) => bail!(explain_exhausted(&exhausted, registry, project)),
    };
    write(checkout, registry, &ports)?;
    let start: Ports = current.iter().chain(fixed).map(|(name, port)| (name.clone(), *port)).collect();
    let given_to: BTreeMap<u16, &String> = ports.iter().map(|(name, port)| (*port, name)).collect();
    let mut moves = Vec::new();
    for (name, port) in ports.iter().filter(|(name, port)| start[*name] != **port) {
        let from = start[name];
        // Services are served in dependency order: an earlier one may have
        // taken it (not this one, which moved from it).
        let why = match given_to.get(&from) {
            Some(other) => format!("is given to {other}"),
            None => why_busy.get(name).cloned().unwrap_or_else(|| why_moved(from, config, registry, project)),
        };
        let around = around_ephemeral(from, *port, config, &kernel);
        let moved = Move { service: name.clone(), from, to: *port, why, around };
        say!("{moved}");
        moves.push(moved);
    }
    if let Some((lo, hi)) = kernel.ephemeral {
        for (name, port) in ports.iter().filter(|(_, port)| kernel.is_ephemeral(**port)) {
            say!(
                "{name}: port {port} is in the kernel's ephemeral range {lo}-{hi}, where outgoing connections take \
                 their ports, so it may be busy at a later start: a port outside {lo}-{hi} is safer"
            );
        }
    }
    Ok(Allocation { ports, moves })
}

/// Writes `.ports.json`, `.env.runtime` and this checkout's registry entry
/// all together or, on any failure, none: a registry left behind would let
/// another checkout take the new ports, and services would read stale ones.
fn write(checkout: &Checkout, registry: &mut Registry, ports: &Ports) -> anyhow::Result<()> {
    let (project, config) = (&checkout.project, &checkout.config);
    // The registry lives outside the checkout, by design; these two must not.
    files::check_inside(&project.root, &[project.ports_json(), project.env_runtime()])?;
    let mut writes = Vec::new();
    // Each only when it would say something else: a hand-formatted book is
    // left as its author wrote it, and a rewrite would wake file watchers.
    let (book_path, env_path) = (project.ports_json(), project.env_runtime());
    if !files::read_optional(&book_path)?.is_some_and(|text| book::says(&text, &book_path, config, ports)) {
        writes.push((book_path, book::render(ports)));
    }
    registry.entries.mine(&project.root).ports = ports.clone();
    let names = proxy::give_names(registry, &project.root);
    let env = envfile::render(config, ports, names.as_ref());
    // Generated: whatever it holds (even bytes that are not text) is replaced.
    if !files::holds(&env_path, &env) {
        writes.push((env_path, env));
    }
    writes.push(registry.pending_write());
    files::write_all_atomic(&writes)
}

/// Why the walk from `start` went around the kernel's ephemeral range to
/// reach `port`, when it did.
pub fn around_ephemeral(start: u16, port: u16, config: &Config, kernel: &KernelPorts) -> Option<String> {
    let (lo, hi) = alloc::went_around(start, port, config.attempts, config.range, kernel)?;
    Some(format!("the kernel's ephemeral range {lo}-{hi} is left to outgoing connections"))
}

/// Why a port could not be used, in a few words.
fn why_moved(port: u16, config: &Config, registry: &Registry, project: &Project) -> String {
    if alloc::is_browser_blocked(port) {
        return "is blocked by browsers".into();
    }
    if port < MIN_PORT {
        return format!("is below {}", MIN_PORT);
    }
    if port < config.range.0 {
        return format!("is below the range of ports.toml ({}-{})", config.range.0, config.range.1);
    }
    if let Some(owner) = registry.owner_of(port, &project.root) {
        return format!("is reserved by the checkout {}", owner.display());
    }
    if registry.entries.proxy.as_ref().is_some_and(|proxy| proxy.port == port) {
        return "is the port of the named URLs' proxy".into();
    }
    match holder::lookup(&BTreeSet::from([port])).remove(&port) {
        Some(holders) => format!("is held by {}", describe(&holders)),
        None => "was busy".into(),
    }
}

fn describe(holders: &[Holder]) -> String {
    holders.iter().map(Holder::to_string).collect::<Vec<_>>().join(", ")
}

fn explain_exhausted(e: &Exhausted, registry: &Registry, project: &Project) -> String {
    let holders = holder::lookup(&e.busy.iter().copied().collect());
    // Why each port was not used, by port: its holder, or the service here it went to.
    let mut why: BTreeMap<u16, String> = holders.iter().map(|(port, hs)| (*port, describe(hs))).collect();
    why.extend(e.given.iter().map(|(port, other)| (*port, format!("given to {other}, of this checkout"))));
    let mut lines = vec![format!("{e}, and nothing was changed")];
    let shown = 5;
    lines.extend(why.iter().take(shown).map(|(port, why)| format!("  {port}: {why}")));
    if why.len() > shown {
        lines.push(format!("  ... and {} more", why.len() - shown));
    }
    let tried = e.tried.iter().flat_map(|&(lo, hi)| lo..=hi);
    let reserved = tried.filter(|p| registry.owner_of(*p, &project.root).is_some()).count();
    if reserved > 0 {
        lines.push(format!("  {reserved} ports are reserved by other checkouts (cargo xtask ports --all)"));
    }
    lines.push(e.advice());
    lines.join("\n")
}

/// Pins `service` to `port` in `.ports.json`, `.env.runtime` and the
/// registry. The other services keep the ports they run on, and the rest are
/// allocated as usual: the ports they would prefer may be another
/// checkout's, or busy (those that move are in the allocation's moves).
pub fn pin(checkout: &Checkout, service: &str, port: u16) -> anyhow::Result<Allocation> {
    check_pin(&checkout.config, service, port)?;
    let (project, config) = (&checkout.project, &checkout.config);
    let _lock = Lock::acquire(&project.lock_file())?;
    let mut registry = Registry::open()?;
    if let Some(owner) = registry.owner_of(port, &project.root) {
        bail!("port {port} is reserved by the checkout {}: pick another", owner.display());
    }
    if registry.entries.proxy.as_ref().is_some_and(|proxy| proxy.port == port) {
        bail!("port {port} is the proxy's, which serves the named URLs (`cargo xtask proxy`): pick another");
    }
    let (allocated, _) = super::read_book(project, config)?;
    let current = book::effective(config, &allocated, &Ports::new());
    let mut fixed = super::running_ports(project);
    let now = book::effective(config, &allocated, &fixed);
    if let Some((other, _)) = now.iter().find(|(name, p)| **p == port && name.as_str() != service) {
        bail!("port {port} is already given to {other}: pick another, or move {other} first");
    }
    fixed.insert(service.to_owned(), port);
    let allocation = allocate_locked(checkout, &mut registry, &current, &fixed, &BTreeMap::new())?;
    say!("{service}: pinned to port {port}");
    Ok(allocation)
}

/// What is wrong with a port asked for by hand, found before anything is
/// locked, stopped or written.
pub fn check_pin(config: &Config, service: &str, port: u16) -> anyhow::Result<()> {
    ensure!(
        config.services.contains_key(service),
        "unknown service {service:?}: ports.toml has {}",
        config.names().join(", ")
    );
    ensure!(port >= MIN_PORT, "port {port} is below {}: pick a port from {} up", MIN_PORT, MIN_PORT);
    ensure!(!alloc::is_browser_blocked(port), "port {port} is blocked by browsers: pick another");
    let (lo, hi) = config.range;
    ensure!(
        (lo..=hi).contains(&port),
        "port {port} is outside the range of ports.toml ({lo}-{hi}): pick a port inside it, or widen the range"
    );
    Ok(())
}

/// `ports reset`: forgets the allocations and this checkout's reservations.
pub fn reset(project: &Project) -> anyhow::Result<()> {
    let running = super::running_ports(project);
    ensure!(
        running.is_empty(),
        "{} running: stop {} first (cargo xtask stop), then reset",
        running.keys().cloned().collect::<Vec<_>>().join(", "),
        if running.len() == 1 { "it" } else { "them" }
    );
    let _lock = Lock::acquire(&project.lock_file())?;
    let mut registry = Registry::open()?;
    // The registry first: if it cannot be saved, nothing has changed.
    registry.entries.checkouts.remove(&project.root);
    registry.save()?;
    files::remove_optional(&project.ports_json())?;
    files::remove_optional(&project.env_runtime())?;
    say!("forgot the allocations: .ports.json and .env.runtime removed, reservations released");
    Ok(())
}
