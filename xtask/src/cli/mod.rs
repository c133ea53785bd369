//! The command line: clap types and their typed meaning, and a module per
//! command, each owning its `run`.

pub mod bench;
pub mod dev;
pub mod guard;
pub mod logs;
pub mod ports;
pub mod start;
pub mod status;
pub mod test;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::model::policy::Mode;

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about = "Runs this repository's services on free ports, wired to each other",
    disable_version_flag = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
// Only the invoked command's arguments are built (clap's `defer`): building
// them all took 0.2 to 0.3 ms of every start, 8 % of `ports who`.
#[command(defer = true)]
pub enum Command {
    /// Run services in the foreground with their logs; Ctrl-C stops everything
    Dev {
        /// Services to run (with their dependencies); default: all
        services: Vec<String>,
        #[command(flatten)]
        conflicts: ConflictFlags,
    },
    /// Start services in the background; returns once they are ready
    Start {
        /// A service name, or `all`
        #[arg(default_value = "all")]
        services: Vec<String>,
        #[command(flatten)]
        conflicts: ConflictFlags,
    },
    /// Stop background services (dependents first)
    Stop {
        #[arg(default_value = "all")]
        services: Vec<String>,
    },
    /// Stop, then start again
    Restart {
        #[arg(default_value = "all")]
        services: Vec<String>,
        #[command(flatten)]
        conflicts: ConflictFlags,
    },
    /// One line per service: port, state, pid, URL and health
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Show the port allocations and who holds each port
    Ports(PortsArgs),
    /// Show the logs of services
    Logs {
        /// A service name; default: all
        service: Option<String>,
        /// Keep printing new lines as they come
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines to show
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
    },
    /// Serve the dashboard: ports, services, logs, actions
    Ui,
    /// Serve this checkout to coding agents over MCP (the Model Context Protocol) on stdin and stdout
    Mcp,
    /// Run every test suite of the repository
    Test,
    /// dev's guard: stops dev's services if dev ends without stopping them
    #[command(hide = true)]
    Guard { runner_pid: i32, runner_start: u64 },
    /// Measure the runner side by side with the seed's bash baseline
    Bench {
        /// Runs of each case (runner and baseline alternate)
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Also write the results as JSON to this file
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct PortsArgs {
    #[command(subcommand)]
    pub action: Option<PortsAction>,
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
    /// List the reservations of every checkout on this machine
    #[arg(long)]
    pub all: bool,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum PortsAction {
    /// Allocate a port for every service and write .ports.json and .env.runtime
    Allocate,
    /// Pin a service to a port
    Set { service: String, port: u16 },
    /// Forget the allocations and release this checkout's reservations
    Reset,
    /// Who holds these ports, and whose services they are
    Who {
        #[arg(required = true)]
        ports: Vec<u16>,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Clone, Copy, Default)]
pub struct ConflictFlags {
    /// Non-interactive: kill a same-user process holding a preferred port (also FORCE_MODE=true)
    #[arg(long, conflicts_with = "no_kill")]
    pub force: bool,
    /// Never kill: move to the next free port instead
    #[arg(long)]
    pub no_kill: bool,
}

impl ConflictFlags {
    /// The mode these flags, `FORCE_MODE` and the terminal ask for.
    pub fn resolve(self) -> anyhow::Result<Mode> {
        Ok(self.mode(force_env()?, std::io::IsTerminal::is_terminal(&std::io::stdin())))
    }

    /// `--no-kill` wins, then `--force` or `FORCE_MODE`, then whether anyone can answer a prompt.
    pub fn mode(self, force_env: bool, stdin_is_tty: bool) -> Mode {
        if self.no_kill {
            Mode::NoKill
        } else if self.force || force_env || !stdin_is_tty {
            Mode::Force
        } else {
            Mode::Interactive
        }
    }
}

/// Whether the environment's `FORCE_MODE` asks for force; a value that is
/// neither yes nor no is refused, rather than taken for no.
pub fn force_env() -> anyhow::Result<bool> {
    force_mode(std::env::var_os("FORCE_MODE").as_deref())
}

fn force_mode(value: Option<&std::ffi::OsStr>) -> anyhow::Result<bool> {
    let Some(value) = value else { return Ok(false) };
    match value.to_str().map(str::to_ascii_lowercase).as_deref() {
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off" | "") => Ok(false),
        _ => anyhow::bail!("FORCE_MODE={} is not understood: use FORCE_MODE=true or false", value.to_string_lossy()),
    }
}

/// `all` (or nothing) means every service.
pub fn selection(names: &[String]) -> Option<&[String]> {
    match names {
        [] => None,
        names if names.iter().any(|n| n == "all") => None,
        names => Some(names),
    }
}

/// `all` stands alone: a name beside it would go unchecked (`stop all tpyo`).
pub fn check_selection(names: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(
        names.len() < 2 || !names.iter().any(|n| n == "all"),
        "`all` means every service: give it alone, or name the services ({})",
        names.join(" ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_follows_flags_env_and_terminal() {
        let flags = |force, no_kill| ConflictFlags { force, no_kill };
        let cases = [
            (flags(false, false), None, true, Mode::Interactive),
            (flags(false, false), None, false, Mode::Force),
            (flags(true, false), None, true, Mode::Force),
            (flags(false, false), Some("true"), true, Mode::Force),
            (flags(false, false), Some("On"), true, Mode::Force),
            (flags(false, false), Some("false"), true, Mode::Interactive),
            (flags(false, false), Some("0"), true, Mode::Interactive),
            (flags(false, true), Some("true"), false, Mode::NoKill),
        ];
        for (flags, env, tty, want) in cases {
            let force = force_mode(env.map(std::ffi::OsStr::new)).unwrap();
            assert_eq!(flags.mode(force, tty), want, "{flags:?} FORCE_MODE={env:?} tty={tty}");
        }
        let refused = force_mode(Some(std::ffi::OsStr::new("ture"))).unwrap_err().to_string();
        assert_eq!(refused, "FORCE_MODE=ture is not understood: use FORCE_MODE=true or false");
    }

    #[test]
    fn all_stands_alone() {
        let names = |ns: &[&str]| ns.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert!(check_selection(&names(&["all"])).is_ok());
        assert!(check_selection(&names(&["api", "web"])).is_ok());
        assert!(check_selection(&names(&["all", "tpyo"])).is_err());
    }

    #[test]
    fn cli_parses_the_documented_commands() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()));
        assert!(parse(&["dev", "backend", "--no-kill"]).is_ok());
        assert!(parse(&["start", "all", "--force"]).is_ok());
        assert!(parse(&["ports", "--json"]).is_ok());
        assert!(parse(&["ports", "set", "backend", "9000"]).is_ok());
        assert!(parse(&["ports", "set", "backend", "70000"]).is_err());
        assert!(parse(&["ports", "who", "5432", "3000", "--json"]).is_ok());
        assert!(parse(&["ports", "who"]).is_err());
        assert!(parse(&["dev", "--force", "--no-kill"]).is_err());
        assert!(parse(&["status", "--json"]).is_ok());
        assert!(parse(&["mcp"]).is_ok());
    }
}
