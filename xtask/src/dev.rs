//! `cargo xtask dev`: everything in the foreground, logs in one terminal, a
//! dashboard beside it; Ctrl-C, SIGTERM or SIGHUP stops it all, dependents
//! first.

use std::io::IsTerminal;

use crate::cli::ConflictFlags;
use crate::launch;
use crate::paths::Project;
use crate::supervisor::{self, Output};
use crate::term::say;
use crate::ui;

pub fn run(project: &Project, services: &[String], flags: ConflictFlags) -> anyhow::Result<()> {
    let config = crate::config::load(&project.ports_toml())?;
    let names = launch::selected(&config, services)?;
    let mode = flags.mode(std::env::var("FORCE_MODE").ok().as_deref(), std::io::stdin().is_terminal());
    let mut sup = launch::prepare(project, config, &names, mode, Output::Terminal)?;
    supervisor::forward_signals(sup.sender())?;
    sup.start_all(&names)?;
    let dashboard = ui::serve(project, ui::Control::Foreground(sup.sender()))?;
    say!("Dashboard: {}", dashboard.url);
    say!("Ctrl-C stops everything.");
    let result = sup.run_until_signal();
    dashboard.close();
    result
}
