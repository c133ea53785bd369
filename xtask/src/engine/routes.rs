//! The routes of the named URLs: where `<service>.<checkout>.localhost`
//! leads. Read from the registry (which checkout has which name) and each
//! checkout's own files (its `ports.toml`: which services serve HTTP; its
//! records: which run, on which port), for the proxy, which asks on every
//! request, and for `cargo xtask proxy`, which lists them.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::names::{DASHBOARD, Host, service_label};
use crate::system::http::proxy::{Route, Target};
use crate::system::paths::Project;
use crate::system::records;
use crate::system::registry::Registry;

/// Routes read longer ago than this are read again, even if nothing they
/// were read from changed: a service that died leaves its record.
const MAX_AGE: Duration = Duration::from_secs(1);

/// One checkout's routes.
#[derive(Debug, Clone, Serialize)]
pub struct Checkout {
    pub name: String,
    pub root: PathBuf,
    /// Its services in dependency order, then its dashboard.
    pub services: Vec<Service>,
    /// Why its `ports.toml` could not be read: its records alone say what
    /// runs then.
    pub problem: Option<String>,
}

/// Where one named URL leads.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// As `ports.toml` names it (or `dashboard`).
    pub service: String,
    /// `<service>.<checkout>.localhost`.
    pub host: String,
    /// The port it runs on, as its record says; None when it is stopped.
    pub port: Option<u16>,
    /// It serves HTTP: only then does its name lead to it.
    pub http: bool,
}

impl Checkout {
    /// Reads the routes of the checkout named `name`, at `root`.
    pub fn read(name: &str, root: &Path) -> Checkout {
        if !root.is_dir() {
            let problem = Some("Its folder is gone.".to_owned());
            return Checkout { name: name.to_owned(), root: root.to_path_buf(), services: Vec::new(), problem };
        }
        let project = Project { root: root.to_path_buf() };
        let running = super::running(&project);
        let port = |service: &str| running.iter().find(|r| r.service == service).map(|r| r.port);
        let host = |service: &str| format!("{}.{name}.localhost", service_label(service));
        let route =
            |service: &str, http| Service { service: service.into(), host: host(service), port: port(service), http };
        let (mut services, problem) = match super::load_config(&project) {
            Ok(config) => (config.order.iter().map(|n| route(n, config.services[n].http)).collect::<Vec<_>>(), None),
            // What runs serves HTTP for all the proxy knows.
            Err(e) => {
                let problem = format!("Its ports.toml cannot be read: {e:#}");
                (running.iter().map(|r| route(&r.service, true)).collect(), Some(problem))
            }
        };
        let dashboard = records::dashboard(&project).and_then(|d| dashboard_port(&d.url));
        services.push(Service { service: DASHBOARD.into(), host: host(DASHBOARD), port: dashboard, http: true });
        Checkout { name: name.to_owned(), root: root.to_path_buf(), services, problem }
    }

    /// Where `label`, a service's label in a Host, leads.
    pub fn route(&self, label: &str) -> Route {
        let root = self.root.display();
        let Some(service) = self.services.iter().find(|s| service_label(&s.service) == label) else {
            let names: Vec<&str> = self.services.iter().filter(|s| s.http).map(|s| s.service.as_str()).collect();
            let lead = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
            let problem = self.problem.as_ref().map(|p| format!("\n{p}")).unwrap_or_default();
            let help = format!(
                "The checkout {} ({root}) has no service {label}; its named URLs lead to {lead}.{problem}",
                self.name
            );
            return Route { target: Target::Unknown, help };
        };
        let name = &service.service;
        match (service.http, service.port) {
            (false, _) => Route {
                target: Target::Unknown,
                help: format!(
                    "{name} of the checkout {} ({root}) does not serve HTTP, so it has no named URL \
                     (ports.toml gives one to a service with ready = {{ http = \"/...\" }}, or an http:// url).",
                    self.name
                ),
            },
            (true, None) if name == DASHBOARD => Route {
                target: Target::Stopped,
                help: format!(
                    "No dashboard serves the checkout {} ({root}). Start one: cd {root} && cargo xtask ui",
                    self.name
                ),
            },
            (true, None) => {
                Route { target: Target::Stopped, help: format!("Start it: cd {root} && cargo xtask start {name}") }
            }
            (true, Some(port)) => Route {
                target: Target::Port(port),
                help: format!(
                    "{name} of the checkout {} ({root}) is recorded on port {port}: `cargo xtask status` there says more.",
                    self.name
                ),
            },
        }
    }
}

/// The port in a dashboard's address, `http://127.0.0.1:PORT/?token=...`.
fn dashboard_port(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://127.0.0.1:")?;
    rest[..rest.find('/').unwrap_or(rest.len())].parse().ok()
}

