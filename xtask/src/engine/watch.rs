//! What a front end may follow of a start while it runs, and how it calls
//! one off: the agent interface reports each service starting, ready or
//! moved as progress, and stops waiting when its client cancels. The
//! command line and the dashboards follow nothing (`Unwatched`): what a
//! start does is said on the terminal either way.

use super::allocation::Move;

/// Follows a start (`launch::up`, `Supervisor::start_all`). Told of each
/// step as it happens, on the starting thread; asked between steps whether
/// to go on.
pub trait Watch {
    /// A service's process is started, on `port`.
    fn starting(&self, _service: &str, _port: u16) {}
    /// A service answers, at `url`.
    fn ready(&self, _service: &str, _url: &str) {}
    /// A service got another port than the one it would have had.
    fn moved(&self, _moved: &Move) {}
    /// Whether the start is called off: then it stops what it started,
    /// records and all, and fails. Asked at least every `CHECK_EVERY` while
    /// the start waits for its services.
    fn cancelled(&self) -> bool {
        false
    }
}

/// How often a waiting start asks whether it is called off.
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Nobody follows the start, and nobody calls it off.
pub struct Unwatched;

impl Watch for Unwatched {}
