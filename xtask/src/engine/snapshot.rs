//! What runs and who holds which port, as every front end shows it: `status`,
//! `ports`, `ports who`, `ports --all`, the dashboard (and its JSON is the
//! commands' `--json`). Read-only: a snapshot changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use super::allocation::around_ephemeral;
use super::{Checkout, containers};
use crate::model::book::Ports;
use crate::model::config::Service;
use crate::model::policy::Class;
use crate::system::containers::Container;
use crate::system::holder::{self, Holder, Known};
use crate::system::paths::Project;
use crate::system::probe;
use crate::system::records::{self, Record};
use crate::system::registry::{Entries, Registry};
use crate::system::users;

/// One service, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceState {
    pub service: String,
    /// `Backend`, as the seed's status lines show it.
    #[serde(skip)]
    pub title: String,
    pub port: u16,
    pub running: bool,
    pub pid: Option<i32>,
    /// `None` when `ports.toml` could not be read: the records alone say
    /// what runs, not how to reach it or ask it.
    pub url: Option<String>,
    /// Its named URL, for a service that serves HTTP once the checkout has names.
    pub public_url: Option<String>,
    pub healthy: Option<bool>,
    /// Stopped by a signal (SIGSTOP, Ctrl-Z): it cannot answer, and is not asked.
    pub suspended: bool,
    /// The container its client runs, for a service in a container.
    pub container: Option<String>,
}

/// What `status` shows: every service's state and, when `ports.toml` could
/// not be read and the records alone say what runs, why. The agent
/// interface's `status` (its `--json` is `services`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub services: Vec<ServiceState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Every service's state, each running one asked whether it answers; what
/// the records say runs when `ports.toml` cannot be read (a merge conflict,
/// deleted). A record that cannot be read is an error: a service it names
/// might be taken for stopped.
pub fn status_now(project: &Project) -> anyhow::Result<Status> {
    records::check_all(&project.root)?;
    // Only a `ports.toml` that cannot be read leaves the records alone to say
    // what runs; a broken `.ports.json` is an error, with its fix.
    Ok(match super::load_config(project) {
        Ok(config) => {
            let checkout = Checkout::with_config(project, config)?;
            let services = status(&checkout, probe::healthy);
            Status { services, warning: None }
        }
        Err(e) => {
            let why = format!("{e:#}");
            let why = why.lines().next().unwrap_or_default();
            let warning = format!("{why}\nports.toml could not be read: showing what the records of .pids/ say runs");
            Status { services: status_from_records(project), warning: Some(warning) }
        }
    })
}

/// Every service of the checkout, in dependency order. `healthy(service,
/// port)` asks a running service that is not suspended.
pub fn status(checkout: &Checkout, mut healthy: impl FnMut(&Service, u16) -> bool) -> Vec<ServiceState> {
    let records = super::running(&checkout.project);
    let stopped = stopped_groups(&records);
    // A running service is on its record's port, whatever the book says since.
    let ports = checkout.ports(&records.iter().map(|r| (r.service.clone(), r.port)).collect());
    let config = &checkout.config;
    let names = super::proxy::names_of(&checkout.project);
    let state = |name: &String| {
        let service = &config.services[name];
        let record = records.iter().find(|r| &r.service == name);
        let port = ports[name];
        let suspended = record.is_some_and(|r| stopped.contains(&r.pid()));
        ServiceState {
            service: name.clone(),
            title: service.title(),
            port,
            running: record.is_some(),
            pid: record.map(Record::pid),
            url: Some(service.url.render(Some(name), &ports, names.as_ref())),
            public_url: names.as_ref().filter(|_| service.http).map(|names| names.url(name)),
            healthy: Some(record.is_some() && !suspended && healthy(service, port)),
            suspended,
            container: record.and_then(|r| r.container.as_ref()).map(|c| c.name()),
        }
    };
    config.order.iter().map(state).collect()
}

/// What the records say runs, when `ports.toml` cannot be read (a merge
/// conflict, deleted): no URL, no health.
fn status_from_records(project: &Project) -> Vec<ServiceState> {
    let records = super::running(project);
    let stopped = stopped_groups(&records);
    let state = |r: &Record| ServiceState {
        service: r.service.clone(),
        title: r.service.clone(),
        port: r.port,
        running: true,
        pid: Some(r.pid()),
        url: None,
        public_url: None,
        healthy: None,
        suspended: stopped.contains(&r.pid()),
        container: r.container.as_ref().map(|c| c.name()),
    };
    records.iter().map(state).collect()
}

/// The groups of `records` with a process stopped by a signal (one look at
/// every process, only when some service runs).
fn stopped_groups(records: &[Record]) -> BTreeSet<i32> {
    if records.is_empty() { BTreeSet::new() } else { procscan::stopped_groups() }
}

/// A process that holds a port, and whose it is when the runner knows.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub pid: Option<i32>,
    pub user: String,
    pub command: String,
    /// One of this checkout's services.
    pub ours: bool,
    pub service: Option<String>,
    /// The other checkout whose service it is.
    pub checkout: Option<PathBuf>,
    /// The holder in a few words, with whose it is.
    #[serde(skip)]
    pub said: String,
}

