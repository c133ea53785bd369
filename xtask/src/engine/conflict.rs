//! A service's port is busy: find who holds it and apply the policy
//! (ARCHITECTURE.md, "Conflicts"). What is done is said in one line: here
//! for a kill, by the allocation for a move (with the reason found here). A kill is
//! confirmed by the port becoming free.

use std::collections::BTreeSet;
use std::time::Duration;

use super::Checkout;
use crate::model::policy::{self, Action, Class, Mode};
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
    if holders.is_empty() {
        return Ok(Judged::Unseen);
    }
    let known = Known::gather(project, &registry);
    let classes: Vec<Class> = holders.iter().map(|h| known.classify(h)).collect();
    let siblings = config.services.keys().map(String::as_str).filter(|s| *s != service).collect();
    let action = policy::decide_all(&classes, &siblings, mode);
    Ok(Judged::Held { holders, known, action })
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
    let (holders, known, action) = match judge(checkout, service, port, mode)? {
        Judged::Reserved => return Ok(None),
        Judged::Unseen => {
            return Ok((!probe::is_free(port)).then(|| "is busy, but nobody can be seen listening on it".to_owned()));
        }
        Judged::Held { holders, known, action } => (holders, known, action),
    };
    let who = holders.iter().map(Holder::to_string).collect::<Vec<_>>().join(", ");
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
            say!("{service}: port {port} was held by this checkout's earlier {who}; stopped it");
            freed(port)
        }
        Action::Ask => {
            // Every holder is killed (a listener's children share its socket), so all are named.
            let named: Vec<String> =
                holders.iter().filter_map(|h| h.id.map(|id| format!("{} ({})", id.pid, h.command))).collect();
            let noun = if named.len() == 1 { "process" } else { "processes" };
            let question = format!("Kill {noun} {} to free port {port}?", named.join(", "));
            if term::confirm(&question) {
                kill(service, port, &holders, &who)
            } else {
                Some(format!("is held by {who}; not killed (answered no)"))
            }
        }
        Action::Kill => kill(service, port, &holders, &who),
        Action::Move(reason) => Some(format!("is held by {who}; not killing it: {reason}")),
    })
}

fn kill(service: &str, port: u16, holders: &[Holder], who: &str) -> Option<String> {
    for id in holders.iter().filter_map(|h| h.id) {
        if let Err(e) = process::kill(id, GRACE) {
            return Some(format!("is held by {who}, which could not be killed ({e})"));
        }
    }
    say!("{service}: killed {who} to free port {port}");
    freed(port).map(|still| format!("{still} after killing {who}"))
}

/// Waits a little for the kernel to release the port.
fn freed(port: u16) -> Option<String> {
    let free = process::wait_until(Duration::from_secs(3), || probe::is_free(port));
    (!free).then(|| "is still busy".to_owned())
}
