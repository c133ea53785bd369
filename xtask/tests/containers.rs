//! Services in containers (ARCHITECTURE.md, "Containers"), through the real
//! binary and a real Docker daemon, on images the harness builds from the
//! static busybox (no registry is reachable: nothing is pulled). They need
//! the daemon, so plain `cargo test` leaves them out; `cargo xtask test`
//! runs them, and `.ci/run` starts a daemon for it. Every checkout's
//! containers go with it (its drop runs `stop`, which removes them by
//! label); a test's own containers go with their guards.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use harness::images::{self, HTTPD, HTTPD_HEALTHY, INSIDE_PORT, PAGE, page};
use harness::*;

/// The runner under test, as cargo built it for these tests.
const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// Runs `docker args` and returns what it printed; it must succeed.
fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).stdin(Stdio::null()).output().unwrap();
    assert!(output.status.success(), "docker {args:?}: {}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The containers of checkout `c`, by its label, running or not: name and state.
fn containers_of(c: &Checkout) -> BTreeMap<String, String> {
    let filter = format!("label=dev.xtask.checkout={}", c.dir.path().display());
    let listed = docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}} {{.State}}"]);
    listed.lines().filter_map(|l| l.split_once(' ')).map(|(n, s)| (n.to_owned(), s.to_owned())).collect()
}

/// A container of the test's own, removed when dropped (a failed test too).
struct Foreign(String);

impl Foreign {
    /// `HTTPD`'s server named `name`, published on 127.0.0.1:`port`, with `labels`.
    fn run(name: &str, port: u16, labels: &[String]) -> Foreign {
        let foreign = Foreign(name.to_owned());
        let publish = format!("127.0.0.1:{port}:{INSIDE_PORT}");
        let labels = labels.iter().flat_map(|l| ["--label", l.as_str()]);
        let args: Vec<&str> = ["run", "-d", "--name", &foreign.0, "-p", &publish].into_iter().chain(labels).collect();
        docker(&[&args[..], &[HTTPD]].concat());
        assert!(wait_for(LONG, || page(port).is_some()), "the container {} does not serve", foreign.0);
        foreign
    }

    fn state(&self) -> String {
        docker(&["inspect", "--format", "{{.State.Status}}", &self.0]).trim().to_owned()
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// A service of the image `HTTPD` on `port`, serving `PAGE` from its port 8080.
fn image_service(name: &str, port: u16, extra: &str) -> String {
    service_of(HTTPD, name, port, extra)
}

/// A service of `image` on `port`, whose server listens on its port 8080.
fn service_of(image: &str, name: &str, port: u16, extra: &str) -> String {
    format!(
        "[services.{name}]\nport = {port}\nimage = \"{image}\"\ncontainer_port = {INSIDE_PORT}\n\
         url = \"http://127.0.0.1:{{port}}\"\nstop_grace = 1\n{extra}\n"
    )
}

/// A checkout of `ports_toml`, once the images are built.
fn checkout(ports_toml: &str) -> Checkout {
    images::build();
    Checkout::new(XTASK, ports_toml)
}

/// A host service that, as it starts, fetches the URL `.env.runtime` gives
/// `web` into the file `fetched`, then serves.
const FETCHER: &str = "[services.app]\nport = {port}\ndepends_on = [\"web\"]\ncommand = [\"python3\", \"-c\", \
    \"import os, urllib.request, http.server\\n\
    open('fetched', 'w').write(urllib.request.urlopen(os.environ['WEB_URL']).read().decode())\\n\
    http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), http.server.SimpleHTTPRequestHandler).serve_forever()\"]\n";

#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn an_image_service_is_reached_by_a_host_service_through_its_url() {
    let base = free_ports(10);
    let says = "args = [\"/bin/sh\", \"-c\", \"echo serving from a container; exec /bin/httpd -f -p 8080 -h /www\"]";
    let fetcher = FETCHER.replace("{port}", &(base + 5).to_string());
    let c = checkout(&format!("{}{fetcher}", image_service("web", base, says)));
    let out = c.ok(&["start"]);
    assert!(out.contains("✓ 2 services ready"), "{out}");
    assert_eq!(c.read("fetched").as_deref(), Some(PAGE), "{out}");
    let name = containers_of(&c).into_keys().next().expect("no container of the checkout");
    assert_eq!(containers_of(&c), BTreeMap::from([(name.clone(), "running".to_owned())]));
    assert_eq!(
        c.read(".env.runtime").unwrap().lines().find(|l| l.starts_with("WEB_URL")),
        Some(&*format!("WEB_URL=http://127.0.0.1:{base}"))
    );
    let status = c.ok(&["status"]);
    assert!(status.contains(&format!("Web (port {base}): ✓ Running (pid ")), "{status}");
    assert!(status.contains(&format!(", container {name})")) && status.contains("healthy"), "{status}");
    // What the container says is the service's log.
    let logs = c.ok(&["logs", "web"]);
    assert!(logs.contains("serving from a container"), "{logs}");
    // Stopped through the engine, on its own: a stop of everything would
    // also remove the checkout's containers by their label.
    let (processes, stopped) = (service_processes(&c), c.ok(&["stop", "web"]));
    assert!(stopped.contains("web | stopped"), "{stopped}");
    assert_eq!(containers_of(&c), BTreeMap::new(), "the container is left:\n{stopped}");
    assert_all_gone(&c, &processes, &[base, base + 5]);
}

#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn a_held_preferred_port_moves_the_container_and_env_runtime_follows() {
    let base = free_ports(10);
    let c = checkout(&image_service("web", base, ""));
    let _squatter = Squatter::start(base, "127.0.0.1", None);
    let out = c.ok(&["start", "--no-kill"]);
    assert!(out.contains(&format!("web: port {base} is held by pid ")), "{out}");
    assert_eq!(c.ports()["web"], base + 1);
    assert!(c.read(".env.runtime").unwrap().contains(&format!("WEB_PORT={}\n", base + 1)));
    assert_eq!(page(base + 1).as_deref(), Some(PAGE));
    let published = docker(&["ps", "--filter", &format!("publish={}", base + 1), "--format", "{{.Names}}"]);
    assert_eq!(published.lines().collect::<Vec<_>>(), containers_of(&c).keys().map(String::as_str).collect::<Vec<_>>());
}

