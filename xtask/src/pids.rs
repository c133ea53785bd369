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
    files::write_record(&project.pid_file(&record.service), &text)
}

/// Removes the record of `service` if it still names `group`: the record of
/// a newer instance (another runner may have started one meanwhile) stays.
pub fn remove(project: &Project, service: &str, group: Group) -> anyhow::Result<()> {
    let path = project.pid_file(service);
    let current = files::read_optional(&path)?.and_then(|text| serde_json::from_str::<Record>(&text).ok());
    if current.is_none_or(|record| record.group == group) {
        files::remove_optional(&path)?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_removed_only_by_whoever_stopped_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let project = Project { root: dir.path().to_path_buf() };
        let group = |start| Group { leader: ProcId { pid: 4242, start }, mark: 1 };
        let record = |start| Record {
            service: "api".into(),
            group: group(start),
            port: 8000,
            command: vec!["api".into()],
            supervisor: None,
        };
        save(&project, &record(2)).unwrap();
        // The runner that stopped the older instance leaves the newer one's record.
        remove(&project, "api", group(1)).unwrap();
        assert_eq!(load_all(&project.root), [record(2)]);
        remove(&project, "api", group(2)).unwrap();
        assert_eq!(load_all(&project.root), []);
    }
}
