//! Services in the background: start, stop, restart, status and logs, also
//! with ports.toml broken or gone; starts that fail (a command that cannot
//! run, a service that exits, a record that cannot be written) and leave
//! nothing running; no descriptor of the runner's in a service; ports taken
//! between check and bind, and port changes that restart their users.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use harness::*;

/// The runner under test, as cargo built it for these tests.
const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

#[test]
fn start_then_stop_leaves_no_process_and_frees_every_port() {
    let base = free_ports(30);
    let c = Checkout::new(XTASK, &stack(base));
    let out = c.ok(&["start"]);
    assert!(out.contains("3 services ready"), "{out}");
    let status = c.status();
    assert!(status.values().all(|s| s["running"] == true && s["healthy"] == true), "{status:?}");
    let human = c.ok(&["status"]);
    let a_pid = status["a"]["pid"].as_i64().unwrap();
    assert!(human.contains(&format!("A (port {base}): ✓ Running (pid {a_pid})")), "{human}");
    let processes = service_processes(&c);
    assert!(processes.len() >= 4, "b's grandchild is not in its group: {processes:?}");
    assert!(c.read(".logs/a.log").unwrap().contains("Serving HTTP"));
    c.ok(&["stop"]);
    assert_all_gone(&c, &processes, &[base, base + 10, base + 20]);
}

#[test]
fn start_leaves_a_service_that_already_runs_alone() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("a", base, ""));
    c.ok(&["start"]);
    let (pid, processes) = (c.pid_of("a").unwrap(), service_processes(&c));
    let out = c.ok(&["start"]);
    assert!(out.contains(&format!("a: already running (pid {pid})")) && !out.contains("starting on port"), "{out}");
    assert_eq!(c.pid_of("a"), Some(pid), "a second instance took over a's record:\n{out}");
    assert_eq!(service_processes(&c), processes);
    c.ok(&["stop"]);
    assert_all_gone(&c, &processes, &[base]);
}

#[test]
fn two_starts_at_once_start_a_service_once() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("a", base, ""));
    let spawn = || c.command(&["start"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let both = [spawn(), spawn()].map(|p| p.wait_with_output().unwrap());
    assert!(both.iter().all(|o| o.status.success()), "{:?}", both.each_ref().map(text));
    let servers = processes_with(&format!("http.server {base} "));
    assert_eq!(servers.len(), 1, "{servers:?}\n{:?}", both.each_ref().map(text));
    c.ok(&["stop"]);
    assert!(processes_with(&format!("http.server {base} ")).is_empty());
}

/// Another command's look for a dev (a `start`, a `stop`) is no dev: a
/// `start` beside it runs.
#[test]
fn a_start_runs_while_another_command_looks_for_a_dev() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("a", base, ""));
    std::fs::create_dir(c.path(".pids")).unwrap();
    let looking = std::fs::File::create(c.path(".pids/dev.lock")).unwrap();
    looking.lock_shared().unwrap();
    c.ok(&["start"]);
    c.ok(&["stop"]);
}

#[test]
fn restart_gives_a_new_process_on_the_same_port() {
    let base = free_ports(30);
    let c = Checkout::new(XTASK, &stack(base));
    c.ok(&["start"]);
    let (a, cc) = (c.pid_of("a").unwrap(), c.pid_of("c").unwrap());
    c.ok(&["restart", "a"]);
    let (a2, c2) = (c.pid_of("a").unwrap(), c.pid_of("c").unwrap());
    assert!(a2 != a && c2 != cc, "a and its dependent c were not restarted");
    assert!(!alive(a) && !alive(cc));
    assert_eq!(c.status()["a"]["port"], base);
}

