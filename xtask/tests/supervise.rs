//! Running services: start/stop/restart, dev and its signals, process
//! groups, leftovers of a killed runner, port races and port propagation.

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;

use harness::*;

/// The runner under test, as cargo built it for these tests.
const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

const LONG: Duration = Duration::from_secs(30);

/// a: plain; b: its listener is a grandchild; c: depends on both, ready on HTTP.
fn stack(base: u16) -> String {
    format!(
        "{}[services.b]\nport = {}\ncommand = [\"sh\", \"-c\", \"python3 -m http.server {{port}} --bind 127.0.0.1 & wait\"]\n\n{}",
        http_service("a", base, ""),
        base + 10,
        http_service("c", base + 20, "depends_on = [\"a\", \"b\"]\nready = { http = \"/\" }"),
    )
}

/// Every process of every running service, by process group.
fn service_processes(c: &Checkout) -> Vec<i32> {
    let groups = c.status().into_values().filter_map(|s| s["pid"].as_i64());
    groups.flat_map(|pgid| group_members(pgid as i32)).map(|m| m.pid).collect()
}

fn assert_all_gone(c: &Checkout, processes: &[i32], ports: &[u16]) {
    let left: Vec<_> = processes.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    for port in ports {
        assert!(wait_for(Duration::from_secs(2), || is_free(*port)), "port {port} is still busy");
    }
    assert!(c.status().values().all(|s| s["running"] == false));
    let records: Vec<_> = std::fs::read_dir(c.path(".pids"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert!(records.is_empty(), "records left in .pids: {records:?}");
}

/// `xtask dev` in the background of the test, its output in a file.
fn spawn_dev(c: &Checkout, args: &[&str]) -> (Child, std::path::PathBuf) {
    let log = c.path("dev.out");
    let file = std::fs::File::create(&log).unwrap();
    let child = c.command(&[&["dev"], args].concat()).stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
    (child, log)
}

/// Until dev says its `n` services are ready (a signal before that
/// interrupts the start, which is an error).
fn wait_running(c: &Checkout, n: usize) {
    let said = format!("✓ {n} service{} ready", if n == 1 { "" } else { "s" });
    let ok = wait_for(LONG, || c.read("dev.out").is_some_and(|out| out.contains(&said)));
    assert!(ok, "services did not come up:\n{}", c.read("dev.out").unwrap_or_default());
    assert_eq!(c.status().values().filter(|s| s["healthy"] == true).count(), n);
}

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

/// A service whose main thread ends first shows as a zombie while its other
/// threads run on and hold its port: it still runs, and is stopped as such.
#[test]
fn a_service_whose_main_thread_ended_first_still_runs_until_stopped() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &format!("[services.a]\nport = {base}\ncommand = \"python3 serve.py {{port}}\"\n"));
    std::fs::write(c.path("serve.py"), MAIN_THREAD_ENDS_FIRST).unwrap();
    c.ok(&["start"]);
    let pid = c.pid_of("a").unwrap();
    assert!(wait_for(Duration::from_secs(10), || main_thread_ended(pid)), "a's main thread still runs");
    assert!(!is_free(base));
    assert_eq!(c.status()["a"]["running"], true, "a counts as stopped while it holds its port");
    c.ok(&["stop"]);
    assert_all_gone(&c, &[pid], &[base]);
}

/// After the leader has gone, one member with the group's mark shows the
/// group is still ours (its id cannot be reused while it has members): a
/// member that cleared its environment is stopped with the others.
#[test]
fn stop_reaches_a_member_that_cleared_its_environment_after_the_leader_died() {
    let base = free_ports(10);
    let command = "sh -c 'env -i sleep 300 & sleep 300 & exec python3 -m http.server {port} --bind 127.0.0.1'";
    let c = Checkout::new(XTASK, &format!("[services.a]\nport = {base}\ncommand = \"{command}\"\n"));
    c.ok(&["start"]);
    let leader = c.pid_of("a").unwrap();
    let processes: Vec<i32> = group_members(leader).into_iter().map(|m| m.pid).collect();
    assert_eq!(processes.len(), 3, "{processes:?}");
    std::process::Command::new("kill").args(["-KILL", &leader.to_string()]).status().unwrap();
    assert!(wait_for(Duration::from_secs(5), || !alive(leader)));
    assert_eq!(c.status()["a"]["running"], true, "its members still run");
    c.ok(&["stop"]);
    assert_all_gone(&c, &processes, &[base]);
}

/// What a service started in a session of its own (`setsid`, a daemon's
/// double fork) has left its group, but carries the group's mark: stop
/// reaches it too.
#[test]
fn stop_reaches_a_process_that_left_the_group() {
    let base = free_ports(10);
    let sleeper = format!("sleep 1{base}");
    let c = Checkout::new(
        XTASK,
        &format!(
            "[services.a]\nport = {base}\n\
         command = [\"sh\", \"-c\", \"setsid {sleeper} & exec python3 -m http.server {{port}} --bind 127.0.0.1\"]\n"
        ),
    );
    c.ok(&["start"]);
    let group = service_processes(&c);
    let escaped = || processes_with(&sleeper).into_iter().map(|(pid, _)| pid).collect::<Vec<_>>();
    assert!(wait_for(Duration::from_secs(5), || !escaped().is_empty()), "{sleeper} did not start");
    assert!(escaped().iter().all(|p| !group.contains(p)), "{sleeper} is still in the group");
    let processes = [group, escaped()].concat();
    c.ok(&["stop"]);
    assert_all_gone(&c, &processes, &[base]);
}

