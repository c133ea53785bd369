//! The supervisor: starts services in dependency order (independent ones in
//! parallel), waits until each is ready, follows them through events (ready,
//! exited, signals) and stops them, dependents first. `dev` runs it in the
//! foreground; `start` runs it until everything is ready and leaves.
//!
//! Nothing here polls while idle: each service has a thread blocked in
//! `wait` and, in the foreground, one blocked reading its output; signals
//! arrive through signal-hook. Only the readiness check polls, until ready.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::cli::guard::Guard;
use crate::engine::allocation;
use crate::engine::setup;
use crate::model::book::Ports;
use crate::model::config::{Config, DEFAULT_STOP_GRACE, Ready};
use crate::model::envfile;
use crate::system::files::Lock;
use crate::system::holder;
use crate::system::logfile;
use crate::system::paths::Project;
use crate::system::probe;
use crate::system::process::{self, Group, ProcId, Stopped};
use crate::system::records::{self, Record};
use crate::system::term::Style;
use crate::system::term::say;

/// How long a service may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How many times a service whose port was taken before it could bind moves on.
const PORT_RETRIES: u32 = 3;
/// The longest line of service output passed on whole; longer ones go in pieces.
const LONGEST_LINE: u64 = 64 * 1024;
/// How long a stopped service's output may take to reach the terminal and its
/// log: a process that left its group (and is not ours to stop) may keep the
/// pipe open.
pub const COPY_WAIT: Duration = Duration::from_secs(2);
/// Between readiness checks: short, as start-up waits on them.
const FIRST_PAUSE: Duration = Duration::from_millis(5);

/// The pause after `pause` between readiness checks. An HTTP check is a
/// request the service serves, and logs: one every 5 ms for a service that
/// answers "not yet" for seconds floods its log, so the pause doubles, up to
/// 200 ms. A TCP connection costs the service nothing.
fn next_pause(ready: &Ready, pause: Duration) -> Duration {
    match ready {
        Ready::Tcp => FIRST_PAUSE,
        Ready::Http(_) => (pause * 2).min(Duration::from_millis(200)),
    }
}

/// Where service output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// To the terminal, each line prefixed with the service's name, and to `.logs/`.
    Terminal,
    /// Straight to `.logs/SERVICE.log`: the services outlive the runner.
    Files,
}

pub enum Event {
    Ready {
        service: String,
        generation: u64,
    },
    NotReady {
        service: String,
        generation: u64,
    },
    Exited {
        service: String,
        generation: u64,
        status: String,
    },
    Signal(i32),
    /// An action from the dashboard, and where to send its outcome.
    Command {
        action: Action,
        reply: Sender<Result<String, String>>,
    },
}

/// What the dashboard can ask for.
#[derive(Debug, Clone)]
pub enum Action {
    Start(String),
    Stop(String),
    Restart(String),
    SetPort(String, u16),
}

struct Running {
    handle: Arc<duct::Handle>,
    group: Group,
    generation: u64,
    ready: bool,
    started: Instant,
    /// Closes when the copy of its output (`Output::Terminal`) has ended.
    copied: Option<Receiver<()>>,
}

pub struct Supervisor {
    pub project: Project,
    pub config: Config,
    pub ports: Ports,
    path: OsString,
    output: Output,
    running: BTreeMap<String, Running>,
    /// Services an earlier runner started (in the background), which count
    /// as ready and are stopped through their groups, only when asked: not
    /// ours, they outlive this runner.
    pub kept: BTreeMap<String, Group>,
    /// In the foreground: what stops the services if this process is killed.
    pub guard: Option<Guard>,
    /// dev's lock on the checkout, held while it runs (`launch::up`).
    pub dev: Option<Lock>,
    sender: Sender<Event>,
    events: Receiver<Event>,
    generation: u64,
    /// A signal came while a dashboard action was starting services: the
    /// foreground loop ends too.
    interrupted: bool,
    style: Style,
    width: usize,
}

impl Supervisor {
    pub fn new(project: Project, config: Config, ports: Ports, output: Output) -> anyhow::Result<Supervisor> {
        let (sender, events) = channel();
        let path = setup::search_path(&config);
        let width = config.services.keys().map(String::len).max().unwrap_or(0);
        Ok(Supervisor {
            project,
            config,
            ports,
            path,
            output,
            running: BTreeMap::new(),
            kept: BTreeMap::new(),
            guard: None,
            dev: None,
            sender,
            events,
            generation: 0,
            interrupted: false,
            style: Style::stdout(),
            width,
        })
    }

