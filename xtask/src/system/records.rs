//! `.pids/`: one record per running service, enough to recognise our own
//! processes later (the group leader's pid and start time), even after the
//! runner itself was killed; and where the checkout's dashboard and its
//! `dev` say who they are.

use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::system::containers::Backing;
use crate::system::files::{self, Lock};
use crate::system::group::Group;
use crate::system::paths::Project;
use crate::system::process::ProcId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub service: String,
    pub group: Group,
    pub port: u16,
    pub command: Vec<String>,
    /// The `cargo xtask dev` that runs it in the foreground; `None` for `start`.
    pub supervisor: Option<ProcId>,
    /// The checkout that started it: a copy of the checkout (`cp -a`) brings
    /// the record along, and must not take the service for its own.
    #[serde(default)]
    pub checkout: Option<PathBuf>,
    /// The container its command runs, for a service in a container: it is
    /// stopped through the engine (the client's death does not stop it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Backing>,
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
    let (records, unreadable) = read_all(root);
    for e in unreadable {
        eprintln!("warning: ignoring {e}");
    }
    records
}

/// Refuses a record that cannot be read: it may name a running service,
/// which a start would then take for a stranger, and a stop would leave.
pub fn check_all(root: &Path) -> anyhow::Result<()> {
    match read_all(root).1.into_iter().next() {
        Some(e) => bail!(
            "{e}\nthis record names a service that may still run: fix it, or delete it once its process is gone \
             (cargo xtask ports who PORT names who holds a port)"
        ),
        None => Ok(()),
    }
}

/// The records that can be read, sorted by service, and what is wrong with
/// each of the others.
fn read_all(root: &Path) -> (Vec<Record>, Vec<String>) {
    let Ok(entries) = std::fs::read_dir(root.join(".pids")) else {
        return (Vec::new(), Vec::new());
    };
    let (mut records, mut unreadable) = (Vec::new(), Vec::new());
    for path in entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")) {
        match files::read_optional(&path) {
            Ok(None) => {} // removed meanwhile: its service stopped
            Ok(Some(text)) => match serde_json::from_str::<Record>(&text) {
                // Found by its file's name, it would show one service on another's pid.
                Ok(record) if path.file_stem().is_none_or(|stem| *stem != *record.service) => {
                    let (line, col) = crate::model::json::locate_key(&text, "service", false);
                    let stem = path.file_stem().unwrap_or_default().display();
                    let at = format!("{}:{line}:{col}", path.display());
                    unreadable.push(format!("{at}: the record of {stem} names service {:?}", record.service));
                }
                // Names another checkout's service: none of ours, and harmless
                // (replaced when this checkout starts its own).
                Ok(record) if copied(root, &record) => {}
                Ok(mut record) => {
                    let started_in = record.checkout.as_deref().unwrap_or(root).to_string_lossy().into_owned();
                    record.container = record.container.map(|c| c.recorded_in(&started_in));
                    records.push(record)
                }
                Err(e) => unreadable.push(crate::model::json::json_error(&path, &e)),
            },
            Err(e) => unreadable.push(format!("{e:#}")),
        }
    }
    records.sort_by(|a: &Record, b| a.service.cmp(&b.service));
    (records, unreadable)
}

/// Whether `record`, found in checkout `root`, was copied from the checkout
/// it names, which still has it. One that names a checkout it no longer has
/// came along when the checkout was moved: the service is still ours.
/// (The same folder reached by another path, a bind mount say, is no copy.)
fn copied(root: &Path, record: &Record) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |dir: &Path| std::fs::metadata(dir).map(|m| (m.dev(), m.ino())).ok();
    let Some(from) = record.checkout.as_deref().filter(|from| *from != root && id(from) != id(root)) else {
        return false;
    };
    let there = files::read_optional(&from.join(".pids").join(format!("{}.json", record.service)));
    there
        .ok()
        .flatten()
        .and_then(|text| serde_json::from_str::<Record>(&text).ok())
        .is_some_and(|r| r.group == record.group)
}

/// Where a running dashboard can be found: `.pids/dashboard`, readable by
/// its user only (the token in its address lets whoever reads it act).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dashboard {
    pub url: String,
    pub owner: ProcId,
}

pub fn save_dashboard(project: &Project, dashboard: &Dashboard) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(dashboard).expect("a dashboard record serialises");
    files::write_private(&project.dashboard_file(), &text)
}

