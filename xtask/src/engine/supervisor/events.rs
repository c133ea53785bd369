//! What a supervisor waits for: its services being ready or exiting,
//! signals, and the dashboard's actions.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::engine::actions::Action;
use crate::system::process::Hurry;

/// Where service output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// To the terminal, each line prefixed with the service's name, and to
    /// `.logs/` (`dev`): the services stop with this runner.
    Terminal,
    /// Straight to `.logs/SERVICE.log` (`start`): the services outlive it.
    Files,
}

pub enum Event {
    Ready {
        service: String,
        generation: u64,
    },
    NotReady {
        service: String,
        generation: u64,
    },
    Exited {
        service: String,
        generation: u64,
        status: String,
    },
    Signal(i32),
    /// An action from the dashboard, and where to send its outcome.
    Command {
        action: Action,
        reply: Sender<Result<String, String>>,
    },
}

pub(super) fn signal_name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Ctrl-C, SIGTERM and SIGHUP become events instead of killing the runner
/// with its services still up. They go to the first who asks, one per
/// process: in `cargo xtask ui` the dashboard, whose Ctrl-C stops no service,
/// not the starts its actions run, which go on to their end; in `cargo xtask
/// mcp` the server, which calls its starts off. With `hurry`,
/// a Ctrl-C while stopping sets it: the services' graces are cut short.
/// Only one that comes a second or more after the signal that began the
/// stop: a wrapper such as `npm run` passes on the Ctrl-C its group got
/// too, two at once.
pub fn forward_signals(sender: Sender<Event>, hurry: Option<Hurry>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signal handlers")?;
    std::thread::spawn(move || {
        let mut first = None;
        for signal in signals.forever() {
            let Some(at) = first else {
                first = Some(Instant::now());
                if sender.send(Event::Signal(signal)).is_err() {
                    break;
                }
                continue;
            };
            // A person at the terminal: another `stop`'s SIGTERM asks for no hurry.
            if let Some(hurry) = hurry.as_ref().filter(|_| signal == SIGINT && at.elapsed() >= Duration::from_secs(1)) {
                hurry.now();
                // The terminal may be gone (a pipe closed with it): no panic over a message.
                let _ = writeln!(std::io::stderr(), "received SIGINT again: killing what is still running");
            }
        }
    });
    Ok(())
}