#[test]
fn a_restart_that_cannot_work_stops_nothing() {
    let broken = |base: u16| format!("[services.a]\nport = {base}\ncommand = \"no-such-prog-4\"\n");
    // Started in the background, and run by a `dev` in another terminal.
    for in_dev in [false, true] {
        let base = free_ports(10);
        let c = Checkout::new(XTASK, &http_service("a", base, ""));
        let dev = in_dev.then(|| spawn_dev(&c, &[]).0);
        match dev {
            Some(_) => wait_running(&c, 1),
            None => drop(c.ok(&["start"])),
        }
        let a = c.pid_of("a").unwrap();
        std::fs::write(c.path("ports.toml"), broken(base)).unwrap();
        let out = c.fails(&["restart"]);
        assert!(out.contains("no-such-prog-4: install it"), "{out}");
        assert!(alive(a), "a restart that cannot work stopped the running service (dev: {in_dev}):\n{out}");
        std::fs::write(c.path("ports.toml"), http_service("a", base, "")).unwrap(); // so that it can be stopped
        if let Some(mut dev) = dev {
            assert!(dev.try_wait().unwrap().is_none(), "a restart that cannot work stopped dev:\n{out}");
            std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
            dev.wait().unwrap();
        }
    }
}

/// With ports.toml broken (a merge conflict) or gone, `status` and `stop`
/// work from the records alone, and say that ports.toml could not be read.
#[test]
fn status_and_stop_work_from_the_records_when_ports_toml_is_broken_or_gone() {
    for broken in [true, false] {
        let base = free_ports(10);
        let toml = http_service("a", base, "") + &http_service("b", base + 1, "depends_on = [\"a\"]");
        let c = Checkout::new(XTASK, &toml);
        c.ok(&["start"]);
        let (a, b) = (c.pid_of("a").unwrap(), c.pid_of("b").unwrap());
        let processes = service_processes(&c);
        let (ports_toml, said) = (c.path("ports.toml"), "could not be read");
        match broken {
            true => std::fs::write(&ports_toml, format!("<<<<<<< HEAD\n{toml}=======\n>>>>>>> theirs\n")).unwrap(),
            false => std::fs::remove_file(&ports_toml).unwrap(),
        }
        let status = c.ok(&["status"]);
        assert!(status.contains(&format!("{}", ports_toml.display())) && status.contains(said), "{status}");
        for (name, port, pid) in [("a", base, a), ("b", base + 1, b)] {
            assert!(status.contains(&format!("{name} (port {port}): ✓ Running (pid {pid})")), "{status}");
        }
        let json = c.command(&["status", "--json"]).output().unwrap();
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
        assert!(rows.len() == 2 && rows.iter().all(|r| r["running"] == true), "{rows:?}");
        // What depends on a is not known: a selection stops nothing.
        let out = c.fails(&["stop", "a"]);
        assert!(out.contains(said) && out.contains("cargo xtask stop"), "{out}");
        assert!(processes.iter().all(|p| alive(*p)), "{out}");
        let out = c.ok(&["stop"]);
        assert!(out.contains(said) && out.contains("a | stopped") && out.contains("b | stopped"), "{out}");
        std::fs::write(&ports_toml, &toml).unwrap();
        assert_all_gone(&c, &processes, &[base, base + 1]);
    }
}

#[test]
fn a_start_that_cannot_work_kills_nothing_and_writes_nothing() {
    let missing_program = "command = \"no-such-prog-3 {port}\"\n";
    let missing_cwd = "command = \"python3 -m http.server {port}\"\ncwd = \"no-such-dir\"\n";
    let unknown_account = "command = \"python3 -m http.server {port}\"\nuser = \"no-such-account-3\"\n";
    let failing_step = "command = \"python3 -m http.server {port}\"\n[[services.a.setup]]\ncommand = [\"false\"]\n";
    let mut cases = vec![
        (missing_program, "no-such-prog-3: install it, or fix the command of a (PORTS:3:11)"),
        (missing_cwd, "PORTS:4:7: the folder NOPE of a does not exist: create it, or fix `cwd`"),
        (failing_step, "set-up step `false` failed"),
    ];
    if is_root() {
        cases.push((unknown_account, "PORTS:4:8: there is no account \"no-such-account-3\""));
    }
    for (service, error) in cases {
        let base = free_ports(10);
        let c = Checkout::new(XTASK, &format!("[services.a]\nport = {base}\n{service}"));
        let holder = Squatter::start(base, "127.0.0.1", None);
        let output = c.command(&["start"]).env("FORCE_MODE", "1").output().unwrap();
        let out = text(&output);
        let ports_toml = c.path("ports.toml").display().to_string();
        let error = error.replace("PORTS", &ports_toml).replace("NOPE", &c.path("no-such-dir").display().to_string());
        assert!(!output.status.success() && out.contains(&error), "{service}{out}");
        assert!(alive(holder.pid()), "the holder of port {base} was killed for a start that cannot work:\n{out}");
        for file in [".ports.json", ".env.runtime"] {
            assert!(!c.path(file).exists(), "{file} was written for a start that cannot work:\n{out}");
        }
    }
}

