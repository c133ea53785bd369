//! Where things live: the checkout's root and one small fn per well-known file.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};

/// A checkout of the repository: the folder holding `ports.toml`.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
}

impl Project {
    /// The checkout the runner works on: the nearest folder at or above the
    /// current directory that holds `ports.toml`, so that `cargo xtask` works
    /// from any subfolder, and tests can point it at a temporary copy.
    /// Whatever is there by that name ends the search: one that is not a
    /// readable file (a dangling link, a folder) is an error, never a reason
    /// to act on the checkout above, whose services a `stop` would stop. A
    /// checkout whose `ports.toml` is gone still has the records of its
    /// services (`.pids/`), from which `stop` and `status` work.
    pub fn find() -> anyhow::Result<Project> {
        let cwd = std::env::current_dir().context("reading the current directory")?;
        for dir in cwd.ancestors() {
            let file = dir.join("ports.toml");
            match fs::symlink_metadata(&file) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    if !dir.join(".pids").is_dir() {
                        continue;
                    }
                }
                Err(e) => bail!("{}: {e}: cargo xtask cannot tell whether this folder is the checkout", file.display()),
                Ok(_) => {
                    if let Some(problem) = unreadable(&file) {
                        bail!(
                            "{}{problem}; cargo xtask works on the checkout of the nearest ports.toml, and looks no \
                             further: make it a readable file, or remove it",
                            file.display()
                        );
                    }
                }
            }
            // The registry names checkouts in JSON, which holds only text.
            ensure!(
                dir.to_str().is_some(),
                "the checkout's path {} is not valid UTF-8: rename its folders",
                dir.display()
            );
            return Ok(Project { root: dir.to_path_buf() });
        }
        bail!("no ports.toml in {} or any folder above it: run cargo xtask inside the repository", cwd.display())
    }

    pub fn ports_toml(&self) -> PathBuf {
        self.root.join("ports.toml")
    }
    pub fn ports_json(&self) -> PathBuf {
        self.root.join(".ports.json")
    }
    pub fn env_runtime(&self) -> PathBuf {
        self.root.join(".env.runtime")
    }
    pub fn pids_dir(&self) -> PathBuf {
        self.root.join(".pids")
    }
    pub fn pid_file(&self, service: &str) -> PathBuf {
        self.pids_dir().join(format!("{service}.json"))
    }
    /// Where a running dashboard says its address (not a service record).
    pub fn dashboard_file(&self) -> PathBuf {
        self.pids_dir().join("dashboard")
    }
    /// Serialises every change to this checkout's generated files.
    pub fn lock_file(&self) -> PathBuf {
        self.pids_dir().join("lock")
    }
    /// Held by a `dev`, `start` or `restart` while it starts services.
    pub fn launch_lock(&self) -> PathBuf {
        self.pids_dir().join("launch.lock")
    }
    /// Held by a `dev` for as long as it runs.
    pub fn dev_lock(&self) -> PathBuf {
        self.pids_dir().join("dev.lock")
    }
    /// The runner's folders in the checkout, each with the files a command
    /// makes there before it knows whether it fails (its locks, dev's guard
    /// log): taken back if it fails, when it made the folder
    /// (`files::remove_unused`).
    pub fn scaffolding(&self) -> [(PathBuf, Vec<PathBuf>); 2] {
        let locks = vec![self.dev_lock(), self.launch_lock(), self.lock_file()];
        [(self.pids_dir(), locks), (self.logs_dir(), vec![self.guard_log()])]
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join(".logs")
    }
    pub fn log_file(&self, service: &str) -> PathBuf {
        self.logs_dir().join(format!("{service}.log"))
    }
    /// What dev's guard did (a service's name cannot hold a dot).
    pub fn guard_log(&self) -> PathBuf {
        self.logs_dir().join("dev.guard.log")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.join(".data")
    }
    /// Resolves a path written in ports.toml (relative to the root).
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}

/// What keeps `file`, which exists, from being read as a file, if anything.
fn unreadable(file: &Path) -> Option<String> {
    let meta = match fs::metadata(file) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let target = fs::read_link(file).map_or_else(|_| "nothing".into(), |t| t.display().to_string());
            return Some(format!(" is a symbolic link to {target}, which does not exist"));
        }
        Err(e) => return Some(format!(": {e}")),
    };
    if meta.is_dir() {
        return Some(" is a folder, not a file".into());
    }
    if !meta.is_file() {
        return Some(" is not a regular file".into());
    }
    fs::File::open(file).err().map(|e| format!(" cannot be read: {e}"))
}

/// The folder of the user-level state shared by all checkouts (ARCHITECTURE.md, "Several checkouts").
pub fn state_home() -> anyhow::Result<PathBuf> {
    // The XDG spec: a relative path is invalid and must be ignored.
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| Path::new(v).is_absolute()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").context("neither XDG_STATE_HOME nor HOME is set")?;
            Path::new(&home).join(".local/state")
        }
    };
    Ok(base.join("cargo-xtask-ports"))
}
