//! `cargo xtask dev` in the foreground: each service's output, prefixed;
//! its signals (Ctrl-C, a second one, SIGTERM, SIGHUP, while nobody reads its
//! output); the services started in the background, which it takes over or
//! leaves; and what makes it refuse.

use std::process::{Child, Stdio};
use std::time::Duration;

use harness::*;

/// The runner under test, as cargo built it for these tests.
const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

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
