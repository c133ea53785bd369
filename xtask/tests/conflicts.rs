//! Who holds a service's preferred port, and what the runner may do about
//! it (ARCHITECTURE.md, "Conflicts"), through `start` in every mode.

use harness::*;

/// The runner under test, as cargo built it for these tests.
const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

fn one_service(base: u16) -> String {
    http_service("api", base, "")
}

#[test]
fn non_interactive_kills_a_process_of_the_same_user() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &one_service(base));
    let squatter = Squatter::start(base, "127.0.0.1", None);
    let out = c.ok(&["start"]); // stdin is not a terminal
    assert!(out.contains(&format!("api: killed pid {} (", squatter.pid())), "{out}");
    assert!(out.contains(&format!("to free port {base}")), "{out}");
    assert!(!alive(squatter.pid()));
    assert_eq!(c.ports()["api"], base);
}

/// Such a process shows as a zombie with no descriptors: lsof and `ss -p`
/// cannot say who holds the port.
#[test]
fn non_interactive_kills_a_holder_whose_main_thread_has_ended() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &one_service(base));
    let squatter = Squatter::main_thread_ended(base);
    let out = c.ok(&["start"]);
    assert!(out.contains(&format!("api: killed pid {} (python3", squatter.pid())), "{out}");
    assert!(!alive(squatter.pid()));
    assert_eq!(c.ports()["api"], base, "{out}");
}

#[test]
fn no_kill_always_moves() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &one_service(base));
    let squatter = Squatter::start(base, "127.0.0.1", None);
    let out = c.ok(&["start", "--no-kill"]);
    assert!(out.contains(&format!("api: port {base} is held by pid {}", squatter.pid())), "{out}");
    assert!(out.contains(&format!("not killing it: --no-kill; using {}", base + 1)), "{out}");
    assert!(alive(squatter.pid()));
    assert_eq!(c.ports()["api"], base + 1);
    assert_eq!(c.status()["api"]["healthy"], true);
}

#[test]
fn the_prompt_names_the_holder_and_yes_kills_it() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &one_service(base));
    let squatter = Squatter::start(base, "127.0.0.1", None);
    let (ok, out) = run_in_terminal(&c, "start", "y\n", &[]);
    assert!(ok, "{out}");
    let question = format!("Kill process {} (", squatter.pid());
    assert!(
        out.contains(&question)
            && out.contains(&format!("http.server {base} --bind 127.0.0.1) to free port {base}? [y/N]")),
        "{out}"
    );
    assert!(!alive(squatter.pid()));
    assert_eq!(c.ports()["api"], base);
}

#[test]
fn the_prompt_defaults_to_no_and_moves() {
    for answer in ["n\n", "\n"] {
        let base = free_ports(10);
        let c = Checkout::new(XTASK, &one_service(base));
        let squatter = Squatter::start(base, "127.0.0.1", None);
        let (ok, out) = run_in_terminal(&c, "start", answer, &[]);
        assert!(ok, "{out}");
        assert!(out.contains("[y/N]"), "no question was asked:\n{out}");
        assert!(out.contains("not killed (answered no)"), "{out}");
        assert!(alive(squatter.pid()), "answered {answer:?} but the holder was killed");
        assert_eq!(c.ports()["api"], base + 1);
    }
}

#[test]
fn force_mode_kills_without_asking_even_on_a_terminal() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &one_service(base));
    let squatter = Squatter::start(base, "127.0.0.1", None);
    let (ok, out) = run_in_terminal(&c, "start", "", &[("FORCE_MODE", "true")]);
    assert!(ok, "{out}");
    assert!(!out.contains("[y/N]"), "FORCE_MODE asked:\n{out}");
    assert!(!alive(squatter.pid()));
    let (ok, out) = run_in_terminal(&c, "restart --force", "", &[]);
    assert!(ok && !out.contains("[y/N]"), "{out}");
}

#[test]
fn an_ancestor_of_the_runner_is_never_killed() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &one_service(base));
    // This test process holds the port and is the runner's parent: a kill
    // would end the test itself.
    let _listener = std::net::TcpListener::bind(("127.0.0.1", base)).unwrap();
    let out = c.ok(&["start", "--force"]);
    assert!(out.contains("not killing it: it is an ancestor of this runner"), "{out}");
    assert_eq!(c.ports()["api"], base + 1);
}

/// api and web, each with a window of 3 ports.
fn api_and_web(base: u16) -> Checkout {
    Checkout::new(
        XTASK,
        &format!("[ports]\nattempts = 3\n{}{}", http_service("api", base, ""), http_service("web", base + 10, "")),
    )
}

