//! `cargo xtask status`: one line per service in the seed's format, with its
//! URL, its named URL and whether it answers; and the checkout's name.

use crate::engine::proxy;
use crate::engine::snapshot::{self, ServiceState};
use crate::system::paths::Project;
use crate::system::term::{Style, say};

pub fn run(project: &Project, as_json: bool) -> anyhow::Result<()> {
    let status = snapshot::status_now(project)?;
    if let Some(warning) = &status.warning {
        eprintln!("warning: {warning}"); // on stderr, so that `--json` output stays JSON
    }
    let states = status.services;
    if as_json {
        say!("{}", serde_json::to_string_pretty(&states)?);
        return Ok(());
    }
    let style = Style::stdout();
    if let Some(names) = proxy::names_of(project) {
        let proxy = match proxy::state()?.and_then(|(_, process)| process) {
            Some(_) => style.green("running"),
            None => style.yellow("not running: the next `cargo xtask dev` or `start` starts it"),
        };
        say!(
            "Checkout {}: http://<service>.{}.localhost:{}, proxy {proxy}",
            names.checkout,
            names.checkout,
            names.proxy
        );
    }
    for state in &states {
        say!("{}", line(style, state));
    }
    if states.is_empty() {
        say!("nothing is running");
    }
    Ok(())
}

/// `Backend (port 8001): ✓ Running (pid 12345)  http://…  healthy`; a
/// service in a container says which (`pid 12345, container NAME`).
fn line(style: Style, state: &ServiceState) -> String {
    let head = format!("{} (port {}):", state.title, state.port);
    let container = state.container.as_ref().map(|c| format!(", container {c}")).unwrap_or_default();
    let url = [&state.url, &state.public_url].into_iter().flatten().map(|url| format!("  {url}")).collect::<String>();
    match state.pid {
        Some(pid) if state.suspended => {
            let resume = style.yellow(&format!("stopped by a signal: `kill -CONT -- -{pid}` resumes it"));
            format!("{head} {} (pid {pid}){url}  {resume}", style.yellow("⏸ Suspended"))
        }
        Some(pid) => {
            let health = match state.healthy {
                Some(true) => format!("  {}", style.green("healthy")),
                Some(false) => format!("  {}", style.yellow("not answering")),
                None => String::new(),
            };
            format!("{head} {} (pid {pid}{container}){url}{health}", style.green("✓ Running"))
        }
        None => format!("{head} {}", style.dim("✗ Stopped")),
    }
}
