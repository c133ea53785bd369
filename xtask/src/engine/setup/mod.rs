//! The set-up a checkout can do for itself before a service first starts:
//! its folders exist (owned by the account it runs as), and its set-up steps
//! (a virtualenv, `npm ci`, `initdb`) have run, again only when their inputs
//! changed. What would keep it from working is found first (`check`).

mod check;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use anyhow::{Context, bail, ensure};

pub use check::check;
use check::{is_made, made_by, program_file};

use crate::engine::Checkout;
use crate::engine::output::{COPY_WAIT, Printer, copied, copy_lines};
use crate::model::config::{Config, Service, Step};
use crate::system::files;
use crate::system::group::{Group, Stopped};
use crate::system::paths::Project;
use crate::system::process::{self, Hurry, ProcId};
use crate::system::spawn::{self, is_executable};
use crate::system::term::say;
use crate::system::users::{self, Account};

/// `PATH` for services and steps: ours, then the folders `[programs]` search
/// (Debian keeps postgres in /usr/lib/postgresql/VERSION/bin).
pub fn search_path(config: &Config) -> OsString {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for program in config.programs.values() {
        for pattern in &program.search {
            for dir in glob_dirs(pattern) {
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// Folders matching a pattern where `*` stands for one path component,
/// newest-looking (highest name) first.
fn glob_dirs(pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for part in Path::new(pattern).components().skip(1) {
        let part = part.as_os_str().to_string_lossy();
        found = found
            .into_iter()
            .flat_map(|dir| match part.split_once('*') {
                None => vec![dir.join(&*part)],
                Some((prefix, suffix)) => {
                    let mut names: Vec<String> = std::fs::read_dir(&dir)
                        .map(|entries| {
                            entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
                        })
                        .unwrap_or_default();
                    names.retain(|n| n.starts_with(prefix) && n.ends_with(suffix));
                    names.sort_by(|a, b| b.cmp(a));
                    names.into_iter().map(|n| dir.join(n)).collect()
                }
            })
            .collect();
    }
    found.into_iter().filter(|d| d.is_dir()).collect()
}

/// The account a service runs as: its `user` when the runner is root (which
/// postgres, for one, refuses), else the runner's own.
pub fn account(service: &Service) -> anyhow::Result<Option<Account>> {
    match &service.user {
        Some(name) if users::current_uid() == 0 => users::by_name(name).map(Some),
        _ => Ok(None),
    }
}

/// Does everything `names` need before they can start, once `check`
/// passed: their folders, their set-up steps, and a look at the programs
/// set-up was to make.
///
/// The steps of different services run at once: a thread for each service,
/// which runs its steps in order. `depends_on` says what must run before a
/// service starts, and set-up comes before anything runs, so a service's
/// steps wait for a dependency's set-up only when they use what it makes
/// (`waits_for`). The first step to fail stops the others, and the command
/// fails naming it; a step's stamp is written only once it completed, so
/// the next run does again what was cut short.
///
/// Steps run in the runner's own process group, the terminal's foreground
/// one, as they did one at a time: one that asks on the terminal (sudo,
/// ssh: they open it themselves) still may, and a Ctrl-C reaches all of
/// them. While several run, its question shows among the others' output,
/// which is prefixed with their services' names; two asking at once would
/// share the keyboard. (In process groups of their own, a question would
/// stop the step for good: SIGTTIN.) None of this repository's steps asks.
pub fn prepare(checkout: &Checkout, names: &[String]) -> anyhow::Result<()> {
    let (project, config) = (&checkout.project, &checkout.config);
    let path = &search_path(config);
    for name in names {
        make_dirs(project, &config.services[name])?;
    }
    let with_steps: Vec<&str> =
        names.iter().map(String::as_str).filter(|name| !config.services[*name].setup.is_empty()).collect();
    let setup = Setup {
        project,
        config,
        path,
        printer: Printer::new(config),
        state: Mutex::default(),
        changed: Condvar::new(),
    };
    let started = Instant::now();
    let failure = std::thread::scope(|scope| {
        let (sender, results) = channel();
        for name in &with_steps {
            let waits = waits_for(project, config, name, &with_steps);
            let (sender, setup) = (sender.clone(), &setup);
            scope.spawn(move || sender.send((*name, setup.service(name, &waits))));
        }
        drop(sender);
        let mut failure = None;
        for (name, result) in results {
            // After the first, the errors are of steps it stopped.
            if let (Err(e), None) = (result, &failure) {
                let survivors = setup.stop_all(name);
                failure = Some(match survivors.as_slice() {
                    [] => e,
                    _ => anyhow::anyhow!(
                        "{e:#}\nthe set-up of {} could not be stopped: it still runs",
                        survivors.join(", ")
                    ),
                });
            }
        }
        failure
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let ran = setup.lock().ran.len();
    if ran > 0 {
        let (style, s) = (setup.printer.style, if ran == 1 { "" } else { "s" });
        say!("{}", style.green(&format!("✓ set up {ran} service{s} in {:.1}s", started.elapsed().as_secs_f64())));
    }
    // Before any holder of a port is killed: a program set-up was to
    // make, and did not, fails here.
    for name in names {
        let service = &config.services[name];
        if let Some(file) = program_file(project, service) {
            ensure!(
                is_executable(&file),
                "{}: {}, the program of {name}, is not there after its set-up: fix `command`, or its set-up",
                service.place(&project.ports_toml(), "command"),
                file.display()
            );
        }
    }
    Ok(())
}

/// Makes a service's folders, given to the account it runs as.
fn make_dirs(project: &Project, service: &Service) -> anyhow::Result<()> {
    let account = account(service)?;
    for dir in &service.dirs {
        let dir = project.path(dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some(a) = &account {
            std::os::unix::fs::chown(&dir, Some(a.uid), Some(a.gid))
                .with_context(|| format!("giving {} to {}", dir.display(), a.name))?;
        }
    }
    Ok(())
}

/// The services of `others` (set up now too) whose set-up that of `name`
/// waits for: those it depends on, directly or not, whose set-up makes
/// something one of its steps uses (an input, or a program or any word of
/// a shell line named by its path from the step's folder), or may make
/// anything (a step that does not say what it `creates`).
fn waits_for(project: &Project, config: &Config, name: &str, others: &[&str]) -> Vec<String> {
    let mut used: Vec<PathBuf> = Vec::new();
    for step in &config.services[name].setup {
        let dir = step_dir(project, step);
        used.extend(step.command.iter().flat_map(|w| w.split_whitespace()).map(|w| dir.join(w)));
        used.extend(step.inputs.iter().map(|i| project.path(i)));
    }
    let dependencies = config.closure(Some(&[name.to_owned()])).unwrap_or_default();
    (dependencies.into_iter())
        .filter(|d| d != name && others.contains(&d.as_str()))
        .filter(|d| made_by(project, [&config.services[d]]).is_none_or(|made| used.iter().any(|p| is_made(&made, p))))
        .collect()
}

/// The set-up of several services at once: what their threads share.
struct Setup<'a> {
    project: &'a Project,
    config: &'a Config,
    path: &'a OsString,
    /// Output lines come after their service's name, as dev's services' lines do.
    printer: Printer,
    state: Mutex<State>,
    /// Told of each service whose set-up completed, and of a failure.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Services whose set-up completed.
    done: BTreeSet<String>,
    /// The service whose set-up failed first: no step starts after that.
    failed: Option<String>,
    /// The step under way of each service. It runs in the runner's process
    /// group, not one of its own: its group, named by its process, has no
    /// members, and all of it (it, and what it started, in any group or
    /// session) is found by its mark.
    running: BTreeMap<String, Group>,
    /// Services that ran a step.
    ran: BTreeSet<String>,
}

impl Setup<'_> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn say(&self, name: &str, message: &str) {
        say!("{}", self.printer.line(name, message));
    }

    /// Runs the steps of `name` that have not run with their inputs as they
    /// are, once the services of `waits` are set up.
    fn service(&self, name: &str, waits: &[String]) -> anyhow::Result<()> {
        let mut state = self.lock();
        while state.failed.is_none() && !waits.iter().all(|w| state.done.contains(w)) {
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        drop(state); // after a failure elsewhere, `step` refuses to run
        let service = &self.config.services[name];
        let account = account(service)?;
        let count = service.setup.len();
        for (i, step) in service.setup.iter().enumerate() {
            let stamp = stamps(self.project).join(format!("{name}.{i}"));
            let fingerprint = fingerprint(self.project, step)?;
            let created = step.creates.as_ref().is_none_or(|p| self.project.path(p).exists());
            if created && files::read_optional(&stamp)?.as_deref() == Some(fingerprint.as_str()) {
                continue;
            }
            self.step(name, (i + 1, count), step, account.as_ref())?;
            files::write_atomic(&stamp, &fingerprint)?;
        }
        self.lock().done.insert(name.to_owned());
        self.changed.notify_all();
        Ok(())
    }

    /// Runs step `i` of `count` of `name`, its output prefixed, unless the
    /// set-up of another service failed.
    fn step(
        &self,
        name: &str,
        (i, count): (usize, usize),
        step: &Step,
        account: Option<&Account>,
    ) -> anyhow::Result<()> {
        let line = step.command.join(" ");
        let (program, args) = step.command.split_first().context("empty set-up command")?;
        let ids = account.map(|a| (a.uid, a.gid));
        let (mark, (var, marked)) = process::new_mark();
        let (reader, writer) = std::io::pipe().context("creating a pipe for set-up output")?;
        let dir = step_dir(self.project, step);
        let expression = duct::cmd(spawn::program_in(&dir, program), args)
            .dir(&dir)
            .env("PATH", self.path)
            .env(var, marked)
            .stdin_null()
            // duct applies the outer redirection first: stdout to the pipe, then stderr to stdout.
            .stderr_to_stdout()
            .stdout_file(writer)
            .unchecked()
            .before_spawn(move |command| {
                if let Some((uid, gid)) = ids {
                    command.uid(uid).gid(gid);
                }
                spawn::term_with_runner(command);
                Ok(())
            });
        // Started and listed at once: a failure elsewhere stops what is listed.
        let handle = {
            let mut state = self.lock();
            if let Some(failed) = &state.failed {
                bail!("{name}: not set up, as the set-up of {failed} failed");
            }
            self.say(name, &format!("setting up ({i}/{count}): {line}"));
            let handle = expression.start().with_context(|| format!("{name}: running {program}"))?;
            // Our child, not yet waited for: its pid cannot be taken by another.
            let leader = handle.pids().first().and_then(|pid| process::Stat::of(*pid as i32));
            if let Some(leader) = leader {
                let leader = ProcId { pid: leader.pid, start: leader.start };
                state.running.insert(name.to_owned(), Group { leader, mark });
            }
            state.ran.insert(name.to_owned());
            handle
        };
        drop(expression); // closes our copy of the pipe's write end
        // Said as the lines about it are, so that they come in order.
        let copy = copy_lines(reader, self.printer.prefix(name), None, crate::system::term::say_line);
        let started = Instant::now();
        let status = handle.wait().map(|output| output.status);
        let failed = {
            let mut state = self.lock();
            state.running.remove(name);
            state.failed.clone()
        };
        // What it started may hold the pipe: its lines are waited for a moment only.
        copied(Some(&copy), Instant::now() + COPY_WAIT);
        let status = status.with_context(|| format!("{name}: running {program}"))?;
        if status.success() {
            self.say(name, &format!("set up ({i}/{count}) in {:.1}s", started.elapsed().as_secs_f64()));
            return Ok(());
        }
        if let Some(failed) = failed {
            self.say(name, &format!("stopped ({i}/{count}), as the set-up of {failed} failed"));
            bail!("{name}: set-up step `{line}` stopped");
        }
        self.say(name, &format!("failed ({i}/{count}): {status}"));
        bail!("{name}: set-up step `{line}` failed ({status}); see its output above")
    }

    /// After the set-up of `failed` failed: starts no more steps, and stops
    /// those under way. Returns the services whose step still runs.
    fn stop_all(&self, failed: &str) -> Vec<String> {
        let running: Vec<(String, Group)> = {
            let mut state = self.lock();
            state.failed = Some(failed.to_owned());
            state.running.iter().map(|(name, group)| (name.clone(), *group)).collect()
        };
        self.changed.notify_all();
        std::thread::scope(|scope| {
            let stopping: Vec<_> = (running.iter())
                .map(|(name, group)| {
                    (name, scope.spawn(|| group.stop(self.config.services[name].stop_grace, &Hurry::default())))
                })
                .collect();
            (stopping.into_iter())
                .filter_map(|(name, stop)| {
                    (stop.join().unwrap_or(Stopped::Survived) == Stopped::Survived).then(|| name.clone())
                })
                .collect()
        })
    }
}

/// Where each set-up step's fingerprint is kept once it ran.
fn stamps(project: &Project) -> PathBuf {
    project.data_dir().join("setup")
}

/// The folder a service runs in.
pub fn cwd_of(project: &Project, service: &Service) -> PathBuf {
    service.cwd.as_ref().map_or_else(|| project.root.clone(), |cwd| project.path(cwd))
}

/// The folder a set-up step runs in.
fn step_dir(project: &Project, step: &Step) -> PathBuf {
    step.cwd.as_ref().map_or_else(|| project.root.clone(), |cwd| project.path(cwd))
}

/// What a step depends on: its command and the contents of its inputs.
fn fingerprint(project: &Project, step: &Step) -> anyhow::Result<String> {
    let mut hash = Fnv::default();
    hash.add(step.command.join("\0").as_bytes());
    for input in &step.inputs {
        let path = project.path(input);
        let contents =
            std::fs::read(&path).with_context(|| format!("reading {}, an input of a set-up step", path.display()))?;
        hash.add(input.as_bytes());
        hash.add(&contents);
    }
    Ok(format!("{:016x}\n", hash.0))
}

/// FNV-1a: a stable hash (std's may change between Rust releases).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain([&0xff]) {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_one_component() {
        let dirs = glob_dirs("/*/bin");
        assert!(dirs.contains(&PathBuf::from("/usr/bin")), "{dirs:?}");
        assert!(glob_dirs("/no-such-dir-*/bin").is_empty());
    }

    #[test]
    fn fnv_is_stable() {
        let mut h = Fnv::default();
        h.add(b"a");
        assert_eq!(h.0, {
            let mut x = 0xcbf2_9ce4_8422_2325u64;
            for b in [b'a', 0xff] {
                x = (x ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            x
        });
    }
}