/// Holds api's whole window (of `api_and_web`) in this test process, the
/// runner's parent, which is never killed: api can get no port.
fn hold_apis_window(base: u16) -> Vec<std::net::TcpListener> {
    (base..base + 3).map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).unwrap()).collect()
}

/// Nothing is killed for one service when another would get no port anyway.
#[test]
fn no_holder_is_killed_when_some_service_would_get_no_port_anyway() {
    let base = free_ports(20);
    let (c, _window) = (api_and_web(base), hold_apis_window(base));
    // web's port is held by a process the policy would kill.
    let squatter = Squatter::start(base + 10, "127.0.0.1", None);
    let out = c.fails(&["start", "--force"]);
    assert!(out.contains("no free port for api") && out.contains("nothing was changed"), "{out}");
    assert!(alive(squatter.pid()), "web's holder was killed for nothing:\n{out}");
}

/// A port the allocation would not give as it is (below the range) is moved
/// past, and nobody is killed for it.
#[test]
fn nobody_is_killed_for_a_port_below_the_range() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &format!("[ports]\nrange = [{}, {}]\n{}", base + 10, base + 19, one_service(base)));
    let squatter = Squatter::start(base, "127.0.0.1", None);
    let out = c.ok(&["start", "--force"]);
    assert!(alive(squatter.pid()), "killed for a port it would not use:\n{out}");
    assert_eq!(c.ports()["api"], base + 10, "{out}");
}

/// `dev` taking over a background service does not stop it when it would
/// fail anyway for want of a port.
#[test]
fn dev_stops_no_background_service_when_some_service_would_get_no_port() {
    let base = free_ports(20);
    let c = api_and_web(base);
    c.ok(&["start", "web"]);
    let web = c.pid_of("web").unwrap();
    let _window = hold_apis_window(base);
    let out = c.fails(&["dev", "--no-kill"]);
    assert!(out.contains("no free port for api") && out.contains("nothing was changed"), "{out}");
    assert!(alive(web), "web was stopped before dev failed:\n{out}");
}

/// A listener and a child that inherited its socket, in a process group of
/// their own, both killed when dropped.
struct SharedListener {
    parent: std::process::Child,
    child: i32,
}

impl SharedListener {
    fn start(port: u16) -> SharedListener {
        use std::os::unix::process::CommandExt;
        // The child is spawned before `listen`: once the port answers, both hold it.
        // SO_REUSEADDR as servers set it (and `is_free` binds): else a
        // connection an earlier test's server closed (TIME_WAIT) blocks the bind.
        let script = "import socket, subprocess, sys, time; s = socket.socket(); \
                      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
                      s.bind(('127.0.0.1', int(sys.argv[1]))); \
                      subprocess.Popen(['sleep', '60'], pass_fds=[s.fileno()]); s.listen(); time.sleep(60)";
        let parent = std::process::Command::new("python3")
            .args(["-c", script, &port.to_string()])
            .process_group(0)
            .spawn()
            .unwrap();
        let listening = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        assert!(wait_for(std::time::Duration::from_secs(10), listening), "nothing listens on {port}");
        let pid = parent.id() as i32;
        let child = group_members(pid).into_iter().find(|m| m.pid != pid).expect("the child runs").pid;
        // Until it has run `sleep`, the child is a copy of python: named so, the question would be right.
        let slept = || processes_with("sleep 60").iter().any(|(p, _)| *p == child);
        assert!(wait_for(std::time::Duration::from_secs(10), slept), "the child never ran sleep");
        SharedListener { parent, child }
    }

    fn pids(&self) -> [i32; 2] {
        [self.parent.id() as i32, self.child]
    }
}

impl Drop for SharedListener {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{}", self.parent.id())]).status();
        let _ = self.parent.wait();
    }
}

#[test]
fn the_prompt_names_every_holder_it_would_kill() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &one_service(base));
    let holders = SharedListener::start(base);
    let (ok, out) = run_in_terminal(&c, "start", "y\n", &[]);
    assert!(ok, "{out}");
    let question = out.lines().find(|l| l.contains("[y/N]")).unwrap_or_else(|| panic!("no question:\n{out}"));
    let [parent, child] = holders.pids();
    assert!(question.starts_with("Kill processes "), "{question}");
    assert!(question.contains(&format!("{parent} (")), "the listener is not named: {question}");
    assert!(question.contains(&format!("{child} (sleep 60)")), "its child is not named: {question}");
    assert!(question.contains(&format!("to free port {base}? [y/N]")), "{question}");
    assert!(!alive(parent) && !alive(child));
    assert_eq!(c.ports()["api"], base);
}