#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn two_checkouts_at_once_get_disjoint_ports_and_containers_of_their_own() {
    let base = free_ports(10);
    let state = tempfile::tempdir().unwrap();
    images::build();
    let (a, b) = (
        Checkout::sharing(XTASK, &image_service("web", base, ""), state.path()),
        Checkout::sharing(XTASK, &image_service("web", base, ""), state.path()),
    );
    a.ok(&["start"]);
    b.ok(&["start"]);
    let (port_a, port_b) = (a.ports()["web"], b.ports()["web"]);
    assert_ne!(port_a, port_b);
    let (names_a, names_b) = (containers_of(&a), containers_of(&b));
    assert_eq!((names_a.len(), names_b.len()), (1, 1), "{names_a:?} {names_b:?}");
    assert_ne!(names_a.keys().next(), names_b.keys().next());
    assert_eq!((page(port_a).as_deref(), page(port_b).as_deref()), (Some(PAGE), Some(PAGE)));
    // A stop of everything in one leaves the other's.
    a.ok(&["stop"]);
    assert_eq!(containers_of(&a), BTreeMap::new());
    assert_eq!(containers_of(&b), names_b);
    assert_eq!(page(port_b).as_deref(), Some(PAGE));
}

/// The compose file's port is `.env.runtime`'s, whatever the environment
/// the runner was started in says of the same variable.
#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn a_compose_service_runs_on_its_interpolated_port() {
    let base = free_ports(10);
    let c = checkout(&format!(
        "[services.web]\nport = {base}\ncompose = {{ file = \"compose.yaml\", service = \"site\" }}\nstop_grace = 1\n"
    ));
    let yaml =
        format!("services:\n  site:\n    image: {HTTPD}\n    ports: [\"127.0.0.1:${{WEB_PORT:?}}:{INSIDE_PORT}\"]\n");
    std::fs::write(c.path("compose.yaml"), yaml).unwrap();
    let _squatter = Squatter::start(base, "127.0.0.1", None);
    let output = c.command(&["start", "--no-kill"]).env("WEB_PORT", base.to_string()).output().unwrap();
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert_eq!(c.ports()["web"], base + 1, "{out}");
    assert_eq!(page(base + 1).as_deref(), Some(PAGE), "{out}");
    let publishing = format!("publish={}", base + 1);
    let listed = docker(&["ps", "--filter", &publishing, "--format", "{{.Label \"com.docker.compose.project\"}}"]);
    let project = listed.trim().to_owned();
    assert!(project.starts_with("xtask-"), "not the checkout's project: {listed}");
    let stopped = c.ok(&["stop"]);
    assert!(stopped.contains("web | stopped"), "{stopped}");
    let filter = format!("label=com.docker.compose.project={project}");
    assert_eq!(docker(&["ps", "-a", "-q", "--filter", &filter]), "", "its container is left");
    assert_eq!(docker(&["network", "ls", "-q", "--filter", &filter]), "", "its network is left");
}