    /// A supervisor over services that run without one: left by `start`, or by
    /// a `dev` that is gone.
    pub fn background(project: &Project, config: Config, records: Vec<Record>) -> anyhow::Result<Supervisor> {
        let ports: Ports =
            config.preferred_ports().into_iter().chain(records.iter().map(|r| (r.service.clone(), r.port))).collect();
        let mut sup = Supervisor::new(project.clone(), config, ports, Output::Files)?;
        sup.kept = records.into_iter().map(|r| (r.service, r.group)).collect();
        Ok(sup)
    }

    /// The environment of a service: ours, every `.env.runtime` variable,
    /// `PORT`, and its own `env`.
    fn environment(&self, name: &str) -> Vec<(String, String)> {
        let service = &self.config.services[name];
        let mut env: BTreeMap<String, String> = std::env::vars().collect();
        env.insert("PATH".into(), self.path.to_string_lossy().into_owned());
        // Python keeps what `print()` writes to a pipe or a file in its
        // buffer: its lines would reach `dev`, the logs and the dashboard
        // only once 8 KiB had piled up. A service's `env` may say otherwise.
        env.insert("PYTHONUNBUFFERED".into(), "1".into());
        env.extend(envfile::vars(&self.config, &self.ports));
        env.insert("PORT".into(), self.ports[name].to_string());
        env.extend(service.env.iter().map(|(k, t)| (k.clone(), t.render(Some(name), &self.ports))));
        env.into_iter().collect()
    }

    fn spawn(&mut self, name: &str) -> anyhow::Result<()> {
        let service = &self.config.services[name];
        let port = self.ports[name];
        let argv: Vec<String> = service.command.iter().map(|t| t.render(Some(name), &self.ports)).collect();
        let cwd = setup::cwd_of(&self.project, service);
        let env = self.environment(name);
        let account = setup::account(service)?.map(|a| (a.uid, a.gid));
        let log_path = self.project.log_file(name);
        std::fs::create_dir_all(self.project.logs_dir())?;
        let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let spec = process::Spec { argv: &argv, cwd: &cwd, env: &env, account };
        let supervisor = (self.output == Output::Terminal).then(ProcId::myself);
        let (project, command, saved) = (&self.project, argv.clone(), OnceLock::new());
        let record = |group| {
            let checkout = Some(project.root.clone());
            records::save(project, &Record { service: name.into(), group, port, command, supervisor, checkout })?;
            saved.get_or_init(|| group);
            Ok(())
        };
        let (spawned, copied) = match self.output {
            Output::Files => (process::spawn(&spec, log, record), None),
            Output::Terminal => {
                let (reader, writer) = std::io::pipe().context("creating a pipe for service output")?;
                let spawned = process::spawn(&spec, writer, record);
                let copied = spawned.is_ok().then(|| self.print_lines(name, reader, log));
                (spawned, copied)
            }
        };
        // A record of a command that did not run (its program could not be run) goes.
        if let (Err(_), Some(group)) = (&spawned, saved.get()) {
            let _ = records::remove(&self.project, name, *group);
        }
        let (handle, group) = spawned?;
        self.generation += 1;
        let generation = self.generation;
        let handle = Arc::new(handle);
        self.watch(name, generation, &handle, port, group.pgid());
        let started = Instant::now();
        self.running.insert(name.into(), Running { handle, group, generation, ready: false, started, copied });
        say!("{}", self.say(name, &format!("starting on port {port} (pid {})", group.pgid())));
        Ok(())
    }

