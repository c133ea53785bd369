//! Tests with real containers, on images built by the harness. They need a
//! Docker daemon, so plain `cargo test` leaves them out (`#[ignore]`);
//! `cargo xtask test` runs them, and `.ci/run` starts a daemon for it.
//! Without one they fail, saying so. Each test is a checkout of its own (a
//! temporary folder), whose containers go by label however it ends.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use harness::images::{self, HTTPD, HTTPD_HEALTHY, INSIDE_PORT, PAGE, page};
use harness::{free_ports, processes_with, wait_for, write_program};
use rustix::process::{Pid, Signal};

use super::{Backing, ComposeFile, Container, Engine, Health, Identity, Owner, RunSpec, Which, argv};
use crate::system::process::Hurry;

/// Long enough for anything the daemon does here, however loaded the machine.
const LIMIT: Duration = Duration::from_secs(60);

/// A checkout of the test's own, and the engine.
struct Scratch {
    dir: tempfile::TempDir,
    id: Identity,
    engine: Engine,
}

impl Scratch {
    fn new() -> Scratch {
        let engine = Engine::find("docker", &path()).unwrap_or_else(|e| {
            panic!("this test needs a Docker daemon (`cargo xtask test` expects one; .ci/run starts it): {e:#}")
        });
        images::build();
        let dir = tempfile::tempdir().unwrap();
        Scratch { id: Identity::of(dir.path()), dir, engine }
    }

    fn spec(&self, port: u16) -> RunSpec {
        RunSpec { image: HTTPD.into(), port, container_port: INSIDE_PORT, ..Default::default() }
    }

    /// `docker run` of `service` in the foreground, as the supervisor runs it.
    fn run(&self, service: &str, spec: &RunSpec) -> Client {
        Client::spawn(
            &self.engine.run_argv(&self.id, service, spec),
            &self.dir.path().join(format!("{service}.log")),
            &[],
        )
    }

    /// The same, detached: for a container whose client does not matter.
    fn detached(&self, service: &str, spec: &RunSpec) {
        let mut argv = argv::run(&self.id, service, spec);
        argv.insert(1, "-d".into());
        self.engine.checked(argv, LIMIT).unwrap();
    }

    fn listed(&self) -> Vec<Container> {
        self.engine.list(&[self.id.filter()]).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.engine.clean(&self.id.filter(), |_| false);
        let _ = self.engine.clean(&self.id.project_filter(), |_| false);
    }
}

/// A client (`docker run`, compose `up`) in a process group of its own,
/// its output in a file; killed and reaped when dropped.
struct Client {
    child: Child,
    log: PathBuf,
}

impl Client {
    /// Runs `argv` without the variables `unset`.
    fn spawn(argv: &[String], log: &Path, unset: &[&str]) -> Client {
        let output = std::fs::File::create(log).unwrap();
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).process_group(0).stdin(Stdio::null());
        command.stdout(output.try_clone().unwrap()).stderr(output);
        for name in unset {
            command.env_remove(name);
        }
        Client { child: command.spawn().unwrap(), log: log.to_owned() }
    }

    fn said(&self) -> String {
        format!("the client said:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn signal(&self, signal: Signal) {
        rustix::process::kill_process(Pid::from_raw(self.child.id() as i32).unwrap(), signal).unwrap();
    }

    /// Waits until its container serves `PAGE` on `port`; fails at once if
    /// the client exits first.
    fn serves(&mut self, port: u16, limit: Duration) {
        let served = wait_for(limit, || page(port).is_some() || self.child.try_wait().unwrap().is_some());
        assert!(served && page(port).as_deref() == Some(PAGE), "no page on {port}; {}", self.said());
    }

    /// How it exited, if it did within `limit`.
    fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_for(limit, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process_group(Pid::from_raw(self.child.id() as i32).unwrap(), Signal::KILL);
        let _ = self.child.wait();
    }
}

/// A container with none of our labels, removed when dropped.
struct Foreign<'a>(&'a Engine, String);

