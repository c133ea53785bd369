//! Which container backs a service, as its record keeps it, and stopping
//! it: through the engine, as the death of its client stops nothing.

use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::engine::Engine;
use super::identity::{CHECKOUT_LABEL, COMPOSE_SERVICE_LABEL, PROJECT_LABEL};
use super::listing::Container;
use crate::system::process::{Hurry, wait_until};

/// How long a container may take to go once removed.
const REMOVAL: Duration = Duration::from_secs(10);

/// The container of a service, and the engine that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backing {
    /// The engine's program, as found when the service started: a stop
    /// needs neither `PATH` nor `ports.toml` (dev's guard, a later command).
    pub engine: String,
    pub container: Which,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", from = "Kept")]
pub enum Which {
    /// `docker run --name`, labelled with the root of the checkout that ran
    /// it. Found by both: another checkout's container of the same name
    /// (their names' hashes met) is never touched.
    Run { name: String, checkout: String },
    /// A compose file's service, in the checkout's project: compose names
    /// its container (`_1` in v1, `-1` in v2).
    Compose { project: String, service: String },
}

/// `Which` as records keep it: an earlier runner's `run` is the name
/// alone, whose checkout its record's place says (`Backing::recorded_in`).
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kept {
    Run(KeptRun),
    Compose { project: String, service: String },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KeptRun {
    Labelled { name: String, checkout: String },
    Named(String),
}

impl From<Kept> for Which {
    fn from(kept: Kept) -> Which {
        match kept {
            Kept::Run(KeptRun::Labelled { name, checkout }) => Which::Run { name, checkout },
            Kept::Run(KeptRun::Named(name)) => Which::Run { name, checkout: String::new() },
            Kept::Compose { project, service } => Which::Compose { project, service },
        }
    }
}

impl Backing {
    /// The backing of a record of the checkout `root` (where it started,
    /// as the record says): an earlier runner's record named its container
    /// without the checkout, which was that one.
    pub fn recorded_in(mut self, root: &str) -> Backing {
        if let Which::Run { checkout, .. } = &mut self.container
            && checkout.is_empty()
        {
            *checkout = root.to_owned();
        }
        self
    }

    /// Whether `container` is the one this backing names.
    pub fn backs(&self, container: &Container) -> bool {
        match &self.container {
            Which::Run { name, checkout } => &container.name == name && container.checkout.as_ref() == Some(checkout),
            Which::Compose { project, service } => {
                container.project.as_ref() == Some(project) && container.compose_service.as_ref() == Some(service)
            }
        }
    }

    /// The container as `status` names it.
    pub fn name(&self) -> String {
        match &self.container {
            Which::Run { name, .. } => name.clone(),
            Which::Compose { project, service } => format!("{service} of the compose project {project}"),
        }
    }

    /// Stops the container (TERM, KILL after `grace`, at once once `hurry`
    /// is on) and removes it, with a compose project's network once no
    /// container uses it. Whether it was running: one that has stopped, or
    /// is gone, is stopped.
    pub fn stop(&self, grace: Duration, hurry: &Hurry) -> anyhow::Result<bool> {
        let engine = Engine::at(&self.engine);
        let found = engine.list(&self.filters())?;
        let running: Vec<&Container> =
            found.iter().filter(|c| !matches!(c.state.as_str(), "created" | "exited" | "dead")).collect();
        for container in &running {
            engine.stop(&container.id, grace, hurry)?;
        }
        // Compose keeps its containers; `--rm` removes one only some time
        // after it stopped, while its name is still taken: removed here,
        // and waited for, so that it may start again at once.
        engine.remove(&found.iter().map(|c| c.id.clone()).collect::<Vec<_>>())?;
        if !found.is_empty() && !wait_until(REMOVAL, || engine.list(&self.filters()).is_ok_and(|l| l.is_empty())) {
            bail!("{} is still there {} s after its removal", self.name(), REMOVAL.as_secs());
        }
        if let Which::Compose { project, .. } = &self.container {
            engine.prune_networks(&format!("label={PROJECT_LABEL}={project}"))?;
        }
        Ok(!running.is_empty())
    }

    /// The `docker ps --filter`s that find the container, and no other
    /// checkout's.
    pub fn filters(&self) -> Vec<String> {
        match &self.container {
            // A name is `[a-z0-9_-]` (`Identity::container`): the pattern is the name.
            Which::Run { name, checkout } => {
                vec![format!("name=^{name}$"), format!("label={CHECKOUT_LABEL}={checkout}")]
            }
            Which::Compose { project, service } => {
                vec![format!("label={PROJECT_LABEL}={project}"), format!("label={COMPOSE_SERVICE_LABEL}={service}")]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backing_names_its_container_only() {
        let container = |name: &str, checkout: Option<&str>, project: Option<&str>, service: Option<&str>| Container {
            id: "d12e18096444".into(),
            name: name.into(),
            image: "redis:7".into(),
            state: "running".into(),
            ports: String::new(),
            checkout: checkout.map(Into::into),
            service: None,
            project: project.map(Into::into),
            compose_service: service.map(Into::into),
        };
        let which = Which::Run { name: "xtask-app-1-db".into(), checkout: "/src/app".into() };
        let run = Backing { engine: "docker".into(), container: which };
        let compose = Backing {
            engine: "docker".into(),
            container: Which::Compose { project: "xtask-app-1".into(), service: "db".into() },
        };
        assert!(run.backs(&container("xtask-app-1-db", Some("/src/app"), None, None)));
        assert!(!run.backs(&container("xtask-app-1-db2", Some("/src/app"), None, None)));
        // Its name, but another checkout's (their hashes met), or nobody's.
        assert!(!run.backs(&container("xtask-app-1-db", Some("/src/app2"), None, None)));
        assert!(!run.backs(&container("xtask-app-1-db", None, None, None)));
        assert_eq!(run.filters(), ["name=^xtask-app-1-db$", "label=dev.xtask.checkout=/src/app"]);
        assert!(compose.backs(&container("xtask-app-1_db_1", None, Some("xtask-app-1"), Some("db"))));
        assert!(!compose.backs(&container("xtask-app-2_db_1", None, Some("xtask-app-2"), Some("db"))));
        assert!(!compose.backs(&container("xtask-app-1_web_1", None, Some("xtask-app-1"), Some("web"))));
        // As a record keeps it.
        let json = serde_json::to_string(&compose).unwrap();
        assert_eq!(json, r#"{"engine":"docker","container":{"compose":{"project":"xtask-app-1","service":"db"}}}"#);
        assert_eq!(serde_json::from_str::<Backing>(&json).unwrap(), compose);
        let json = serde_json::to_string(&run).unwrap();
        assert_eq!(json, r#"{"engine":"docker","container":{"run":{"name":"xtask-app-1-db","checkout":"/src/app"}}}"#);
        assert_eq!(serde_json::from_str::<Backing>(&json).unwrap(), run);
        // An earlier runner's record, of the checkout it is in.
        let earlier: Backing =
            serde_json::from_str(r#"{"engine":"docker","container":{"run":"xtask-app-1-db"}}"#).unwrap();
        assert_eq!(earlier.clone().recorded_in("/src/app"), run);
        assert_eq!(run.clone().recorded_in("/elsewhere"), run);
    }
}
