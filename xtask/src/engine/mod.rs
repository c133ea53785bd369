//! The engine: the one place that runs an operation on a checkout, for
//! every front end (the command line, the dashboard, dev's guard). An
//! operation reads `ports.toml` and the port book once, into a `Checkout`,
//! and hands it down (ARCHITECTURE.md).

pub mod actions;
pub mod allocation;
pub mod conflict;
pub mod containers;
pub mod control;
pub mod guard;
pub mod launch;
pub mod output;
pub mod preflight;
pub mod proxy;
pub mod routes;
pub mod setup;
pub mod snapshot;
pub mod stopper;
pub mod supervisor;
pub mod watch;

use anyhow::Context;

use crate::model::book::{self, Ports};
use crate::model::config::{self, Config};
use crate::system::files;
use crate::system::paths::Project;
use crate::system::records::{self, Record};

/// A checkout as an operation sees it: where it is, what its `ports.toml`
/// says, and the allocations of its `.ports.json` when the operation began.
/// What must be exact under the checkout's lock (a new allocation) reads the
/// book again there.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub project: Project,
    pub config: Config,
    pub book: Ports,
}

impl Checkout {
    /// Reads `ports.toml` and `.ports.json`; says, once, on stderr (so that
    /// `--json` output stays JSON), each entry of the book that names a
    /// service `ports.toml` no longer has.
    pub fn load(project: &Project) -> anyhow::Result<Checkout> {
        Checkout::with_config(project, load_config(project)?)
    }

    /// `load`, once `ports.toml` has been read.
    pub fn with_config(project: &Project, config: Config) -> anyhow::Result<Checkout> {
        let (book, notes) = read_book(project, &config)?;
        for note in notes {
            eprintln!("note: {note}");
        }
        Ok(Checkout { project: project.clone(), config, book })
    }

    /// `load`, with the notes for the caller to say (or not: it said them once).
    pub fn read(project: &Project) -> anyhow::Result<(Checkout, Vec<String>)> {
        let config = load_config(project)?;
        let (book, notes) = read_book(project, &config)?;
        Ok((Checkout { project: project.clone(), config, book }, notes))
    }

    /// Every service's port now, given the ports of those that run.
    pub fn ports(&self, running: &Ports) -> Ports {
        book::effective(&self.config, &self.book, running)
    }
}

/// Reads and parses the checkout's `ports.toml`.
pub fn load_config(project: &Project) -> anyhow::Result<Config> {
    let path = project.ports_toml();
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = config::decode(bytes).and_then(|text| config::parse(&text));
    parsed.map_err(|errors| anyhow::anyhow!(errors.with_path(&path)))
}

/// The port book as it is now (empty before the first allocation), with a
/// note for each entry of a service `config` does not have.
pub fn read_book(project: &Project, config: &Config) -> anyhow::Result<(Ports, Vec<String>)> {
    let path = project.ports_json();
    match files::read_optional(&path)? {
        Some(text) => book::parse(&text, &path, config),
        None => Ok((Ports::new(), Vec::new())),
    }
}

/// The records of this checkout's services that are running.
pub fn running(project: &Project) -> Vec<Record> {
    records::load_all(&project.root).into_iter().filter(|r| r.group.is_running()).collect()
}

/// The ports of this checkout's services that are running: they keep them.
pub fn running_ports(project: &Project) -> Ports {
    running(project).into_iter().map(|r| (r.service, r.port)).collect()
}

/// The running services a stop of `selection` reaches: they and what
/// depends on them, in dependency order.
pub fn reach(config: &Config, selection: &actions::Selection, running: &[Record]) -> anyhow::Result<Vec<String>> {
    let selected = match selection {
        None => config.order.clone(),
        Some(names) => {
            config.closure(Some(names))?; // checks the names
            config.dependents_closure(names)
        }
    };
    Ok(selected.into_iter().filter(|n| running.iter().any(|r| &r.service == n)).collect())
}
