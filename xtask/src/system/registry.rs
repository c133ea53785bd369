//! The user-level registry of checkouts (ARCHITECTURE.md, "Several checkouts"): which ports
//! each checkout of any repository on this machine holds, so that parallel
//! git worktrees get disjoint ports and never kill each other's services.
//!
//! It lives in `$XDG_STATE_HOME/cargo-xtask-ports/registry.json` and is only
//! read and written under its lock. A checkout's processes are its own
//! `.pids/` records, which the registry leads to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::model::book::Ports;
use crate::system::files::{self, Lock};
use crate::system::group::Group;
use crate::system::paths;
use crate::system::records;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entries {
    /// By checkout root.
    pub checkouts: BTreeMap<PathBuf, Entry>,
}

/// What one checkout reserves.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Its services' ports.
    pub ports: Ports,
    /// Its dashboard's port, once it has served one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<u16>,
}

impl Entry {
    pub fn all_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.values().copied().chain(self.dashboard)
    }
}

impl Entries {
    /// Ports held by every checkout but `me`.
    pub fn reserved_by_others(&self, me: &Path) -> BTreeSet<u16> {
        self.checkouts.iter().filter(|(path, _)| *path != me).flat_map(|(_, entry)| entry.all_ports()).collect()
    }

    /// This checkout's entry, created empty if needed.
    pub fn mine(&mut self, me: &Path) -> &mut Entry {
        self.checkouts.entry(me.to_path_buf()).or_default()
    }

    /// Forgets the checkouts that are not `live`; returns them.
    pub fn prune(&mut self, live: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
        let gone: Vec<PathBuf> = self.checkouts.keys().filter(|p| !live(p)).cloned().collect();
        for path in &gone {
            self.checkouts.remove(path);
        }
        gone
    }
}

/// A checkout still to be reckoned with: it has a `ports.toml`, or services
/// still running whatever became of it (`git stash -u`, an old commit).
/// Forgotten, those would be taken for strangers' processes and killed.
fn is_live(root: &Path) -> bool {
    root.join("ports.toml").is_file() || records::load_all(root).iter().any(|r| r.group.is_running())
}

/// The registry, locked for as long as this value lives.
pub struct Registry {
    path: PathBuf,
    pub entries: Entries,
    /// Checkouts that are gone were dropped from `entries` on opening.
    pub pruned: bool,
    _lock: Lock,
}

impl Registry {
    pub fn open() -> anyhow::Result<Registry> {
        let path = Registry::file()?;
        let lock = Lock::acquire(&path.with_file_name("registry.lock"))?;
        let entries = match files::read_optional(&path)? {
            // Empty (`touch`, a crash that lost the data): nothing registered yet.
            Some(text) if !text.trim().is_empty() => match serde_json::from_str(&text) {
                Ok(entries) => entries,
                Err(e) => bail!(
                    "{}\nthis file is the registry of every checkout's ports: fix it, or delete it \
                     (each checkout registers again on its next run)",
                    crate::model::json::json_error(&path, &e)
                ),
            },
            _ => Entries::default(),
        };
        let mut registry = Registry { path, entries, pruned: false, _lock: lock };
        registry.pruned = !registry.entries.prune(is_live).is_empty();
        Ok(registry)
    }

    /// Where the registry is kept.
    pub fn file() -> anyhow::Result<PathBuf> {
        Ok(paths::state_home()?.join("registry.json"))
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let (path, text) = self.pending_write();
        files::write_atomic(&path, &text)
    }

    /// The write that saves the registry, for `files::write_all_atomic`.
    pub fn pending_write(&self) -> (PathBuf, String) {
        let text = serde_json::to_string_pretty(&self.entries).expect("the registry serialises") + "\n";
        (self.path.clone(), text)
    }

    /// The service groups of the other checkouts, from their `.pids/`.
    pub fn others_groups(&self, me: &Path) -> Vec<(PathBuf, Group)> {
        let others = self.entries.checkouts.keys().filter(|p| *p != me);
        others.flat_map(|path| records::load_all(path).into_iter().map(move |r| (path.clone(), r.group))).collect()
    }

    /// Which checkout reserves `port`, if another one does.
    pub fn owner_of(&self, port: u16, me: &Path) -> Option<&Path> {
        let mut others = self.entries.checkouts.iter().filter(|(path, _)| *path != me);
        others.find(|(_, entry)| entry.all_ports().any(|p| p == port)).map(|(path, _)| path.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_of_others_and_pruning() {
        let mut entries = Entries::default();
        let entry = |ports: &[(&str, u16)], dashboard| Entry {
            ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            dashboard,
        };
        entries.checkouts.insert("/a".into(), entry(&[("web", 3000), ("api", 8000)], Some(7400)));
        entries.checkouts.insert("/b".into(), entry(&[("web", 3001)], None));
        entries.checkouts.insert("/gone".into(), entry(&[("web", 3002)], None));
        assert_eq!(entries.reserved_by_others(Path::new("/a")), BTreeSet::from([3001, 3002]));
        assert_eq!(entries.prune(|p| p != Path::new("/gone")), [PathBuf::from("/gone")]);
        assert_eq!(entries.reserved_by_others(Path::new("/b")), BTreeSet::from([3000, 7400, 8000]));
    }
}