/// A service added later whose preferred port another service of the
/// checkout moved to: that one keeps running, the newcomer moves.
#[test]
fn a_port_held_by_another_service_of_this_checkout_is_never_freed() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("a", base, ""));
    c.ok(&["ports", "set", "a", &(base + 5).to_string()]);
    c.ok(&["start"]);
    let a = c.pid_of("a").unwrap();
    std::fs::write(c.path("ports.toml"), http_service("a", base, "") + &http_service("b", base + 5, "")).unwrap();
    let out = text(&c.command(&["start", "b"]).env("FORCE_MODE", "1").output().unwrap());
    assert!(out.contains(&format!("b: port {} is given to a; using", base + 5)), "{out}");
    assert!(alive(a), "starting b stopped a:\n{out}");
    assert_eq!((c.ports()["a"], c.pid_of("a")), (base + 5, Some(a)));
    assert_ne!(c.ports()["b"], base + 5);
    assert_eq!(c.status()["b"]["healthy"], true);
}

/// A service renamed in ports.toml while it runs in the background: its old
/// instance holds the port, and only the runner can stop it.
#[test]
fn the_old_instance_of_a_renamed_service_is_stopped() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("api", base, ""));
    c.ok(&["start"]);
    let api = c.pid_of("api").unwrap();
    std::fs::write(c.path("ports.toml"), http_service("backend", base, "")).unwrap();
    std::fs::remove_file(c.path(".ports.json")).unwrap(); // it names api, which ports.toml no longer has
    let out = c.ok(&["start"]);
    assert!(out.contains(&format!("backend: port {base} was held by this checkout's earlier pid {api}")), "{out}");
    assert!(!alive(api));
    assert_eq!(c.ports()["backend"], base);

    // Renamed back without a start: a stop of everything still reaches it.
    let backend = c.pid_of("backend").unwrap();
    std::fs::write(c.path("ports.toml"), http_service("api", base, "")).unwrap();
    let out = c.ok(&["stop"]);
    assert!(out.contains("backend | stopped"), "{out}");
    assert!(!alive(backend) && wait_for(std::time::Duration::from_secs(2), || is_free(base)), "{out}");
}

/// Tests that act as another user: `cargo xtask test` runs them as root only.
mod needs_root {
    use super::*;

    #[test]
    #[ignore = "needs root: `cargo xtask test` runs it as root"]
    fn another_users_process_is_never_killed() {
        assert!(is_root(), "this test needs root");
        let base = free_ports(10);
        let c = Checkout::new(XTASK, &one_service(base));
        let squatter = Squatter::start(base, "127.0.0.1", Some(NOBODY));
        let out = c.command(&["start"]).env("FORCE_MODE", "true").output().unwrap();
        let out = text(&out);
        assert!(out.contains("not killing it: it belongs to user nobody"), "{out}");
        assert!(alive(squatter.pid()));
        assert_eq!(c.ports()["api"], base + 1);
    }

    /// The runner as the account nobody: a copy of it that nobody may run, and
    /// a state folder of nobody's.
    struct AsNobody {
        world: tempfile::TempDir,
    }

    impl AsNobody {
        fn new() -> AsNobody {
            use std::os::unix::fs::PermissionsExt;
            assert!(is_root(), "this test needs root");
            let world = tempfile::TempDir::new().unwrap();
            std::fs::copy(XTASK, world.path().join("xtask")).unwrap();
            std::fs::create_dir(world.path().join("state")).unwrap();
            std::os::unix::fs::chown(world.path().join("state"), Some(NOBODY), Some(NOBODY)).unwrap();
            std::fs::set_permissions(world.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            AsNobody { world }
        }

        /// Runs `xtask args` in `dir`, not asking.
        fn run(&self, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
            use std::os::unix::process::CommandExt;
            std::process::Command::new(self.world.path().join("xtask"))
                .args(args)
                .current_dir(dir)
                .env("XDG_STATE_HOME", self.world.path().join("state"))
                .env("FORCE_MODE", "true")
                .uid(NOBODY)
                .gid(NOBODY)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        }
    }

