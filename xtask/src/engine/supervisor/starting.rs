//! Starting services: each once its dependencies are ready, independent
//! ones together; a service whose port was taken before it could bind moves
//! on, and what uses its port restarts with it; what exits on its own is
//! said, with its last lines.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use super::events::{Event, signal_name};
use super::{READY_TIMEOUT, Supervisor};
use crate::engine::output::{COPY_WAIT, copied};
use crate::engine::stopper::stop_service;
use crate::engine::watch::{self, Watch};
use crate::engine::{allocation, proxy};
use crate::model::book::Ports;
use crate::system::group::Stopped;
use crate::system::probe;
use crate::system::records;
use crate::system::term::say;

/// How many times a service whose port was taken before it could bind moves on.
const PORT_RETRIES: u32 = 3;
/// How long a start waits without news before it says what it waits for.
const WAITING_NOTE: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Starts `names` (in dependency order): each once its dependencies are
    /// ready. Returns when all are ready. On failure, or when `watch` calls
    /// it off, it stops what it started and says why; on a signal it stops
    /// everything this runner started. What runs already, here or in the
    /// background, is left as it is.
    pub fn start_all(&mut self, names: &[String], watch: &dyn Watch) -> anyhow::Result<()> {
        let pending: Vec<String> =
            names.iter().filter(|n| !self.running.contains_key(*n) && !self.kept.contains_key(*n)).cloned().collect();
        let mut ours: BTreeSet<String> = pending.iter().cloned().collect();
        let result = self.starting(pending, &mut ours, watch);
        if result.is_err() {
            self.stop_started(&ours);
        }
        result
    }

    /// `start_all`'s loop; `ours` gains what it restarts on a new port.
    fn starting(
        &mut self,
        mut pending: Vec<String>,
        ours: &mut BTreeSet<String>,
        watch: &dyn Watch,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut retries: BTreeMap<String, u32> = BTreeMap::new();
        let mut quiet_since = Instant::now();
        loop {
            if watch.cancelled() {
                bail!("the start was cancelled: what it had started is stopped");
            }
            let ready =
                |s: &Supervisor, dep: &String| s.kept.contains_key(dep) || s.running.get(dep).is_some_and(|r| r.ready);
            let (now, later): (Vec<String>, Vec<String>) = pending
                .into_iter()
                .partition(|name| self.checkout.config.services[name].depends_on.iter().all(|d| ready(self, d)));
            pending = later;
            for name in now {
                self.spawn(&name)?;
                watch.starting(&name, self.ports[&name]);
            }
            if let Some((name, dep)) = self.lost_dependency(&pending) {
                bail!("{name} cannot start: {dep}, which it depends on, exited");
            }
            if pending.is_empty() && ours.iter().all(|n| ready(self, n)) {
                let (n, s) = (ours.len(), if ours.len() == 1 { "" } else { "s" });
                let took = started.elapsed().as_secs_f64();
                if n > 0 {
                    say!("{}", self.printer.style.green(&format!("✓ {n} service{s} ready in {took:.1}s")));
                }
                return Ok(());
            }
            // Woken now and then to ask `watch` whether to go on: while
            // starting, as the readiness checks do.
            let event = match self.events.recv_timeout(watch::CHECK_EVERY) {
                Ok(event) => {
                    quiet_since = Instant::now();
                    event
                }
                Err(RecvTimeoutError::Timeout) => {
                    if quiet_since.elapsed() >= WAITING_NOTE {
                        quiet_since = Instant::now();
                        let waiting: Vec<&String> =
                            self.running.iter().filter(|(_, r)| !r.ready).map(|(n, _)| n).collect();
                        let waiting = waiting.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
                        say!("… waiting for {waiting} ({:.0}s)", started.elapsed().as_secs_f64());
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
                        let names = proxy::names_of(&self.checkout.project);
                        let config = &self.checkout.config.services[&service];
                        let url = config.url.render(Some(&service), &self.ports, names.as_ref());
                        let named = names.filter(|_| config.http).map(|names| format!(" · {}", names.url(&service)));
                        let said = format!("ready in {took:.1}s: {url}{}", named.unwrap_or_default());
                        say!("{}", self.say(&service, &said));
                        watch.ready(&service, &url);
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
                    let grace = self.checkout.config.services[&service].stop_grace;
                    if stop_service(running.group, running.container.as_ref(), grace, &self.hurry).0
                        == Stopped::Survived
                    {
                        // Its record stays, for a later stop.
                        bail!("{service} exited ({status}), and what it left running could not be stopped");
                    }
                    copied(running.copied.as_ref(), Instant::now() + COPY_WAIT);
                    records::remove(&self.checkout.project, &service, running.group)?;
                    let tries = retries.entry(service.clone()).or_default();
                    if probe::is_free(port) || *tries >= PORT_RETRIES {
                        let lines = self.last_lines(&service);
                        bail!("{service} exited ({status}) before it was ready; its last lines:\n{lines}");
                    }
                    // Someone took the port between our check and its bind: move,
                    // and restart what uses the port with the new environment.
                    *tries += 1;
                    say!("{}", self.say(&service, &format!("port {port} was taken before it could bind; moving")));
                    self.reallocate(watch)?;
                    let users: Vec<String> = self
                        .checkout
                        .config
                        .users_of(&service)
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
            let dep = self.checkout.config.services[name].depends_on.iter().find(|d| gone(d))?;
            Some((name.clone(), dep.clone()))
        })
    }

    pub(super) fn is_current(&self, service: &str, generation: u64) -> bool {
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
        let grace = self.checkout.config.services[service].stop_grace;
        let (stopped, _) = stop_service(gone.group, gone.container.as_ref(), grace, &self.hurry);
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
        let _ = records::remove(&self.checkout.project, service, gone.group);
    }

    /// New ports for what is not running, keeping the running services' own.
    fn reallocate(&mut self, watch: &dyn Watch) -> anyhow::Result<()> {
        let keep: Ports = self.running.keys().chain(self.kept.keys()).map(|n| (n.clone(), self.ports[n])).collect();
        let allocation = allocation::allocate_and_write(&self.checkout, &keep, &BTreeMap::new())?;
        allocation.moves.iter().for_each(|moved| watch.moved(moved));
        self.ports = allocation.ports;
        Ok(())
    }
}
