//! `cargo xtask status`: one line per service in the seed's format, with its
//! URL and whether it answers.

use std::collections::BTreeSet;

use serde_json::json;

use crate::config::{Config, Service};
use crate::paths::Project;
use crate::pids;
use crate::ports;
use crate::ready;
use crate::term::Style;
use crate::term::say;

/// What `status` knows of one service.
pub struct Line {
    pub service: String,
    pub title: String,
    pub port: u16,
    pub pid: Option<i32>,
    pub url: String,
    pub healthy: bool,
    /// Stopped by a signal (SIGSTOP, Ctrl-Z): it cannot answer, and is not asked.
    pub suspended: bool,
}

/// What `status` shows; `healthy(service, port)` checks a running service.
pub fn lines(
    project: &Project,
    config: &Config,
    mut healthy: impl FnMut(&Service, u16) -> bool,
) -> anyhow::Result<Vec<Line>> {
    let records: Vec<_> = pids::load_all(&project.root).into_iter().filter(|r| r.group.is_running()).collect();
    let stopped = if records.is_empty() { BTreeSet::new() } else { procscan::stopped_groups() };
    // A running service is on its record's port, whatever .ports.json says since.
    let mut ports = ports::current(project, config)?;
    ports.extend(
        records.iter().filter(|r| config.services.contains_key(&r.service)).map(|r| (r.service.clone(), r.port)),
    );
    let lines = config
        .order
        .iter()
        .map(|name| {
            let service = &config.services[name];
            let record = records.iter().find(|r| &r.service == name);
            let port = ports[name];
            let suspended = record.is_some_and(|r| stopped.contains(&r.pid()));
            Line {
                service: name.clone(),
                title: service.title(),
                port,
                pid: record.map(|r| r.pid()),
                url: service.url.render(Some(name), &ports),
                healthy: record.is_some() && !suspended && healthy(service, port),
                suspended,
            }
        })
        .collect();
    Ok(lines)
}

pub fn run(project: &Project, as_json: bool) -> anyhow::Result<()> {
    let config = crate::config::load(&project.ports_toml())?;
    pids::check_all(&project.root)?; // rather than call a service it may name stopped
    let lines = lines(project, &config, |service, port| ready::check(&service.ready, port))?;
    if as_json {
        let rows: Vec<_> = lines
            .iter()
            .map(|l| {
                json!({
                    "service": l.service, "port": l.port, "running": l.pid.is_some(),
                    "pid": l.pid, "url": l.url, "healthy": l.healthy, "suspended": l.suspended,
                })
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let style = Style::stdout();
    for l in &lines {
        let head = format!("{} (port {}):", l.title, l.port);
        match l.pid {
            Some(pid) if l.suspended => {
                let how = format!("stopped by a signal: `kill -CONT -- -{pid}` resumes it");
                say!("{head} {} (pid {pid})  {}  {}", style.yellow("⏸ Suspended"), l.url, style.yellow(&how));
            }
            Some(pid) => {
                let health = if l.healthy { style.green("healthy") } else { style.yellow("not answering") };
                say!("{head} {} (pid {pid})  {}  {health}", style.green("✓ Running"), l.url);
            }
            None => say!("{head} {}", style.dim("✗ Stopped")),
        }
    }
    Ok(())
}
