//! Services in containers: the container engine's CLI as the runner drives
//! it (ARCHITECTURE.md, "Containers"). Pure parts (names and labels,
//! command lines, what the engine prints) apart from the thin IO that runs
//! them (`engine`, `compose`, `backing`).

// Until ports.toml's `image` and `compose` services use it, only its tests do.
#![cfg_attr(not(test), allow(dead_code, unused_imports))]

mod argv;
mod backing;
mod compose;
mod engine;
mod identity;
mod listing;
#[cfg(test)]
mod live;

pub use argv::RunSpec;
pub use backing::{Backing, Which};
pub use compose::{Compose, ComposeFile};
pub use engine::Engine;
pub use identity::{Identity, Owner};
pub use listing::{Container, Health};
