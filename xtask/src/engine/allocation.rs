//! `cargo xtask ports`: show the allocations and who holds each port;
//! `allocate`, `set` and `reset` change them. `allocate_and_write` is the one
//! place that allocates and writes, for every command.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, ensure};
use serde_json::json;

use crate::cli::{ConflictFlags, PortsAction, PortsArgs};
use crate::model::alloc::{self, Exhausted, KernelPorts};
use crate::model::book::{self, Ports};
use crate::model::config::{Config, MIN_PORT};
use crate::model::envfile;
use crate::system::files::{self, Lock};
use crate::system::holder::{self, Class, Holder, Known};
use crate::system::paths::Project;
use crate::system::probe;
use crate::system::records;
use crate::system::registry::Registry;
use crate::system::term::Style;
use crate::system::term::say;

impl PortsArgs {
    pub fn run(self, project: &Project) -> anyhow::Result<()> {
        // All but `who` read ports.toml: a broken one fails them before anything changes.
        let config = || crate::engine::load_config(project);
        match self.action {
            Some(PortsAction::Who { ports, json }) => who(project, &ports, json),
            None if self.all => config().and_then(|_| show_all(project, self.json)),
            None => show(project, &config()?, self.json),
            Some(PortsAction::Allocate) => {
                let config = config()?;
                let running = running_ports(project);
                allocate_and_write(project, &config, &running, &BTreeMap::new())?;
                show(project, &config, false)
            }
            Some(PortsAction::Set { service, port }) => {
                set(project, &config()?, &service, port, ConflictFlags::default())
            }
            Some(PortsAction::Reset) => config().and_then(|_| reset(project)),
        }
    }
}

/// Ports of this checkout's services that are running now: they keep them.
pub fn running_ports(project: &Project) -> Ports {
    records::load_all(&project.root).into_iter().filter(|r| r.group.is_running()).map(|r| (r.service, r.port)).collect()
}

/// Allocates a port for every service and writes `.ports.json`,
/// `.env.runtime` and this checkout's registry entry, under the checkout's
/// lock and the registry's, so concurrent runs here or in other checkouts
/// never hand out one port twice. Services in `running` keep their port.
/// Each move is said in one line, with the reason from `why_busy` when the
/// caller knows it. On failure nothing is written.
pub fn allocate_and_write(
    project: &Project,
    config: &Config,
    running: &Ports,
    why_busy: &BTreeMap<String, String>,
) -> anyhow::Result<Ports> {
    let _lock = Lock::acquire(&project.lock_file())?;
    let mut registry = Registry::open()?;
    let allocated = book::load(&project.ports_json(), config)?;
    for (name, port) in running.iter().filter(|(name, port)| allocated.get(*name).is_some_and(|p| p != *port)) {
        say!(
            "{name}: keeps port {port} while it runs, not the {} of .ports.json: to move it, `cargo xtask ports set {name} PORT`",
            allocated[name]
        );
    }
    let mut current = config.preferred_ports();
    current.extend(allocated);
    allocate_locked(project, config, &mut registry, &current, running, why_busy)
}

