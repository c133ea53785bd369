//! What the runner's integration tests (`xtask/tests`) and its bench
//! (`xtask/bench`) share: temporary checkouts driven through the real `xtask`
//! binary, each with a registry of its own, and the services they run; ports
//! free on every address; waiting; the processes a test starts or looks
//! for; and the container tests' images (`images`). Whatever a value of
//! this crate started is stopped when it is dropped, also when a test fails.
//!
//! A test takes it whole (`use harness::*`). It panics where a test would:
//! what fails is the test.

mod checkout;
pub mod images;
mod ports;
mod processes;
mod wait;

pub use checkout::{
    Checkout, RunnerCopy, assert_all_gone, http_service, run_in_terminal, service_processes, spawn_dashboard,
    spawn_dev, stack, text, wait_running,
};
pub use ports::{MAIN_THREAD_ENDS_FIRST, Squatter, answers, ephemeral_range, free_ports, is_free};
pub use processes::{
    NOBODY, Running, alive, copy_program, is_root, main_thread_ended, processes_in, processes_with, write_program,
};
pub use procscan::{ProcId, group_members};
pub use wait::{LONG, Said, poll, wait_for};