    /// Two threads per service: one blocked in `wait` reports the exit; one
    /// polls readiness until it succeeds, the service exits, or time is up.
    /// Ready means that the service answers, not whoever took its port.
    fn watch(&self, name: &str, generation: u64, handle: &Arc<duct::Handle>, port: u16, pgid: i32) {
        let (sender, waited, service) = (self.sender.clone(), handle.clone(), name.to_owned());
        std::thread::spawn(move || {
            let status = match waited.wait() {
                Ok(output) => output.status.to_string(),
                Err(e) => e.to_string(),
            };
            let _ = sender.send(Event::Exited { service, generation, status });
        });
        let ready = self.config.services[name].ready.clone();
        let (sender, polled, service) = (self.sender.clone(), handle.clone(), name.to_owned());
        std::thread::spawn(move || {
            let deadline = Instant::now() + READY_TIMEOUT;
            let mut pause = FIRST_PAUSE;
            loop {
                if !matches!(polled.try_wait(), Ok(None)) {
                    return; // exited: the waiter reports it
                }
                if probe::check(&ready, port) && holder::held_by_group(port, pgid) {
                    let _ = sender.send(Event::Ready { service, generation });
                    return;
                }
                if Instant::now() > deadline {
                    let _ = sender.send(Event::NotReady { service, generation });
                    return;
                }
                std::thread::sleep(pause);
                pause = next_pause(&ready, pause);
            }
        });
    }

    /// Copies a service's output to the terminal, prefixed, and to its log.
    /// The receiver returned closes when the copy has ended. Its lines are
    /// written from the copy's thread: a terminal that does not read blocks
    /// the service, rather than filling the runner's memory.
    fn print_lines(&self, name: &str, reader: std::io::PipeReader, log: File) -> Receiver<()> {
        let say = |line| drop(writeln!(std::io::stdout().lock(), "{line}"));
        copy_lines(reader, prefix(&self.config, self.style, name, self.width), Some(log), say)
    }

    fn say(&self, name: &str, message: &str) -> String {
        format!("{} {}", prefix(&self.config, self.style, name, self.width), self.style.dim(message))
    }

    /// Starts `names` (in dependency order): each once its dependencies are
    /// ready. Returns when all are ready. On failure it stops what it
    /// started and says why; on a signal it stops everything this runner
    /// started. What runs already, here or in the background, is left as it is.
    pub fn start_all(&mut self, names: &[String]) -> anyhow::Result<()> {
        let pending: Vec<String> =
            names.iter().filter(|n| !self.running.contains_key(*n) && !self.kept.contains_key(*n)).cloned().collect();
        let mut ours: BTreeSet<String> = pending.iter().cloned().collect();
        let result = self.starting(pending, &mut ours);
        if result.is_err() {
            self.stop_started(&ours);
        }
        result
    }