/// Fails, as `allocate_and_write` would, if some service would get no port
/// even were every port in `freeable` free: said before a holder of one of
/// them is killed, when nothing has changed yet. Writes nothing.
pub fn check_allocatable(
    project: &Project,
    config: &Config,
    running: &Ports,
    freeable: &BTreeSet<u16>,
) -> anyhow::Result<()> {
    let registry = Registry::open()?;
    let mut current = config.preferred_ports();
    current.extend(book::load(&project.ports_json(), config)?);
    let reserved = registry.entries.reserved_by_others(&project.root);
    let usable = |port| freeable.contains(&port) || probe::is_free(port);
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
    project: &Project,
    config: &Config,
    registry: &mut Registry,
    current: &Ports,
    fixed: &Ports,
    why_busy: &BTreeMap<String, String>,
) -> anyhow::Result<Ports> {
    let reserved = registry.entries.reserved_by_others(&project.root);
    let kernel = probe::kernel_ports();
    let ports = match alloc::allocate(config, current, fixed, &reserved, &kernel, probe::is_free) {
        Ok(ports) => ports,
        Err(exhausted) => bail!(explain_exhausted(&exhausted, registry, project)),
    };
    write(project, config, registry, &ports)?;
    let start: Ports = current.iter().chain(fixed).map(|(name, port)| (name.clone(), *port)).collect();
    let given_to: BTreeMap<u16, &String> = ports.iter().map(|(name, port)| (*port, name)).collect();
    for (name, port) in ports.iter().filter(|(name, port)| start[*name] != **port) {
        let from = start[name];
        // Services are served in dependency order: an earlier one may have
        // taken it (not this one, which moved from it).
        let why = match given_to.get(&from) {
            Some(other) => format!("is given to {other}"),
            None => why_busy.get(name).cloned().unwrap_or_else(|| why_moved(from, config, registry, project)),
        };
        match around_ephemeral(from, *port, config, &kernel) {
            Some(around) => say!("{name}: port {from} {why}; using {port}, as {around}"),
            None => say!("{name}: port {from} {why}; using {port}"),
        }
    }
    if let Some((lo, hi)) = kernel.ephemeral {
        for (name, port) in ports.iter().filter(|(_, port)| kernel.is_ephemeral(**port)) {
            say!(
                "{name}: port {port} is in the kernel's ephemeral range {lo}-{hi}, where outgoing connections take \
                 their ports, so it may be busy at a later start: a port outside {lo}-{hi} is safer"
            );
        }
    }
    Ok(ports)
}

/// Writes `.ports.json`, `.env.runtime` and this checkout's registry entry
/// all together or, on any failure, none: a registry left behind would let
/// another checkout take the new ports, and services would read stale ones.
fn write(project: &Project, config: &Config, registry: &mut Registry, ports: &Ports) -> anyhow::Result<()> {
    // The registry lives outside the checkout, by design; these two must not.
    files::check_inside(&project.root, &[project.ports_json(), project.env_runtime()])?;
    let mut writes = Vec::new();
    writes.extend(book::pending_write(&project.ports_json(), config, ports)?);
    writes.extend(envfile::pending_write(&project.env_runtime(), config, ports));
    registry.entries.mine(&project.root).ports = ports.clone();
    writes.push(registry.pending_write());
    files::write_all_atomic(&writes)
}