/// A service that daemonises: its group is empty once `start` has returned,
/// and its daemon, in a session of its own, holds the port. `stop` still
/// finds the daemon by its mark.
#[test]
fn stop_reaches_the_daemon_of_a_service_whose_group_is_gone() {
    let base = free_ports(10);
    let c = Checkout::new(
        XTASK,
        &format!(
            "[services.a]\nport = {base}\n\
         command = [\"sh\", \"-c\", \"setsid python3 -m http.server {{port}} --bind 127.0.0.1 & sleep 2\"]\n"
        ),
    );
    c.ok(&["start"]);
    let pid = c.pid_of("a").unwrap();
    assert!(wait_for(LONG, || !alive(pid)), "the service's shell did not exit");
    let daemon: Vec<i32> = processes_with(&format!("http.server {base} ")).into_iter().map(|(p, _)| p).collect();
    assert_eq!(daemon.len(), 1, "{daemon:?}");
    let out = c.ok(&["stop"]);
    assert!(out.contains("a: stopped what it left running"), "{out}");
    assert_all_gone(&c, &daemon, &[base]);
}

/// The classic daemon (fork, setsid, fork: the grandchild serves) that forks
/// again while it is being stopped: told to stop, it hands its socket to a
/// child that outlives it. What forked after the stop looked is found by the
/// mark before the record goes; the issue's daemon forked as a stop began.
#[test]
fn stop_reaches_what_a_daemon_forks_while_it_stops() {
    const DAEMON: &str = "import os, signal, socket, sys, time\n\
        def hand_over(*_):\n    \
            if os.fork() == 0:\n        \
                signal.signal(signal.SIGTERM, signal.SIG_DFL)\n        \
                time.sleep(300)\n    \
            os._exit(0)\n\
        if os.fork() == 0:\n    \
            os.setsid()\n    \
            if os.fork() == 0:\n        \
                signal.signal(signal.SIGTERM, hand_over)\n        \
                server = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n        \
                while True:\n            \
                    server.accept()[0].close()\n    \
            os._exit(0)\n\
        os.wait()\n\
        time.sleep(300)\n";
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &format!("[services.a]\nport = {base}\ncommand = \"python3 daemon.py {{port}}\"\n"));
    std::fs::write(c.path("daemon.py"), DAEMON).unwrap();
    c.ok(&["start"]);
    let daemon = || processes_with(&format!("daemon.py {base}")).into_iter().map(|(pid, _)| pid).collect::<Vec<_>>();
    // The leader and its daemon, once the daemon's parent has exited.
    assert!(wait_for(Duration::from_secs(5), || daemon().len() == 2), "{:?}", daemon());
    c.ok(&["stop"]);
    let left = daemon();
    for pid in &left {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    assert!(left.is_empty(), "what the daemon forked as it stopped runs on without a record: {left:?}");
    assert_all_gone(&c, &[], &[base]);
}