impl Drop for Foreign<'_> {
    fn drop(&mut self) {
        let _ = self.0.checked(argv::remove(std::slice::from_ref(&self.1)), LIMIT);
    }
}

/// A container a failed test stops and removes (a compose project's network too).
struct Stopped<'a>(&'a Backing);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.stop(Duration::ZERO, &Hurry::default());
        }
    }
}

fn path() -> std::ffi::OsString {
    std::env::var_os("PATH").unwrap_or_default()
}

/// A program that runs the real docker client against the daemon `socket`,
/// as its child (as the CLI runs a plugin, `docker compose`).
fn client_of(dir: &Path, socket: &Path) -> String {
    let script = dir.join("docker");
    write_program(&script, &format!("#!/bin/sh\ndocker -H unix://{} \"$@\"\n", socket.display()));
    script.display().to_string()
}

#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn the_engine_answers() {
    let scratch = Scratch::new();
    assert!(!scratch.engine.server.is_empty(), "the daemon gave no version");
    scratch.engine.compose(&path()).unwrap();
}

#[test]
#[ignore = "needs the docker client: cargo xtask test runs it"]
fn a_daemon_that_is_not_there_is_to_be_started() {
    let dir = tempfile::tempdir().unwrap();
    let program = client_of(dir.path(), &dir.path().join("none.sock"));
    let error = format!("{:#}", Engine::find(&program, &path()).unwrap_err());
    assert!(
        error.starts_with(&format!("the container engine's daemon does not answer `{program} version`")),
        "{error}"
    );
    assert!(error.contains("Is the docker daemon running?"), "{error}");
    assert!(error.ends_with("start it (`sudo systemctl start docker`, or `sudo dockerd &` where there is no systemd)"));
}

/// A daemon that accepts connections and never answers: the client would wait forever.
#[test]
#[ignore = "needs the docker client: cargo xtask test runs it"]
fn a_hung_daemon_does_not_hang_the_runner() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hung.sock");
    let _listening = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let program = client_of(dir.path(), &socket);
    let (done, found) = std::sync::mpsc::channel();
    let asked = program.clone();
    std::thread::spawn(move || done.send(Engine::find_within(&asked, &path(), Duration::from_secs(1))));
    let found = found.recv_timeout(LIMIT).expect("the runner hangs with the daemon");
    let error = format!("{:#}", found.unwrap_err());
    let want = format!("`{program} version` did not finish within 1 s: the container engine's daemon may be hung");
    assert!(error.starts_with(&want), "{error}");
    assert_eq!(processes_with(&socket.display().to_string()), [], "the client was left running");
}

#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn a_container_runs_in_the_foreground_until_docker_stop() {
    let scratch = Scratch::new();
    let port = free_ports(1);
    let mut client = scratch.run("web", &scratch.spec(port));
    client.serves(port, LIMIT);
    let listed = scratch.listed();
    let name = scratch.id.container("web");
    assert_eq!(listed.iter().map(|c| (&c.name, c.state.as_str())).collect::<Vec<_>>(), [(&name, "running")]);
    assert_eq!(scratch.id.owner(&listed[0]), Owner::Ours("web".into()));
    assert_eq!(listed[0].ports, format!("127.0.0.1:{port}->{INSIDE_PORT}/tcp"));
    // httpd ignores TERM: the grace runs out, and the daemon KILLs it.
    scratch.engine.stop(&name, Duration::from_secs(1), &Hurry::default()).unwrap();
    let status = client.exited_within(LIMIT).unwrap_or_else(|| panic!("the client still runs; {}", client.said()));
    assert_eq!(status.code(), Some(137), "{}", client.said());
    assert!(wait_for(LIMIT, || scratch.listed().is_empty()), "--rm did not remove it: {:?}", scratch.listed());
    let again = scratch.engine.stop(&name, Duration::from_secs(1), &Hurry::default());
    again.expect("a container that is gone is stopped");
}