/// Why the walk from `start` went around the kernel's ephemeral range to
/// reach `port`, when it did.
fn around_ephemeral(start: u16, port: u16, config: &Config, kernel: &KernelPorts) -> Option<String> {
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

/// One row of `cargo xtask ports`.
struct Row {
    service: String,
    port: u16,
    preferred: u16,
    /// Why `port` is not `preferred`, when the kernel's ephemeral range explains it.
    why_moved: Option<String>,
    holders: Vec<(Holder, Class)>,
}

fn rows(project: &Project, config: &Config) -> anyhow::Result<(Vec<Row>, bool)> {
    let current = book::load(&project.ports_json(), config)?;
    let allocated = !current.is_empty();
    let ports: Ports = config.preferred_ports().into_iter().chain(current).collect();
    let holders = classified_holders(project, &ports.values().copied().collect())?;
    let kernel = probe::kernel_ports();
    let rows = config
        .order
        .iter()
        .map(|name| {
            let (port, preferred) = (ports[name], config.services[name].port);
            Row {
                service: name.clone(),
                port,
                preferred,
                why_moved: around_ephemeral(preferred, port, config, &kernel),
                // A hand-edited .ports.json may give two services one port.
                holders: holders.get(&port).cloned().unwrap_or_default(),
            }
        })
        .collect();
    Ok((rows, allocated))
}

/// The holders of each of `ports` that has a listener, with what each is to this checkout.
fn classified_holders(project: &Project, ports: &BTreeSet<u16>) -> anyhow::Result<BTreeMap<u16, Vec<(Holder, Class)>>> {
    let registry = Registry::open()?;
    let known = Known::gather(project, &registry);
    drop(registry);
    let classify = |hs: Vec<Holder>| hs.into_iter().map(|h| (known.classify(&h), h)).map(|(c, h)| (h, c)).collect();
    Ok(holder::lookup(ports).into_iter().map(|(port, hs)| (port, classify(hs))).collect())
}

fn show(project: &Project, config: &Config, as_json: bool) -> anyhow::Result<()> {
    let (rows, allocated) = rows(project, config)?;
    if as_json {
        let services: Vec<_> = rows
            .iter()
            .map(|row| {
                let holders: Vec<_> = row.holders.iter().map(|(h, class)| holder_json(h, class)).collect();
                json!({
                    "service": row.service,
                    "port": row.port,
                    "preferred": row.preferred,
                    "why_moved": row.why_moved,
                    "free": row.holders.is_empty(),
                    "holders": holders,
                })
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&json!({ "allocated": allocated, "services": services }))?);
        return Ok(());
    }
    let style = Style::stdout();
    if !allocated {
        say!("{}", style.dim("not allocated yet: these are the preferred ports (cargo xtask ports allocate)"));
    }
    let width = rows.iter().map(|r| r.service.len()).max().unwrap_or(0);
    for row in &rows {
        let who = row.holders.iter().map(|(h, class)| whose(h, class)).collect::<Vec<_>>().join("; ");
        let state = match row.holders.as_slice() {
            [] => style.dim("free"),
            holders if holders.iter().all(|(_, c)| matches!(c, Class::Ours(_))) => {
                style.green(&format!("ours ({who})"))
            }
            _ => style.yellow(&format!("held by {who}")),
        };
        let why = match &row.why_moved {
            Some(why) => style.dim(&format!("  (not {}: {why})", row.preferred)),
            None => String::new(),
        };
        say!("{:width$}  {:>5}  {state}{why}", row.service, row.port);
    }
    Ok(())
}

/// `ports who PORT...`: who holds each port (lsof's question), and whose
/// service that is: this checkout's, or another checkout's.
fn who(project: &Project, ports: &[u16], as_json: bool) -> anyhow::Result<()> {
    let holders = classified_holders(project, &ports.iter().copied().collect())?;
    // A port may be asked twice.
    let rows: Vec<(u16, Vec<(Holder, Class)>)> =
        ports.iter().map(|port| (*port, holders.get(port).cloned().unwrap_or_default())).collect();
    if as_json {
        let ports: Vec<_> = rows
            .iter()
            .map(|(port, hs)| {
                let holders: Vec<_> = hs.iter().map(|(h, class)| holder_json(h, class)).collect();
                json!({ "port": port, "holders": holders })
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&json!({ "ports": ports }))?);
        return Ok(());
    }
    let style = Style::stdout();
    for (port, hs) in &rows {
        let state = match hs.as_slice() {
            [] => style.dim("free"),
            hs => format!("held by {}", hs.iter().map(|(h, c)| whose(h, c)).collect::<Vec<_>>().join("; ")),
        };
        say!("{port:>5}  {state}");
    }
    Ok(())
}

/// A holder, and whose service it is when the runner knows.
fn whose(holder: &Holder, class: &Class) -> String {
    match class {
        Class::Ours(service) => format!("{holder}: this checkout's {service}"),
        Class::OtherCheckout(path) => format!("{holder}: a service of the checkout {}", path.display()),
        Class::Dashboard => format!("{holder}: this checkout's dashboard"),
        Class::Unrecorded => format!("{holder}: started by cargo xtask, for a service no record names"),
        _ => holder.to_string(),
    }
}

fn holder_json(holder: &Holder, class: &Class) -> serde_json::Value {
    json!({
        "pid": holder.id.map(|id| id.pid),
        "user": crate::system::users::name_of(holder.uid),
        "command": holder.command,
        "ours": matches!(class, Class::Ours(_)),
        "service": match class { Class::Ours(service) => Some(service.clone()), _ => None },
        "checkout": match class { Class::OtherCheckout(path) => Some(path.clone()), _ => None },
    })
}

fn show_all(project: &Project, as_json: bool) -> anyhow::Result<()> {
    let registry = Registry::open()?;
    if registry.pruned {
        registry.save()?; // a listing otherwise writes nothing (a hand-formatted registry stays as it is)
    }
    let checkouts = &registry.entries.checkouts;
    if as_json {
        say!("{}", serde_json::to_string_pretty(&registry.entries)?);
        return Ok(());
    }
    if checkouts.is_empty() {
        say!("no checkout has allocated ports yet");
    }
    for (path, entry) in checkouts {
        let this = if *path == project.root { "  (this checkout)" } else { "" };
        say!("{}{this}", path.display());
        for (service, port) in &entry.ports {
            say!("  {service:12} {port}");
        }
        if let Some(port) = entry.dashboard {
            say!("  {:12} {port}", "(dashboard)");
        }
    }
    Ok(())
}

/// `ports set`: pins the port, then restarts the background services that use it.
pub fn set(project: &Project, config: &Config, service: &str, port: u16, flags: ConflictFlags) -> anyhow::Result<()> {
    let running = running_ports(project);
    let restart: Vec<String> = users_of(config, service).into_iter().filter(|n| running.contains_key(n)).collect();
    if !restart.is_empty() {
        // What would keep them from starting again, before the new port is written.
        crate::engine::control::check_restartable(project)?;
        crate::engine::launch::check(project, config, &restart, &crate::engine::setup::search_path(config))?;
    }
    pin(project, config, service, port)?;
    if restart.is_empty() {
        return Ok(());
    }
    say!("restarting {} with the new port", restart.join(", "));
    crate::engine::control::restart(project, &restart, flags)
}

/// A service and the services whose command or environment uses its port,
/// in dependency order: what must restart when the port changes.
pub fn users_of(config: &Config, service: &str) -> Vec<String> {
    let uses = |n: &String| n == service || config.services[n].refers_to().contains(service);
    config.order.iter().filter(|n| uses(n)).cloned().collect()
}

/// Pins `service` to `port` in `.ports.json`, `.env.runtime` and the
/// registry. The other services keep the ports they run on, and the rest are
/// allocated as usual: the ports they would prefer may be another
/// checkout's, or busy.
pub fn pin(project: &Project, config: &Config, service: &str, port: u16) -> anyhow::Result<Ports> {
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
    let _lock = Lock::acquire(&project.lock_file())?;
    let mut registry = Registry::open()?;
    if let Some(owner) = registry.owner_of(port, &project.root) {
        bail!("port {port} is reserved by the checkout {}: pick another", owner.display());
    }
    let current = current(project, config)?;
    let mut fixed = running_ports(project);
    let now: Ports = current.iter().chain(&fixed).map(|(name, p)| (name.clone(), *p)).collect();
    if let Some((other, _)) = now.iter().find(|(name, p)| **p == port && name.as_str() != service) {
        bail!("port {port} is already given to {other}: pick another, or move {other} first");
    }
    fixed.insert(service.to_owned(), port);
    let ports = allocate_locked(project, config, &mut registry, &current, &fixed, &BTreeMap::new())?;
    say!("{service}: pinned to port {port}");
    Ok(ports)
}

fn reset(project: &Project) -> anyhow::Result<()> {
    let running = running_ports(project);
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

/// Every service's port now: its allocation, else its preferred one.
pub fn current(project: &Project, config: &Config) -> anyhow::Result<BTreeMap<String, u16>> {
    let mut ports = config.preferred_ports();
    ports.extend(book::load(&project.ports_json(), config)?);
    Ok(ports)
}
