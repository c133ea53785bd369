//! The supervisor: starts services in dependency order (independent ones in
//! parallel), waits until each is ready, follows them through events (ready,
//! exited, signals) and stops them, dependents first. `dev` runs it in the
//! foreground; `start` runs it until everything is ready and leaves.
//!
//! Nothing here polls while idle: each service has a thread blocked in
//! `wait` and, in the foreground, one blocked reading its output; signals
//! arrive through signal-hook. Only the readiness check polls, until ready.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

mod events;
mod starting;

use events::signal_name;
pub use events::{Event, Output, forward_signals};

use super::actions::{self, Action, Selection, Services};
use super::allocation::Allocation;
use super::output::{Printer, copy_lines};
use super::stopper::{self, Target};
use super::watch::Unwatched;
use super::{Checkout, containers, preflight, proxy, setup};
use crate::model::book::Ports;
use crate::model::config::{DEFAULT_STOP_GRACE, Ready};
use crate::model::envfile;
use crate::model::names::Names;
use crate::system::containers::Backing;
use crate::system::files::Lock;
use crate::system::group::Group;
use crate::system::holder;
use crate::system::logfile;
use crate::system::probe;
use crate::system::process::{Hurry, ProcId};
use crate::system::records::{self, Record};
use crate::system::spawn;
use crate::system::term::say;

/// How long a service may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
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

struct Running {
    handle: Arc<duct::Handle>,
    group: Group,
    /// The container its client runs, for a service in a container.
    container: Option<Backing>,
    generation: u64,
    ready: bool,
    started: Instant,
    /// Closes when the copy of its output (`Output::Terminal`) has ended.
    copied: Option<Receiver<()>>,
}

pub struct Supervisor {
    checkout: Checkout,
    /// The port of every service: those that run on theirs.
    ports: Ports,
    /// `PATH` for the services (setup::search_path).
    path: OsString,
    output: Output,
    printer: Printer,
    running: BTreeMap<String, Running>,
    /// Services an earlier runner started (in the background), which count
    /// as ready and are stopped as their records say, only when asked: not
    /// ours, they outlive this runner.
    kept: BTreeMap<String, Record>,
    sender: Sender<Event>,
    events: Receiver<Event>,
    generation: u64,
    /// A signal came while a dashboard action was starting services: the
    /// foreground loop ends too.
    interrupted: bool,
    /// Set when a second Ctrl-C asks that the services' graces be cut short.
    hurry: Hurry,
}

impl Supervisor {
    /// A supervisor of services to start on `ports`, beside those of `kept`
    /// that run in the background.
    pub fn new(
        checkout: Checkout,
        ports: Ports,
        output: Output,
        kept: BTreeMap<String, Record>,
        hurry: Hurry,
    ) -> Supervisor {
        let (sender, events) = channel();
        let path = setup::search_path(&checkout.config);
        let printer = Printer::new(&checkout.config);
        let (running, generation, interrupted) = (BTreeMap::new(), 0, false);
        Supervisor {
            checkout,
            ports,
            path,
            output,
            printer,
            running,
            kept,
            sender,
            events,
            generation,
            interrupted,
            hurry,
        }
    }

    /// The services that run in the background beside this runner's.
    pub fn kept(&self) -> impl Iterator<Item = &str> {
        self.kept.keys().map(String::as_str)
    }

    /// The environment of a service: ours, every `.env.runtime` variable
    /// (over ours: compose, for one, reads a variable from its environment
    /// before its env file), `PORT`, and its own `env`.
    fn environment(&self, name: &str, names: Option<&Names>) -> Vec<(String, String)> {
        let service = &self.checkout.config.services[name];
        let mut env: BTreeMap<String, String> = std::env::vars().collect();
        env.insert("PATH".into(), self.path.to_string_lossy().into_owned());
        // Python keeps what `print()` writes to a pipe or a file in its
        // buffer: its lines would reach `dev`, the logs and the dashboard
        // only once 8 KiB had piled up. A service's `env` may say otherwise.
        env.insert("PYTHONUNBUFFERED".into(), "1".into());
        env.extend(envfile::vars(&self.checkout.config, &self.ports, names));
        env.insert("PORT".into(), self.ports[name].to_string());
        env.extend(service.env.iter().map(|(k, t)| (k.clone(), t.render(Some(name), &self.ports, names))));
        env.into_iter().collect()
    }

