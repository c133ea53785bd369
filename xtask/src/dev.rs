//! `cargo xtask dev`: everything in the foreground, logs in one terminal;
//! Ctrl-C, SIGTERM or SIGHUP stops it all, dependents first.

use std::io::IsTerminal;

use anyhow::bail;

use crate::cli::ConflictFlags;
use crate::launch;
use crate::paths::Project;
use crate::supervisor::{self, Event, Output};
use crate::term::say;

pub fn run(project: &Project, services: &[String], flags: ConflictFlags) -> anyhow::Result<()> {
    let config = crate::config::load(&project.ports_toml())?;
    let names = launch::selected(&config, services)?;
    let mode = flags.mode(std::env::var("FORCE_MODE").ok().as_deref(), std::io::stdin().is_terminal());
    let mut sup = launch::prepare(project, config, &names, mode, Output::Terminal)?;
    supervisor::forward_signals(sup.sender())?;
    sup.start_all(&names)?;
    say!("Ctrl-C stops everything.");
    while let Some(event) = sup.next_event() {
        match event {
            Event::Signal(signal) => {
                say!("received {}: stopping", supervisor::signal_name(signal));
                sup.stop_all();
                return Ok(());
            }
            Event::Exited { service, generation, status } if sup.exited(&service, generation) => {
                say!("{service} exited unexpectedly ({status}); its last lines:\n{}", sup.last_lines(&service));
                if sup.running_names().is_empty() {
                    bail!("every service has exited");
                }
            }
            _ => {}
        }
    }
    Ok(())
}