/// Every checkout's routes, by name.
pub fn read_all() -> anyhow::Result<Vec<Checkout>> {
    let entries = Registry::peek()?;
    let named = entries.checkouts.iter().filter(|(_, entry)| !entry.name.is_empty());
    let mut all: Vec<Checkout> = named.map(|(root, entry)| Checkout::read(&entry.name, root)).collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// What a file was when it was read: it changed if this did. (Modification
/// times are exact on current kernels; `MAX_AGE` covers coarser ones.)
type Stamp = Option<(i64, i64, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path).ok().map(|m| (m.mtime(), m.mtime_nsec(), m.ino(), m.size()))
}

/// The routes as the proxy keeps them: read again for a request only when
/// what they were read from changed (the registry, and the checkout's
/// `ports.toml` and `.pids/`, seen by their modification times: three
/// `stat`s a request), or `MAX_AGE` has passed. A port that moved is
/// followed from the next request on.
pub struct Routes {
    registry: PathBuf,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    /// The registry as last read: when, and each checkout's root by name.
    registry: Option<Stamp>,
    roots: BTreeMap<String, PathBuf>,
    checkouts: BTreeMap<String, Read>,
}

struct Read {
    stamps: [Stamp; 2],
    at: Instant,
    routes: Checkout,
}

impl Routes {
    pub fn new() -> anyhow::Result<Routes> {
        Ok(Routes { registry: Registry::file()?, cache: Mutex::default() })
    }

    /// Where `host` leads now.
    pub fn route(&self, host: &Host) -> Route {
        let registry = stamp(&self.registry);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.registry != Some(registry) {
            match Registry::peek() {
                Ok(entries) => {
                    let named = entries.checkouts.into_iter().filter(|(_, entry)| !entry.name.is_empty());
                    cache.roots = named.map(|(root, entry)| (entry.name, root)).collect();
                    cache.registry = Some(registry);
                }
                Err(e) => return Route { target: Target::Unknown, help: format!("{e:#}") },
            }
        }
        let Some(root) = cache.roots.get(&host.checkout).cloned() else {
            let names: Vec<&str> = cache.roots.keys().map(String::as_str).collect();
            let help = format!(
                "No checkout is named {}. Checkouts get their names at their first allocation (cargo xtask dev, \
                 start, or ports allocate); these have one: {}. `cargo xtask proxy` lists every route.",
                host.checkout,
                if names.is_empty() { "none yet".to_owned() } else { names.join(", ") }
            );
            return Route { target: Target::Unknown, help };
        };
        let stamps = [stamp(&root.join("ports.toml")), stamp(&root.join(".pids"))];
        let fresh = |read: &Read| read.routes.root == root && read.stamps == stamps && read.at.elapsed() < MAX_AGE;
        if !cache.checkouts.get(&host.checkout).is_some_and(fresh) {
            let routes = Checkout::read(&host.checkout, &root);
            cache.checkouts.insert(host.checkout.clone(), Read { stamps, at: Instant::now(), routes });
        }
        cache.checkouts[&host.checkout].routes.route(&host.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkout(services: &[(&str, Option<u16>, bool)]) -> Checkout {
        let route = |(service, port, http): &(&str, Option<u16>, bool)| Service {
            service: service.to_string(),
            host: format!("{}.c1.localhost", service_label(service)),
            port: *port,
            http: *http,
        };
        Checkout {
            name: "c1".into(),
            root: "/src/c1".into(),
            services: services.iter().map(route).collect(),
            problem: None,
        }
    }

    #[test]
    fn a_route_leads_only_to_a_running_http_service() {
        let c1 = checkout(&[
            ("db", Some(5432), false),
            ("my_api", Some(8001), true),
            ("web", None, true),
            (DASHBOARD, None, true),
        ]);
        let cases = [
            ("my-api", Target::Port(8001), "recorded on port 8001"),
            ("web", Target::Stopped, "Start it: cd /src/c1 && cargo xtask start web"),
            ("dashboard", Target::Stopped, "cargo xtask ui"),
            ("db", Target::Unknown, "db of the checkout c1 (/src/c1) does not serve HTTP"),
            ("my_api", Target::Unknown, "has no service my_api; its named URLs lead to my_api, web, dashboard"),
            ("nope", Target::Unknown, "has no service nope"),
        ];
        for (label, target, help) in cases {
            let route = c1.route(label);
            assert_eq!(route.target, target, "{label}");
            assert!(route.help.contains(help), "{label}: {}", route.help);
        }
    }

    #[test]
    fn dashboard_ports() {
        assert_eq!(dashboard_port("http://127.0.0.1:7401/?token=ab"), Some(7401));
        assert_eq!(dashboard_port("http://127.0.0.1:7401"), Some(7401));
        assert_eq!(dashboard_port("http://localhost:7401/"), None);
    }
}