    fn spawn(&mut self, name: &str) -> anyhow::Result<()> {
        let service = &self.checkout.config.services[name];
        let port = self.ports[name];
        let names = proxy::names_of(&self.checkout.project);
        let (argv, container) = match service.command() {
            Some(words) => (words.iter().map(|t| t.render(Some(name), &self.ports, names.as_ref())).collect(), None),
            // Its client, in the foreground: the service's process and output.
            None => containers::client(&self.checkout, name, &self.ports, names.as_ref())
                .map(|(argv, c)| (argv, Some(c)))?,
        };
        let cwd = setup::cwd_of(&self.checkout.project, service);
        let env = self.environment(name, names.as_ref());
        let account = setup::account(service)?.map(|a| (a.uid, a.gid));
        let log_path = self.checkout.project.log_file(name);
        std::fs::create_dir_all(self.checkout.project.logs_dir())?;
        let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let spec = spawn::Spec { argv: &argv, cwd: &cwd, env: &env, account };
        let supervisor = (self.output == Output::Terminal).then(ProcId::myself);
        let (project, command, saved) = (&self.checkout.project, argv.clone(), OnceLock::new());
        let backing = container.clone();
        let record = |group| {
            let (checkout, container) = (Some(project.root.clone()), backing);
            let record = Record { service: name.into(), group, port, command, supervisor, checkout, container };
            records::save(project, &record)?;
            saved.get_or_init(|| group);
            Ok(())
        };
        let (spawned, copied) = match self.output {
            Output::Files => (spawn::spawn(&spec, log, record), None),
            Output::Terminal => {
                let (reader, writer) = std::io::pipe().context("creating a pipe for service output")?;
                let spawned = spawn::spawn(&spec, writer, record);
                let copied = spawned.is_ok().then(|| self.print_lines(name, reader, log));
                (spawned, copied)
            }
        };
        // A record of a command that did not run (its program could not be run) goes.
        if let (Err(_), Some(group)) = (&spawned, saved.get()) {
            let _ = records::remove(&self.checkout.project, name, *group);
        }
        let (handle, group) = spawned?;
        self.generation += 1;
        let generation = self.generation;
        let handle = Arc::new(handle);
        self.watch(name, generation, &handle, port, group.pgid(), container.clone());
        let started = Instant::now();
        let what = container.as_ref().map(|c| format!("container {} ", c.name())).unwrap_or_default();
        say!("{}", self.say(name, &format!("starting {what}on port {port} (pid {})", group.pgid())));
        let running = Running { handle, group, container, generation, ready: false, started, copied };
        self.running.insert(name.into(), running);
        Ok(())
    }

