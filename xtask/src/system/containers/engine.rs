//! The container engine: finding its CLI and a daemon that answers, and
//! running its short commands, each within a limit.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, bail};

use super::argv::{self, RunSpec};
use super::compose::Compose;
use super::identity::Identity;
use super::listing::{self, Container, Inspected};
use crate::system::process::{Hurry, wait_until};
use crate::system::spawn::{find_program, is_executable};

/// How long a command that only asks the daemon may take. A daemon can
/// hang (a wedged dockerd, a dead socket's listener): the client then
/// waits forever, and so would the runner.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// The engine's CLI, with a daemon that answered it.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The program, as found in the search path.
    program: String,
    /// The daemon's version (empty for an engine without a daemon: podman).
    pub server: String,
}

impl Engine {
    /// The engine `program` (`docker`, or another with its CLI such as
    /// `podman`; a name is looked for in `path`), once its daemon has
    /// answered. Checked before anything is stopped or started: the error
    /// says what to install or start.
    pub fn find(program: &str, path: &OsStr) -> anyhow::Result<Engine> {
        Engine::find_within(program, path, ANSWER_LIMIT)
    }

    /// The engine `program` (a path, as found before), unchecked: for what
    /// runs already, which its record names.
    pub fn at(program: &str) -> Engine {
        Engine { program: program.to_owned(), server: String::new() }
    }

    /// The program, as found in the search path.
    pub fn program(&self) -> &str {
        &self.program
    }

    pub(super) fn find_within(program: &str, path: &OsStr, limit: Duration) -> anyhow::Result<Engine> {
        Engine::ask(Engine::locate(program, path)?, limit)
    }

    /// The path of the engine `program` (a name looked for in `path`, or a
    /// path), not run yet; the error says what to install.
    pub fn locate(program: &str, path: &OsStr) -> anyhow::Result<String> {
        let found = match program.contains('/') {
            true => Some(PathBuf::from(program)).filter(|p| is_executable(p)),
            false => find_program(program, path),
        };
        let Some(found) = found else {
            let missing = if program.contains('/') { "is not an executable file" } else { "is not in PATH" };
            let install = match program {
                "docker" => "install Docker (`sudo apt-get install docker.io`)",
                _ => "install it",
            };
            bail!("container services need `{program}`, which {missing}: {install}");
        };
        found.into_os_string().into_string().map_err(|p| anyhow::anyhow!("{p:?} is not UTF-8"))
    }