/// The dashboard serving this checkout now, if one does.
pub fn dashboard(project: &Project) -> Option<Dashboard> {
    let text = files::read_optional(&project.dashboard_file()).ok()??;
    serde_json::from_str::<Dashboard>(&text).ok().filter(|d| d.owner.is_alive())
}

/// Removes the record of a dashboard that `owner` served (and not another's
/// that took its place): when it ends, or when dev's guard finds it gone.
pub fn forget_dashboard(project: &Project, owner: ProcId) -> anyhow::Result<()> {
    let record = project.dashboard_file();
    let text = files::read_optional(&record)?.unwrap_or_default();
    if serde_json::from_str::<Dashboard>(&text).is_ok_and(|d| d.owner == owner) {
        files::remove_optional(&record)?;
    }
    Ok(())
}

/// The `cargo xtask dev` that runs in this checkout, if one does: it holds
/// the dev lock for as long as it runs, and says in it who it is.
pub fn running_dev(project: &Project) -> Option<ProcId> {
    let path = project.dev_lock();
    if !path.exists() || Lock::try_acquire_shared(&path).ok()?.is_some() {
        return None;
    }
    let text = files::read_optional(&path).ok()??;
    let (pid, start) = text.trim().split_once(' ')?;
    Some(ProcId { pid: pid.parse().ok()?, start: start.parse().ok()? }).filter(|dev| dev.is_alive())
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
            checkout: Some(project.root.clone()),
            container: None,
        };
        save(&project, &record(2)).unwrap();
        // The runner that stopped the older instance leaves the newer one's record.
        remove(&project, "api", group(1)).unwrap();
        assert_eq!(load_all(&project.root), [record(2)]);
        remove(&project, "api", group(2)).unwrap();
        assert_eq!(load_all(&project.root), []);
    }

    #[test]
    fn a_record_copied_from_a_checkout_that_still_has_it_is_not_ours() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (from, to) = (Project { root: from.path().to_path_buf() }, Project { root: to.path().to_path_buf() });
        let record = Record {
            service: "api".into(),
            group: Group { leader: ProcId { pid: 4242, start: 1 }, mark: 1 },
            port: 8000,
            command: vec!["api".into()],
            supervisor: None,
            checkout: Some(from.root.clone()),
            container: None,
        };
        save(&from, &record).unwrap();
        save(&to, &record).unwrap(); // copied along with the checkout
        assert_eq!(load_all(&to.root), []);
        assert_eq!(load_all(&from.root), std::slice::from_ref(&record));
        // The same folder, by another path (a link, a bind mount): no copy.
        let link = to.root.join("link");
        std::os::unix::fs::symlink(&from.root, &link).unwrap();
        assert_eq!(load_all(&link), std::slice::from_ref(&record));
        // Moved, not copied: the checkout it names no longer has it.
        remove(&from, "api", record.group).unwrap();
        assert_eq!(load_all(&to.root), [record]);
    }

    #[test]
    fn a_record_with_a_pid_that_names_no_process_is_refused_where_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".pids")).unwrap();
        let text = r#"{"service": "a", "group": {"leader": {"pid": 0, "start": 5}, "mark": 3},
            "port": 8000, "command": ["x"], "supervisor": null}"#;
        std::fs::write(dir.path().join(".pids/a.json"), text).unwrap();
        let error = check_all(dir.path()).unwrap_err().to_string();
        let place = format!("{}:1:", dir.path().join(".pids/a.json").display());
        assert!(error.starts_with(&place) && error.contains("pid 0 names no process"), "{error}");
        assert_eq!(load_all(dir.path()), []);
    }

    /// A record is found by its file's name: one in another's file (copied
    /// by hand, say) would show one service on another's pid.
    #[test]
    fn a_record_whose_file_names_another_service_is_refused_where_it_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".pids")).unwrap();
        let text = r#"{
  "service": "b",
  "group": {"leader": {"pid": 4242, "start": 5}, "mark": 3},
  "port": 8000, "command": ["x"], "supervisor": null
}"#;
        std::fs::write(dir.path().join(".pids/a.json"), text).unwrap();
        let error = check_all(dir.path()).unwrap_err().to_string();
        let place = format!("{}:2:3: ", dir.path().join(".pids/a.json").display());
        assert!(error.starts_with(&place) && error.contains("names service \"b\""), "{error}");
        assert_eq!(load_all(dir.path()), []);
    }
}
