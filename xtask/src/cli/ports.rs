//! `cargo xtask ports`: the allocations and who holds each port; `allocate`,
//! `set`, `reset` and `who`.

use anyhow::Context;

use crate::cli::{PortsAction, PortsArgs};
use crate::engine::actions::{self, Action};
use crate::engine::control::Background;
use crate::engine::snapshot::{self, Held, PortsView};
use crate::engine::{Checkout, allocation};
use crate::system::paths::Project;
use crate::system::term::{Style, say};

impl PortsArgs {
    pub fn run(self, project: &Project) -> anyhow::Result<()> {
        match self.action {
            // Whoever holds a port, whatever ports.toml says.
            Some(PortsAction::Who { ports, json }) => who(project, &ports, json),
            // The others read ports.toml: a broken one fails them before anything changes.
            None if self.all => crate::engine::load_config(project).and_then(|_| all(project, self.json)),
            None => show(&snapshot::ports(&Checkout::load(project)?)?, self.json),
            Some(PortsAction::Allocate) => {
                let checkout = Checkout::load(project)?;
                allocation::allocate_and_write(&checkout, &crate::engine::running_ports(project), &Default::default())?;
                show(&snapshot::ports(&Checkout::load(project)?)?, false)
            }
            Some(PortsAction::Set { service, port }) => {
                // Its users restart as a `start` would: a holder of their ports is asked about (or
                // killed without a terminal, or with FORCE_MODE), as ever.
                let mode = crate::cli::ConflictFlags::default().resolve()?;
                let mut services = Background::new(Checkout::load(project)?, mode);
                actions::act(&mut services, &Action::SetPort(service, port)).map(drop)
            }
            Some(PortsAction::Reset) => crate::engine::load_config(project).and_then(|_| allocation::reset(project)),
        }
    }
}

fn show(view: &PortsView, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        say!("{}", serde_json::to_string_pretty(view)?);
        return Ok(());
    }
    let style = Style::stdout();
    if !view.allocated {
        say!("{}", style.dim("not allocated yet: these are the preferred ports (cargo xtask ports allocate)"));
    }
    let width = view.services.iter().map(|r| r.service.len()).max().unwrap_or(0);
    for row in &view.services {
        let state = match row.holders.as_slice() {
            [] => style.dim("free"),
            holders if holders.iter().all(|h| h.ours) => style.green(&format!("ours ({})", said(holders))),
            holders => style.yellow(&format!("held by {}", said(holders))),
        };
        let why = match &row.why_moved {
            Some(why) => style.dim(&format!("  (not {}: {why})", row.preferred)),
            None => String::new(),
        };
        say!("{:width$}  {:>5}  {state}{why}", row.service, row.port);
    }
    Ok(())
}

/// `ports who PORT...`: who holds each port, and whose service that is.
fn who(project: &Project, ports: &[u16], as_json: bool) -> anyhow::Result<()> {
    let rows = snapshot::who(project, ports)?;
    if as_json {
        say!("{}", serde_json::to_string_pretty(&serde_json::json!({ "ports": rows }))?);
        return Ok(());
    }
    let style = Style::stdout();
    for row in &rows {
        let state = match row.holders.as_slice() {
            [] => style.dim("free"),
            holders => format!("held by {}", said(holders)),
        };
        say!("{:>5}  {state}", row.port);
    }
    Ok(())
}

fn said(holders: &[Held]) -> String {
    holders.iter().map(|h| h.said.as_str()).collect::<Vec<_>>().join("; ")
}

/// `ports --all`: every checkout's reservations.
fn all(project: &Project, as_json: bool) -> anyhow::Result<()> {
    let entries = snapshot::checkouts()?;
    if as_json {
        say!("{}", serde_json::to_string_pretty(&entries).context("listing the registry")?);
        return Ok(());
    }
    if entries.checkouts.is_empty() {
        say!("no checkout has allocated ports yet");
    }
    for (path, entry) in &entries.checkouts {
        let this = if *path == project.root { "  (this checkout)" } else { "" };
        say!("{}{this}", path.display());
        for (service, port) in &entry.ports {
            say!("  {service:12} {port}");
        }
        if let Some(port) = entry.dashboard {
            say!("  {:12} {port}", "(dashboard)");
        }
    }
    Ok(())
}