    /// `start_all`'s loop; `ours` gains what it restarts on a new port.
    fn starting(&mut self, mut pending: Vec<String>, ours: &mut BTreeSet<String>) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut retries: BTreeMap<String, u32> = BTreeMap::new();
        loop {
            let ready =
                |s: &Supervisor, dep: &String| s.kept.contains_key(dep) || s.running.get(dep).is_some_and(|r| r.ready);
            let (now, later): (Vec<String>, Vec<String>) = pending
                .into_iter()
                .partition(|name| self.config.services[name].depends_on.iter().all(|d| ready(self, d)));
            pending = later;
            for name in now {
                self.spawn(&name)?;
            }
            if let Some((name, dep)) = self.lost_dependency(&pending) {
                bail!("{name} cannot start: {dep}, which it depends on, exited");
            }
            if pending.is_empty() && ours.iter().all(|n| ready(self, n)) {
                let (n, s) = (ours.len(), if ours.len() == 1 { "" } else { "s" });
                let took = started.elapsed().as_secs_f64();
                if n > 0 {
                    say!("{}", self.style.green(&format!("✓ {n} service{s} ready in {took:.1}s")));
                }
                return Ok(());
            }
            let event = match self.events.recv_timeout(Duration::from_secs(5)) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => {
                    let waiting: Vec<&String> = self.running.iter().filter(|(_, r)| !r.ready).map(|(n, _)| n).collect();
                    let waiting = waiting.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
                    say!("… waiting for {waiting} ({:.0}s)", started.elapsed().as_secs_f64());
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => bail!("the event channel closed"),
            };
            match event {
                Event::Ready { service, generation } => {
                    if let Some(r) = self.running.get_mut(&service).filter(|r| r.generation == generation) {
                        r.ready = true;
                        let took = r.started.elapsed().as_secs_f64();
                        let url = self.config.services[&service].url.render(Some(&service), &self.ports);
                        say!("{}", self.say(&service, &format!("ready in {took:.1}s: {url}")));
                    }
                }
                Event::NotReady { service, generation } if self.is_current(&service, generation) => {
                    let lines = self.last_lines(&service);
                    let limit = READY_TIMEOUT.as_secs();
                    bail!("{service} did not become ready within {limit}s; its last lines:\n{lines}");
                }
                Event::Exited { service, generation, status } if self.is_current(&service, generation) => {
                    if !ours.contains(&service) {
                        self.exited(&service, &status);
                        continue;
                    }
                    if self.running[&service].ready {
                        // Nothing will start it again: waiting for all to be ready would never end.
                        self.exited(&service, &status);
                        if self.lost_dependency(&pending).is_none() {
                            bail!("{service} exited ({status}) while the others were starting");
                        }
                        continue; // the loop names what cannot start without it
                    }
                    let port = self.ports[&service];
                    let running = self.running.remove(&service).expect("current");
                    if running.group.stop(self.config.services[&service].stop_grace) == Stopped::Survived {
                        // Its record stays, for a later stop.
                        bail!("{service} exited ({status}), and what it left running could not be stopped");
                    }
                    copied(running.copied.as_ref(), Instant::now() + COPY_WAIT);
                    records::remove(&self.project, &service, running.group)?;
                    let tries = retries.entry(service.clone()).or_default();
                    if probe::is_free(port) || *tries >= PORT_RETRIES {
                        let lines = self.last_lines(&service);
                        bail!("{service} exited ({status}) before it was ready; its last lines:\n{lines}");
                    }
                    // Someone took the port between our check and its bind: move,
                    // and restart what uses the port with the new environment.
                    *tries += 1;
                    say!("{}", self.say(&service, &format!("port {port} was taken before it could bind; moving")));
                    self.reallocate()?;
                    let users: Vec<String> = allocation::users_of(&self.config, &service)
                        .into_iter()
                        .filter(|n| self.running.contains_key(n) || self.kept.contains_key(n) || *n == service)
                        .collect();
                    let failed = self.stop(&users);
                    ensure!(failed.is_empty(), "{} could not be stopped to restart on the new port", failed.join(", "));
                    ours.extend(users.iter().cloned());
                    for user in users {
                        if !pending.contains(&user) {
                            pending.push(user);
                        }
                    }
                }
                Event::Command { reply, .. } => {
                    let _ = reply.send(Err("busy: services are starting; try again in a moment".into()));
                }
                Event::Signal(signal) => {
                    say!("received {}: stopping", signal_name(signal));
                    self.stop_all();
                    self.interrupted = true;
                    bail!("interrupted while starting");
                }
                _ => {} // an event of an earlier generation
            }
        }
    }

    /// A service still to start and a dependency of it that is gone: it was
    /// ready, then exited, and nothing will start it again.
    fn lost_dependency(&self, pending: &[String]) -> Option<(String, String)> {
        let gone = |d: &String| !self.running.contains_key(d) && !self.kept.contains_key(d) && !pending.contains(d);
        pending.iter().find_map(|name| {
            let dep = self.config.services[name].depends_on.iter().find(|d| gone(d))?;
            Some((name.clone(), dep.clone()))
        })
    }

    fn is_current(&self, service: &str, generation: u64) -> bool {
        self.running.get(service).is_some_and(|r| r.generation == generation)
    }

    /// Stops what a failed start had started.
    fn stop_started(&mut self, ours: &BTreeSet<String>) {
        let started: Vec<String> = ours.iter().filter(|n| self.running.contains_key(*n)).cloned().collect();
        self.stop(&started);
    }

    /// A running service exited on its own: say so, with its last lines.
    /// What it forked may run on in its group (a shell's background job):
    /// stopped before its record goes, or nothing would ever stop it.
    pub fn exited(&mut self, service: &str, status: &str) {
        let Some(gone) = self.running.remove(service) else { return };
        let stopped = gone.group.stop(self.config.services[service].stop_grace);
        // Its last lines, once they are all in its log.
        copied(gone.copied.as_ref(), Instant::now() + COPY_WAIT);
        say!("{service} exited unexpectedly ({status}); its last lines:\n{}", self.last_lines(service));
        match stopped {
            Stopped::Terminated | Stopped::Killed => say!("{}", self.say(service, "stopped what it left running")),
            Stopped::Survived => {
                let what = format!("could not stop what it left running (group {})", gone.group.pgid());
                say!("{}", self.say(service, &what));
                return; // its record stays, for a later stop
            }
            Stopped::AlreadyGone | Stopped::NotOurs => {}
        }
        let _ = records::remove(&self.project, service, gone.group);
    }

    /// New ports for what is not running, keeping the running services' own.
    fn reallocate(&mut self) -> anyhow::Result<()> {
        let keep: Ports = self.running.keys().chain(self.kept.keys()).map(|n| (n.clone(), self.ports[n])).collect();
        self.ports = allocation::allocate_and_write(&self.project, &self.config, &keep, &BTreeMap::new())?;
        Ok(())
    }

    /// Stops `names` and what depends on them, then starts them again.
    pub fn restart(&mut self, names: &[String]) -> anyhow::Result<()> {
        let names = self.config.dependents_closure(names);
        let names: Vec<String> =
            names.into_iter().filter(|n| self.running.contains_key(n) || self.kept.contains_key(n)).collect();
        let failed = self.stop(&names);
        ensure!(failed.is_empty(), "{} could not be stopped, so nothing was started again", failed.join(", "));
        self.start_all(&names)
    }

    /// The last lines a service wrote, indented, for an error message.
    pub fn last_lines(&self, service: &str) -> String {
        logfile::indented(&logfile::last_lines(&self.project.log_file(service), 15))
    }

    /// Stops services, dependents first; those that nothing left running
    /// depends on stop together.
    /// Returns those that could not be stopped: they stay tracked, with their
    /// records, for a later stop by someone allowed to.
    pub fn stop(&mut self, names: &[String]) -> Vec<String> {
        let (mut failed, mut copy_wait) = (Vec::new(), COPY_WAIT);
        let mut left: BTreeSet<String> =
            names.iter().filter(|n| self.running.contains_key(*n) || self.kept.contains_key(*n)).cloned().collect();
        // A background service that ports.toml no longer names has no place in its order.
        let service = |n: &str| self.config.services.get(n);
        while !left.is_empty() {
            let depended_on: BTreeSet<&String> =
                left.iter().flat_map(|n| service(n).map(|s| s.depends_on.iter()).into_iter().flatten()).collect();
            let wave: Vec<String> = left.iter().filter(|n| !depended_on.contains(n)).cloned().collect();
            let survived: BTreeSet<String> = std::thread::scope(|scope| {
                let mut stopping = Vec::new();
                for name in &wave {
                    let grace = service(name).map_or(DEFAULT_STOP_GRACE, |s| s.stop_grace);
                    let (group, handle) = match (self.running.get(name), self.kept.get(name)) {
                        (Some(running), _) => (running.group, Some(running.handle.clone())),
                        (None, Some(group)) => (*group, None),
                        (None, None) => continue,
                    };
                    stopping.push((
                        name.clone(),
                        scope.spawn(move || {
                            let stopped = group.stop(grace);
                            if let (Some(handle), false) = (handle, stopped == Stopped::Survived) {
                                let _ = handle.wait();
                            }
                            stopped
                        }),
                    ));
                }
                let joined = stopping.into_iter().map(|(name, t)| (name, t.join().unwrap_or(Stopped::Survived)));
                joined.filter(|(_, stopped)| *stopped == Stopped::Survived).map(|(name, _)| name).collect()
            });
            // Their last lines reach the terminal before what is said next
            // (waited for COPY_WAIT at most in all, and not when hurried).
            let waited = Instant::now();
            let deadline = if process::HURRY.load(Ordering::Relaxed) { waited } else { waited + copy_wait };
            for name in wave.iter().filter(|n| !survived.contains(*n)) {
                copied(self.running.get(name).and_then(|r| r.copied.as_ref()), deadline);
            }
            copy_wait = copy_wait.saturating_sub(waited.elapsed());
            for name in &wave {
                left.remove(name);
                if survived.contains(name) {
                    let pid = self.running.get(name).map(|r| r.group).or(self.kept.get(name).copied());
                    let pid = pid.map_or(0, |g| g.pgid());
                    say!("{}", self.say(name, &format!("could not be stopped: pid {pid} still runs")));
                    failed.push(name.clone());
                    continue;
                }
                if let Some(group) = self.running.remove(name).map(|r| r.group).or(self.kept.remove(name)) {
                    let _ = records::remove(&self.project, name, group);
                }
                say!("{}", self.say(name, "stopped"));
            }
        }
        failed
    }

    /// Stops what this runner started (or took over); what it found running
    /// in the background runs on, as `start` left it.
    pub fn stop_all(&mut self) -> Vec<String> {
        let names: Vec<String> = self.running.keys().cloned().collect();
        self.stop(&names)
    }

    /// Runs in the foreground until a signal: reports services that exit,
    /// carries out the dashboard's actions, and stops everything at the end.
    /// Fails when the services all exited on their own.
    pub fn run_until_signal(&mut self) -> anyhow::Result<()> {
        while let Ok(event) = self.events.recv() {
            match event {
                Event::Signal(signal) => {
                    say!("received {}: stopping", signal_name(signal));
                    break;
                }
                Event::Exited { service, generation, status } if self.is_current(&service, generation) => {
                    self.exited(&service, &status);
                    if self.running.is_empty() {
                        self.stop_all();
                        bail!("every service has exited");
                    }
                }
                Event::Command { action, reply } => {
                    let _ = reply.send(self.act(&action).map_err(|e| format!("{e:#}")));
                    if self.interrupted {
                        break;
                    }
                }
                _ => {}
            }
        }
        refuse_survivors(&self.stop_all())
    }

    /// Services started in the background since this runner began (by a
    /// `start` in another terminal) are kept, as those found at its start:
    /// none is started twice, and a stop reaches them.
    fn adopt(&mut self) {
        self.kept.clear(); // as the records say now: some may have been stopped, or started again
        let me = ProcId::myself();
        // Not what a `dev` in another terminal runs: it is that one's to stop.
        let foreign = |r: &Record| r.supervisor.is_some_and(|dev| dev != me && dev.is_alive());
        for record in records::load_all(&self.project.root) {
            if !self.running.contains_key(&record.service) && !foreign(&record) && record.group.is_running() {
                self.ports.insert(record.service.clone(), record.port);
                self.kept.insert(record.service, record.group);
            }
        }
    }

    /// The checkout's launch lock for a dashboard action that starts
    /// services, at once or not at all: dev must stay free to take Ctrl-C.
    fn launch_lock(&self) -> anyhow::Result<Lock> {
        match Lock::try_acquire(&self.project.launch_lock())? {
            Some(lock) => Ok(lock),
            None => bail!("another `cargo xtask` of this checkout is starting services: try again when it is done"),
        }
    }

    /// Carries out a dashboard action on the services this runner runs.
    pub fn act(&mut self, action: &Action) -> anyhow::Result<String> {
        match action {
            Action::Start(name) => {
                // A `start` in another terminal may run now, or have run: one
                // launch at a time, and what it started is known here.
                let _launch = self.launch_lock()?;
                self.adopt();
                let names = self.config.closure(Some(std::slice::from_ref(name)))?;
                // As `start` does: what is not running yet is set up first.
                let new: Vec<String> = names
                    .iter()
                    .filter(|n| !self.running.contains_key(*n) && !self.kept.contains_key(*n))
                    .cloned()
                    .collect();
                setup::check(&self.project, &self.config, &new, &self.path)?;
                setup::prepare(&self.project, &self.config, &new, &self.path)?;
                self.start_all(&names)?;
                Ok(format!("{name} started"))
            }
            Action::Stop(name) => {
                self.adopt();
                let names: Vec<String> = self.config.dependents_closure(std::slice::from_ref(name));
                let failed = self.stop(&names);
                ensure!(failed.is_empty(), "{} could not be stopped: it still runs", failed.join(", "));
                Ok(format!("{name} stopped"))
            }
            Action::Restart(name) => {
                let _launch = self.launch_lock()?;
                self.adopt();
                let known = self.running.contains_key(name) || self.kept.contains_key(name);
                anyhow::ensure!(known, "{name} is not running");
                self.restart(std::slice::from_ref(name))?;
                Ok(format!("{name} restarted"))
            }
            Action::SetPort(name, port) => {
                let _launch = self.launch_lock()?;
                self.adopt();
                self.ports = allocation::pin(&self.project, &self.config, name, *port)?;
                // Those running in the background too: they would go on with the old port.
                let users: Vec<String> = allocation::users_of(&self.config, name)
                    .into_iter()
                    .filter(|n| self.running.contains_key(n) || self.kept.contains_key(n))
                    .collect();
                self.restart(&users)?;
                Ok(moved(name, *port, self.ports[name]))
            }
        }
    }

    /// Lets the services run on after this process leaves (`start`).
    pub fn detach(mut self) {
        self.running.clear();
    }

    pub fn sender(&self) -> Sender<Event> {
        self.sender.clone()
    }
}

