//! The agent interface, `cargo xtask mcp`: this checkout's services served
//! to a coding agent over the Model Context Protocol, on stdin and stdout
//! (ARCHITECTURE.md, "The agent interface"). A front end: the tools go
//! through the engine, as the command line and the dashboard do.
//!
//! `protocol` speaks MCP and knows nothing of services; `catalog` describes
//! the nine tools; `tools` carries them out.

mod catalog;
mod protocol;
mod tools;

use std::fs::File;
use std::sync::Arc;
use std::sync::mpsc::channel;

use anyhow::Context;

use crate::engine::supervisor;
use crate::system::paths::Project;
use crate::system::term;
use tools::CheckoutTools;

/// What the model is told of the server when it connects.
const INSTRUCTIONS: &str = "Runs the development services of the checkout this server was started in \
(its ports.toml), each on a free port, through the same engine as `cargo xtask` and its dashboard: what \
you see and do here is what a developer sees and does in a terminal. Services started here run in the \
background and outlive this server. No tool ever kills a process that is not this checkout's: a port held \
by one makes the service move to a free port, and the result's `moved` says so. `start`, `restart` and \
`set_port` report progress and may be cancelled; a cancelled start stops what it had started.";

/// Serves the checkout until the client closes stdin (or a signal comes).
pub fn run(project: &Project) -> anyhow::Result<()> {
    let output = protocol_output()?;
    let tools = Arc::new(CheckoutTools::new(project.clone()));
    stop_on_signals(tools.clone())?;
    let info = protocol::Info {
        name: "xtask".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        instructions: INSTRUCTIONS.into(),
    };
    eprintln!("cargo xtask mcp: serving {} on stdin and stdout", project.root.display());
    protocol::serve(std::io::stdin().lock(), output, info, tools)
}

/// Stdout for the protocol alone: the server writes its messages to a copy
/// of it (which no child inherits), and stdout itself then leads to stderr,
/// so that nothing else (what the engine says, a set-up step, a service's
/// child) can ever write into the protocol.
fn protocol_output() -> anyhow::Result<File> {
    let copy = rustix::io::fcntl_dupfd_cloexec(std::io::stdout(), 3).context("duplicating stdout")?;
    rustix::stdio::dup2_stdout(std::io::stderr()).context("pointing stdout at stderr")?;
    Ok(File::from(copy))
}

/// Ctrl-C, SIGTERM and SIGHUP are the server's, not its starts': they call
/// off the starts under way, which stop what they started, and end the
/// server once every action has ended. (An MCP client sends SIGTERM when the
/// server does not leave within a moment of its input closing.)
fn stop_on_signals(tools: Arc<CheckoutTools>) -> anyhow::Result<()> {
    let (sender, signals) = channel();
    supervisor::forward_signals(sender, None)?;
    std::thread::spawn(move || {
        if signals.recv().is_ok() {
            eprintln!("cargo xtask mcp: stopping");
            tools.close();
            term::flush(term::FLUSH_LIMIT);
            std::process::exit(0);
        }
    });
    Ok(())
}
