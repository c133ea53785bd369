//! The engine: the one place that runs an operation on a checkout, for
//! every front end (the command line, the dashboard, dev's guard).

pub mod allocation;
pub mod conflict;
pub mod control;
pub mod launch;
pub mod setup;
pub mod snapshot;
pub mod supervisor;

use anyhow::Context;

use crate::model::config::{self, Config};
use crate::system::paths::Project;

/// Reads and parses the checkout's `ports.toml`.
pub fn load_config(project: &Project) -> anyhow::Result<Config> {
    let path = project.ports_toml();
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    config::decode(bytes)
        .and_then(|text| config::parse(&text))
        .map_err(|errors| anyhow::anyhow!(errors.with_path(&path)))
}
