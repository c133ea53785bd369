//! The set-up a checkout can do for itself before a service first starts:
//! the programs it needs are there, its folders exist (owned by the account
//! it runs as), and its set-up steps (a virtualenv, `npm ci`, `initdb`) have
//! run, again only when their inputs changed.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use anyhow::{Context, bail, ensure};

use crate::engine::supervisor;
use crate::model::config::{Config, Service, Step};
use crate::system::files;
use crate::system::paths::Project;
use crate::system::process::{self, Group, ProcId, Stopped};
use crate::system::term::{Style, say};
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

fn find_program(name: &str, path: &OsString) -> Option<PathBuf> {
    std::env::split_paths(path).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

/// A file someone may run (exec needs an x bit, even for root).
fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// The programs the services run (the first word of each command, and any
/// program of `[programs]` a command mentions, as in `sh -c "initdb ..."`)
/// must be found; otherwise say what to install.
fn check_programs(project: &Project, config: &Config, services: &[String], path: &OsString) -> anyhow::Result<()> {
    let ports_toml = project.ports_toml();
    let mut needed = BTreeMap::new(); // program -> where the first command that runs it is written
    for name in services {
        let service = &config.services[name];
        let command: Vec<String> = service.command.iter().map(|t| t.render(None, &Default::default())).collect();
        let run = (&command, format!("the command of {name} ({})", service.place(&ports_toml, "command")));
        let steps = service.setup.iter().enumerate();
        let steps = steps.map(|(i, s)| {
            (&s.command, format!("set-up step {} of {name} ({})", i + 1, s.place(&ports_toml, "command")))
        });
        for (words, place) in [run].into_iter().chain(steps) {
            let first = words.first().filter(|w| !w.contains('/')).cloned();
            let mentioned = words.iter().flat_map(|w| w.split_whitespace());
            let mentioned = mentioned.filter(|w| config.programs.contains_key(*w)).map(str::to_owned);
            for program in first.into_iter().chain(mentioned) {
                needed.entry(program).or_insert_with(|| place.clone());
            }
        }
    }
    let missing: Vec<String> = needed
        .iter()
        .filter(|(program, _)| find_program(program, path).is_none())
        .map(|(program, place)| match config.programs.get(program).and_then(|p| p.install.as_ref()) {
            Some(install) => format!("  {program}: install it with `{install}`"),
            None => format!("  {program}: install it, or fix {place}"),
        })
        .collect();
    ensure!(missing.is_empty(), "missing programs (not found in PATH):\n{}", missing.join("\n"));
    Ok(())
}

/// The account a service runs as: its `user` when the runner is root (which
/// postgres, for one, refuses), else the runner's own.
pub fn account(service: &Service) -> anyhow::Result<Option<Account>> {
    match &service.user {
        Some(name) if users::current_uid() == 0 => users::by_name(name).map(Some),
        _ => Ok(None),
    }
}

/// An account other than ours must be able to reach the checkout.
fn check_reachable(root: &Path, account: &Account) -> anyhow::Result<()> {
    for dir in root.ancestors() {
        let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
        let mode = meta.mode();
        let can_enter = (meta.uid() == account.uid && mode & 0o100 != 0)
            || (meta.gid() == account.gid && mode & 0o010 != 0)
            || mode & 0o001 != 0;
        if !can_enter {
            bail!(
                "services run as the account {} (the runner is root), which cannot enter {}: \
                 allow it with `chmod o+x {}`, or put the checkout somewhere it can reach",
                account.name,
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// What would stop `services` from starting, wrong in `ports.toml` or
/// missing on this machine: found before anything is stopped, killed or
/// written, so that bad input changes nothing.
pub fn check(project: &Project, config: &Config, services: &[String], path: &OsString) -> anyhow::Result<()> {
    check_programs(project, config, services, path)?;
    if services.iter().any(|name| !config.services[name].setup.is_empty()) {
        files::check_writable(&[stamps(project)], &[])?; // each step's stamp, written after it ran
    }
    let made_by_any = made_by(project, config.services.values());
    for name in services {
        let service = &config.services[name];
        let account = account(service).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}: fix `user` of {name}, or create the account",
                service.place(&project.ports_toml(), "user")
            )
        })?;
        if let Some(account) = account {
            check_reachable(&project.root, &account)?;
        }
        // What the set-up makes is not there yet on the first run.
        let made = || service.dirs.iter().chain(service.setup.iter().filter_map(|s| s.creates.as_ref()));
        let made_by_setup = |path: &Path| made().any(|d| path.starts_with(project.path(d)));
        let place = service.place(&project.ports_toml(), "dirs");
        for dir in service.dirs.iter().map(|d| project.path(d)) {
            // The nearest part of it that exists: a file there (`data` for `data/x`) is in the way.
            let existing = dir.ancestors().find(|d| d.symlink_metadata().is_ok()).unwrap_or(Path::new("/"));
            ensure!(
                existing.is_dir(),
                "{place}: {} in `dirs` of {name} is not a folder: {} is in the way; move it away, or fix `dirs`",
                dir.display(),
                existing.display()
            );
            if existing != dir {
                files::check_writable(std::slice::from_ref(&dir), &[])
                    .with_context(|| format!("{place}: making {} in `dirs` of {name}", dir.display()))?;
            }
        }
        check_program_paths(project, service, made_by_any.as_ref())?;
        for step in &service.setup {
            let dir = step_dir(project, step);
            ensure!(
                dir.is_dir() || made_by_setup(&dir),
                "{}: the folder {} of a set-up step of {name} does not exist: create it, or fix its `cwd`",
                step.place(&project.ports_toml(), "cwd"),
                dir.display()
            );
            for input in step.inputs.iter().map(|i| project.path(i)) {
                ensure!(
                    input.is_file() || made_by_setup(&input),
                    "{}: {}, an input of a set-up step of {name}, is not a file: create it, or fix `inputs`",
                    step.place(&project.ports_toml(), "command"),
                    input.display()
                );
            }
        }
        if let Some(cwd) = &service.cwd {
            let dir = project.path(cwd);
            ensure!(
                dir.is_dir() || made_by_setup(&dir),
                "{}: the folder {} of {name} does not exist: create it, or fix `cwd`",
                service.place(&project.ports_toml(), "cwd"),
                dir.display()
            );
        }
    }
    Ok(())
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
pub fn prepare(project: &Project, config: &Config, names: &[String], path: &OsString) -> anyhow::Result<()> {
    for name in names {
        make_dirs(project, &config.services[name])?;
    }
    let with_steps: Vec<&str> =
        names.iter().map(String::as_str).filter(|name| !config.services[*name].setup.is_empty()).collect();
    let width = config.services.keys().map(String::len).max().unwrap_or(0);
    let setup = Setup {
        project,
        config,
        path,
        style: Style::stdout(),
        width,
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
        let (style, s) = (setup.style, if ran == 1 { "" } else { "s" });
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
    style: Style,
    /// Of the prefix of output lines, as dev's services' lines have it.
    width: usize,
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
        say!("{} {}", supervisor::prefix(self.config, self.style, name, self.width), self.style.dim(message));
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
        let expression = duct::cmd(process::program_in(&dir, program), args)
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
                process::term_with_runner(command);
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
        let prefix = supervisor::prefix(self.config, self.style, name, self.width);
        let copy = supervisor::copy_lines(reader, prefix, None, crate::system::term::say_line);
        let started = Instant::now();
        let status = handle.wait().map(|output| output.status);
        let failed = {
            let mut state = self.lock();
            state.running.remove(name);
            state.failed.clone()
        };
        // What it started may hold the pipe: its lines are waited for a moment only.
        supervisor::copied(Some(&copy), Instant::now() + supervisor::COPY_WAIT);
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
                .map(|(name, group)| (name, scope.spawn(|| group.stop(self.config.services[name].stop_grace))))
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

/// The folders set-up makes files in: those of `dirs`, and the folder of
/// what each step `creates` (a virtualenv's `bin`), of `services`. `None`
/// when a step does not say what it creates: it may make anything.
fn made_by<'a>(project: &Project, services: impl IntoIterator<Item = &'a Service>) -> Option<BTreeSet<PathBuf>> {
    let mut made = BTreeSet::new();
    for service in services {
        made.extend(service.dirs.iter().map(|d| lexical(&project.path(d))));
        for step in &service.setup {
            made.insert(lexical(project.path(step.creates.as_ref()?).parent()?));
        }
    }
    Some(made)
}

/// Whether `file` is in one of the folders `made` (or below one).
fn is_made(made: &BTreeSet<PathBuf>, file: &Path) -> bool {
    lexical(file).ancestors().any(|dir| made.contains(dir))
}

/// A program named by its path (`.venv/bin/uvicorn`, from the service's
/// folder; a step's from its own) must be a file one may run, unless
/// set-up may make it: in a folder of any service's set-up (`made_by`). A
/// step that does not say what it creates may make anything (`made` is
/// `None`): then what set-up was to make is checked once it ran (`prepare`).
fn check_program_paths(project: &Project, service: &Service, made: Option<&BTreeSet<PathBuf>>) -> anyhow::Result<()> {
    let Some(made) = made else { return Ok(()) };
    let ports_toml = project.ports_toml();
    let run = program_file(project, service).map(|file| (file, service.place(&ports_toml, "command")));
    let steps = (service.setup.iter())
        .filter_map(|s| Some((by_path(&step_dir(project, s), s.command.first()?)?, s.place(&ports_toml, "command"))));
    for (file, place) in run.into_iter().chain(steps) {
        ensure!(
            is_executable(&file) || is_made(made, &file),
            "{place}: {} is not a program {} may run (no such file, or not executable): fix the command",
            file.display(),
            service.name
        );
    }
    Ok(())
}

/// The file a service runs, when its command names it by its path. (A
/// program with a port in its name is known only once the port is.)
fn program_file(project: &Project, service: &Service) -> Option<PathBuf> {
    by_path(&cwd_of(project, service), &service.command.first()?.plain()?)
}

/// The file `program`, run in `dir`, names by its path; `None` for a name
/// looked up in PATH.
fn by_path(dir: &Path, program: &str) -> Option<PathBuf> {
    program.contains('/').then(|| process::program_in(dir, program).into())
}

/// `path` with its `..` resolved as written (`app/../bin` is `bin`).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => drop(out.pop()),
            part => out.push(part),
        }
    }
    out
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
