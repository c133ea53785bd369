//! `cargo xtask status`: one line per service in the seed's format, with its
//! URL and whether it answers.

use std::collections::BTreeSet;

use serde_json::json;

use crate::engine::allocation;
use crate::model::config::{Config, Service};
use crate::system::paths::Project;
use crate::system::probe;
use crate::system::records;
use crate::system::term::Style;
use crate::system::term::say;

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
    let records = running(project);
    let stopped = stopped_groups(&records);
    // A running service is on its record's port, whatever .ports.json says since.
    let mut ports = allocation::current(project, config)?;
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
    records::check_all(&project.root)?; // rather than call a service it may name stopped
    let config = match crate::engine::load_config(project) {
        Ok(config) => config,
        Err(e) => return run_from_records(project, as_json, &e),
    };
    let lines = lines(project, &config, |service, port| probe::check(&service.ready, port))?;
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
            Some(pid) if l.suspended => say!("{head} {}  {}  {}", suspended(style, pid), l.url, resume(style, pid)),
            Some(pid) => {
                let health = if l.healthy { style.green("healthy") } else { style.yellow("not answering") };
                say!("{head} {} (pid {pid})  {}  {health}", style.green("✓ Running"), l.url);
            }
            None => say!("{head} {}", style.dim("✗ Stopped")),
        }
    }
    Ok(())
}

/// `status` when ports.toml cannot be read (a merge conflict, deleted):
/// what the records say runs, without the URLs and health checks it gives.
fn run_from_records(project: &Project, as_json: bool, e: &anyhow::Error) -> anyhow::Result<()> {
    let why = format!("{e:#}");
    let why = why.lines().next().unwrap_or_default();
    // On stderr, so that `--json` output stays JSON.
    eprintln!("warning: {why}\nports.toml could not be read: showing what the records of .pids/ say runs");
    let records = running(project);
    let stopped = stopped_groups(&records);
    if as_json {
        let rows: Vec<_> = records
            .iter()
            .map(|r| {
                json!({
                    "service": r.service, "port": r.port, "running": true, "pid": r.pid(),
                    "url": null, "healthy": null, "suspended": stopped.contains(&r.pid()),
                })
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let style = Style::stdout();
    for r in &records {
        let (head, pid) = (format!("{} (port {}):", r.service, r.port), r.pid());
        match stopped.contains(&pid) {
            true => say!("{head} {}  {}", suspended(style, pid), resume(style, pid)),
            false => say!("{head} {} (pid {pid})", style.green("✓ Running")),
        }
    }
    if records.is_empty() {
        say!("nothing is running");
    }
    Ok(())
}

/// The records of the services that are running.
fn running(project: &Project) -> Vec<records::Record> {
    records::load_all(&project.root).into_iter().filter(|r| r.group.is_running()).collect()
}

/// The groups of `records` with a process stopped by a signal (one look at
/// every process, only when some service runs).
fn stopped_groups(records: &[records::Record]) -> BTreeSet<i32> {
    if records.is_empty() { BTreeSet::new() } else { procscan::stopped_groups() }
}

fn suspended(style: Style, pid: i32) -> String {
    format!("{} (pid {pid})", style.yellow("⏸ Suspended"))
}

fn resume(style: Style, pid: i32) -> String {
    style.yellow(&format!("stopped by a signal: `kill -CONT -- -{pid}` resumes it"))
}
