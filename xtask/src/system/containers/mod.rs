//! Services in containers: the container engine's CLI as the runner drives
//! it (ARCHITECTURE.md, "Containers"). Pure parts (names and labels,
//! command lines, what the engine prints) apart from the thin IO that runs
//! them (`engine`, `compose`, `backing`).

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
pub use engine::{Engine, is_engine_process};
pub use identity::{Identity, Owner};
pub use listing::{Container, Health, Inspected};
