//! The engine: the one place that runs an operation on a checkout, for
//! every front end (the command line, the dashboard, dev's guard).

pub mod allocation;
pub mod conflict;
pub mod control;
pub mod launch;
pub mod setup;
pub mod snapshot;
pub mod supervisor;
