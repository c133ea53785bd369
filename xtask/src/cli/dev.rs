//! `cargo xtask dev`: everything in the foreground, logs in one terminal, a
//! dashboard beside it; Ctrl-C, SIGTERM or SIGHUP stops all it started,
//! dependents first. If dev itself is killed, its guard stops them.

use std::sync::mpsc::Sender;

use crate::engine::Checkout;
use crate::engine::launch;
use crate::engine::supervisor::Event;
use crate::engine::supervisor::Output;
use crate::engine::watch::Unwatched;
use crate::model::policy::Mode;
use crate::system::paths::Project;
use crate::system::term::say;

/// The dashboard dev serves beside its services, given by `main` (no front
/// end imports another): it takes dev's events, and gives its address and
/// what closes it.
pub type Dashboard<'a> = Box<dyn FnOnce(Sender<Event>) -> anyhow::Result<(String, Box<dyn FnOnce()>)> + 'a>;

pub fn run(project: &Project, services: &[String], mode: Mode, dashboard: Dashboard) -> anyhow::Result<()> {
    let checkout = Checkout::load(project)?;
    let names = checkout.config.closure(super::selection(services))?;
    let mut up = launch::up(&checkout, &names, mode, Output::Terminal, &Unwatched)?;
    let (url, close) = dashboard(up.supervisor.sender())?;
    say!("Dashboard: {url}");
    let kept: Vec<&str> = up.supervisor.kept().collect();
    if kept.is_empty() {
        say!("Ctrl-C stops everything.");
    } else {
        say!(
            "Ctrl-C stops everything but what runs in the background ({}): `cargo xtask stop` stops that.",
            kept.join(", ")
        );
    }
    let result = up.supervisor.run_until_signal();
    close();
    result
}