/// Only `docker stop` stops a container: a TERM to the client, which
/// the container's shell would act on at once, is not passed on.
#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn a_term_to_the_client_does_not_reach_the_container() {
    let scratch = Scratch::new();
    let port = free_ports(1);
    let serve = format!("trap 'exit 0' TERM; /bin/httpd -f -p {INSIDE_PORT} -h /www & wait");
    let spec = RunSpec { args: vec!["/bin/sh".into(), "-c".into(), serve], ..scratch.spec(port) };
    let mut client = scratch.run("web", &spec);
    client.serves(port, LIMIT);
    client.signal(Signal::TERM);
    let running = || scratch.listed().iter().any(|c| c.state == "running");
    assert!(!wait_for(Duration::from_secs(3), || !running()), "the TERM stopped it; {}", client.said());
    assert_eq!(page(port).as_deref(), Some(PAGE));
}

#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn a_killed_client_leaves_its_container_to_the_cleanup_by_label() {
    let (mine, theirs) = (Scratch::new(), Scratch::new());
    let port = free_ports(2);
    let mut client = mine.run("web", &mine.spec(port));
    client.serves(port, LIMIT);
    client.signal(Signal::KILL);
    client.exited_within(LIMIT).expect("a KILLed client exits");
    assert_eq!(page(port).as_deref(), Some(PAGE), "the container stopped with its client");
    // What a client killed while starting leaves: a container created, not started.
    let mut create = vec!["create".to_owned(), "--name".into(), mine.id.container("db")];
    create.extend(mine.id.labels("db").into_iter().flat_map(|label| ["--label".into(), label]));
    mine.engine.checked([create, vec![HTTPD.into()]].concat(), LIMIT).unwrap();
    theirs.detached("web", &theirs.spec(port + 1));

    let mut removed: Vec<_> =
        mine.engine.clean(&mine.id.filter(), |_| false).unwrap().into_iter().map(|c| c.name).collect();
    removed.sort();
    assert_eq!(removed, [mine.id.container("db"), mine.id.container("web")]);
    assert_eq!(mine.listed(), []);
    assert!(wait_for(LIMIT, || page(port).is_none()), "the removed container still serves");
    let left: Vec<_> = theirs.listed().into_iter().map(|c| (c.name, c.state)).collect();
    assert_eq!(left, [(theirs.id.container("web"), "running".to_owned())]);
    assert_eq!(page(port + 1).as_deref(), Some(PAGE));
}

#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn the_container_publishing_a_port_is_found_and_classified() {
    let (mine, theirs) = (Scratch::new(), Scratch::new());
    let port = free_ports(4);
    mine.detached("web", &mine.spec(port));
    theirs.detached("api", &theirs.spec(port + 1));
    let foreign = Foreign(&mine.engine, format!("xtask-test-foreign-{}", mine.id.project()));
    let publish = format!("127.0.0.1:{}:{INSIDE_PORT}", port + 2);
    let run = ["run", "-d", "--name", &foreign.1, "-p", &publish, HTTPD].map(str::to_owned);
    mine.engine.checked(run.to_vec(), LIMIT).unwrap();

    let holders = |port| -> Vec<(String, String, Owner)> {
        let found = mine.engine.publishing(port).unwrap();
        found.iter().map(|c| (c.name.clone(), c.image.clone(), mine.id.owner(c))).collect()
    };
    let theirs_root = theirs.dir.path().display().to_string();
    assert_eq!(holders(port), [(mine.id.container("web"), HTTPD.into(), Owner::Ours("web".into()))]);
    assert_eq!(holders(port + 1), [(theirs.id.container("api"), HTTPD.into(), Owner::OtherCheckout(theirs_root))]);
    assert_eq!(holders(port + 2), [(foreign.1.clone(), HTTPD.into(), Owner::Foreign)]);
    assert_eq!(holders(port + 3), []);
}

