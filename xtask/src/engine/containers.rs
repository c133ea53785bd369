//! Services in containers, as the operations run them (ARCHITECTURE.md,
//! "Containers"): the engine, found once per command and only when a
//! service runs in a container; what would keep one from starting; its
//! client's command line and the container that backs it; when it is
//! ready; who publishes a port; and the containers a runner killed with its
//! guard left, removed before anything starts.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use super::{Checkout, running, setup};
use crate::model::book::Ports;
use crate::model::config::{Config, Ready, Run, Service};
use crate::model::names::Names;
use crate::model::policy::Class;
use crate::system::containers::{
    Backing, Compose, ComposeFile, Container, Engine, Health, Identity, Inspected, Owner, RunSpec, Which,
};
use crate::system::probe;
use crate::system::process::Hurry;
use crate::system::records::Record;
use crate::system::registry::Registry;
use crate::system::term::say;

/// The engine's program: `docker`, or what `[programs]` puts first on the
/// search path under that name (podman's `podman-docker`).
const PROGRAM: &str = "docker";

/// How long a daemon that did not answer is taken not to: a command asks
/// it once (each step would wait for it again), a `dev` started before its
/// daemon asks again later.
const SILENCE: Duration = Duration::from_secs(60);

/// The engine of the checkout's services, found as `find_at` finds it.
fn found(config: &Config) -> anyhow::Result<Engine> {
    find_at(PROGRAM, &setup::search_path(config))
}

/// The engine `program` (a name looked for in `path`, or the path a record
/// keeps), its daemon asked once per command: what it answered, even
/// nothing, is kept (an answer for good, a failure for `SILENCE`). Asked
/// by one thread at a time, the others wait for its answer.
fn find_at(program: &str, path: &OsStr) -> anyhow::Result<Engine> {
    type Answer = (Instant, Result<Engine, String>);
    static ASKED: Mutex<BTreeMap<String, Answer>> = Mutex::new(BTreeMap::new());
    let program = Engine::locate(program, path)?;
    let mut asked = ASKED.lock().unwrap_or_else(PoisonError::into_inner);
    match asked.get(&program) {
        Some((_, Ok(engine))) => return Ok(engine.clone()),
        Some((at, Err(e))) if at.elapsed() < SILENCE => bail!("{e}"),
        _ => {}
    }
    let answer = Engine::find(&program, path).map_err(|e| format!("{e:#}"));
    asked.insert(program, (Instant::now(), answer.clone()));
    answer.map_err(anyhow::Error::msg)
}

/// Finds the engine of each container that `records` name before any of
/// them is stopped: a daemon that does not answer would fail each stop of
/// a container, after the services on the host were stopped. The error is
/// the engine's, and nothing was stopped.
pub fn check_stoppable<'a>(records: impl IntoIterator<Item = &'a Record>) -> anyhow::Result<()> {
    for record in records {
        if let Some(backing) = &record.container {
            find_at(&backing.engine, OsStr::new(""))
                .with_context(|| format!("{} runs in a container: nothing was stopped", record.service))?;
        }
    }
    Ok(())
}

/// The engine, when one of `names` runs in a container: an error says what
/// to install or start. Asked before anything changes (`preflight`).
pub fn engine(config: &Config, names: &[String]) -> anyhow::Result<Option<Engine>> {
    match names.iter().any(|n| config.services[n].in_container()) {
        true => found(config).map(Some),
        false => Ok(None),
    }
}

/// The engine, when the checkout has a service in a container and the
/// engine answers: for what only looks, or cleans up.
fn engine_if_any(config: &Config) -> Option<Engine> {
    config.services.values().any(Service::in_container).then(|| found(config).ok()).flatten()
}

/// Compose, found once, for services of a compose file.
fn compose(config: &Config, engine: &Engine) -> anyhow::Result<&'static Compose> {
    static FOUND: OnceLock<Compose> = OnceLock::new();
    if let Some(compose) = FOUND.get() {
        return Ok(compose);
    }
    let compose = engine.compose(&setup::search_path(config))?;
    Ok(FOUND.get_or_init(|| compose))
}