/// An error naming the services that still run after a stop (each was said).
pub fn refuse_survivors(failed: &[String]) -> anyhow::Result<()> {
    ensure!(
        failed.is_empty(),
        "{} could not be stopped: stop them as the user who started them (or as root)",
        failed.join(", ")
    );
    Ok(())
}

/// What a change of port did: a port taken before the service could bind
/// moves it on.
pub fn moved(name: &str, asked: u16, now: u16) -> String {
    if now == asked {
        format!("{name} moved to port {now}")
    } else {
        format!("{name} could not bind port {asked}: moved to port {now}")
    }
}

fn colour_of(config: &Config, name: &str) -> &'static str {
    const COLOURS: [&str; 6] = ["36", "35", "34", "33", "32", "31"];
    let i = config.order.iter().position(|n| n == name).unwrap_or(0);
    COLOURS[i % COLOURS.len()]
}

pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Ctrl-C, SIGTERM and SIGHUP become events instead of killing the runner
/// with its services still up. They go to the first who asks, one per
/// process: in `cargo xtask ui` the dashboard, whose Ctrl-C stops no service,
/// not the starts its actions run, which go on to their end. With `hurry`,
/// a Ctrl-C while stopping cuts the services' graces short: KILL at once.
/// Only one that comes a second or more after the signal that began the
/// stop: a wrapper such as `npm run` passes on the Ctrl-C its group got
/// too, two at once.
pub fn forward_signals(sender: Sender<Event>, hurry: bool) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signal handlers")?;
    std::thread::spawn(move || {
        let mut first = None;
        for signal in signals.forever() {
            let Some(at) = first else {
                first = Some(Instant::now());
                if sender.send(Event::Signal(signal)).is_err() {
                    break;
                }
                continue;
            };
            // A person at the terminal: another `stop`'s SIGTERM asks for no hurry.
            if hurry && signal == SIGINT && at.elapsed() >= Duration::from_secs(1) {
                process::HURRY.store(true, Ordering::Relaxed);
                // The terminal may be gone (a pipe closed with it): no panic over a message.
                let _ = writeln!(std::io::stderr(), "received SIGINT again: killing what is still running");
            }
        }
    });
    Ok(())
}