/// The classic daemon as it starts: its first process exits at once, and the
/// stop that follows looks for what left the group while the first child,
/// in a session of its own, forks the second and exits. A look that lists
/// the first child, gone when it is read, and not the second, born after the
/// list, is not taken for the last. Here the look is made slow (processes
/// without an environment are read a few times, as one in the middle of an
/// exec), as on a machine with many processes.
#[test]
fn a_daemon_forking_its_second_child_as_a_look_lists_its_first_is_stopped() {
    const DAEMON: &str = "import os, subprocess, sys, time\n\
        for _ in range(60):\n    \
            subprocess.Popen(['env', '-i', 'sleep', sys.argv[2]], start_new_session=True)\n\
        if os.fork() == 0:\n    \
            os.setsid()\n    \
            time.sleep(0.2)\n    \
            if os.fork() == 0:\n        \
                time.sleep(300)\n    \
            os._exit(0)\n";
    let base = free_ports(10);
    let slow = format!("3{base}");
    let c =
        Checkout::new(XTASK, &format!("[services.a]\nport = {base}\ncommand = \"python3 daemon.py {base} {slow}\"\n"));
    std::fs::write(c.path("daemon.py"), DAEMON).unwrap();
    let out = c.fails(&["start"]);
    let kill = |needle: &str| {
        let left: Vec<i32> = processes_with(needle).into_iter().map(|(pid, _)| pid).collect();
        for pid in &left {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        left
    };
    kill(&format!("sleep {slow}"));
    let left = kill(&format!("daemon.py {base}"));
    assert!(out.contains("a exited (exit status: 0) before it was ready"), "{out}");
    assert!(left.is_empty(), "the daemon runs on without a record: {left:?}\n{out}");
    assert!(!c.path(".pids/a.json").exists(), "{out}");
}

/// A listener that left the group is still the service's (it carries the
/// group's mark): the service becomes ready, and stops completely.
#[test]
fn a_service_whose_listener_left_the_group_becomes_ready_and_stops() {
    let base = free_ports(10);
    let c = Checkout::new(
        XTASK,
        &format!(
            "[services.a]\nport = {base}\n\
         command = [\"sh\", \"-c\", \"setsid python3 -m http.server {{port}} --bind 127.0.0.1 & exec sleep 1{base}\"]\n"
        ),
    );
    let out = c.ok(&["start"]);
    assert!(out.contains("1 service ready"), "{out}");
    assert_eq!(c.status()["a"]["healthy"], true);
    let listener: Vec<i32> = processes_with(&format!("http.server {base} ")).into_iter().map(|(pid, _)| pid).collect();
    let group = service_processes(&c);
    assert!(!listener.is_empty() && listener.iter().all(|p| !group.contains(p)), "{listener:?} {group:?}");
    c.ok(&["stop"]);
    assert_all_gone(&c, &[group, listener].concat(), &[base]);
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

/// What makes `dev` refuse is found before it takes over anything.
#[test]
fn dev_refusing_leaves_the_background_services_running() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &format!("{}{}", http_service("a", base, ""), http_service("b", base + 10, "")));
    c.ok(&["start", "a"]);
    let a = c.pid_of("a").unwrap();
    // b is run by a dev in another terminal; a's record comes first.
    let (mut other, _) = spawn_dev(&c, &["b"]);
    assert!(wait_for(LONG, || c.read("dev.out").is_some_and(|out| out.contains("✓ 1 service ready"))));
    let out = c.fails(&["dev"]);
    assert!(out.contains(&format!("`cargo xtask dev` (pid {}) runs this checkout", other.id())), "{out}");
    assert!(alive(a), "a was stopped before dev refused:\n{out}");
    std::process::Command::new("kill").args(["-INT", &other.id().to_string()]).status().unwrap();
    other.wait().unwrap();
    // A .ports.json that does not read.
    std::fs::write(c.path(".ports.json"), "{").unwrap();
    let out = c.fails(&["dev"]);
    assert!(out.contains(".ports.json:"), "{out}");
    assert!(alive(a), "a was stopped before dev refused:\n{out}");
    std::fs::remove_file(c.path(".ports.json")).unwrap();
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

/// Output without newlines is passed on in pieces, not held whole.
#[test]
fn dev_holds_no_whole_line_of_output_without_newlines() {
    let base = free_ports(10);
    let flood = "import sys, time; sys.stdout.write('x' * 50_000_000); sys.stdout.flush(); time.sleep(60)";
    let c =
        Checkout::new(XTASK, &format!("[services.a]\nport = {base}\ncommand = [\"python3\", \"-c\", \"{flood}\"]\n"));
    let (mut dev, _) = spawn_dev(&c, &[]);
    // All but the last piece, which waits for more output or the end.
    let logged = || std::fs::metadata(c.path(".logs/a.log")).is_ok_and(|m| m.len() >= 49_000_000);
    assert!(wait_for(LONG, logged), "the output did not reach the log");
    let status = std::fs::read_to_string(format!("/proc/{}/status", dev.id())).unwrap();
    let peak_kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap();
    std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    dev.wait().unwrap();
    assert!(peak_kb < 30_000, "dev's memory peaked at {peak_kb} kB for 50 MB of output");
}

/// `ports set` of a service a `dev` in another terminal runs is refused
/// before the new port is written.
#[test]
fn ports_set_under_another_dev_changes_nothing() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("a", base, ""));
    let (mut dev, _) = spawn_dev(&c, &[]);
    wait_running(&c, 1);
    let before = (c.read(".ports.json"), c.read(".env.runtime"));
    let out = c.fails(&["ports", "set", "a", &(base + 5).to_string()]);
    assert!(out.contains(&format!("`cargo xtask dev` (pid {}) runs this checkout", dev.id())), "{out}");
    assert_eq!((c.read(".ports.json"), c.read(".env.runtime")), before, "{out}");
    std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    dev.wait().unwrap();
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
fn stop_kills_a_service_that_ignores_term() {
    let base = free_ports(10);
    let toml = format!(
        "[services.stubborn]\nport = {base}\nstop_grace = 0.5\n\
         command = [\"sh\", \"-c\", \"trap '' TERM; python3 -m http.server {{port}} --bind 127.0.0.1\"]\n"
    );
    let c = Checkout::new(XTASK, &toml);
    c.ok(&["start"]);
    let processes = service_processes(&c);
    c.ok(&["stop"]);
    assert_all_gone(&c, &processes, &[base]);
}