/// dev's guard stops dev's containers when dev is killed; killed too, it
/// leaves them (and a client killed as it started leaves one created): the
/// next command removes them, by label, before it starts anything, and
/// leaves another checkout's.
#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn after_the_runner_and_its_guard_are_killed_the_next_command_removes_their_containers() {
    let base = free_ports(20);
    let c = checkout(&format!("{}{}", image_service("web", base, ""), image_service("api", base + 1, "")));
    let other = checkout(&image_service("web", base + 10, ""));
    other.ok(&["start"]);
    let others = docker(&["ps", "-q", "--filter", &format!("label=dev.xtask.checkout={}", other.dir.path().display())]);
    let (mut dev, _) = spawn_dev(&c, &[]);
    wait_running(&c, 2);
    let guard = processes_with("guard").into_iter().find(|(_, cmd)| cmd.contains(&format!(" {} ", dev.id())));
    let (guard, _) = guard.expect("dev's guard");
    let web_client = c.pid_of("web").unwrap();
    for pid in [guard, web_client] {
        Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    }
    dev.kill().unwrap();
    dev.wait().unwrap();
    // What a client killed while starting leaves: a container created, not started.
    let labels = [format!("dev.xtask.checkout={}", c.dir.path().display()), "dev.xtask.service=api".into()];
    let created = format!("xtask-left-{base}");
    docker(&["create", "--name", &created, "--label", &labels[0], "--label", &labels[1], HTTPD]);
    let left = containers_of(&c);
    assert_eq!(left.values().filter(|s| *s == "running").count(), 2, "{left:?}");
    assert!(page(base).is_some() && page(base + 1).is_some(), "the containers stopped with their clients");

    let out = c.ok(&["start"]);
    assert!(
        out.contains(&format!("api: removed its container {created} (created), left by a runner that was killed")),
        "{out}"
    );
    assert!(out.contains("web: stopped what it left running"), "{out}");
    assert!(out.contains("api: stopping the leftover of a runner that was killed"), "{out}");
    // As many containers as services, each running, each new.
    let now = containers_of(&c);
    assert_eq!(now.values().collect::<Vec<_>>(), ["running", "running"], "{now:?}");
    assert!(!now.contains_key(&created));
    assert_eq!(c.ports(), BTreeMap::from([("api".into(), base + 1), ("web".into(), base)]), "{out}");
    let still = docker(&["ps", "-q", "--filter", &format!("label=dev.xtask.checkout={}", other.dir.path().display())]);
    assert_eq!(
        (still.trim(), page(base + 10).as_deref()),
        (others.trim(), Some(PAGE)),
        "the other checkout's was touched"
    );
}

#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn a_foreign_container_on_the_preferred_port_is_stopped_only_after_a_yes() {
    let base = free_ports(10);
    let c = checkout(&image_service("web", base, ""));
    let foreign = Foreign::run(&format!("xtask-test-foreign-{base}"), base, &[]);
    let held = format!("web: port {base} is held by container {} (image {HTTPD}); not stopping it", foreign.0);
    // Not at a terminal (the force of a non-interactive run), and with --no-kill: it moves.
    for (args, why) in
        [(&["start"][..], "a container is stopped only when you say yes"), (&["start", "--no-kill"], "--no-kill")]
    {
        let out = c.ok(args);
        assert!(out.contains(&format!("{held}: {why}")), "{out}");
        assert_eq!((c.ports()["web"], foreign.state()), (base + 1, "running".to_owned()), "{out}");
        c.ok(&["stop"]);
        c.ok(&["ports", "reset"]); // from the preferred port again
    }
    let (ok, out) = run_in_terminal(&c, "start", "n\n", &[]);
    assert!(
        ok && out.contains(&format!("Stop container {} (image {HTTPD}) to free port {base}? [y/N]", foreign.0)),
        "{out}"
    );
    assert_eq!((c.ports()["web"], foreign.state()), (base + 1, "running".to_owned()), "{out}");
    c.ok(&["stop"]);
    c.ok(&["ports", "reset"]);
    let (ok, out) = run_in_terminal(&c, "start", "y\n", &[]);
    assert!(
        ok && out.contains(&format!("web: stopped container {} (image {HTTPD}) to free port {base}", foreign.0)),
        "{out}"
    );
    // Stopped, not removed: it is not the runner's.
    assert_eq!((c.ports()["web"], foreign.state()), (base, "exited".to_owned()), "{out}");
    assert_eq!(page(base).as_deref(), Some(PAGE));
}