impl Held {
    fn new(holder: &Holder, class: &Class) -> Held {
        let said = match class {
            Class::Engine => format!("{holder}: the container engine's, for a container it did not name"),
            Class::Ours(service) => format!("{holder}: this checkout's {service}"),
            Class::OtherCheckout(path) => format!("{holder}: a service of the checkout {}", path.display()),
            Class::Dashboard => format!("{holder}: this checkout's dashboard"),
            Class::Proxy => format!("{holder}: the proxy of the named URLs"),
            Class::Unrecorded => format!("{holder}: started by cargo xtask, for a service no record names"),
            _ => holder.to_string(),
        };
        Held {
            pid: holder.id.map(|id| id.pid),
            user: users::name_of(holder.uid),
            command: holder.command.clone(),
            ours: matches!(class, Class::Ours(_)),
            service: match class {
                Class::Ours(service) => Some(service.clone()),
                _ => None,
            },
            checkout: match class {
                Class::OtherCheckout(path) => Some(path.clone()),
                _ => None,
            },
            said,
        }
    }

    /// A container that publishes a port, in place of the engine's process
    /// that holds its socket.
    fn container(container: &Container, class: &Class) -> Held {
        let said = containers::said(container);
        let said = match class {
            Class::Ours(service) => format!("{said}: this checkout's {service}"),
            Class::OtherCheckout(path) => format!("{said}: a service of the checkout {}", path.display()),
            _ => said,
        };
        let (service, checkout) = match class {
            Class::Ours(service) => (Some(service.clone()), None),
            Class::OtherCheckout(path) => (None, Some(path.clone())),
            _ => (None, None),
        };
        let command = containers::said(container);
        let ours = service.is_some();
        Held { pid: None, user: String::new(), command, ours, service, checkout, said }
    }
}

/// The holders of each of `ports` that has a listener, with whose each is;
/// a container that publishes one, rather than the engine's process that
/// holds it, when `checkout` is known.
pub fn holders(
    project: &Project,
    checkout: Option<&Checkout>,
    ports: &BTreeSet<u16>,
) -> anyhow::Result<BTreeMap<u16, Vec<Held>>> {
    let registry = Registry::open()?;
    let known = Known::gather(project, &registry);
    let mut found = BTreeMap::new();
    for (port, holders) in holder::lookup(ports) {
        let classes: Vec<Class> = holders.iter().map(|h| known.classify(h)).collect();
        let engine_held = classes.contains(&Class::Engine);
        let published = match checkout {
            Some(checkout) if engine_held => containers::publishing(checkout, &registry, port, true),
            _ => Vec::new(),
        };
        let held = holders.iter().zip(&classes).filter(|(_, c)| published.is_empty() || **c != Class::Engine);
        let mut rows: Vec<Held> = held.map(|(h, c)| Held::new(h, c)).collect();
        rows.extend(published.iter().map(|(container, class)| Held::container(container, class)));
        found.insert(port, rows);
    }
    Ok(found)
}

/// One service's port, as `ports` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PortRow {
    pub service: String,
    pub port: u16,
    pub preferred: u16,
    /// Why `port` is not `preferred`, when the kernel's ephemeral range explains it.
    pub why_moved: Option<String>,
    pub free: bool,
    pub holders: Vec<Held>,
}

/// Every service's port and who holds it.
#[derive(Debug, Clone, Serialize)]
pub struct PortsView {
    /// Whether `.ports.json` exists: if not, these are the preferred ports.
    pub allocated: bool,
    pub services: Vec<PortRow>,
}

pub fn ports(checkout: &Checkout) -> anyhow::Result<PortsView> {
    let config = &checkout.config;
    let ports = checkout.ports(&Ports::new());
    let held = holders(&checkout.project, Some(checkout), &ports.values().copied().collect())?;
    let kernel = probe::kernel_ports();
    let row = |name: &String| {
        let (port, preferred) = (ports[name], config.services[name].port);
        // A hand-edited .ports.json may give two services one port.
        let holders = held.get(&port).cloned().unwrap_or_default();
        PortRow {
            service: name.clone(),
            port,
            preferred,
            why_moved: around_ephemeral(preferred, port, config, &kernel),
            free: holders.is_empty(),
            holders,
        }
    };
    let services = config.order.iter().map(row).collect();
    Ok(PortsView { allocated: !checkout.book.is_empty(), services })
}

/// One port asked about by `ports who`.
#[derive(Debug, Clone, Serialize)]
pub struct Who {
    pub port: u16,
    pub holders: Vec<Held>,
}

/// Who holds each of `ports` (lsof's question), and whose service that is;
/// the container, for a port one publishes, when `ports.toml` can be read.
pub fn who(project: &Project, ports: &[u16]) -> anyhow::Result<Vec<Who>> {
    let checkout = Checkout::read(project).ok().map(|(checkout, _)| checkout);
    let held = holders(project, checkout.as_ref(), &ports.iter().copied().collect())?;
    // A port may be asked twice.
    Ok(ports.iter().map(|port| Who { port: *port, holders: held.get(port).cloned().unwrap_or_default() }).collect())
}

/// Every checkout's reservations. The registry is written only when it
/// dropped a checkout that is gone: a listing leaves a hand-formatted one as
/// it is.
pub fn checkouts() -> anyhow::Result<Entries> {
    let registry = Registry::open()?;
    if registry.pruned {
        registry.save()?;
    }
    Ok(registry.entries.clone())
}