/// A service stopped by a signal (SIGSTOP, Ctrl-Z) shows as such, without a
/// health check (an HTTP one would wait for an answer that cannot come), and
/// `stop` lets it take its TERM rather than wait out the grace to KILL it.
#[test]
fn a_suspended_service_shows_as_such_and_takes_its_term() {
    let base = free_ports(10);
    let serve = "trap 'echo terminated > term.txt; exit 0' TERM; python3 -m http.server {port} --bind 127.0.0.1 & wait";
    let c = Checkout::new(
        XTASK,
        &format!(
            "[services.a]\nport = {base}\nstop_grace = 1\nready = {{ http = \"/\" }}\ncommand = [\"sh\", \"-c\", \"{serve}\"]\n"
        ),
    );
    c.ok(&["start"]);
    let pid = c.pid_of("a").unwrap();
    let processes: Vec<i32> = group_members(pid).into_iter().map(|m| m.pid).collect();
    assert_eq!(processes.len(), 2, "{processes:?}");
    std::process::Command::new("kill").args(["-STOP", "--", &format!("-{pid}")]).status().unwrap();
    let state = |p: &i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap().rsplit(')').next().unwrap()[1..2].to_owned()
    };
    assert!(wait_for(Duration::from_secs(5), || processes.iter().all(|p| state(p) == "T")));
    let status = &c.status()["a"];
    assert!(status["running"] == true && status["suspended"] == true && status["healthy"] == false, "{status}");
    let human = c.ok(&["status"]);
    assert!(human.contains(&format!("A (port {base}): ⏸ Suspended (pid {pid})")), "{human}");
    assert!(human.contains(&format!("`kill -CONT -- -{pid}` resumes it")), "{human}");
    c.ok(&["stop"]);
    assert_eq!(c.read("term.txt").as_deref(), Some("terminated\n"), "a never got its TERM: it was killed");
    assert_all_gone(&c, &processes, &[base]);
}

/// A member that ignores TERM and has cleared its environment (so it lacks
/// the group's mark) is still killed after the leader has gone: it was the
/// group's when the group was signalled.
#[test]
fn stop_kills_an_unmarked_member_that_ignores_term_after_the_leader_went() {
    let base = free_ports(10);
    let toml = format!(
        r#"[services.a]
port = {base}
stop_grace = 0.5
command = ['sh', '-c', '''env -i sh -c 'trap "" TERM; exec sleep 300' & exec python3 -m http.server {{port}} --bind 127.0.0.1''']
"#
    );
    let c = Checkout::new(XTASK, &toml);
    c.ok(&["start"]);
    let processes = service_processes(&c);
    assert_eq!(processes.len(), 2, "{processes:?}");
    c.ok(&["stop"]);
    assert_all_gone(&c, &processes, &[base]);
}

/// A second Ctrl-C while dev waits out a service's grace KILLs it at once.
#[test]
fn a_second_ctrl_c_cuts_the_grace_short() {
    let base = free_ports(10);
    let toml = format!(
        "[services.stubborn]\nport = {base}\nstop_grace = 60\n\
         command = [\"sh\", \"-c\", \"trap '' TERM; python3 -m http.server {{port}} --bind 127.0.0.1\"]\n"
    );
    let c = Checkout::new(XTASK, &toml);
    let (mut dev, _) = spawn_dev(&c, &[]);
    wait_running(&c, 1);
    let processes = service_processes(&c);
    let interrupt = || std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    interrupt();
    assert!(wait_for(LONG, || c.read("dev.out").is_some_and(|o| o.contains("received SIGINT: stopping"))));
    // A second later: two at once are one Ctrl-C passed on twice.
    std::thread::sleep(Duration::from_millis(1200));
    interrupt();
    // Well inside the 60 s grace.
    let ended = wait_for(LONG, || dev.try_wait().unwrap().is_some());
    let out = c.read("dev.out").unwrap();
    assert!(ended, "dev still waits out the grace:\n{out}");
    assert!(out.contains("received SIGINT again: killing what is still running"), "{out}");
    assert_all_gone(&c, &processes, &[base]);
}

