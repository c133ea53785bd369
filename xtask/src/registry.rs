//! The user-level registry of checkouts (DESIGN.md section 7): which ports
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

use crate::files::{self, Lock};
use crate::paths;
use crate::pids;
use crate::process::Group;
use crate::state::Ports;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entries {
    /// Checkout root -> its ports by service.
    pub checkouts: BTreeMap<PathBuf, Ports>,
}

impl Entries {
    /// Ports held by every checkout but `me`.
    pub fn reserved_by_others(&self, me: &Path) -> BTreeSet<u16> {
        self.checkouts.iter().filter(|(path, _)| *path != me).flat_map(|(_, ports)| ports.values().copied()).collect()
    }

    /// Forgets checkouts that no longer exist; returns them.
    pub fn prune(&mut self, exists: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
        let gone: Vec<PathBuf> = self.checkouts.keys().filter(|p| !exists(p)).cloned().collect();
        for path in &gone {
            self.checkouts.remove(path);
        }
        gone
    }
}

/// The registry, locked for as long as this value lives.
pub struct Registry {
    path: PathBuf,
    pub entries: Entries,
    _lock: Lock,
}

impl Registry {
    pub fn open() -> anyhow::Result<Registry> {
        let dir = paths::state_home()?;
        let lock = Lock::acquire(&dir.join("registry.lock"))?;
        let path = dir.join("registry.json");
        let entries = match files::read_optional(&path)? {
            None => Entries::default(),
            Some(text) => match serde_json::from_str(&text) {
                Ok(entries) => entries,
                Err(e) => bail!(
                    "{}:{}:{}: {e}\nthis file is the registry of every checkout's ports: fix it, or delete it \
                     (each checkout registers again on its next run)",
                    path.display(),
                    e.line(),
                    e.column()
                ),
            },
        };
        let mut registry = Registry { path, entries, _lock: lock };
        registry.entries.prune(|p| p.join("ports.toml").is_file());
        Ok(registry)
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(&self.entries).expect("the registry serialises") + "\n";
        files::write_atomic(&self.path, &text)
    }

    /// The service groups of the other checkouts, from their `.pids/`.
    pub fn others_groups(&self, me: &Path) -> Vec<(PathBuf, Group)> {
        let others = self.entries.checkouts.keys().filter(|p| *p != me);
        others.flat_map(|path| pids::load_all(path).into_iter().map(move |r| (path.clone(), r.group))).collect()
    }

    /// Which checkout reserves `port`, if another one does.
    pub fn owner_of(&self, port: u16, me: &Path) -> Option<&Path> {
        let mut others = self.entries.checkouts.iter().filter(|(path, _)| *path != me);
        others.find(|(_, ports)| ports.values().any(|p| *p == port)).map(|(path, _)| path.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_of_others_and_pruning() {
        let mut entries = Entries::default();
        entries.checkouts.insert("/a".into(), Ports::from([("web".into(), 3000), ("api".into(), 8000)]));
        entries.checkouts.insert("/b".into(), Ports::from([("web".into(), 3001)]));
        entries.checkouts.insert("/gone".into(), Ports::from([("web".into(), 3002)]));
        assert_eq!(entries.reserved_by_others(Path::new("/a")), BTreeSet::from([3001, 3002]));
        assert_eq!(entries.prune(|p| p != Path::new("/gone")), [PathBuf::from("/gone")]);
        assert_eq!(entries.reserved_by_others(Path::new("/b")), BTreeSet::from([3000, 8000]));
    }
}
