//! A service's port is busy: find who holds it and apply the policy of
//! DESIGN.md section 6, printing one line that says what held the port and
//! what was done. A kill is confirmed by the port becoming free.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::alloc;
use crate::cli::Mode;
use crate::holder::{self, Action, Class, Holder, Known};
use crate::process;
use crate::term;
use crate::term::say;

const GRACE: Duration = Duration::from_secs(5);

/// Tries to free `port` for `service`. True when it is free now; false
/// means the service moves to the next free port.
pub fn resolve(service: &str, port: u16, mode: Mode, known: &Known) -> bool {
    let holders = holder::lookup(&BTreeSet::from([port])).remove(&port).unwrap_or_default();
    if holders.is_empty() {
        return alloc::is_free(port) || {
            say!("{service}: port {port} is busy but nobody can be seen listening on it; moving to the next free port");
            false
        };
    }
    let classes: Vec<Class> = holders.iter().map(|h| known.classify(h)).collect();
    let who = holders.iter().map(Holder::to_string).collect::<Vec<_>>().join(", ");
    match holder::decide_all(&classes, mode) {
        Action::StopOurs => {
            for h in &holders {
                if let Some((_, group)) = known.ours.iter().find(|(_, g)| g.pgid() == h.pgid) {
                    group.stop(GRACE);
                }
            }
            say!("{service}: port {port} was held by this checkout's earlier {who}; stopped it");
            freed(port)
        }
        Action::Ask => {
            let first = &holders[0];
            let pid = first.id.map_or(0, |id| id.pid);
            let question = format!("Kill process {pid} ({}) to free port {port}?", first.command);
            if term::confirm(&question) {
                kill(service, port, &holders, &who)
            } else {
                say!("{service}: port {port} is held by {who}; not killed (answered no); moving to the next free port");
                false
            }
        }
        Action::Kill => kill(service, port, &holders, &who),
        Action::Move(reason) => {
            say!("{service}: port {port} is held by {who}; not killing it: {reason}; moving to the next free port");
            false
        }
    }
}

fn kill(service: &str, port: u16, holders: &[Holder], who: &str) -> bool {
    for id in holders.iter().filter_map(|h| h.id) {
        if let Err(e) = process::kill(id, GRACE) {
            say!("{service}: could not kill pid {} holding port {port} ({e}); moving to the next free port", id.pid);
            return false;
        }
    }
    if freed(port) {
        say!("{service}: killed {who} to free port {port}");
        true
    } else {
        say!("{service}: killed {who}, but port {port} is still busy; moving to the next free port");
        false
    }
}

/// Waits a little for the kernel to release the port.
fn freed(port: u16) -> bool {
    process::wait_until(Duration::from_secs(3), || alloc::is_free(port))
}