/// The second Ctrl-C works when dev's output has gone (`dev | tee log`,
/// whose tee the first Ctrl-C ended); a second SIGTERM (another `stop`)
/// asks for no hurry.
#[test]
fn a_second_ctrl_c_works_without_a_terminal_and_a_second_sigterm_does_not_hurry() {
    let base = free_ports(10);
    let serve = format!(
        "trap 'sleep 3; echo graceful-exit; exit 0' TERM; python3 -m http.server {base} --bind 127.0.0.1 & wait"
    );
    let c = Checkout::new(
        XTASK,
        &format!("[services.a]\nport = {base}\nstop_grace = 60\ncommand = [\"sh\", \"-c\", \"{serve}\"]\n"),
    );
    let signal =
        |dev: &Child, s: &str| std::process::Command::new("kill").args([s, &dev.id().to_string()]).status().unwrap();
    // Two SIGTERMs a second and more apart: the service still exits its own way.
    let (mut dev, _) = spawn_dev(&c, &[]);
    wait_running(&c, 1);
    signal(&dev, "-TERM");
    std::thread::sleep(Duration::from_millis(1200));
    signal(&dev, "-TERM");
    dev.wait().unwrap();
    let out = c.read("dev.out").unwrap();
    assert!(out.contains("graceful-exit") && !out.contains("again"), "{out}");
    // A Ctrl-C after another terminal's SIGTERM does hurry.
    let (mut dev, _) = spawn_dev(&c, &[]);
    wait_running(&c, 1);
    signal(&dev, "-TERM");
    std::thread::sleep(Duration::from_millis(1200));
    signal(&dev, "-INT");
    dev.wait().unwrap();
    let out = c.read("dev.out").unwrap();
    assert!(out.contains("received SIGINT again") && !out.contains("graceful-exit"), "{out}");
    // Output to a pipe that is closed: the second Ctrl-C still KILLs a
    // service that ignores TERM.
    let stubborn = format!("trap '' TERM; python3 -m http.server {base} --bind 127.0.0.1");
    let toml = format!("[services.a]\nport = {base}\nstop_grace = 60\ncommand = [\"sh\", \"-c\", \"{stubborn}\"]\n");
    std::fs::write(c.path("ports.toml"), toml).unwrap();
    let mut dev = c.command(&["dev"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    assert!(wait_for(LONG, || c.status()["a"]["healthy"] == true));
    drop((dev.stdout.take(), dev.stderr.take()));
    signal(&dev, "-INT");
    std::thread::sleep(Duration::from_millis(1200));
    signal(&dev, "-INT");
    let ended = wait_for(LONG, || dev.try_wait().unwrap().is_some()); // well inside the 60 s grace
    assert!(ended, "dev waits out the grace");
}

/// Two signals at once (a closed terminal, `npm run` passing a Ctrl-C on)
/// are one: the services still get their grace.
#[test]
fn two_signals_at_once_leave_the_grace_be() {
    let base = free_ports(10);
    let serve = format!(
        "trap 'sleep 1; echo graceful-exit; exit 0' TERM; python3 -m http.server {base} --bind 127.0.0.1 & wait"
    );
    let c = Checkout::new(XTASK, &format!("[services.a]\nport = {base}\ncommand = [\"sh\", \"-c\", \"{serve}\"]\n"));
    let (mut dev, _) = spawn_dev(&c, &[]);
    wait_running(&c, 1);
    for _ in 0..2 {
        std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    }
    dev.wait().unwrap();
    let out = c.read("dev.out").unwrap();
    assert!(out.contains("graceful-exit") && !out.contains("again"), "{out}");
}

/// A runner killed with its guard leaves leftovers; the next `dev` of some
/// services stops them, and counts their ports as freed in its check that
/// every service gets a port.
#[test]
fn leftovers_ports_count_as_freed_before_they_are_stopped() {
    let base = free_ports(10);
    let c = Checkout::new(
        XTASK,
        &format!("[ports]\nattempts = 1\n{}{}", http_service("a", base, ""), http_service("b", base + 1, "")),
    );
    let (mut dev, _) = spawn_dev(&c, &[]);
    wait_running(&c, 2);
    std::process::Command::new("kill").args(["-KILL", &guard_of(&dev).to_string()]).status().unwrap();
    dev.kill().unwrap();
    dev.wait().unwrap();
    let (mut again, _) = spawn_dev(&c, &["a"]);
    let said = |s: &str| c.read("dev.out").is_some_and(|out| out.contains(s));
    let ready = wait_for(LONG, || said("✓ 1 service ready") || again.try_wait().unwrap().is_some());
    std::process::Command::new("kill").args(["-INT", &again.id().to_string()]).status().unwrap();
    again.wait().unwrap();
    let out = c.read("dev.out").unwrap();
    assert!(ready && out.contains("✓ 1 service ready"), "{out}");
    assert!(out.contains("b: stopping the leftover of a runner that was killed"), "{out}");
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

/// A command that cannot be run says why, and leaves no record behind.
#[test]
fn a_command_that_cannot_run_says_why_and_leaves_no_record() {
    use std::os::unix::fs::PermissionsExt;
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &format!("[services.bad]\nport = {base}\ncommand = [\"./bad\", \"{{port}}\"]\n"));
    // There to run, but its interpreter is not: exec fails, after the fork.
    std::fs::write(c.path("bad"), "#!/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(c.path("bad"), std::fs::Permissions::from_mode(0o755)).unwrap();
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

/// A service that writes much, then fails: none of its output is lost, on
/// the terminal or in its log, and the last lines shown are its real last.
#[test]
fn dev_shows_all_the_output_and_the_real_last_lines_of_a_service_that_fails() {
    let base = free_ports(10);
    let command = "seq 1 20000; echo final-error-55 >&2; exit 1";
    let c =
        Checkout::new(XTASK, &format!("[services.noisy]\nport = {base}\ncommand = [\"sh\", \"-c\", \"{command}\"]\n"));
    let output = c.command(&["dev"]).output().unwrap();
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    let shown: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("noisy | ")).collect();
    let numbers = shown.iter().filter(|l| l.parse::<u32>().is_ok()).count();
    assert!(numbers == 20000 && shown.contains(&"final-error-55"), "lines of noisy were not shown");
    let log = c.read(".logs/noisy.log").unwrap();
    assert!(log.lines().count() == 20001 && log.ends_with("final-error-55\n"), "its log lost lines");
    let (_, last) = out.split_once("before it was ready; its last lines:\n").expect("no last lines");
    let last: Vec<&str> = last.lines().take_while(|l| l.starts_with("  ")).collect();
    assert_eq!(last.last(), Some(&"  final-error-55"), "{last:?}");
}

/// Nobody reads dev's output (a pager that waits, Ctrl-S on the terminal),
/// so writing it blocks: a signal still stops the services, and dev.
#[test]
fn dev_stops_on_a_signal_while_nobody_reads_its_output() {
    let base = free_ports(10);
    let command = format!("python3 -m http.server {base} --bind 127.0.0.1 & yes noise");
    let c =
        Checkout::new(XTASK, &format!("[services.noisy]\nport = {base}\ncommand = [\"sh\", \"-c\", \"{command}\"]\n"));
    let dev = c.command(&["dev"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut dev = Running(dev);
    let record = c.path(".pids/noisy.json");
    assert!(wait_for(LONG, || !is_free(base) && record.exists()), "noisy did not start");
    std::thread::sleep(Duration::from_millis(500)); // the pipe is full by now
    std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    let stopped = wait_for(LONG, || is_free(base) && !record.exists());
    assert!(stopped, "noisy still runs after SIGINT");
    assert!(wait_for(LONG, || dev.try_wait().unwrap().is_some()), "dev still runs after SIGINT");
}

#[test]
fn dev_stops_everything_on_sigint_sigterm_and_sighup() {
    for signal in ["INT", "TERM", "HUP"] {
        let base = free_ports(30);
        let c = Checkout::new(XTASK, &stack(base));
        let (mut dev, _) = spawn_dev(&c, &[]);
        wait_running(&c, 3);
        let processes = service_processes(&c);
        std::process::Command::new("kill").args(["-s", signal, &dev.id().to_string()]).status().unwrap();
        let status = dev.wait().unwrap();
        let out = c.read("dev.out").unwrap();
        assert!(status.success(), "dev exited with {status} on SIG{signal}:\n{out}");
        assert!(out.contains(&format!("received SIG{signal}: stopping")), "{out}");
        // Dependents first: c stops before a and b.
        let stopped =
            |s: &str| out.find(&format!("{s} | stopped")).unwrap_or_else(|| panic!("{s} not stopped:\n{out}"));
        assert!(stopped("c") < stopped("a") && stopped("c") < stopped("b"), "{out}");
        assert_all_gone(&c, &processes, &[base, base + 10, base + 20]);
    }
}

#[test]
fn dev_prefixes_each_line_and_writes_the_logs() {
    let base = free_ports(30);
    let c = Checkout::new(XTASK, &stack(base));
    let (mut dev, _) = spawn_dev(&c, &["a"]);
    wait_running(&c, 1);
    std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    dev.wait().unwrap();
    let out = c.read("dev.out").unwrap();
    assert!(out.lines().any(|l| l.starts_with("a | Serving HTTP on 127.0.0.1 port")), "{out}");
    assert!(!out.contains("b |"), "dev a started b:\n{out}");
    assert!(c.read(".logs/a.log").unwrap().starts_with("Serving HTTP"));
}

#[test]
fn a_service_that_exits_later_is_reported_with_its_last_lines() {
    let base = free_ports(10);
    let toml = format!(
        "{}[services.flaky]\nport = {}\ncommand = [\"sh\", \"-c\", \"python3 -m http.server {{port}} --bind 127.0.0.1 & \
         sleep 1.5; kill $!; echo lost-connection-77; exit 7\"]\n",
        http_service("a", base, ""),
        base + 1
    );
    let c = Checkout::new(XTASK, &toml);
    let (mut dev, log) = spawn_dev(&c, &[]);
    let reported = wait_for(LONG, || std::fs::read_to_string(&log).unwrap().contains("lost-connection-77"));
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(reported, "{out}");
    assert!(wait_for(LONG, || std::fs::read_to_string(&log)
        .unwrap()
        .contains("flaky exited unexpectedly (exit status: 7)")));
    assert_eq!(dev.try_wait().unwrap(), None, "dev stopped although a still runs");
    assert_eq!(c.status()["a"]["healthy"], true);
    std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    assert!(dev.wait().unwrap().success());
    assert!(is_free(base));
}

#[test]
fn a_service_whose_leader_exits_leaves_nothing_of_its_group_running() {
    let base = free_ports(10);
    // The leader waits for a file, then exits; its server runs on in the group.
    let toml = format!(
        "{}[services.forked]\nport = {}\ncommand = [\"sh\", \"-c\", \"python3 -m http.server {{port}} --bind 127.0.0.1 & \
         while [ ! -e leave ]; do sleep 0.05; done\"]\n",
        http_service("a", base, ""),
        base + 1
    );
    let c = Checkout::new(XTASK, &toml);
    let (mut dev, _) = spawn_dev(&c, &[]);
    wait_running(&c, 2);
    let group: Vec<i32> = group_members(c.pid_of("forked").unwrap()).into_iter().map(|m| m.pid).collect();
    assert!(group.len() >= 2, "the server is not in the leader's group: {group:?}");
    std::fs::write(c.path("leave"), "").unwrap();
    let exited = wait_for(LONG, || c.read("dev.out").unwrap().contains("forked exited unexpectedly"));
    assert!(exited, "{}", c.read("dev.out").unwrap());
    let gone = wait_for(Duration::from_secs(5), || group.iter().all(|p| !alive(*p)));
    std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    let status = dev.wait().unwrap();
    // Nothing stops what is left but this test: no record names it.
    let left: Vec<i32> = group.iter().copied().filter(|p| alive(*p)).collect();
    for pid in &left {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    let out = c.read("dev.out").unwrap();
    assert!(gone && left.is_empty(), "what the leader forked outlived it, and dev: {left:?}\n{out}");
    assert!(status.success() && out.contains("forked | stopped what it left running"), "{out}");
    assert!(is_free(base + 1));
}

/// dev's guard: the process that stops dev's services when dev is gone.
fn guard_of(dev: &Child) -> i32 {
    let mine = |(_, command): &(i32, String)| command.contains(&format!(" {} ", dev.id()));
    let guards: Vec<_> = processes_with("guard").into_iter().filter(mine).collect();
    assert_eq!(guards.len(), 1, "one guard per dev: {guards:?}");
    guards[0].0
}

/// `dev` with the stack, all ready: the ports from, the checkout, dev, and
/// every process of its services.
fn dev_running_the_stack() -> (u16, Checkout, Child, Vec<i32>) {
    let base = free_ports(30);
    let c = Checkout::new(XTASK, &stack(base));
    let (dev, _) = spawn_dev(&c, &[]);
    wait_running(&c, 3);
    let old = service_processes(&c);
    (base, c, dev, old)
}

#[test]
fn when_the_runner_is_killed_its_guard_stops_every_service() {
    let (base, c, mut dev, old) = dev_running_the_stack();
    let guard = guard_of(&dev);
    dev.kill().unwrap(); // SIGKILL: dev has no chance to clean up
    dev.wait().unwrap();
    assert!(wait_for(LONG, || !alive(guard)), "the guard is still running");
    assert_all_gone(&c, &old, &[base, base + 10, base + 20]);
    let said = c.read(".logs/dev.guard.log").unwrap();
    assert!(said.contains(&format!("cargo xtask dev (pid {}) is gone without stopping a, b, c", dev.id())), "{said}");
    // Dependents first: c depends on a and b.
    let stopped = |service: &str| said.find(&format!("{service} | stopped")).unwrap_or_else(|| panic!("{said}"));
    assert!(stopped("c") < stopped("a") && stopped("c") < stopped("b"), "{said}");
}

#[test]
fn the_guard_stops_everything_even_when_ports_toml_no_longer_reads() {
    let (base, c, mut dev, old) = dev_running_the_stack();
    std::fs::write(c.path("ports.toml"), "[services.a\n").unwrap(); // someone is mid-edit
    dev.kill().unwrap();
    dev.wait().unwrap();
    let gone = || old.iter().all(|p| !alive(*p)) && [base, base + 10, base + 20].iter().all(|p| is_free(*p));
    assert!(wait_for(LONG, gone), "services left: {:?}\n{}", old, c.read(".logs/dev.guard.log").unwrap_or_default());
    let said = c.read(".logs/dev.guard.log").unwrap();
    assert!(said.contains("ports.toml:1:") && said.contains("stopping without the dependency order"), "{said}");
}

#[test]
fn a_runner_that_stops_on_its_own_leaves_its_guard_nothing_to_do() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("a", base, ""));
    let (mut dev, _) = spawn_dev(&c, &[]);
    wait_running(&c, 1);
    let guard = guard_of(&dev);
    std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    assert!(dev.wait().unwrap().success());
    assert!(!alive(guard), "dev left before its guard");
    assert_eq!(c.read(".logs/dev.guard.log").unwrap(), "");
}

#[test]
fn after_the_runner_and_its_guard_are_killed_the_next_run_stops_the_leftovers_and_takes_the_ports_back() {
    let (base, c, mut dev, old) = dev_running_the_stack();
    std::process::Command::new("kill").args(["-KILL", &guard_of(&dev).to_string()]).status().unwrap();
    dev.kill().unwrap();
    dev.wait().unwrap();
    assert!(old.iter().any(|p| alive(*p)), "the services died with the runner: nothing to test");
    let out = c.ok(&["start"]);
    assert!(out.contains("stopping the leftover of a runner that was killed"), "{out}");
    assert!(old.iter().all(|p| !alive(*p)), "leftovers still running");
    // Dependents first: c stops before a and b.
    let stopped = |s: &str| out.find(&format!("{s} | stopped")).unwrap_or_else(|| panic!("{s} not stopped:\n{out}"));
    assert!(stopped("c") < stopped("a") && stopped("c") < stopped("b"), "{out}");
    let ports = c.ports();
    assert_eq!(
        (ports["a"], ports["b"], ports["c"]),
        (base, base + 10, base + 20),
        "the services did not get their ports back"
    );
    assert!(c.status().values().all(|s| s["healthy"] == true));
}

#[test]
fn dev_takes_over_services_started_in_the_background() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("a", base, ""));
    c.ok(&["start"]);
    let old = c.pid_of("a").unwrap();
    let (mut dev, _) = spawn_dev(&c, &[]);
    assert!(wait_for(LONG, || c.pid_of("a").is_some_and(|p| p != old) && c.status()["a"]["healthy"] == true));
    assert!(!alive(old));
    assert_eq!(c.ports()["a"], base);
    std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    dev.wait().unwrap();
    assert!(c.read("dev.out").unwrap().contains("stopping the background instance"));
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
fn a_record_with_a_reused_pid_is_never_taken_for_ours() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("a", base, ""));
    let mut stranger = std::process::Command::new("sleep").arg("300").spawn().unwrap();
    let pid = stranger.id();
    std::fs::create_dir_all(c.path(".pids")).unwrap();
    // What a record of an earlier process with the same pid looks like: another start time.
    let record = format!(
        r#"{{"service": "a", "group": {{"leader": {{"pid": {pid}, "start": 1}}}}, "port": {base}, "command": ["x"], "supervisor": null}}"#
    );
    std::fs::write(c.path(".pids/a.json"), record).unwrap();
    c.ok(&["stop"]);
    c.ok(&["start"]);
    c.ok(&["stop"]);
    assert_eq!(stranger.try_wait().unwrap(), None, "a process was killed because its pid matched a record");
    stranger.kill().unwrap();
    stranger.wait().unwrap();
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

/// One request, so that http.server logs a line.
fn http_get(port: u16) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /followed HTTP/1.0\r\n\r\n").unwrap();
    let _ = s.read_to_end(&mut Vec::new());
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

/// Ctrl-C in dev leaves it running, as any background service; `stop` stops it.
#[test]
fn dev_leaves_a_background_service_that_ports_toml_no_longer_names_to_stop() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("api", base, ""));
    c.ok(&["start"]);
    let api = c.pid_of("api").unwrap();
    std::fs::write(c.path("ports.toml"), http_service("backend", base + 5, "")).unwrap();
    std::fs::remove_file(c.path(".ports.json")).unwrap(); // it names api
    let (mut dev, log) = spawn_dev(&c, &[]);
    wait_running(&c, 1);
    std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    let status = dev.wait().unwrap();
    let out = std::fs::read_to_string(log).unwrap();
    assert!(status.success() && out.contains("backend | stopped") && alive(api), "{status}\n{out}");
    let out = c.ok(&["stop"]);
    assert!(out.contains("api | stopped") && !alive(api), "{out}");
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

#[test]
fn ctrl_c_in_dev_leaves_running_what_runs_in_the_background() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &(http_service("a", base, "") + &http_service("b", base + 1, "")));
    c.ok(&["start", "a"]);
    let a = c.pid_of("a").unwrap();
    let (mut dev, log) = spawn_dev(&c, &["b"]);
    assert!(wait_for(LONG, || c.read("dev.out").is_some_and(|out| out.contains("✓ 1 service ready"))));
    std::process::Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    let status = dev.wait().unwrap();
    let out = std::fs::read_to_string(log).unwrap();
    assert!(status.success() && out.contains("b | stopped"), "{status}\n{out}");
    assert!(alive(a) && !out.contains("a | stopped"), "dev stopped a, which it did not start:\n{out}");
    assert_eq!(c.status()["a"]["healthy"], true);
    assert!(is_free(base + 1));
}