/// `backend  |`, in the service's colour, `width` wide: what comes before
/// each line of its output, and what is said about it.
pub fn prefix(config: &Config, style: Style, name: &str, width: usize) -> String {
    style.paint(colour_of(config, name), &format!("{name:width$} |"))
}

/// Copies the output of a service (or of its set-up) to its `log` and, each
/// line after `prefix`, to `say`. The receiver returned closes when the
/// copy has ended.
pub fn copy_lines(reader: std::io::PipeReader, prefix: String, mut log: Option<File>, say: fn(String)) -> Receiver<()> {
    let (done, copied) = channel::<()>();
    std::thread::spawn(move || {
        let _done = done;
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        // A line is cut at LONGEST_LINE: output without newlines must not fill the memory.
        while matches!((&mut reader).take(LONGEST_LINE).read_until(b'\n', &mut line), Ok(n) if n > 0) {
            if let Some(log) = &mut log {
                let _ = log.write_all(&line);
            }
            say(format!("{prefix} {}", String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r'])));
            line.clear();
        }
    });
    copied
}

/// Waits, until `deadline` at most, for the copy of a service's output to end.
pub fn copied(copy: Option<&Receiver<()>>, deadline: Instant) {
    if let Some(copy) = copy {
        let _ = copy.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_readiness_checks_back_off_and_tcp_ones_do_not() {
        let pauses = |ready: &Ready| {
            std::iter::successors(Some(FIRST_PAUSE), |p| Some(next_pause(ready, *p))).take(8).collect::<Vec<_>>()
        };
        let ms = |v: &[u64]| v.iter().map(|m| Duration::from_millis(*m)).collect::<Vec<_>>();
        assert_eq!(pauses(&Ready::Http("/health".into())), ms(&[5, 10, 20, 40, 80, 160, 200, 200]));
        assert_eq!(pauses(&Ready::Tcp), ms(&[5; 8]));
    }
}