/// What would keep the containers of `names` from starting, found before
/// anything changes: the engine and its daemon, compose, a volume's source,
/// a compose file and that it publishes the service on its `.env.runtime`
/// port.
pub fn check(checkout: &Checkout, names: &[String]) -> anyhow::Result<()> {
    let (project, config) = (&checkout.project, &checkout.config);
    let Some(engine) = engine(config, names)? else { return Ok(()) };
    let ports_toml = project.ports_toml();
    for service in names.iter().map(|n| &config.services[n]) {
        let name = &service.name;
        match &service.run {
            Run::Command(_) => {}
            Run::Image(image) => {
                let root = project.root.display().to_string();
                // `docker run -v HOST:INSIDE` splits on `:`.
                ensure!(
                    image.volumes.is_empty() || !root.contains(':'),
                    "the checkout's path {root} has a `:`, which `docker run -v` would read as the end of the \
                     volumes' path of {name}: move the checkout, or remove `volumes`"
                );
                for volume in &image.volumes {
                    let host = project.path(&volume.host);
                    let made = service.dirs.iter().any(|d| host.starts_with(project.path(d)));
                    ensure!(
                        host.exists() || made,
                        "{}: {}, a volume of {name}, does not exist (docker would make it a folder of root's): \
                         create it, list it in `dirs`, or fix `volumes`",
                        service.place(&ports_toml, "volumes"),
                        host.display()
                    );
                }
            }
            Run::Compose(composed) => {
                compose(config, &engine)?;
                let place = service.place(&ports_toml, "compose");
                let file = project.path(&composed.file);
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("{place}: reading {}, the compose file of {name}", file.display()))?;
                let variable = format!("{}_PORT", service.env_prefix());
                ensure!(
                    text.contains(&variable),
                    "{place}: {} does not mention ${{{variable}}}: publish {name} on the port the runner gives it, \
                     like ports: [\"127.0.0.1:${{{variable}}}:5432\"] in its service {}",
                    file.display(),
                    composed.service
                );
            }
        }
    }
    Ok(())
}

/// The command line of the client of `name`, a service in a container, on
/// `ports` (with the checkout's `names`, if given), and the container that
/// backs it.
pub fn client(
    checkout: &Checkout,
    name: &str,
    ports: &Ports,
    names: Option<&Names>,
) -> anyhow::Result<(Vec<String>, Backing)> {
    let (project, config) = (&checkout.project, &checkout.config);
    let service = &config.services[name];
    let engine = found(config)?;
    let id = Identity::of(&project.root);
    let (argv, container) = match &service.run {
        Run::Command(_) => bail!("{name} runs a command, not a container"),
        Run::Image(image) => {
            let spec = RunSpec {
                image: image.image.clone(),
                port: ports[name],
                container_port: image.container_port,
                env: service.env.iter().map(|(k, t)| (k.clone(), t.render(Some(name), ports, names))).collect(),
                volumes: image.volumes.iter().map(|v| (project.path(&v.host), v.inside.clone())).collect(),
                args: image.args.iter().map(|t| t.render(Some(name), ports, names)).collect(),
            };
            let which = Which::Run { name: id.container(name), checkout: id.root().to_owned() };
            (engine.run_argv(&id, name, &spec), which)
        }
        Run::Compose(composed) => {
            let file = ComposeFile {
                project: id.project().to_owned(),
                file: project.path(&composed.file),
                env_file: project.env_runtime(),
            };
            let project = id.project().to_owned();
            let argv = compose(config, &engine)?.up(&file, &composed.service);
            (argv, Which::Compose { project, service: composed.service.clone() })
        }
    };
    Ok((argv, Backing { engine: engine.program().to_owned(), container }))
}

/// When a service in a container is ready: its container runs and
/// publishes the port (the engine's proxy holds it, not the service's
/// group); its server answers, an HTTP check through the port, a TCP check
/// on the container's own address, past the proxy (which accepts before the
/// server listens); and its image's health check, if it has one, says
/// healthy. Nothing is sent to the container before the engine says it
/// runs: a connection while its network comes up (the proxy dials it for
/// one to the port) leaves it out of the host's reach for a second (seen:
/// ready in 1.1 s instead of 0.4). The engine is asked after a pause that
/// grows while it says not yet.
pub struct Readiness {
    backing: Backing,
    ready: Ready,
    port: u16,
    /// The container's id, once the engine has named it.
    id: Option<String>,
    found: Option<Found>,
    /// When the engine may be asked next, and the pause after that.
    next_ask: Instant,
    pause: Duration,
}

/// The container, once it runs.
struct Found {
    addresses: Vec<IpAddr>,
    /// The port inside that the service's port leads to.
    inside: u16,
    /// Whether its image has a health check.
    checked: bool,
}

/// The longest pause between two questions to the engine.
const LONGEST_PAUSE: Duration = Duration::from_millis(160);

impl Readiness {
    pub fn new(backing: Backing, ready: Ready, port: u16) -> Readiness {
        let (id, found, next_ask, pause) = (None, None, Instant::now(), Duration::from_millis(10));
        Readiness { backing, ready, port, id, found, next_ask, pause }
    }

    pub fn poll(&mut self) -> bool {
        let engine = Engine::at(&self.backing.engine);
        if self.found.is_none() {
            let Some(inspected) = self.inspect(&engine) else { return false };
            let Some(inside) = inspected.port_inside(self.port).filter(|_| inspected.running) else { return false };
            let checked = inspected.health != Health::None;
            self.found = Some(Found { addresses: inspected.addresses, inside, checked });
        }
        let Some(found) = &self.found else { return false };
        let answers = match &self.ready {
            Ready::Tcp if !found.addresses.is_empty() => probe::accepts(&found.addresses, found.inside),
            // (On the host's network a container has no address of its own.)
            ready => probe::serves(ready, self.port),
        };
        if !answers || !found.checked {
            return answers;
        }
        self.inspect(&engine).is_some_and(|i| i.health == Health::Healthy)
    }