    /// The engine at `program` (`locate`'s), once its daemon has answered
    /// within `limit`: the error says what to start.
    fn ask(program: String, limit: Duration) -> anyhow::Result<Engine> {
        let mut engine = Engine { program, server: String::new() };
        let output = engine.output(argv::version(), limit)?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            let fix = match said.contains("permission denied") {
                true => "let this account use it (`sudo usermod -aG docker $USER`, then log in again)",
                false => "start it (`sudo systemctl start docker`, or `sudo dockerd &` where there is no systemd)",
            };
            bail!("the container engine's daemon does not answer `{} version` ({said}): {fix}", engine.program);
        }
        engine.server = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Ok(engine)
    }

    /// The command line of `service`'s container in the foreground
    /// (`argv::run`): what the supervisor spawns, in its own process group.
    pub fn run_argv(&self, id: &Identity, service: &str, spec: &RunSpec) -> Vec<String> {
        self.argv(argv::run(id, service, spec))
    }

    /// The whole command line of `args` (from `argv`): the program first.
    pub(super) fn argv(&self, args: Vec<String>) -> Vec<String> {
        [vec![self.program.clone()], args].concat()
    }

    /// Every container all of `filters` (`Identity::filter`, `label=k=v`) match, running or not.
    pub fn list(&self, filters: &[String]) -> anyhow::Result<Vec<Container>> {
        let text = self
            .checked(argv::list(filters), ANSWER_LIMIT)
            .with_context(|| format!("docker ps -a --filter {}", filters.join(" --filter ")))?;
        listing::containers(&text)
    }

    /// Every host port a running container publishes: busy, even where a
    /// bind would succeed (no process of the daemon's need hold the socket).
    pub fn published(&self) -> anyhow::Result<BTreeSet<u16>> {
        Ok(self.running()?.iter().flat_map(Container::host_ports).collect())
    }

    /// The running containers that publish host port `port`, on any address:
    /// who holds it, where the socket's holder is the engine's proxy or
    /// its daemon.
    pub fn publishing(&self, port: u16) -> anyhow::Result<Vec<Container>> {
        Ok(self.running()?.into_iter().filter(|c| c.host_ports().contains(&port)).collect())
    }

    fn running(&self) -> anyhow::Result<Vec<Container>> {
        let text = self.checked(argv::running(), ANSWER_LIMIT).context("docker ps")?;
        listing::containers(&text)
    }

    /// Stops container `name`: TERM, KILL after `grace`, or at once when
    /// `hurry` comes on meanwhile (a second Ctrl-C). Whether it was there:
    /// one that is gone already is stopped.
    pub fn stop(&self, name: &str, grace: Duration, hurry: &Hurry) -> anyhow::Result<bool> {
        let grace = if hurry.is_on() { Duration::ZERO } else { grace };
        let output = std::thread::scope(|scope| {
            let stopping = scope.spawn(|| self.output(argv::stop(name, grace), grace + ANSWER_LIMIT));
            if !wait_until(grace + ANSWER_LIMIT, || stopping.is_finished() || hurry.is_on()) || hurry.is_on() {
                let _ = self.output(argv::kill(name), ANSWER_LIMIT);
            }
            stopping.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        let said = String::from_utf8_lossy(&output.stderr);
        if output.status.success() || said.contains("No such container") {
            return Ok(output.status.success());
        }
        bail!("docker stop {name}: {}", said.trim())
    }

    /// Removes containers, running or not; those gone already, or going
    /// (`--rm` removes a stopped one meanwhile), are removed.
    pub fn remove(&self, ids: &[String]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let output = self.output(argv::remove(ids), ANSWER_LIMIT)?;
        let said = String::from_utf8_lossy(&output.stderr);
        let gone = |line: &str| line.contains("No such container") || line.contains("is already in progress");
        if !output.status.success() && !said.lines().filter(|l| !l.trim().is_empty()).all(gone) {
            bail!("docker rm -f {}: {}", ids.join(" "), said.trim());
        }
        Ok(())
    }

    /// Removes the containers `filter` matches, running or not, but those
    /// `keep` keeps: what a runner killed with its services left. Returns them.
    pub fn clean(&self, filter: &str, keep: impl Fn(&Container) -> bool) -> anyhow::Result<Vec<Container>> {
        let found: Vec<Container> = self.list(&[filter.to_owned()])?.into_iter().filter(|c| !keep(c)).collect();
        self.remove(&found.iter().map(|c| c.id.clone()).collect::<Vec<_>>())?;
        Ok(found)
    }

    /// Removes the networks `filter` matches that no container uses.
    pub fn prune_networks(&self, filter: &str) -> anyhow::Result<()> {
        self.checked(argv::prune_networks(filter), ANSWER_LIMIT)
            .with_context(|| format!("docker network prune --filter {filter}"))?;
        Ok(())
    }

    /// The health of container `name`, and its addresses.
    pub fn inspect(&self, name: &str) -> anyhow::Result<Inspected> {
        let text = self.checked(argv::inspect(name), ANSWER_LIMIT).with_context(|| format!("docker inspect {name}"))?;
        listing::inspected(&text)
    }

    /// Compose, for services of a compose file: `docker compose` (v2, a
    /// plugin of the CLI) when it answers, else `docker-compose` (v1, which
    /// Debian 12 ships) from `path`. Not run to check it: v1 takes seconds
    /// to start.
    pub fn compose(&self, path: &OsStr) -> anyhow::Result<Compose> {
        let plugin = self.output(vec!["compose".into(), "version".into()], ANSWER_LIMIT);
        // (No plugin, or none that answers: either way, v1 is the one to try.)
        if plugin.is_ok_and(|o| o.status.success()) {
            return Ok(Compose::Plugin(self.program.clone()));
        }
        match find_program("docker-compose", path).map(|p| p.into_os_string().into_string()) {
            Some(Ok(program)) => Ok(Compose::Standalone(program)),
            _ => bail!(
                "compose services need Docker Compose: neither `{} compose` nor `docker-compose` is there: install it \
                 (`sudo apt-get install docker-compose`, or Docker's docker-compose-plugin)",
                self.program
            ),
        }
    }

    /// Runs `args` and returns its stdout; a failure is an error with what it said.
    pub(super) fn checked(&self, args: Vec<String>, limit: Duration) -> anyhow::Result<String> {
        let output = self.output(args, limit)?;
        if !output.status.success() {
            bail!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `args` (from `argv`: their first word is the command's verb).
    fn output(&self, args: Vec<String>, limit: Duration) -> anyhow::Result<Output> {
        let what = format!("{} {}", self.program, args.first().map_or("", String::as_str));
        output_within(&self.argv(args), limit, &what)
    }
}

/// Whether `command`, a process holding a port, is the engine's own: its
/// proxy for a port a container publishes (`docker-proxy`, root's), or its
/// daemon, which holds the port itself when the proxy is off; a rootless
/// engine's port forwarder (rootless Docker's and podman's: the user's own,
/// and killing it would cut every container off). It stands for a
/// container, and is never signalled.
pub fn is_engine_process(command: &str) -> bool {
    let program = command.split_whitespace().next().unwrap_or_default();
    matches!(
        program.rsplit('/').next(),
        Some("docker-proxy" | "dockerd" | "rootlessport" | "rootlesskit" | "slirp4netns" | "pasta")
    )
}

/// Runs `argv` to its end, stdin empty, its output captured, in a process
/// group of its own. Past `limit`, `what` (the command, as the error names
/// it) is taken to hang on the daemon: the group is killed (a CLI plugin
/// such as `docker compose` is a child of the client) and reaped.
pub(super) fn output_within(argv: &[String], limit: Duration, what: &str) -> anyhow::Result<Output> {
    let (program, args) = argv.split_first().expect("a command line has a program");
    let handle = duct::cmd(program, args)
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .before_spawn(|command| {
            command.process_group(0);
            Ok(())
        })
        .start()
        .with_context(|| format!("running {program}"))?;
    if let Some(output) = handle.wait_timeout(limit).with_context(|| format!("running {program}"))? {
        return Ok(output.clone());
    }
    for pid in handle.pids() {
        let group = rustix::process::Pid::from_raw(pid as i32).expect("a child's pid is positive");
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    let _ = handle.wait();
    bail!(
        "`{what}` did not finish within {} s: the container engine's daemon may be hung: restart it",
        limit.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_own_processes() {
        let proxy = "/usr/sbin/docker-proxy -proto tcp -host-ip 127.0.0.1 -host-port 18080 -container-ip 172.17.0.2";
        let forwarders =
            ["rootlessport", "/usr/bin/rootlesskit --net=slirp4netns dockerd", "slirp4netns -c 1", "pasta"];
        for (command, engine) in [(proxy, true), ("dockerd", true), ("/usr/bin/dockerd -H fd://", true)]
            .into_iter()
            .chain(forwarders.map(|f| (f, true)))
        {
            assert_eq!(is_engine_process(command), engine, "{command}");
        }
        for command in ["docker run --rm web", "python3 -m http.server", "my-dockerd-wrapper", ""] {
            assert!(!is_engine_process(command), "{command}");
        }
    }

    #[test]
    fn a_missing_engine_says_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let not_program = empty.path().join("docker");
        std::fs::write(&not_program, "").unwrap(); // not executable
        let rows = [
            ("docker", "`docker`, which is not in PATH: install Docker (`sudo apt-get install docker.io`)".to_owned()),
            ("podman", "`podman`, which is not in PATH: install it".into()),
            (
                not_program.to_str().unwrap(),
                format!("`{}`, which is not an executable file: install it", not_program.display()),
            ),
        ];
        for (program, want) in rows {
            let error = Engine::find(program, empty.path().as_os_str()).unwrap_err();
            assert_eq!(format!("{error:#}"), format!("container services need {want}"));
        }
    }
}
