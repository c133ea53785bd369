//! `ports.toml`: the services, the ports they prefer and how to run them
//! (README.md lists its keys). Pure: `parse` takes the text, and the engine
//! reads the file.
//!
//! Parsing is two steps, as in process-compose's loader: serde reads the raw
//! file (`raw`: unknown keys are errors there), then small named validators
//! (`validate`) check what serde cannot, each pointing at the offending
//! value's line and column (`diagnostics`).

mod diagnostics;
mod raw;
mod reference;
mod template;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use diagnostics::decode;
pub use template::Template;
pub use validate::parse;

/// The lowest port handed out: below it binding needs privileges.
pub const MIN_PORT: u16 = 1024;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Window for alternative ports.
    pub range: (u16, u16),
    /// Successive ports tried from the preferred one.
    pub attempts: u16,
    pub programs: BTreeMap<String, Program>,
    /// By name; `order` gives them in dependency order.
    pub services: BTreeMap<String, Service>,
    /// Services in dependency order (dependencies first, then by name).
    pub order: Vec<String>,
    /// Extra `.env.runtime` lines, by name.
    pub env: BTreeMap<String, Template>,
}

/// A system program the services need, and how to get it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = r#"a table like { install = "apt-get install -y postgresql" }"#)]
pub struct Program {
    /// What to run to install it, shown when it is missing.
    pub install: Option<String>,
    /// Folders to look in besides PATH; `*` matches one path component.
    #[serde(default)]
    pub search: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub port: u16,
    pub run: Run,
    /// Working directory, relative to the checkout's root.
    pub cwd: Option<String>,
    pub depends_on: Vec<String>,
    pub ready: Ready,
    /// `NAME_URL` in .env.runtime; default `http://localhost:{port}`.
    pub url: Template,
    /// It serves HTTP (`ready` asks an HTTP path, or `url` is http:// or
    /// https://): it has a named URL, `NAME_PUBLIC_URL`.
    pub http: bool,
    /// When the runner is root, run the service (and its setup) as this account.
    pub user: Option<String>,
    /// Where `command` (or `image`, `compose`, `volumes`), `cwd` and `user`
    /// are written (line, column): what is wrong with them (a program, folder
    /// or account missing) is found only when starting.
    pub places: BTreeMap<&'static str, (usize, usize)>,
    /// Folders created before setup, owned by `user` when it applies.
    pub dirs: Vec<String>,
    pub setup: Vec<Step>,
    /// Its environment; a container's (`-e`) for an image, and the compose
    /// client's for a compose service.
    pub env: BTreeMap<String, Template>,
    /// How long it may take to stop after TERM before it gets KILL.
    pub stop_grace: Duration,
}

impl Service {
    /// `ports.toml:LINE:COL` of its `key`, for what starting finds wrong there.
    pub fn place(&self, ports_toml: &Path, key: &str) -> String {
        place(&self.places, ports_toml, key)
    }
}

impl Step {
    /// `ports.toml:LINE:COL` of its `key` (`command` or `cwd`).
    pub fn place(&self, ports_toml: &Path, key: &str) -> String {
        place(&self.places, ports_toml, key)
    }
}

fn place(places: &BTreeMap<&'static str, (usize, usize)>, ports_toml: &Path, key: &str) -> String {
    match places.get(key) {
        Some((line, col)) => format!("{}:{line}:{col}", ports_toml.display()),
        None => ports_toml.display().to_string(),
    }
}

/// What a service runs (ARCHITECTURE.md, "Containers").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// A command, in a process group of its own.
    Command(Vec<Template>),
    /// A container of an image, its `container_port` published on the service's port.
    Image(Image),
    /// A service of a compose file, which publishes it on `${NAME_PORT}`.
    Compose(ComposeService),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub image: String,
    /// The port its server listens on inside (default: the service's preferred port).
    pub container_port: u16,
    /// The arguments of the image's command.
    pub args: Vec<Template>,
    pub volumes: Vec<Volume>,
}

/// A folder or file of the checkout seen inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Relative to the checkout's root, and inside it.
    pub host: String,
    /// Where it is seen inside: an absolute path, then `:ro` or `:rw` if given.
    pub inside: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeService {
    /// The compose file, relative to the checkout's root.
    pub file: String,
    /// The service's name in it.
    pub service: String,
}