/// A command that cannot be run says why, and leaves no record behind.
#[test]
fn a_command_that_cannot_run_says_why_and_leaves_no_record() {
    use std::os::unix::fs::PermissionsExt;
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &format!("[services.bad]\nport = {base}\ncommand = [\"./bad\", \"{{port}}\"]\n"));
    // There to run, but its interpreter is not: exec fails, after the fork.
    write_program(&c.path("bad"), "#!/no/such/interpreter\n");
    let out = c.fails(&["start"]);
    assert!(out.contains("starting ./bad") && out.contains("No such file or directory"), "{out}");
    assert!(!c.path(".pids/bad.json").exists(), "a record was left:\n{out}");
    if is_root() {
        // A folder its user may not enter: the change of folder fails, after the fork.
        std::fs::set_permissions(c.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(c.path("private")).unwrap();
        std::fs::set_permissions(c.path("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let toml = format!(
            "[services.bad]\nport = {base}\nuser = \"nobody\"\ncwd = \"private\"\ncommand = [\"sleep\", \"100\"]\n"
        );
        std::fs::write(c.path("ports.toml"), toml).unwrap();
        let out = c.fails(&["start"]);
        assert!(out.contains("starting sleep 100: Permission denied"), "{out}");
        assert!(!c.path(".pids/bad.json").exists(), "a record was left:\n{out}");
    }
}

#[test]
fn a_service_that_exits_at_once_fails_start_with_its_last_lines() {
    let base = free_ports(10);
    let toml = format!(
        "{}[services.broken]\nport = {}\ncommand = [\"sh\", \"-c\", \"echo starting; echo config missing-42 >&2; exit 3\"]\n",
        http_service("a", base, ""),
        base + 1
    );
    let c = Checkout::new(XTASK, &toml);
    let out = c.fails(&["start"]);
    assert!(out.contains("broken exited (exit status: 3) before it was ready"), "{out}");
    assert!(out.contains("config missing-42"), "its output is not shown:\n{out}");
    assert!(c.status().values().all(|s| s["running"] == false), "a half-started stack was left running");
    assert!(is_free(base));
}

/// A service that was ready and exits while others still start fails the
/// start (waiting for all to be ready would never end), stopping the rest.
#[test]
fn a_ready_service_that_exits_while_others_start_fails_the_start() {
    let base = free_ports(10);
    // a serves until the file `go` appears; b starts long after.
    let a = "python3 -m http.server {port} --bind 127.0.0.1 & until [ -e go ]; do sleep 0.1; done; kill $!; exit 3";
    let c = Checkout::new(
        XTASK,
        &format!(
            "[services.a]\nport = {base}\ncommand = [\"sh\", \"-c\", \"{a}\"]\n\
         [services.b]\nport = {}\ncommand = \"sh -c 'sleep 60; exec python3 -m http.server {{port}} --bind 127.0.0.1'\"\n",
            base + 1
        ),
    );
    let mut start = c.command(&["start"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Ready for the runner, not merely answering: until it saw so, a's exit
    // is one before it was ready.
    let mut said = Said::of(start.stdout.take().unwrap());
    let a_ready = said.until(LONG, |line| line.starts_with("a | ready"));
    std::fs::write(c.path("go"), "").unwrap();
    let ended = wait_for(LONG, || !matches!(start.try_wait(), Ok(None)));
    let _ = start.kill();
    let out = said.text + &text(&start.wait_with_output().unwrap());
    assert!(a_ready && ended, "a never ready, or start never returned:\n{out}");
    assert!(out.contains("a exited (exit status: 3) while the others were starting"), "{out}");
    assert!(processes_with(&format!("sleep 60; exec python3 -m http.server {}", base + 1)).is_empty(), "{out}");
}

#[test]
fn a_start_fails_when_a_dependency_exits_after_it_was_ready() {
    let base = free_ports(30);
    // a is ready, then exits; b is ready later; c depends on both.
    let toml = format!(
        "[services.a]\nport = {base}\ncommand = [\"sh\", \"-c\", \"python3 -m http.server {{port}} --bind 127.0.0.1 & sleep 1; kill $!\"]\n\
         [services.b]\nport = {}\ncommand = [\"sh\", \"-c\", \"sleep 3; exec python3 -m http.server {{port}} --bind 127.0.0.1\"]\n{}",
        base + 10,
        http_service("c", base + 20, "depends_on = [\"a\", \"b\"]"),
    );
    let c = Checkout::new(XTASK, &toml);
    let (mut dev, log) = spawn_dev(&c, &[]);
    let ended = wait_for(LONG, || dev.try_wait().unwrap().is_some());
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(ended, "dev waits forever for a dependency that exited:\n{out}");
    assert!(!dev.wait().unwrap().success(), "{out}");
    assert!(out.contains("c cannot start: a, which it depends on, exited"), "{out}");
    assert!(c.status().values().all(|s| s["running"] == false), "{out}");
    assert!(wait_for(Duration::from_secs(2), || is_free(base + 10)), "{out}");
}

/// A service whose record cannot be written is stopped, not left unknown.
#[test]
fn a_service_whose_record_cannot_be_written_is_not_left_running() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("a", base, ""));
    std::fs::create_dir_all(c.path(".pids/a.json")).unwrap();
    let out = c.fails(&["start"]);
    assert!(out.contains(".pids/a.json"), "{out}");
    assert!(processes_with(&format!("http.server {base} ")).is_empty(), "a was left running:\n{out}");
}

#[test]
fn a_service_gets_no_descriptor_the_runner_inherited() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("a", base, ""));
    // The runner is started with 42 open, as an IDE or a CI runner may leave a pipe.
    let output = std::process::Command::new("bash")
        .args(["-c", r#"exec 42</dev/null; exec "$@""#, "bash", XTASK, "start"])
        .current_dir(c.dir.path())
        .env("XDG_STATE_HOME", &c.state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let pid = c.pid_of("a").unwrap();
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!fds.contains(&"42".to_owned()), "the service holds the runner's descriptor 42: {fds:?}");
    c.ok(&["stop"]);
}

#[test]
fn a_port_taken_between_check_and_bind_moves_the_service() {
    let base = free_ports(10);
    // The first run starts a squatter of its own port (outside its process
    // group and without its mark, as another program would), then binds and fails.
    let toml = format!(
        "{}[services.racy]\nport = {}\ncommand = [\"sh\", \"-c\", \"\
         if [ ! -e raced ]; then touch raced; env -u XTASK_GROUP setsid python3 -m http.server {{port}} --bind 127.0.0.1 >/dev/null 2>&1 & sleep 1; fi; \
         exec python3 -m http.server {{port}} --bind 127.0.0.1\"]\n\
         [services.user]\nport = {}\ncommand = [\"sh\", \"-c\", \"echo racy is on {{racy.port}}; exec python3 -m http.server {{port}} --bind 127.0.0.1\"]\n",
        http_service("a", base, ""),
        base + 1,
        base + 5,
    );
    let c = Checkout::new(XTASK, &toml);
    let out = c.run(&["start"]);
    let squatters = processes_with(&format!("http.server {} ", base + 1));
    for (pid, _) in &squatters {
        let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    }
    let out = text(&out);
    assert!(out.contains(&format!("port {} was taken before it could bind; moving", base + 1)), "{out}");
    assert_eq!(c.ports()["racy"], base + 2, "{out}");
    assert_eq!(c.status()["racy"]["healthy"], true);
    assert!(c.read(".env.runtime").unwrap().contains(&format!("RACY_PORT={}\n", base + 2)));
    assert!(c.read(".logs/user.log").unwrap().contains(&format!("racy is on {}", base + 2)));
}

#[test]
fn a_port_change_restarts_the_services_that_refer_to_it() {
    let base = free_ports(10);
    let toml = format!(
        "{}[services.user]\nport = {}\ncommand = [\"sh\", \"-c\", \"echo a is on {{a.port}} and $A_PORT; exec python3 -m http.server {{port}} --bind 127.0.0.1\"]\n{}",
        http_service("a", base, ""),
        base + 1,
        http_service("bystander", base + 2, ""),
    );
    let c = Checkout::new(XTASK, &toml);
    c.ok(&["start"]);
    let (user, bystander) = (c.pid_of("user").unwrap(), c.pid_of("bystander").unwrap());
    let out = c.ok(&["ports", "set", "a", &(base + 7).to_string()]);
    assert!(out.contains("restarting a, user"), "{out}");
    let status = c.status();
    assert_eq!(status["a"]["port"], base + 7);
    assert_eq!(status["a"]["healthy"], true);
    assert_ne!(c.pid_of("user").unwrap(), user, "user was not restarted");
    assert_eq!(c.pid_of("bystander").unwrap(), bystander, "bystander was restarted for nothing");
    let log = c.read(".logs/user.log").unwrap();
    assert!(log.contains(&format!("a is on {0} and {0}", base + 7)), "{log}");
    assert!(is_free(base));
}

/// What depends on a user of the port without using it (a dependent's
/// dependent: the frontend, when postgres moves) is stopped with it,
/// dependents first, and so starts again with it.
#[test]
fn a_port_change_restarts_what_depends_on_its_users() {
    let base = free_ports(10);
    let toml = format!(
        "{}[services.user]\nport = {}\ncommand = [\"sh\", \"-c\", \"echo a is on {{a.port}}; exec python3 -m http.server {{port}} --bind 127.0.0.1\"]\n\
         depends_on = [\"a\"]\n\n{}",
        http_service("a", base, ""),
        base + 1,
        http_service("web", base + 2, "depends_on = [\"user\"]"),
    );
    let c = Checkout::new(XTASK, &toml);
    c.ok(&["start"]);
    let web = c.pid_of("web").unwrap();
    let out = c.ok(&["ports", "set", "a", &(base + 7).to_string()]);
    let status = c.status();
    assert_eq!(status["web"]["running"], true, "web was stopped and left so:\n{out}");
    assert_ne!(c.pid_of("web").unwrap(), web, "{out}");
    assert!(!out.contains("nothing is running"), "{out}");
    c.ok(&["stop"]);
}

/// A restart of what does not run starts it, and says nothing of nothing running.
#[test]
fn a_restart_of_what_is_stopped_starts_it_without_a_word_about_stopping() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &two(base));
    c.ok(&["start", "a"]);
    let out = c.ok(&["restart", "b"]);
    assert!(!out.contains("nothing is running"), "{out}");
    assert_eq!(c.status()["b"]["running"], true, "{out}");
    c.ok(&["stop"]);
}

