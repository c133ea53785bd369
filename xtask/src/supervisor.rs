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
use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::alloc;
use crate::config::Config;
use crate::envfile;
use crate::holder;
use crate::paths::Project;
use crate::pids::{self, Record};
use crate::ports;
use crate::process::{self, Group, ProcId};
use crate::ready;
use crate::setup;
use crate::state::Ports;
use crate::term::Style;
use crate::term::say;

/// How long a service may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How many times a service whose port was taken before it could bind moves on.
const PORT_RETRIES: u32 = 3;

/// Where service output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// To the terminal, each line prefixed with the service's name, and to `.logs/`.
    Terminal,
    /// Straight to `.logs/SERVICE.log`: the services outlive the runner.
    Files,
}

pub enum Event {
    Ready { service: String, generation: u64 },
    NotReady { service: String, generation: u64 },
    Exited { service: String, generation: u64, status: String },
    Signal(i32),
}

struct Running {
    handle: Arc<duct::Handle>,
    group: Group,
    generation: u64,
    ready: bool,
    started: Instant,
}

pub struct Supervisor {
    pub project: Project,
    pub config: Config,
    pub ports: Ports,
    path: OsString,
    output: Output,
    running: BTreeMap<String, Running>,
    /// Services an earlier runner started (in the background), which count
    /// as ready and are stopped through their groups.
    pub kept: BTreeMap<String, Group>,
    sender: Sender<Event>,
    events: Receiver<Event>,
    generation: u64,
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
            sender,
            events,
            generation: 0,
            style: Style::stdout(),
            width,
        })
    }

    pub fn path(&self) -> &OsString {
        &self.path
    }

    pub fn running_names(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// The environment of a service: ours, every `.env.runtime` variable,
    /// `PORT`, and its own `env`.
    fn environment(&self, name: &str) -> Vec<(String, String)> {
        let service = &self.config.services[name];
        let mut env: BTreeMap<String, String> = std::env::vars().collect();
        env.insert("PATH".into(), self.path.to_string_lossy().into_owned());
        env.extend(envfile::vars(&self.config, &self.ports));
        env.insert("PORT".into(), self.ports[name].to_string());
        env.extend(service.env.iter().map(|(k, t)| (k.clone(), t.render(Some(name), &self.ports))));
        env.into_iter().collect()
    }

    fn spawn(&mut self, name: &str) -> anyhow::Result<()> {
        let service = &self.config.services[name];
        let port = self.ports[name];
        let argv: Vec<String> = service.command.iter().map(|t| t.render(Some(name), &self.ports)).collect();
        let cwd = self.project.path(service.cwd.as_deref().unwrap_or("."));
        let env = self.environment(name);
        let account = setup::account(service)?.map(|a| (a.uid, a.gid));
        let log_path = self.project.log_file(name);
        std::fs::create_dir_all(self.project.logs_dir())?;
        let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let spec = process::Spec { argv: &argv, cwd: &cwd, env: &env, account };
        let (handle, group) = match self.output {
            Output::Files => process::spawn(&spec, log)?,
            Output::Terminal => {
                let (reader, writer) = std::io::pipe().context("creating a pipe for service output")?;
                let spawned = process::spawn(&spec, writer)?;
                self.print_lines(name, reader, log);
                spawned
            }
        };
        let supervisor = (self.output == Output::Terminal).then(ProcId::myself);
        pids::save(&self.project, &Record { service: name.into(), group, port, command: argv, supervisor })?;
        self.generation += 1;
        let generation = self.generation;
        let handle = Arc::new(handle);
        self.watch(name, generation, &handle, port, group.pgid());
        self.running.insert(name.into(), Running { handle, group, generation, ready: false, started: Instant::now() });
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
            loop {
                if !matches!(polled.try_wait(), Ok(None)) {
                    return; // exited: the waiter reports it
                }
                if ready::check(&ready, port) && listens_in_group(port, pgid) {
                    let _ = sender.send(Event::Ready { service, generation });
                    return;
                }
                if Instant::now() > deadline {
                    let _ = sender.send(Event::NotReady { service, generation });
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
    }

    /// Copies a service's output to the terminal, prefixed, and to its log.
    fn print_lines(&self, name: &str, reader: std::io::PipeReader, mut log: File) {
        let prefix = self.style.paint(colour_of(&self.config, name), &format!("{name:width$} |", width = self.width));
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let _ = log.write_all(&line);
                let text = String::from_utf8_lossy(&line);
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{prefix} {}", text.trim_end_matches(['\n', '\r']));
                line.clear();
            }
        });
    }

    fn say(&self, name: &str, message: &str) -> String {
        let prefix = self.style.paint(colour_of(&self.config, name), &format!("{name:width$} |", width = self.width));
        format!("{prefix} {}", self.style.dim(message))
    }

    /// Starts `names` (in dependency order): each once its dependencies are
    /// ready. Returns when all are ready. On failure or a signal, stops what
    /// it started and says why.
    pub fn start_all(&mut self, names: &[String]) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut pending: Vec<String> = names.iter().filter(|n| !self.running.contains_key(*n)).cloned().collect();
        let mut retries: BTreeMap<String, u32> = BTreeMap::new();
        let mut last_progress = Instant::now();
        loop {
            let ready =
                |s: &Supervisor, dep: &String| s.kept.contains_key(dep) || s.running.get(dep).is_some_and(|r| r.ready);
            let (now, later): (Vec<String>, Vec<String>) = pending
                .into_iter()
                .partition(|name| self.config.services[name].depends_on.iter().all(|d| ready(self, d)));
            pending = later;
            for name in now {
                if let Err(e) = self.spawn(&name) {
                    self.stop_all();
                    return Err(e);
                }
            }
            if pending.is_empty() && self.running.values().all(|r| r.ready) {
                let n = self.running.len();
                say!(
                    "{}",
                    self.style.green(&format!("✓ {n} services ready in {:.1}s", started.elapsed().as_secs_f64()))
                );
                return Ok(());
            }
            let event = match self.events.recv_timeout(Duration::from_secs(5)) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => {
                    let waiting: Vec<String> =
                        self.running.iter().filter(|(_, r)| !r.ready).map(|(n, _)| n.clone()).collect();
                    if last_progress.elapsed() >= Duration::from_secs(5) {
                        say!("… waiting for {} ({:.0}s)", waiting.join(", "), started.elapsed().as_secs_f64());
                        last_progress = Instant::now();
                    }
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
                    self.stop_all();
                    bail!(
                        "{service} did not become ready within {}s; its last lines:\n{lines}",
                        READY_TIMEOUT.as_secs()
                    );
                }
                Event::Exited { service, generation, status } if self.is_current(&service, generation) => {
                    let port = self.ports[&service];
                    let running = self.running.remove(&service).expect("current");
                    running.group.stop(self.config.services[&service].stop_grace);
                    pids::remove(&self.project, &service)?;
                    let tries = retries.entry(service.clone()).or_default();
                    if !alloc::is_free(port) && *tries < PORT_RETRIES {
                        *tries += 1;
                        say!("{}", self.say(&service, &format!("port {port} was taken before it could bind; moving")));
                        self.reallocate(&service)?;
                        pending.insert(0, service);
                        continue;
                    }
                    let lines = self.last_lines(&service);
                    self.stop_all();
                    bail!("{service} exited ({status}) before it was ready; its last lines:\n{lines}");
                }
                Event::Signal(signal) => {
                    say!("received {}: stopping", signal_name(signal));
                    self.stop_all();
                    bail!("interrupted while starting");
                }
                _ => {} // an event of an earlier generation
            }
        }
    }

    fn is_current(&self, service: &str, generation: u64) -> bool {
        self.running.get(service).is_some_and(|r| r.generation == generation)
    }

    /// Gives `service` a new port (its old one was taken), rewrites the
    /// files, and restarts the running services that refer to it.
    fn reallocate(&mut self, service: &str) -> anyhow::Result<()> {
        let keep: Ports = self.running.keys().chain(self.kept.keys()).map(|n| (n.clone(), self.ports[n])).collect();
        let (new_ports, _) = ports::allocate_and_write(&self.project, &self.config, &keep)?;
        self.ports = new_ports;
        self.propagate(&BTreeSet::from([service.to_owned()]))
    }

    /// Restarts the running services that refer to any of `moved`, with the
    /// new environment.
    pub fn propagate(&mut self, moved: &BTreeSet<String>) -> anyhow::Result<()> {
        let referring: Vec<String> = self
            .config
            .order
            .iter()
            .filter(|n| self.running.contains_key(*n) || self.kept.contains_key(*n))
            .filter(|n| !moved.contains(*n) && self.config.services[*n].refers_to().iter().any(|r| moved.contains(*r)))
            .cloned()
            .collect();
        if referring.is_empty() {
            return Ok(());
        }
        say!(
            "restarting {} for the new port of {}",
            referring.join(", "),
            moved.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        self.restart(&referring)
    }

    /// Stops `names` (and what depends on them), then starts them again.
    pub fn restart(&mut self, names: &[String]) -> anyhow::Result<()> {
        let names = self.config.dependents_closure(names);
        let names: Vec<String> =
            names.into_iter().filter(|n| self.running.contains_key(n) || self.kept.contains_key(n)).collect();
        self.stop(&names);
        self.start_all(&names)
    }

    /// The last lines a service wrote, for an error message.
    pub fn last_lines(&self, service: &str) -> String {
        tail(&self.project.log_file(service), 15)
    }

    /// Stops services, dependents first; those that nothing left running
    /// depends on stop together.
    pub fn stop(&mut self, names: &[String]) {
        let mut left: BTreeSet<String> =
            names.iter().filter(|n| self.running.contains_key(*n) || self.kept.contains_key(*n)).cloned().collect();
        while !left.is_empty() {
            let depended_on: BTreeSet<&String> =
                left.iter().flat_map(|n| self.config.services[n].depends_on.iter()).collect();
            let wave: Vec<String> = left.iter().filter(|n| !depended_on.contains(n)).cloned().collect();
            std::thread::scope(|scope| {
                for name in &wave {
                    let grace = self.config.services[name].stop_grace;
                    let (group, handle) = match (self.running.get(name), self.kept.get(name)) {
                        (Some(running), _) => (running.group, Some(running.handle.clone())),
                        (None, Some(group)) => (*group, None),
                        (None, None) => continue,
                    };
                    scope.spawn(move || {
                        group.stop(grace);
                        if let Some(handle) = handle {
                            let _ = handle.wait();
                        }
                    });
                }
            });
            for name in &wave {
                self.running.remove(name);
                self.kept.remove(name);
                let _ = pids::remove(&self.project, name);
                say!("{}", self.say(name, "stopped"));
                left.remove(name);
            }
        }
    }

    pub fn stop_all(&mut self) {
        let names: Vec<String> = self.running.keys().chain(self.kept.keys()).cloned().collect();
        self.stop(&names);
    }

    /// The next event, for the foreground loop.
    pub fn next_event(&self) -> Option<Event> {
        self.events.recv().ok()
    }

    /// A running service's event is current (not from an earlier start).
    pub fn exited(&mut self, service: &str, generation: u64) -> bool {
        if !self.is_current(service, generation) {
            return false;
        }
        self.running.remove(service);
        let _ = pids::remove(&self.project, service);
        true
    }

    /// Lets the services run on after this process leaves (`start`).
    pub fn detach(mut self) {
        self.running.clear();
    }

    pub fn sender(&self) -> Sender<Event> {
        self.sender.clone()
    }
}

/// Whether the listener on `port` belongs to the group (true when the
/// holder cannot be seen at all).
fn listens_in_group(port: u16, pgid: i32) -> bool {
    let holders = holder::lookup(&BTreeSet::from([port])).remove(&port).unwrap_or_default();
    holders.iter().all(|h| h.id.is_none()) || holders.iter().any(|h| h.pgid == pgid)
}

/// The last `n` lines of a file, indented.
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    if lines.is_empty() {
        return "  (no output)".into();
    }
    lines[start..].iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
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
/// with its services still up.
pub fn forward_signals(sender: Sender<Event>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signal handlers")?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if sender.send(Event::Signal(signal)).is_err() {
                break;
            }
        }
    });
    Ok(())
}
