//! A service's port is busy: find who holds it and apply the policy
//! (ARCHITECTURE.md, "Conflicts"). What is done is said in one line: here
//! for a kill, by the allocation for a move (with the reason found here). A kill is
//! confirmed by the port becoming free. A port a container publishes is held
//! by the container, whichever process of the engine holds its socket.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Checkout, containers};
use crate::model::config::Config;
use crate::model::policy::{self, Action, Class, Mode};
use crate::system::containers::Container;
use crate::system::group::Stopped;
use crate::system::holder::{self, Holder, Known};
use crate::system::probe;
use crate::system::process::{self, Hurry};
use crate::system::records;
use crate::system::registry::Registry;
use crate::system::term;
use crate::system::term::say;

const GRACE: Duration = Duration::from_secs(5);

/// What is true of a busy port now.
enum Judged {
    /// Another checkout reserves it: the allocation moves past it, and says so.
    Reserved,
    /// Nobody can be seen listening on it.
    Unseen,
    Held {
        holders: Vec<Holder>,
        /// The containers that publish it, with what each is to this checkout.
        containers: Vec<(Container, Class)>,
        known: Known,
        action: Action,
    },
}

/// Who holds `port`, and what the policy says to do about it. Read when
/// asked, not once for every port: resolving an earlier one may have taken
/// seconds (a grace, a question), while another checkout started a service
/// here. Its registry entry and its record are written before its process
/// can listen, so they are read after the lookup.
fn judge(checkout: &Checkout, service: &str, port: u16, mode: Mode) -> anyhow::Result<Judged> {
    let (project, config) = (&checkout.project, &checkout.config);
    let holders = holder::lookup(&BTreeSet::from([port])).remove(&port).unwrap_or_default();
    let registry = Registry::open()?;
    if registry.entries.reserved_by_others(&project.root).contains(&port) {
        return Ok(Judged::Reserved);
    }
    let known = Known::gather(project, &registry);
    let mut holders: Vec<(Holder, Class)> = holders
        .into_iter()
        .map(|h| {
            let class = known.classify(&h);
            (h, class)
        })
        .collect();
    // The engine's proxy or daemon stands for the container that publishes
    // the port, which the engine names; a port may be published with no
    // process of the engine's seen holding it. Without root, the proxy
    // (root's) is a process of root's whose pid cannot be seen: it may be.
    let engine_like =
        |(holder, class): &(Holder, Class)| *class == Class::Engine || (*class == Class::Unknown && holder.uid == 0);
    let engine_held = holders.iter().any(engine_like);
    let containers = containers::publishing(checkout, &registry, port, engine_held);
    if !containers.is_empty() {
        holders.retain(|held| !engine_like(held));
    }
    if holders.is_empty() && containers.is_empty() {
        return Ok(Judged::Unseen);
    }
    let classes: Vec<Class> =
        holders.iter().map(|(_, c)| c).chain(containers.iter().map(|(_, c)| c)).cloned().collect();
    let siblings = config.services.keys().map(String::as_str).filter(|s| *s != service).collect();
    let action = policy::decide_all(&classes, &siblings, mode);
    let holders = holders.into_iter().map(|(holder, _)| holder).collect();
    Ok(Judged::Held { holders, containers, known, action })
}

/// Whether the policy may free `port` for `service` (it would stop, kill,
/// or ask to kill its holders), before anything is done.
pub fn may_free(checkout: &Checkout, service: &str, port: u16, mode: Mode) -> anyhow::Result<bool> {
    let judged = judge(checkout, service, port, mode)?;
    Ok(matches!(judged, Judged::Held { action: Action::StopOurs | Action::Ask | Action::Kill, .. }))
}

/// Tries to free `port` for `service`. `None` when it is free now, or
/// another checkout reserves it (the allocation moves past it and says so);
/// else why it stays busy, for the line that says where the service moves.
pub fn resolve(checkout: &Checkout, service: &str, port: u16, mode: Mode) -> anyhow::Result<Option<String>> {
    let (holders, containers, known, action) = match judge(checkout, service, port, mode)? {
        Judged::Reserved => return Ok(None),
        Judged::Unseen => {
            return Ok((!probe::is_free(port)).then(|| "is busy, but nobody can be seen listening on it".to_owned()));
        }
        Judged::Held { holders, containers, known, action } => (holders, containers, known, action),
    };
    let said = holders.iter().map(Holder::to_string).chain(containers.iter().map(|(c, _)| containers::said(c)));
    let who = said.collect::<Vec<_>>().join(", ");
    let config = &checkout.config;
    Ok(match action {
        Action::StopOurs => {
            for h in &holders {
                if let Some((name, group)) = known.ours_of(h) {
                    if group.stop(GRACE, &Hurry::default()) == Stopped::Survived {
                        return Ok(Some(format!(
                            "is held by this checkout's earlier {who}, which could not be stopped"
                        )));
                    }
                    records::remove(&checkout.project, name, *group)?;
                }
            }
            // A container no record names (those of records were stopped with them).
            for (container, _) in &containers {
                if let Err(e) = containers::stop(config, container, true, GRACE) {
                    return Ok(Some(format!(
                        "is held by this checkout's earlier {who}, which could not be stopped ({e:#})"
                    )));
                }
            }
            say!("{service}: port {port} was held by this checkout's earlier {who}; stopped it");
            freed(port)
        }
        Action::Ask => {
            // Every holder is killed (a listener's children share its socket), so all are named.
            let named: Vec<String> =
                holders.iter().filter_map(|h| h.id.map(|id| format!("{} ({})", id.pid, h.command))).collect();
            let noun = if named.len() == 1 { "process" } else { "processes" };
            let mut asked: Vec<String> =
                (!named.is_empty()).then(|| format!("kill {noun} {}", named.join(", "))).into_iter().collect();
            asked.extend(containers.iter().map(|(c, _)| format!("stop {}", containers::said(c))));
            let asked = asked.join(" and ");
            let question = format!("{}{} to free port {port}?", asked[..1].to_uppercase(), &asked[1..]);
            if term::confirm(&question) {
                kill(config, service, port, &holders, &containers, &who)
            } else {
                let not = if containers.is_empty() { "not killed" } else { "not stopped" };
                Some(format!("is held by {who}; {not} (answered no)"))
            }
        }
        Action::Kill => kill(config, service, port, &holders, &containers, &who),
        Action::Move(reason) => {
            let not = if containers.is_empty() { "not killing it" } else { "not stopping it" };
            Some(format!("is held by {who}; {not}: {reason}"))
        }
    })
}

/// Kills the processes that hold `port`, and stops the containers that
/// publish it (never removed: they are not ours).
fn kill(
    config: &Config,
    service: &str,
    port: u16,
    holders: &[Holder],
    containers: &[(Container, Class)],
    who: &str,
) -> Option<String> {
    for id in holders.iter().filter_map(|h| h.id) {
        if let Err(e) = process::kill(id, GRACE) {
            return Some(format!("is held by {who}, which could not be killed ({e})"));
        }
    }
    for (container, _) in containers {
        if let Err(e) = containers::stop(config, container, false, GRACE) {
            return Some(format!("is held by {who}, which could not be stopped ({e:#})"));
        }
    }
    let done = if containers.is_empty() { "killed" } else { "stopped" };
    say!("{service}: {done} {who} to free port {port}");
    freed(port).map(|still| format!("{still} after stopping {who}"))
}

/// Waits a little for the kernel to release the port.
fn freed(port: u16) -> Option<String> {
    let free = process::wait_until(Duration::from_secs(3), || probe::is_free(port));
    (!free).then(|| "is still busy".to_owned())
}