    /// Makes `path` readable by all, writable by its owner only.
    fn read_only(path: &std::path::Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A checkout its user may not write: refused before a holder of its port is
    /// killed (nothing could be written after), and nothing changes.
    #[test]
    #[ignore = "needs root: `cargo xtask test` runs it as root"]
    fn an_unwritable_checkout_is_refused_before_any_kill() {
        let base = free_ports(10);
        let c = Checkout::new(XTASK, &one_service(base));
        let nobody = AsNobody::new();
        read_only(c.dir.path());
        // Its own records and logs, from when it could write there.
        for dir in [".pids", ".logs"] {
            std::fs::create_dir(c.path(dir)).unwrap();
            std::os::unix::fs::chown(c.path(dir), Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let squatter = Squatter::start(base, "127.0.0.1", Some(NOBODY));
        let output = nobody.run(c.dir.path(), &["start"]);
        let out = text(&output);
        assert!(!output.status.success(), "{out}");
        let said = format!(
            "{}: Permission denied (os error 13)\nthis user may not create files in it",
            c.dir.path().display()
        );
        assert!(out.contains(&said), "{out}");
        assert!(alive(squatter.pid()), "the holder was killed:\n{out}");
        let mut names: Vec<_> = std::fs::read_dir(c.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, [".logs", ".pids", "ports.toml"]);
    }

    /// A checkout its user may not write, whose generated files are links into
    /// folders the user may write: it runs (the files are written through).
    /// The folders of records and logs may be anywhere; the files rewritten at
    /// each allocation must stay in the checkout (ports.rs has the refusal).
    #[test]
    #[ignore = "needs root: `cargo xtask test` runs it as root"]
    fn a_read_only_checkout_whose_files_are_links_runs() {
        let base = free_ports(10);
        let toml = format!(
            "[services.api]\nport = {base}\ncommand = \"/usr/bin/python3 -m http.server {{port}} --bind 127.0.0.1\"\n"
        );
        let c = Checkout::new(XTASK, &toml);
        let nobody = AsNobody::new();
        let (elsewhere, inside) = (nobody.world.path().join("generated"), c.path("generated"));
        for dir in [&elsewhere, &elsewhere.join(".pids"), &elsewhere.join(".logs"), &inside] {
            std::fs::create_dir(dir).unwrap();
            std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        for name in [".pids", ".logs"] {
            std::os::unix::fs::symlink(elsewhere.join(name), c.path(name)).unwrap();
        }
        for name in [".ports.json", ".env.runtime"] {
            std::os::unix::fs::symlink(inside.join(name), c.path(name)).unwrap();
        }
        read_only(c.dir.path());
        let output = nobody.run(c.dir.path(), &["start"]);
        let out = text(&output);
        assert!(output.status.success(), "{out}");
        assert!(inside.join(".ports.json").is_file() && inside.join(".env.runtime").is_file(), "{out}");
        assert!(elsewhere.join(".pids/api.json").is_file(), "{out}");
        assert!(!is_free(base), "api does not serve:\n{out}");
        let output = nobody.run(c.dir.path(), &["stop"]);
        assert!(output.status.success() && is_free(base), "{}", text(&output));
    }
}

/// A start that waited for another's to end reads the ports that one gave:
/// a port it moved a service away from is no reason to kill its holder.
#[test]
fn a_start_that_waited_for_another_kills_nobody_for_a_port_the_other_left() {
    let base = free_ports(20);
    // a's set-up runs under the launch lock: it says so, and ends once the
    // second start waits (which has read the book by then).
    let step = "touch a.set-up; until grep -q waiting b.out; do sleep 0.05; done";
    let toml = format!(
        "{}[[services.a.setup]]\ncommand = [\"sh\", \"-c\", \"{step}\"]\n\n{}",
        http_service("a", base, ""),
        http_service("b", base + 10, ""),
    );
    let c = Checkout::new(XTASK, &toml);
    let squatter = Squatter::start(base + 10, "127.0.0.1", None);
    let (piped, also) = (std::process::Stdio::piped(), std::process::Stdio::piped());
    let mut first = c.command(&["start", "a"]).stdout(piped).stderr(also).spawn().unwrap();
    // The second starts once the first holds the lock, not before.
    if !wait_for(LONG, || c.path("a.set-up").exists()) {
        let _ = first.kill();
        panic!("a's set-up did not begin:\n{}", text(&first.wait_with_output().unwrap()));
    }
    let log = std::fs::File::create(c.path("b.out")).unwrap();
    let second = c.command(&["start", "b"]).stdout(log.try_clone().unwrap()).stderr(log).output().unwrap();
    let first = first.wait_with_output().unwrap();
    let out = format!("{}\n{}", text(&first), c.read("b.out").unwrap());
    assert!(first.status.success() && second.status.success(), "{out}");
    assert!(alive(squatter.pid()), "the second start killed the squatter for nothing:\n{out}");
    assert_eq!(c.ports()["b"], base + 11, "{out}");
    c.ok(&["stop"]);
}