#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn health_with_and_without_a_check() {
    let scratch = Scratch::new();
    let port = free_ports(3);
    scratch.detached("plain", &scratch.spec(port));
    scratch.detached("checked", &RunSpec { image: HTTPD_HEALTHY.into(), ..scratch.spec(port + 1) });
    // Its server listens on another port than the one its check fetches.
    let elsewhere = ["/bin/httpd", "-f", "-p", "8081", "-h", "/www"].map(str::to_owned).to_vec();
    scratch.detached("failing", &RunSpec { image: HTTPD_HEALTHY.into(), args: elsewhere, ..scratch.spec(port + 2) });

    let health = |service| scratch.engine.inspect(&scratch.id.container(service)).unwrap().health;
    assert_eq!(health("plain"), Health::None);
    assert!(matches!(health("checked"), Health::Starting | Health::Healthy), "{:?}", health("checked"));
    assert!(wait_for(LIMIT, || health("checked") == Health::Healthy), "{:?}", health("checked"));
    assert!(wait_for(LIMIT, || health("failing") != Health::Starting), "{:?}", health("failing"));
    let Health::Unhealthy(said) = health("failing") else { panic!("{:?}", health("failing")) };
    assert!(said.starts_with("wget: can't connect to remote host"), "{said}");
    let addresses = scratch.engine.inspect(&scratch.id.container("plain")).unwrap().addresses;
    assert!(matches!(addresses[..], [std::net::IpAddr::V4(_)]), "{addresses:?}");
    let error = format!("{:#}", scratch.engine.inspect(&scratch.id.container("none")).unwrap_err());
    assert!(error.contains("No such object"), "{error}");
}

/// The compose file's port comes from the env file (none in the
/// environment), under the checkout's project, whose name compose keeps;
/// the container is stopped and removed through the engine, and the
/// project's network with it.
#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn compose_runs_a_service_on_the_port_of_its_env_file() {
    let scratch = Scratch::new();
    let port = free_ports(1);
    let compose = scratch.engine.compose(&path()).unwrap();
    let file = ComposeFile {
        project: scratch.id.project().into(),
        file: scratch.dir.path().join("compose.yaml"),
        env_file: scratch.dir.path().join(".env.runtime"),
    };
    let yaml = format!(
        "services:\n  web:\n    image: {HTTPD}\n    ports: [\"127.0.0.1:${{WEB_PORT:?from the env file}}:{INSIDE_PORT}\"]\n"
    );
    std::fs::write(&file.file, yaml).unwrap();
    std::fs::write(&file.env_file, format!("WEB_PORT={port}\n")).unwrap();
    let mut client = Client::spawn(&compose.up(&file, "web"), &scratch.dir.path().join("up.log"), &["WEB_PORT"]);
    let project = scratch.id.project().to_owned();
    let backing = Backing {
        engine: scratch.engine.program().to_owned(),
        container: Which::Compose { project, service: "web".into() },
    };
    let _failed = Stopped(&backing);
    // Compose v1 takes seconds to start, and more on a cold machine.
    client.serves(port, Duration::from_secs(180));
    let listed = scratch.engine.list(&[scratch.id.project_filter()]).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(scratch.id.owner(&listed[0]), Owner::OursInCompose("web".into()));
    let other = Identity::of(&scratch.dir.path().join("elsewhere"));
    assert_eq!(other.owner(&listed[0]), Owner::OtherCheckout(scratch.id.project().into()));

    assert!(backing.stop(Duration::from_secs(1), &Hurry::default()).unwrap(), "it was not running");
    client
        .exited_within(LIMIT)
        .unwrap_or_else(|| panic!("up still runs after its container stopped; {}", client.said()));
    assert_eq!(scratch.engine.list(&[scratch.id.project_filter()]).unwrap(), []);
    let networks = scratch
        .engine
        .checked(
            ["network", "ls", "-q", "--filter", &format!("label=com.docker.compose.project={}", scratch.id.project())]
                .map(str::to_owned)
                .to_vec(),
            LIMIT,
        )
        .unwrap();
    assert_eq!(networks, "", "the project's network is left");
}
