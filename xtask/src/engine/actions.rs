//! Start, stop, restart, set a port: what a person (or an agent) asks of a
//! checkout's services, and the one path each takes, with the same checks,
//! whether the command line asks, or the dashboard (served by `dev` or by
//! `ui`). Who runs the services differs: a `dev` runs its own in this
//! process (`Supervisor`), and in the background each is on its own
//! (`control::Background`); `Services` is what both can do.

use anyhow::ensure;

use super::Checkout;
use super::allocation::{self, Allocation};
use super::stopper::refuse_survivors;
use crate::model::config::Config;
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
    /// returns those that could not be stopped. `say_idle`: say so when
    /// nothing ran (a stop asked for as such, not one on the way to a start).
    fn stop(&mut self, selection: &Selection, say_idle: bool) -> anyhow::Result<Vec<String>>;
    /// Starts `names` (closed over their dependencies, in order), setting
    /// up what they need and resolving conflicts on their ports.
    fn start(&mut self, names: &[String]) -> anyhow::Result<()>;
    /// The port book changed (a port was set): start from these ports.
    fn ports_changed(&mut self, allocation: &Allocation);
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
            refuse_survivors(&services.stop(selection, true)?)?;
            Ok(format!("{} stopped", shown(selection)))
        }
        Action::Restart(selection) => {
            let running = services.running();
            let names = restarted(&config, selection, &running)?;
            services.check(&names)?;
            let survivors = services.stop(selection, false)?;
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
            // The stop of the users reaches what depends on them: all start again.
            let restart = restarted(&config, &Some(users.clone()), &running)?;
            // What would keep them from starting again, before the new port is written.
            if !users.is_empty() {
                services.refuses(&Some(users.clone()))?;
                services.check(&restart)?;
            }
            services.ports_changed(&allocation::pin(services.checkout(), name, *port)?);
            if !users.is_empty() {
                say!("restarting {} with the new port", users.join(", "));
                refuse_survivors(&services.stop(&Some(users.clone()), false)?)?;
                services.start(&restart)?;
            }
            // Where it is now: a port taken before it could bind moved it on.
            let checkout = services.checkout();
            let (book, _) = super::read_book(&checkout.project, &checkout.config)?;
            Ok(moved(name, *port, book.get(name).copied().unwrap_or(*port)))
        }
    }
}

/// What a restart of `selection` starts again: it with what it depends on,
/// and what runs of what depends on it (its stop reaches them), in order.
fn restarted(config: &Config, selection: &Selection, running: &[String]) -> anyhow::Result<Vec<String>> {
    let mut names = config.closure(selection.as_deref())?;
    let reached = match selection {
        None => running.to_vec(),
        Some(selected) => config.dependents_closure(selected),
    };
    names.extend(reached.into_iter().filter(|n| running.contains(n)));
    Ok(config.order.iter().filter(|n| names.contains(n)).cloned().collect())
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
