//! What would keep services from starting, wrong in `ports.toml` or missing
//! on this machine: programs, accounts, folders, inputs, program paths.
//! Found before anything is stopped, killed or written.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};

use super::{account, cwd_of, search_path, stamps, step_dir};
use crate::engine::Checkout;
use crate::model::config::{Config, Service};
use crate::system::files;
use crate::system::paths::Project;
use crate::system::spawn::{self, find_program, is_executable};
use crate::system::users::Account;

/// The programs the services run (the first word of each command, and any
/// program of `[programs]` a command mentions, as in `sh -c "initdb ..."`)
/// must be found; otherwise say what to install.
fn check_programs(project: &Project, config: &Config, services: &[String], path: &OsString) -> anyhow::Result<()> {
    let ports_toml = project.ports_toml();
    let mut needed = BTreeMap::new(); // program -> where the first command that runs it is written
    for name in services {
        let service = &config.services[name];
        // (A container's engine is found by `containers::check`.)
        let command: Vec<String> =
            service.command().unwrap_or_default().iter().map(|t| t.render(None, &Default::default(), None)).collect();
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
pub fn check(checkout: &Checkout, services: &[String]) -> anyhow::Result<()> {
    let (project, config) = (&checkout.project, &checkout.config);
    let path = &search_path(config);
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

/// The folders set-up makes files in: those of `dirs`, and the folder of
/// what each step `creates` (a virtualenv's `bin`), of `services`. `None`
/// when a step does not say what it creates: it may make anything.
pub(super) fn made_by<'a>(
    project: &Project,
    services: impl IntoIterator<Item = &'a Service>,
) -> Option<BTreeSet<PathBuf>> {
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
pub(super) fn is_made(made: &BTreeSet<PathBuf>, file: &Path) -> bool {
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
pub(super) fn program_file(project: &Project, service: &Service) -> Option<PathBuf> {
    by_path(&cwd_of(project, service), &service.command()?.first()?.plain()?)
}

/// The file `program`, run in `dir`, names by its path; `None` for a name
/// looked up in PATH.
fn by_path(dir: &Path, program: &str) -> Option<PathBuf> {
    program.contains('/').then(|| spawn::program_in(dir, program).into())
}

/// `path` with its `..` resolved as written (`app/../bin` is `bin`).
pub(super) fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => drop(out.pop()),
            part => out.push(part),
        }
    }
    out
}
