//! `cargo xtask dev`: everything in the foreground, logs in one terminal, a
//! dashboard beside it; Ctrl-C, SIGTERM or SIGHUP stops all it started,
//! dependents first. If dev itself is killed, its guard stops them.

use crate::cli::ConflictFlags;
use crate::engine::launch;
use crate::engine::supervisor::Output;
use crate::system::paths::Project;
use crate::system::term::say;
use crate::ui;

pub fn run(project: &Project, services: &[String], flags: ConflictFlags) -> anyhow::Result<()> {
    let mut sup = launch::up(project, services, flags, Output::Terminal)?;
    let dashboard = ui::serve(project, ui::Control::Foreground(sup.sender()))?;
    say!("Dashboard: {}", dashboard.url);
    let kept: Vec<&str> = sup.kept.keys().map(String::as_str).collect();
    if kept.is_empty() {
        say!("Ctrl-C stops everything.");
    } else {
        say!(
            "Ctrl-C stops everything but what runs in the background ({}): `cargo xtask stop` stops that.",
            kept.join(", ")
        );
    }
    let result = sup.run_until_signal();
    dashboard.close();
    result
}