/// A broken `.ports.json` is an error with its place and its fix, not a
/// `ports.toml` that cannot be read.
#[test]
fn status_with_a_broken_port_book_says_what_is_wrong_with_it() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &two(base));
    c.ok(&["start", "a"]);
    std::fs::write(c.path(".ports.json"), "{\"a\": 1").unwrap();
    let out = c.fails(&["status"]);
    assert!(out.contains(".ports.json:1:") && out.contains("cargo xtask ports reset"), "{out}");
    assert!(!out.contains("ports.toml could not be read"), "{out}");
    c.ok(&["stop"]);
}

fn two(base: u16) -> String {
    http_service("a", base, "") + &http_service("b", base + 1, "depends_on = [\"a\"]")
}

/// A second Ctrl-C while `start` stops what it began cuts the graces short, as in dev.
#[test]
fn a_second_ctrl_c_cuts_the_grace_of_a_start_short() {
    let base = free_ports(10);
    let toml = format!(
        "[services.stubborn]\nport = {base}\nstop_grace = 60\n\
         command = [\"sh\", \"-c\", \"trap '' TERM; python3 -m http.server {{port}} --bind 127.0.0.1\"]\n\
         [services.never]\nport = {}\ncommand = [\"sleep\", \"300\"]\n",
        base + 1
    );
    let c = Checkout::new(XTASK, &toml);
    let out = std::fs::File::create(c.path("start.out")).unwrap();
    let mut start = c.command(&["start"]).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
    let said = |what: &str| c.read("start.out").is_some_and(|o| o.contains(what));
    assert!(wait_for(LONG, || said("stubborn | ready")));
    let processes = service_processes(&c);
    let interrupt = || std::process::Command::new("kill").args(["-INT", &start.id().to_string()]).status().unwrap();
    interrupt();
    assert!(wait_for(LONG, || said("received SIGINT: stopping")));
    // A second later: two at once are one Ctrl-C passed on twice.
    std::thread::sleep(Duration::from_millis(1200));
    interrupt();
    // Well inside the 60 s grace.
    let ended = wait_for(LONG, || start.try_wait().unwrap().is_some());
    let out = c.read("start.out").unwrap();
    assert!(ended, "start still waits out the grace:\n{out}");
    assert!(out.contains("received SIGINT again: killing what is still running"), "{out}");
    // The start failed: it took back the folders it made, `.pids` with them.
    assert!(processes.iter().all(|p| !alive(*p)), "{out}");
    assert!(wait_for(Duration::from_secs(2), || is_free(base)), "{out}");
}