#[test]
fn the_guard_stops_everything_even_when_ports_toml_is_gone() {
    let (base, c, mut dev, old) = dev_running_the_stack();
    std::fs::rename(c.path("ports.toml"), c.path("ports.toml.away")).unwrap(); // a stash, an old commit
    dev.kill().unwrap();
    dev.wait().unwrap();
    let gone = || old.iter().all(|p| !alive(*p)) && [base, base + 10, base + 20].iter().all(|p| is_free(*p));
    let ok = wait_for(LONG, gone);
    std::fs::rename(c.path("ports.toml.away"), c.path("ports.toml")).unwrap();
    assert!(ok, "services left: {:?}\n{}", old, c.read(".logs/dev.guard.log").unwrap_or_default());
    let said = c.read(".logs/dev.guard.log").unwrap();
    assert!(said.contains("stopping without the dependency order"), "{said}");
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

/// Tests that act as another user: `cargo xtask test` runs them as root only.
mod needs_root {
    use super::*;

    /// A group that cannot be signalled (another user's, when we are not root)
    /// is said to be still running, and its record stays for a later stop.
    #[test]
    #[ignore = "needs root: `cargo xtask test` runs it as root"]
    fn a_service_that_cannot_be_stopped_keeps_its_record() {
        assert!(is_root(), "this test needs root: it starts a service as root and stops it as another user");
        let base = free_ports(10);
        let c = Checkout::new(XTASK, &http_service("a", base, "stop_grace = 0.2"));
        c.ok(&["start"]);
        let pid = c.pid_of("a").unwrap();
        std::fs::set_permissions(c.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let runner = RunnerCopy::new(XTASK);
        let mut stop = c.command_as_nobody(&runner, &["stop"]);
        let output = stop.output().unwrap();
        let out = text(&output);
        assert!(!output.status.success(), "{out}");
        assert!(out.contains(&format!("a | could not be stopped: pid {pid} still runs")), "{out}");
        assert!(alive(pid));
        assert!(c.path(".pids/a.json").exists(), "the record of a running service was removed:\n{out}");
    }
}