/// `stop_grace` when `ports.toml` does not say.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// When a started service counts as ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// A TCP connection to its port succeeds.
    Tcp,
    /// `GET path` answers 2xx.
    Http(String),
}

/// A set-up step, run before a service first starts, and again when the
/// contents of its `inputs` change or what it `creates` is missing.
#[derive(Debug, Clone)]
pub struct Step {
    pub command: Vec<String>,
    /// The folder it runs in, relative to the checkout's root (default: the root).
    pub cwd: Option<String>,
    pub inputs: Vec<String>,
    pub creates: Option<String>,
    /// Where its `command` and `cwd` are written (line, column), for what
    /// starting finds wrong there (a missing program or folder).
    pub places: BTreeMap<&'static str, (usize, usize)>,
}

impl Service {
    /// The services whose ports this one's command or environment uses, and
    /// those it depends on: when one of their ports moves, this one restarts.
    pub fn refers_to(&self) -> BTreeSet<&str> {
        let words = match &self.run {
            Run::Command(words) => words.as_slice(),
            Run::Image(image) => image.args.as_slice(),
            Run::Compose(_) => &[],
        };
        let templates = words.iter().chain(self.env.values()).chain([&self.url]);
        templates.flat_map(Template::refers_to).chain(self.depends_on.iter().map(String::as_str)).collect()
    }

    /// Its command, unless it runs in a container.
    pub fn command(&self) -> Option<&[Template]> {
        match &self.run {
            Run::Command(words) => Some(words),
            Run::Image(_) | Run::Compose(_) => None,
        }
    }

    /// Whether a container runs it: its port's holder is the engine's, and
    /// it is stopped through the engine.
    pub fn in_container(&self) -> bool {
        self.command().is_none()
    }

    /// The name used in `.env.runtime`: `backend` -> `BACKEND`.
    pub fn env_prefix(&self) -> String {
        env_prefix(&self.name)
    }

    /// `Backend`, as the seed's status lines show it.
    pub fn title(&self) -> String {
        let mut chars = self.name.chars();
        chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
    }
}

pub fn env_prefix(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

impl Config {
    /// The named services plus everything they depend on, in dependency order;
    /// every service when `names` is `None`.
    pub fn closure(&self, names: Option<&[String]>) -> anyhow::Result<Vec<String>> {
        let Some(names) = names else {
            return Ok(self.order.clone());
        };
        let mut wanted = BTreeSet::new();
        let mut todo: Vec<&str> = Vec::new();
        for name in names {
            anyhow::ensure!(
                self.services.contains_key(name),
                "unknown service {name:?}: ports.toml has {}",
                self.names().join(", ")
            );
            todo.push(name);
        }
        while let Some(name) = todo.pop() {
            if wanted.insert(name) {
                todo.extend(self.services[name].depends_on.iter().map(String::as_str));
            }
        }
        Ok(self.order.iter().filter(|n| wanted.contains(n.as_str())).cloned().collect())
    }

    /// The named services plus everything that depends on them, in dependency order.
    pub fn dependents_closure(&self, names: &[String]) -> Vec<String> {
        let mut wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        for name in &self.order {
            if self.services[name].depends_on.iter().any(|d| wanted.contains(d.as_str())) {
                wanted.insert(name);
            }
        }
        self.order.iter().filter(|n| wanted.contains(n.as_str())).cloned().collect()
    }

    pub fn names(&self) -> Vec<&str> {
        self.services.keys().map(String::as_str).collect()
    }

    /// A service and the services whose command or environment uses its
    /// port, in dependency order: what must restart when the port changes.
    pub fn users_of(&self, service: &str) -> Vec<String> {
        let uses = |n: &String| n == service || self.services[n].refers_to().contains(service);
        self.order.iter().filter(|n| uses(n)).cloned().collect()
    }

    pub fn preferred_ports(&self) -> BTreeMap<String, u16> {
        self.services.iter().map(|(name, s)| (name.clone(), s.port)).collect()
    }
}