    /// What the engine says of the container now, if it may be asked yet.
    fn inspect(&mut self, engine: &Engine) -> Option<Inspected> {
        let now = Instant::now();
        if now < self.next_ask {
            return None;
        }
        self.next_ask = now + self.pause;
        self.pause = (self.pause * 2).min(LONGEST_PAUSE);
        // By its filters, not its name: a container of that name may be
        // another checkout's.
        if self.id.is_none() {
            self.id = engine.list(&self.backing.filters()).ok()?.first().map(|c| c.id.clone());
        }
        engine.inspect(self.id.as_ref()?).ok()
    }
}

/// The probe of a free port: free on every address (`probe::is_free`) and
/// published by no container, which makes a port busy even where a bind
/// would succeed. The engine is asked once, and only by a checkout with
/// services in containers.
pub fn free(config: &Config) -> anyhow::Result<impl Fn(u16) -> bool + use<>> {
    let published = match engine_if_any(config) {
        Some(engine) => engine.published()?,
        None => BTreeSet::new(),
    };
    Ok(move |port| !published.contains(&port) && probe::is_free(port))
}

/// The containers that publish `port`, with what each is to this checkout
/// (another checkout's compose project is found in `registry`): asked when
/// the checkout has services in containers, or `engine_held` (the engine's
/// proxy or daemon holds it). None when no engine answers.
pub fn publishing(checkout: &Checkout, registry: &Registry, port: u16, engine_held: bool) -> Vec<(Container, Class)> {
    let config = &checkout.config;
    let engine = match engine_held {
        true => found(config).ok(),
        false => engine_if_any(config),
    };
    let Some(Ok(found)) = engine.map(|e| e.publishing(port)) else { return Vec::new() };
    let id = Identity::of(&checkout.project.root);
    let class = |container: &Container| match id.owner(container) {
        Owner::Ours(service) => Class::Ours(service),
        // Named in ports.toml for its compose service.
        Owner::OursInCompose(composed) => Class::Ours(
            config
                .services
                .values()
                .find(|s| matches!(&s.run, Run::Compose(c) if c.service == composed))
                .map_or(composed, |s| s.name.clone()),
        ),
        Owner::OtherCheckout(root) => Class::OtherCheckout(checkout_of(registry, &root).into()),
        Owner::Foreign => Class::Container { name: container.name.clone(), image: container.image.clone() },
    };
    found
        .into_iter()
        .map(|c| {
            let class = class(&c);
            (c, class)
        })
        .collect()
}

/// The checkout another's container is of: its root, or, for a compose
/// project, the root of the registry's checkout that has that project.
fn checkout_of(registry: &Registry, root_or_project: &str) -> String {
    if root_or_project.starts_with('/') {
        return root_or_project.to_owned();
    }
    let mut roots = registry.entries.checkouts.keys();
    let found = roots.find(|root| Identity::of(root).project() == root_or_project);
    found.map_or_else(|| format!("of the compose project {root_or_project}"), |root| root.display().to_string())
}

/// `container NAME (image IMAGE)`, as a holder of a port is said.
pub fn said(container: &Container) -> String {
    format!("container {} (image {})", container.name, container.image)
}

/// Stops `container`, which publishes a port a service needs, within
/// `grace`: this checkout's is removed too (a runner's that was killed),
/// another's is only stopped, as `docker stop` would.
pub fn stop(config: &Config, container: &Container, ours: bool, grace: Duration) -> anyhow::Result<()> {
    let engine = found(config)?;
    engine.stop(&container.id, grace, &Hurry::default())?;
    if ours {
        engine.remove(std::slice::from_ref(&container.id))?;
    }
    Ok(())
}

/// Removes this checkout's containers that no running service's record
/// names, and its compose project's networks that no container uses: what
/// a runner killed with its guard left (a client killed as it started
/// leaves its container `created`). Another checkout's never match: the
/// label is the checkout's root, the project is named after it. Only for a
/// checkout with services in containers, and an engine that answers.
pub fn sweep(checkout: &Checkout) -> anyhow::Result<()> {
    let Some(engine) = engine_if_any(&checkout.config) else { return Ok(()) };
    let id = Identity::of(&checkout.project.root);
    let kept: Vec<Backing> = running(&checkout.project).into_iter().filter_map(|r| r.container).collect();
    let keep = |c: &Container| kept.iter().any(|b| b.backs(c));
    let mut removed = engine.clean(&id.filter(), keep)?;
    let composed = checkout.config.services.values().any(|s| matches!(s.run, Run::Compose(_)));
    if composed {
        removed.extend(engine.clean(&id.project_filter(), keep)?);
        engine.prune_networks(&id.project_filter())?;
    }
    for container in removed {
        let service = container.service.or(container.compose_service).unwrap_or_default();
        say!(
            "{service}: removed its container {} ({}), left by a runner that was killed",
            container.name,
            container.state
        );
    }
    Ok(())
}
