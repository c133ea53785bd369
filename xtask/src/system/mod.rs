//! The machine: files and locks, processes and their groups, who holds a
//! port, the records of what runs, the registry of checkouts, readiness,
//! HTTP, accounts, the terminal, and the container engine. Each module wraps
//! one kind of IO; none runs an operation of the runner.

pub mod containers;
pub mod files;
pub mod group;
pub mod holder;
pub mod http;
pub mod logfile;
pub mod paths;
pub mod probe;
pub mod process;
pub mod records;
pub mod registry;
pub mod sockets;
pub mod spawn;
pub mod term;
pub mod users;