    /// Two threads per service: one blocked in `wait` reports the exit; one
    /// polls readiness until it succeeds, the service exits, or time is up.
    /// Ready means that the service answers, not whoever took its port: its
    /// group holds it, or, in a container, the engine says it publishes it
    /// for the service's container (`containers::Readiness`).
    fn watch(
        &self,
        name: &str,
        generation: u64,
        handle: &Arc<duct::Handle>,
        port: u16,
        pgid: i32,
        container: Option<Backing>,
    ) {
        let (sender, waited, service) = (self.sender.clone(), handle.clone(), name.to_owned());
        std::thread::spawn(move || {
            let status = match waited.wait() {
                Ok(output) => output.status.to_string(),
                Err(e) => e.to_string(),
            };
            let _ = sender.send(Event::Exited { service, generation, status });
        });
        let ready = self.checkout.config.services[name].ready.clone();
        let (sender, polled, service) = (self.sender.clone(), handle.clone(), name.to_owned());
        let mut in_container = container.map(|c| containers::Readiness::new(c, ready.clone(), port));
        std::thread::spawn(move || {
            let deadline = Instant::now() + READY_TIMEOUT;
            let mut pause = FIRST_PAUSE;
            loop {
                if !matches!(polled.try_wait(), Ok(None)) {
                    return; // exited: the waiter reports it
                }
                let answers = match &mut in_container {
                    None => probe::check(&ready, port) && holder::held_by_group(port, pgid),
                    Some(readiness) => readiness.poll(),
                };
                if answers {
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
        copy_lines(reader, self.printer.prefix(name), Some(log), say)
    }

    fn say(&self, name: &str, message: &str) -> String {
        self.printer.line(name, message)
    }

    /// The last lines a service wrote, indented, for an error message.
    pub fn last_lines(&self, service: &str) -> String {
        logfile::indented(&logfile::last_lines(&self.checkout.project.log_file(service), 15))
    }

    /// Stops services, dependents first (`stopper`). Returns those that
    /// could not be stopped: they stay tracked, with their records, for a
    /// later stop by someone allowed to.
    pub fn stop(&mut self, names: &[String]) -> Vec<String> {
        let config = &self.checkout.config;
        let grace = |name: &str| config.services.get(name).map_or(DEFAULT_STOP_GRACE, |s| s.stop_grace);
        let mut targets = Vec::new();
        for name in names {
            if let Some(running) = self.running.get_mut(name) {
                let (handle, copied, container) =
                    (Some(running.handle.clone()), running.copied.take(), running.container.clone());
                let (name, group, grace) = (name.clone(), running.group, grace(name));
                targets.push(Target { name, group, grace, handle, copied, container });
            } else if let Some(record) = self.kept.get(name) {
                targets.push(Target::recorded(record, grace(name)));
            }
        }
        let stopping: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        let survivors = stopper::stop(&self.checkout.project, Some(config), targets, &self.hurry, &self.printer);
        for name in stopping.iter().filter(|n| !survivors.contains(n)) {
            self.running.remove(name);
            self.kept.remove(name);
        }
        survivors
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
        stopper::refuse_survivors(&self.stop_all())
    }

    /// Services started in the background since this runner began (by a
    /// `start` in another terminal) are kept, as those found at its start:
    /// none is started twice, and a stop reaches them.
    fn adopt(&mut self) {
        self.kept.clear(); // as the records say now: some may have been stopped, or started again
        let me = ProcId::myself();
        // Not what a `dev` in another terminal runs: it is that one's to stop.
        let foreign = |r: &Record| r.supervisor.is_some_and(|dev| dev != me && dev.is_alive());
        for record in records::load_all(&self.checkout.project.root) {
            if !self.running.contains_key(&record.service) && !foreign(&record) && record.group.is_running() {
                self.ports.insert(record.service.clone(), record.port);
                self.kept.insert(record.service.clone(), record);
            }
        }
    }

    /// A dashboard action. One that starts services takes the checkout's
    /// launch lock before anything changes (a `start` in another terminal
    /// may run now), at once or not at all: refused, it has changed nothing,
    /// and dev stays free to take Ctrl-C.
    fn act(&mut self, action: &Action) -> anyhow::Result<String> {
        let _launch = match action {
            Action::Stop(_) => None,
            _ => Some(self.launch_lock()?),
        };
        actions::act(self, action)
    }

    fn launch_lock(&self) -> anyhow::Result<Lock> {
        match Lock::try_acquire(&self.checkout.project.launch_lock())? {
            Some(lock) => Ok(lock),
            None => bail!("another `cargo xtask` of this checkout is starting services: try again when it is done"),
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

/// The services of a `dev`, for the actions of its dashboard.
impl Services for Supervisor {
    fn checkout(&self) -> &Checkout {
        &self.checkout
    }

    fn running(&mut self) -> Vec<String> {
        self.adopt();
        self.running.keys().chain(self.kept.keys()).cloned().collect()
    }

    fn check(&mut self, names: &[String]) -> anyhow::Result<()> {
        preflight::check(&self.checkout, names)
    }

    fn refuses(&mut self, _: &Selection) -> anyhow::Result<()> {
        Ok(()) // this is the dev: it stops and restarts what it runs
    }

    fn stop(&mut self, selection: &Selection, _: bool) -> anyhow::Result<Vec<String>> {
        self.adopt(); // what a `start` in another terminal began is stopped too
        let running: Vec<Record> = super::running(&self.checkout.project);
        let names = super::reach(&self.checkout.config, selection, &running)?;
        containers::check_stoppable(running.iter().filter(|r| names.contains(&r.service)))?;
        Ok(Supervisor::stop(self, &names))
    }

    fn start(&mut self, names: &[String]) -> anyhow::Result<()> {
        // Under the launch lock (`act`): what a `start` in another terminal
        // started is known here.
        self.adopt();
        // As `start` does: what is not running yet is checked and set up first.
        let new: Vec<String> =
            names.iter().filter(|n| !self.running.contains_key(*n) && !self.kept.contains_key(*n)).cloned().collect();
        preflight::check(&self.checkout, &new)?;
        setup::prepare(&self.checkout, &new)?;
        self.start_all(names, &Unwatched)
    }

    fn ports_changed(&mut self, allocation: &Allocation) {
        self.checkout.book = allocation.ports.clone();
        self.ports = allocation.ports.clone();
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
