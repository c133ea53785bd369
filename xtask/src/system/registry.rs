//! The user-level registry of checkouts (ARCHITECTURE.md, "Several checkouts"): which ports
//! each checkout of any repository on this machine holds, so that parallel
//! git worktrees get disjoint ports and never kill each other's services;
//! each checkout's name in the named URLs, and the user's proxy of them
//! (ARCHITECTURE.md, "Named URLs").
//!
//! It lives in `$XDG_STATE_HOME/cargo-xtask-ports/registry.json` and is
//! written under its lock. A checkout's processes are its own `.pids/`
//! records, which the registry leads to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::model::book::Ports;
use crate::model::names;
use crate::system::files::{self, Lock};
use crate::system::group::Group;
use crate::system::paths;
use crate::system::process::ProcId;
use crate::system::records;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entries {
    /// By checkout root.
    pub checkouts: BTreeMap<PathBuf, Entry>,
    /// The proxy of the named URLs, once a checkout has had names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
}

/// What one checkout reserves.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Its name in the named URLs (`<service>.<name>.localhost`): unique,
    /// kept for as long as the entry.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Its services' ports.
    pub ports: Ports,
    /// Its dashboard's port, once it has served one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<u16>,
}

/// The user's proxy of the named URLs: its port, which stays the user's,
/// and the process serving it, while one does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcId>,
}

impl Proxy {
    /// The process serving it, if it still runs.
    pub fn running(&self) -> Option<ProcId> {
        self.process.filter(|id| id.is_alive())
    }
}

impl Entry {
    pub fn all_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.values().copied().chain(self.dashboard)
    }
}

impl Entries {
    /// Ports held by every checkout but `me`, and the proxy's.
    pub fn reserved_by_others(&self, me: &Path) -> BTreeSet<u16> {
        let others = self.checkouts.iter().filter(|(path, _)| *path != me).flat_map(|(_, entry)| entry.all_ports());
        others.chain(self.proxy.as_ref().map(|p| p.port)).collect()
    }

    /// This checkout's entry, created if needed, with a name (from its
    /// folder's, unique among the checkouts) if it has none yet.
    pub fn mine(&mut self, me: &Path) -> &mut Entry {
        if self.checkouts.get(me).is_none_or(|entry| entry.name.is_empty()) {
            let taken = self.checkouts.iter().filter(|(path, _)| *path != me).map(|(_, e)| e.name.clone()).collect();
            let folder = me.file_name().map(|f| f.to_string_lossy()).unwrap_or_default();
            self.checkouts.entry(me.to_path_buf()).or_default().name = names::checkout_label(&folder, &taken);
        }
        self.checkouts.get_mut(me).expect("made above")
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
        let entries = Registry::read(&path)?.unwrap_or_default();
        let mut registry = Registry { path, entries, pruned: false, _lock: lock };
        registry.pruned = !registry.entries.prune(is_live).is_empty();
        Ok(registry)
    }

    /// What the registry says now, without its lock (it is replaced whole,
    /// never written in place) and without dropping the checkouts that are
    /// gone: a look, for what only reads it, often (the proxy).
    pub fn peek() -> anyhow::Result<Entries> {
        Ok(Registry::read(&Registry::file()?)?.unwrap_or_default())
    }

    /// The entries in `path`; None when it is missing or empty (`touch`, a
    /// crash that lost the data): nothing registered yet.
    fn read(path: &Path) -> anyhow::Result<Option<Entries>> {
        match files::read_optional(path)? {
            Some(text) if !text.trim().is_empty() => match serde_json::from_str(&text) {
                Ok(entries) => Ok(Some(entries)),
                Err(e) => bail!(
                    "{}\nthis file is the registry of every checkout's ports: fix it, or delete it \
                     (each checkout registers again on its next run)",
                    crate::model::json::json_error(path, &e)
                ),
            },
            _ => Ok(None),
        }
    }

    /// Waits while `keep` holds of the registry (None once it is gone),
    /// read again at every change of its file; returns when it no longer
    /// does, or the registry's folder is gone. Costs nothing meanwhile: the
    /// kernel says when the folder changes (inotify). A registry that cannot
    /// be read (a hand edit) is waited out.
    pub fn watch(keep: impl Fn(Option<&Entries>) -> bool) -> anyhow::Result<()> {
        use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
        let file = Registry::file()?;
        let folder = file.parent().expect("the registry is in a folder");
        let watcher = inotify::init(CreateFlags::CLOEXEC)?;
        let changes = WatchFlags::MOVED_TO | WatchFlags::CLOSE_WRITE | WatchFlags::DELETE;
        inotify::add_watch(&watcher, folder, changes | WatchFlags::DELETE_SELF | WatchFlags::MOVE_SELF)?;
        // Read after the watch is set: no change is missed between.
        let holds = || Registry::read(&file).map_or(true, |entries| keep(entries.as_ref()));
        if !holds() {
            return Ok(());
        }
        let mut buffer = [std::mem::MaybeUninit::uninit(); 4096];
        let mut events = inotify::Reader::new(&watcher, &mut buffer);
        loop {
            let event = events.next()?;
            if event.events().intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF | ReadFlags::IGNORED) {
                return Ok(());
            }
            if event.file_name().is_some_and(|name| name.to_bytes() == b"registry.json") && !holds() {
                return Ok(());
            }
        }
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

    /// Which checkout reserves `port`, if another one does (the proxy's
    /// port is no checkout's).
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
            name: String::new(),
            ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            dashboard,
        };
        entries.checkouts.insert("/a".into(), entry(&[("web", 3000), ("api", 8000)], Some(7400)));
        entries.checkouts.insert("/b".into(), entry(&[("web", 3001)], None));
        entries.checkouts.insert("/gone".into(), entry(&[("web", 3002)], None));
        assert_eq!(entries.reserved_by_others(Path::new("/a")), BTreeSet::from([3001, 3002]));
        assert_eq!(entries.prune(|p| p != Path::new("/gone")), [PathBuf::from("/gone")]);
        assert_eq!(entries.reserved_by_others(Path::new("/b")), BTreeSet::from([3000, 7400, 8000]));
        entries.proxy = Some(Proxy { port: 7300, process: None });
        assert_eq!(entries.reserved_by_others(Path::new("/b")), BTreeSet::from([3000, 7300, 7400, 8000]));
    }

    #[test]
    fn names_are_given_once_and_unique() {
        let mut entries = Entries::default();
        assert_eq!(entries.mine(Path::new("/src/app")).name, "app");
        entries.mine(Path::new("/src/app")).ports.insert("web".into(), 3000);
        assert_eq!(entries.mine(Path::new("/wt/App")).name, "app-2", "another checkout's folder of the same name");
        assert_eq!(entries.mine(Path::new("/src/app")).name, "app", "kept");
        assert_eq!(entries.mine(Path::new("/src/app")).ports["web"], 3000);
        // An entry from before names gets one.
        entries.checkouts.insert("/old/Feature_X".into(), Entry::default());
        assert_eq!(entries.mine(Path::new("/old/Feature_X")).name, "feature-x");
    }
}