/// Another checkout's container (its registry lost it, or never had it)
/// is never touched, even when the runner may kill: the service moves.
#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn another_checkouts_container_is_never_stopped() {
    let base = free_ports(10);
    let (c, other) = (checkout(&image_service("web", base, "")), checkout(&image_service("web", base, "")));
    other.ok(&["start"]);
    let theirs = containers_of(&other).into_keys().next().expect("the other checkout's container");
    let out = c.ok(&["start"]);
    let why = format!("not stopping it: it is a service of the checkout {}", other.dir.path().display());
    assert!(out.contains(&format!("web: port {base} is held by container {theirs} (image {HTTPD}); {why}")), "{out}");
    assert_eq!(c.ports()["web"], base + 1);
    assert_eq!(containers_of(&other), BTreeMap::from([(theirs, "running".to_owned())]));
}

/// A container of the very name this checkout gives its service (two
/// roots whose names' hashes met), but another checkout's or nobody's: the
/// service cannot start, and the container is neither stopped nor removed,
/// by the start that failed or by a stop.
#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn a_container_of_our_name_but_not_ours_is_never_touched() {
    let base = free_ports(10);
    let c = checkout(&image_service("web", base, ""));
    c.ok(&["start"]);
    let name = containers_of(&c).into_keys().next().expect("the checkout's container");
    c.ok(&["stop"]);
    for labels in [vec![format!("dev.xtask.checkout={}/elsewhere", c.dir.path().display())], vec![]] {
        let theirs = Foreign::run(&name, base + 5, &labels);
        let output = c.command(&["start"]).output().unwrap();
        let out = text(&output);
        assert!(!output.status.success(), "{out}");
        assert_eq!(theirs.state(), "running", "{labels:?}: {out}");
        c.ok(&["stop"]);
        assert_eq!(theirs.state(), "running", "{labels:?}: removed by a stop");
        assert_eq!(page(base + 5).as_deref(), Some(PAGE));
    }
}

/// A daemon that accepts and never answers (its socket's listener does not
/// accept: the kernel does), for as long as it is kept.
struct Hung {
    dir: tempfile::TempDir,
    _listening: std::os::unix::net::UnixListener,
}

impl Hung {
    fn new() -> Hung {
        let dir = tempfile::tempdir().unwrap();
        let _listening = std::os::unix::net::UnixListener::bind(dir.path().join("hung.sock")).unwrap();
        Hung { dir, _listening }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("hung.sock").display())
    }
}

/// With a daemon that does not answer, a stop of services of which one is
/// in a container, or a start of the other after dev and its guard were killed, is
/// refused with the daemon's error before anything is stopped:
/// the host service runs on.
#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn a_silent_daemon_is_refused_before_any_service_is_stopped() {
    let base = free_ports(10);
    let c = checkout(&format!("{}{}", image_service("web", base, ""), http_service("api", base + 1, "")));
    let hung = Hung::new();
    let refused = |args: &[&str]| {
        let output = c.command(args).env("DOCKER_HOST", hung.host()).output().unwrap();
        let out = text(&output);
        assert!(!output.status.success(), "{args:?}: {out}");
        assert!(out.contains("web runs in a container: nothing was stopped"), "{args:?}: {out}");
        assert!(out.contains("the container engine's daemon may be hung"), "{args:?}: {out}");
        assert!(!out.contains("stop them as the user"), "{args:?}: {out}");
        out
    };

    c.ok(&["start"]);
    let api = c.pid_of("api").unwrap();
    let out = refused(&["stop"]);
    assert!(alive(api) && answers(base + 1), "api was stopped:\n{out}");
    assert_eq!(page(base).as_deref(), Some(PAGE), "{out}");
    c.ok(&["stop"]);

    // dev and its guard killed: their services are leftovers.
    let (mut dev, _) = spawn_dev(&c, &[]);
    wait_running(&c, 2);
    let guard = processes_with("guard").into_iter().find(|(_, cmd)| cmd.contains(&format!(" {} ", dev.id())));
    let (guard, _) = guard.expect("dev's guard");
    Command::new("kill").args(["-KILL", &guard.to_string()]).status().unwrap();
    dev.kill().unwrap();
    dev.wait().unwrap();
    let api = c.pid_of("api").unwrap();
    // (A start of web would need the daemon anyway: api alone.)
    let out = refused(&["start", "api"]);
    assert!(alive(api) && answers(base + 1), "api was stopped:\n{out}");
}

