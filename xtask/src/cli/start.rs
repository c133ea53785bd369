//! `cargo xtask start`, `stop` and `restart`: services in the background,
//! recorded in `.pids/`, their output in `.logs/`.

use crate::engine::Checkout;
use crate::engine::actions::{self, Action, Selection};
use crate::engine::control::{self, Background};
use crate::model::policy::Mode;
use crate::system::paths::Project;

pub fn start(project: &Project, services: &[String], mode: Mode) -> anyhow::Result<()> {
    let mut background = Background::new(Checkout::load(project)?, mode);
    actions::act(&mut background, &Action::Start(chosen(services))).map(drop)
}

/// A stop works from the records alone when `ports.toml` cannot be read.
pub fn stop(project: &Project, services: &[String]) -> anyhow::Result<()> {
    control::stop_services(project, &chosen(services)).map(drop)
}

pub fn restart(project: &Project, services: &[String], mode: Mode) -> anyhow::Result<()> {
    let mut background = Background::new(Checkout::load(project)?, mode);
    actions::act(&mut background, &Action::Restart(chosen(services))).map(drop)
}

fn chosen(services: &[String]) -> Selection {
    super::selection(services).map(<[String]>::to_vec)
}
