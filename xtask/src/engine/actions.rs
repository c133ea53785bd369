//! Start, stop, restart, set a port: what a person (or an agent) asks of a
//! checkout's services, and the one path each takes, with the same checks,
//! whether the command line asks, or the dashboard (served by `dev` or by
//! `ui`). Who runs the services differs: a `dev` runs its own in this
//! process (`Supervisor`), and in the background each is on its own
//! (`control::Background`); `Services` is what both can do.

use anyhow::ensure;

use super::Checkout;
use super::allocation;
use super::stopper::refuse_survivors;
use crate::system::term::say;

/// A selection of services: `None` is every one.
pub type Selection = Option<Vec<String>>;

/// What can be asked.
#[derive(Debug, Clone)]
pub enum Action {
    /// Start them, with what they depend on.
    Start(Selection),
    /// Stop them, and what depends on them.
    Stop(Selection),
    /// Stop them and what depends on them, then start them all again (and
    /// what they depend on that does not run yet).
    Restart(Selection),
    /// Give a service this port; the services that use its port restart.
    SetPort(String, u16),
}

/// What a runner of services can do, for `act`.
pub trait Services {
    fn checkout(&self) -> &Checkout;
    /// The services that run now. Another command may have started or
    /// stopped some since this one began: asked afresh.
    fn running(&mut self) -> Vec<String>;
    /// What would keep `names` from starting again, found before any of
    /// them is stopped: bad input stops nothing.
    fn check(&mut self, names: &[String]) -> anyhow::Result<()>;
    /// What a stop of `selection` would refuse (a selection beside a `dev`
    /// in another terminal), found before anything changes.
    fn refuses(&mut self, selection: &Selection) -> anyhow::Result<()>;
    /// Stops the running services of `selection` and what depends on them;
    /// returns those that could not be stopped.
    fn stop(&mut self, selection: &Selection) -> anyhow::Result<Vec<String>>;
    /// Starts `names` (closed over their dependencies, in order), setting
    /// up what they need and resolving conflicts on their ports.
    fn start(&mut self, names: &[String]) -> anyhow::Result<()>;
    /// The port book changed (a port was set): start from these ports.
    fn ports_changed(&mut self, ports: &crate::model::book::Ports);
}

/// Carries out `action`; returns what was done, in a few words.
pub fn act(services: &mut impl Services, action: &Action) -> anyhow::Result<String> {
    let config = services.checkout().config.clone();
    match action {
        Action::Start(selection) => {
            let names = config.closure(selection.as_deref())?;
            let running = services.running();
            let all_ran = names.iter().all(|n| running.contains(n));
            services.start(&names)?;
            Ok(match all_ran {
                true => format!("{} is already running", shown(selection)),
                false => format!("{} started", shown(selection)),
            })
        }
        Action::Stop(selection) => {
            config.closure(selection.as_deref())?; // checks the names
            refuse_survivors(&services.stop(selection)?)?;
            Ok(format!("{} stopped", shown(selection)))
        }
        Action::Restart(selection) => {
            let mut names = config.closure(selection.as_deref())?;
            let running = services.running();
            let reached = match selection {
                None => running.clone(),
                Some(selected) => config.dependents_closure(selected),
            };
            names.extend(reached.into_iter().filter(|n| running.contains(n)));
            let names: Vec<String> = config.order.iter().filter(|n| names.contains(n)).cloned().collect();
            services.check(&names)?;
            let survivors = services.stop(selection)?;
            ensure!(
                survivors.is_empty(),
                "{} could not be stopped, so nothing was started again",
                survivors.join(", ")
            );
            services.start(&names)?;
            Ok(format!("{} restarted", shown(selection)))
        }
        Action::SetPort(name, port) => {
            allocation::check_pin(&config, name, *port)?;
            let running = services.running();
            let users: Vec<String> = config.users_of(name).into_iter().filter(|n| running.contains(n)).collect();
            // What would keep them from starting again, before the new port is written.
            if !users.is_empty() {
                services.refuses(&Some(users.clone()))?;
                services.check(&users)?;
            }
            let ports = allocation::pin(services.checkout(), name, *port)?;
            services.ports_changed(&ports);
            if !users.is_empty() {
                say!("restarting {} with the new port", users.join(", "));
                refuse_survivors(&services.stop(&Some(users.clone()))?)?;
                services.start(&users)?;
            }
            // Where it is now: a port taken before it could bind moved it on.
            let checkout = services.checkout();
            let (book, _) = super::read_book(&checkout.project, &checkout.config)?;
            Ok(moved(name, *port, book.get(name).copied().unwrap_or(*port)))
        }
    }
}

/// The services of a selection, in a few words.
fn shown(selection: &Selection) -> String {
    selection.as_ref().map_or_else(|| "every service".to_owned(), |names| names.join(", "))
}

/// What a change of port did: a port taken before the service could bind
/// moves it on.
fn moved(name: &str, asked: u16, now: u16) -> String {
    if now == asked {
        format!("{name} moved to port {now}")
    } else {
        format!("{name} could not bind port {asked}: moved to port {now}")
    }
}