/// A start called off while the engine creates the container: the client
/// is stopped before the container exists, which it asks for meanwhile.
/// Here a `docker` first on the runner's path makes that certain: its
/// `run` (the client) ignores TERM and waits a second before it runs the
/// real one; anything else goes to the real one at once. The stop finds
/// the container once the client's group is gone, and removes it.
#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn a_container_created_while_its_client_is_stopped_is_removed_too() {
    let base = free_ports(10);
    let c = checkout(&format!(
        "[services.web]\nport = {base}\nimage = \"{HTTPD}\"\ncontainer_port = {INSIDE_PORT}\nstop_grace = 5\n"
    ));
    let real = Command::new("sh").args(["-c", "command -v docker"]).output().unwrap();
    let real = String::from_utf8(real.stdout).unwrap().trim().to_owned();
    let bin = c.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let wrapper = format!("#!/bin/sh\nif [ \"$1\" = run ]; then trap '' TERM; sleep 1; fi\nexec {real} \"$@\"\n");
    write_program(&bin.join("docker"), &wrapper);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = std::fs::File::create(c.path("dev.out")).unwrap();
    let mut dev = c.command(&["dev"]).env("PATH", path).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
    let starting = || c.read("dev.out").is_some_and(|out| out.contains("starting container"));
    assert!(wait_for(LONG, starting), "{}", c.read("dev.out").unwrap_or_default());
    Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    dev.wait().unwrap();
    let said = c.read("dev.out").unwrap_or_default();
    assert_eq!(containers_of(&c), BTreeMap::new(), "a container outlived the stop:\n{said}");
    assert!(!answers(base), "port {base} still answers:\n{said}");
}

/// A userland proxy accepts a connection before anything inside listens:
/// ready waits for the server; in an image with a health check, for its
/// health, whatever answers before.
#[test]
#[ignore = "needs a Docker daemon: cargo xtask test runs it"]
fn ready_means_the_server_inside_answers() {
    let base = free_ports(10);
    // Its server listens 2 s after the container starts.
    let late = "args = [\"/bin/sh\", \"-c\", \"sleep 2; exec /bin/httpd -f -p 8080 -h /www\"]";
    // Its server answers at once, with no page (404), which its health
    // check fetches; 2 s later it has the page.
    let unhealthy = "/bin/httpd -f -p 8080 -h /bin & sleep 2; kill $!; wait; exec /bin/httpd -f -p 8080 -h /www";
    let unhealthy = format!("args = [\"/bin/sh\", \"-c\", \"{unhealthy}\"]");
    let c = checkout(&format!(
        "{}{}",
        image_service("plain", base, late),
        service_of(HTTPD_HEALTHY, "checked", base + 1, &unhealthy)
    ));
    for service in ["plain", "checked"] {
        c.ok(&["start", service]);
        let port = c.ports()[service];
        assert_eq!(page(port).as_deref(), Some(PAGE), "{service} was ready before its server");
    }
}

/// Bad input changes nothing: neither a squatter a forced start would
/// kill, nor a file.
#[test]
#[ignore = "needs the docker client: cargo xtask test runs it"]
fn a_missing_engine_or_a_silent_daemon_is_refused_before_anything_changes() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &format!("{}{}", image_service("web", base, ""), http_service("app", base + 1, "")));
    let squatter = Squatter::start(base + 1, "127.0.0.1", None);
    // A PATH with what the host service needs, and no docker.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/usr/bin/python3", bin.path().join("python3")).unwrap();
    let no_engine = c.command(&["start"]).env("PATH", bin.path()).output().unwrap();
    let silent = c
        .command(&["start"])
        .env("DOCKER_HOST", format!("unix://{}/none.sock", bin.path().display()))
        .output()
        .unwrap();
    for (output, said) in [
        (
            no_engine,
            "container services need `docker`, which is not in PATH: install Docker (`sudo apt-get install docker.io`)",
        ),
        (silent, "the container engine's daemon does not answer"),
    ] {
        let out = text(&output);
        assert!(!output.status.success() && out.contains(said), "{out}");
        assert!(alive(squatter.pid()), "the squatter was killed:\n{out}");
        for file in [".ports.json", ".env.runtime", ".pids/web.json", ".pids/app.json"] {
            assert!(c.read(file).is_none(), "{file} was written:\n{out}");
        }
    }
}
