//! A `dev` killed outright (SIGKILL) leaves nothing running: its guard stops
//! its services, even with ports.toml broken or gone; when the guard is
//! killed too, the next run stops the leftovers and takes their ports back.

use std::process::Child;

use harness::*;

/// The runner under test, as cargo built it for these tests.
const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

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