#[test]
fn logs_shows_each_service() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("a", base, ""));
    c.ok(&["start"]);
    let out = c.ok(&["logs", "a"]);
    assert!(out.contains("==> a") && out.contains("Serving HTTP"), "{out}");
    assert!(c.fails(&["logs", "zz"]).contains("unknown service \"zz\""));
    let mut follow = c.command(&["logs", "-f"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut followed = Said::of(follow.stdout.take().unwrap());
    // Once the tail is out, what comes is followed (a request before would be in the tail).
    assert!(followed.until(LONG, |l| l.contains("Serving HTTP")), "{}", followed.text);
    http_get(base);
    let logged = followed.until(LONG, |l| l.starts_with("a | 127.0.0.1 - - ") && l.contains("GET /followed"));
    follow.kill().unwrap();
    follow.wait().unwrap();
    assert!(logged, "{}", followed.text);
}

/// One request, so that http.server logs a line.
fn http_get(port: u16) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /followed HTTP/1.0\r\n\r\n").unwrap();
    let _ = s.read_to_end(&mut Vec::new());
}

/// Python keeps what `print()` writes to a pipe or a file in its buffer:
/// services run with PYTHONUNBUFFERED=1, so their lines show at once, unless
/// a service's `env` says otherwise.
#[test]
fn a_python_services_printed_lines_show_while_it_runs() {
    let base = free_ports(10);
    let serve = "import http.server as h, os, sys; print('unbuffered:', repr(os.environ.get('PYTHONUNBUFFERED')){flush}); \
                 h.HTTPServer(('127.0.0.1', int(sys.argv[1])), h.SimpleHTTPRequestHandler).serve_forever()";
    let service = |name: &str, port: u16, flush: &str, extra: &str| {
        let script = serve.replace("{flush}", flush);
        format!(
            "[services.{name}]\nport = {port}\ncommand = [\"python3\", \"-c\", \"{script}\", \"{{port}}\"]\n{extra}\n"
        )
    };
    let toml =
        service("a", base, "", "") + &service("b", base + 1, ", flush=True", "env = { PYTHONUNBUFFERED = \"\" }");
    let c = Checkout::new(XTASK, &toml);
    c.ok(&["start"]);
    let out = c.ok(&["logs"]);
    assert!(out.contains("unbuffered: '1'"), "a's printed line is not in its log while it runs:\n{out}");
    assert!(out.contains("unbuffered: ''"), "b's own env did not win:\n{out}");
}

#[test]
fn logs_of_a_service_that_never_ran_says_where_its_log_would_be() {
    // Never started: the ports are not used.
    let c = Checkout::new(XTASK, &format!("{}{}", http_service("a", 20000, ""), http_service("b", 20010, "")));
    let out = c.ok(&["logs", "a"]);
    assert!(out.contains("==> a (") && out.contains(".logs/a.log) <==\n  (no log yet)"), "{out}");
    assert!(!out.contains("==> b"), "{out}");
    let all = c.ok(&["logs"]);
    assert!(
        all.contains(".logs/a.log) <==\n  (no log yet)") && all.contains(".logs/b.log) <==\n  (no log yet)"),
        "{all}"
    );
}
