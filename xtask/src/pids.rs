//! `.pids/`: one record per running service, enough to recognise our own
//! processes later (the group leader's pid and start time), even after the
//! runner itself was killed.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::files;
use crate::paths::Project;
use crate::process::{Group, ProcId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub service: String,
    pub group: Group,
    pub port: u16,
    pub command: Vec<String>,
    /// The `cargo xtask dev` that runs it in the foreground; `None` for `start`.
    pub supervisor: Option<ProcId>,
}

impl Record {
    pub fn pid(&self) -> i32 {
        self.group.pgid()
    }
}

pub fn save(project: &Project, record: &Record) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(record).expect("a record serialises") + "\n";
    files::write_atomic(&project.pid_file(&record.service), &text)
}

pub fn remove(project: &Project, service: &str) -> anyhow::Result<()> {
    files::remove_optional(&project.pid_file(service))
}

/// Every record of a checkout. A record that cannot be read is skipped with
/// a warning: it can name no process we could safely stop.
pub fn load_all(root: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(root.join(".pids")) else {
        return Vec::new();
    };
    let mut records: Vec<Record> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|path| {
            let parsed = std::fs::read_to_string(&path)
                .context("reading")
                .and_then(|text| serde_json::from_str(&text).context("parsing"));
            parsed.map_err(|e| eprintln!("warning: ignoring {}: {e:#}", path.display())).ok()
        })
        .collect();
    records.sort_by(|a, b| a.service.cmp(&b.service));
    records
}
