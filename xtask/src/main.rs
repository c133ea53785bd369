//! The repository's dev runner, run as `cargo xtask`: it gives every service
//! of `ports.toml` a free port, writes `.ports.json` and `.env.runtime` so the
//! services find each other, starts them in dependency order, and stops them
//! all, leaving nothing behind. ARCHITECTURE.md says how it is built.

// The layers, from the bottom up: each imports only from those before it
// (ARCHITECTURE.md). The pure core: ports.toml, allocation, the port book.
mod model;
// The machine: files and locks, processes, who holds a port, records, containers.
mod system;
// The operations every front end runs.
mod engine;
// Front ends: the command line (a module per command), the dashboard, the
// proxy of the named URLs, the agent interface.
mod cli;
mod mcp;
mod proxy;
#[cfg(test)]
mod tidy;
mod ui;

use clap::Parser;

use crate::cli::{Cli, Command, ProxyAction, ProxyArgs};
use crate::system::paths::Project;
use crate::system::process::{self, ProcId};
use crate::system::{files, term};

fn main() {
    process::keep_inherited_descriptors();
    let result = try_main();
    term::flush(term::FLUSH_LIMIT); // what was said comes before the error
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn try_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The proxy is the user's, not a checkout's: it runs from `/`.
    if let Command::Proxy(ProxyArgs { action, json }) = cli.command {
        return match action {
            None => proxy::show(json),
            Some(ProxyAction::Stop) => proxy::stop(),
            Some(ProxyAction::Serve { port }) => proxy::serve(port),
        };
    }
    let project = match cli.command {
        // dev's guard runs in the checkout, whose ports.toml may be gone by the time dev is.
        Command::Guard { .. } => Project { root: std::env::current_dir()? },
        _ => Project::find()?,
    };
    if let Command::Dev { services, .. }
    | Command::Start { services, .. }
    | Command::Stop { services }
    | Command::Restart { services, .. } = &cli.command
    {
        cli::check_selection(services)?;
    }
    // A command that fails leaves the checkout as it found it: the folders
    // it made for its locks go too.
    let missing: Vec<_> = project.scaffolding().into_iter().filter(|(dir, _)| !dir.exists()).collect();
    let result = run(cli.command, &project);
    if result.is_err() {
        for (dir, files) in &missing {
            files::remove_unused(dir, files);
        }
    }
    result
}

/// One arm per command: each front end owns its `run`.
fn run(command: Command, project: &Project) -> anyhow::Result<()> {
    match command {
        Command::Ports(args) => args.run(project),
        Command::Status { json } => cli::status::run(project, json),
        Command::Dev { services, conflicts } => {
            // dev serves the dashboard beside its services.
            let dashboard: cli::dev::Dashboard = Box::new(|events| {
                let dashboard = ui::serve(project, ui::Control::Foreground(events))?;
                Ok((dashboard.url.clone(), Box::new(move || dashboard.close())))
            });
            cli::dev::run(project, &services, conflicts.resolve()?, dashboard)
        }
        Command::Start { services, conflicts } => cli::start::start(project, &services, conflicts.resolve()?),
        Command::Stop { services } => cli::start::stop(project, &services),
        Command::Restart { services, conflicts } => cli::start::restart(project, &services, conflicts.resolve()?),
        Command::Logs { service, follow, lines } => cli::logs::run(project, service.as_deref(), follow, lines),
        Command::Test => cli::test::run(project),
        Command::Bench { runs, json } => cli::bench::run(project, runs, json.as_deref()),
        Command::Ui => ui::run(project),
        Command::Proxy(_) => unreachable!("served before a checkout is looked for"),
        Command::Mcp => mcp::run(project),
        Command::Guard { runner_pid, runner_start } => {
            cli::guard::run(project, ProcId { pid: runner_pid, start: runner_start })
        }
    }
}
