//! Services in containers (DESIGN.md section 11): the container engine's
//! CLI as the runner drives it. Pure parts (names, labels, command lines,
//! parsing what the engine prints) apart from the thin IO that runs them.
//!
//! - Names and labels. A checkout's containers are named
//!   `xtask-<folder slug>-<hash8 of its root>-<service>` (readable in
//!   `docker ps`, one name per checkout and service) and carry the labels
//!   `dev.xtask.checkout=<root>` and `dev.xtask.service=<name>`. The label,
//!   not the name, says whose a container is: a filter on the exact root
//!   never matches another checkout's containers, even if two hashes met.
//!   Compose's `up` cannot add labels: its containers are found by the
//!   project, which is the same per-checkout prefix.
//! - `docker run --sig-proxy=false`, in the foreground: the client is the
//!   supervised process and its output the service's log, but a signal to
//!   it is not passed on. Killing the client never stops the container
//!   (SIGKILL cannot be passed on anyway; a TERM passed on would stop it
//!   without the grace and KILL that follow).
//! - Stopping is `docker stop -t <stop_grace>` of the container: TERM to its
//!   first process, KILL after the grace, from the daemon. `--rm` then
//!   removes it, whoever stopped it; the client exits on its own.
//! - Cleanup by label: a runner SIGKILLed with its guard leaves its
//!   containers running (or `created`, if the client died while starting
//!   one). The next command lists this checkout's containers by label,
//!   running or not, and removes them (`docker rm -f`) before it starts
//!   anything; other checkouts' never match.
//! - A daemon can hang, and its client with it: every command that only
//!   asks the daemon runs within a limit, and is killed past it.

// Phase B (ports.toml's `image` and `compose` services) uses this layer;
// until then only its tests do.
#![cfg_attr(not(test), allow(dead_code, unused_imports))]

mod argv;
mod compose;
mod engine;
mod identity;
#[cfg(test)]
mod images;
mod listing;
#[cfg(test)]
mod live;

pub use argv::RunSpec;
pub use compose::ComposeFile;
pub use engine::Engine;
pub use identity::{Identity, Owner};
pub use listing::{Container, Health};
