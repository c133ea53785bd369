//! Several checkouts (git worktrees) on one machine: the user-level registry
//! keeps their ports disjoint and stable, and no checkout kills another's services.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use harness::*;

/// The runner under test, as cargo built it for these tests.
const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
use tempfile::TempDir;

/// Three services: api on `base`, web on `base + 10`, worker on `base + 20`.
fn three_services(base: u16) -> String {
    format!(
        "[ports]\nattempts = 5\n{}{}{}",
        http_service("api", base, ""),
        http_service("web", base + 10, "depends_on = [\"api\"]"),
        http_service("worker", base + 20, ""),
    )
}

/// Two checkouts of the same ports.toml sharing one registry (declared first,
/// so it outlives them: their Drop stops their services).
fn two_worktrees(base: u16) -> (TempDir, Checkout, Checkout) {
    let state = TempDir::new().unwrap();
    let a = Checkout::sharing(XTASK, &three_services(base), state.path());
    let b = Checkout::sharing(XTASK, &three_services(base), state.path());
    (state, a, b)
}

fn preferred(base: u16) -> BTreeMap<String, u16> {
    BTreeMap::from([("api".into(), base), ("web".into(), base + 10), ("worker".into(), base + 20)])
}

/// The checkout's root as the runner sees it (its current directory, symlinks resolved).
fn root(c: &Checkout) -> PathBuf {
    c.dir.path().canonicalize().unwrap()
}

fn registry_file(state: &Path) -> PathBuf {
    state.join("cargo-xtask-ports/registry.json")
}

fn registry(state: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(registry_file(state)).expect("the registry exists");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the registry is not valid JSON ({e}):\n{text}"))
}

/// The services' ports of a registry entry: `{"ports": {...}, "dashboard": N}`.
fn ports_of(entry: &serde_json::Value) -> BTreeMap<String, u16> {
    serde_json::from_value(entry["ports"].clone())
        .unwrap_or_else(|e| panic!("a registry entry without ports ({e}): {entry}"))
}

/// The ports the registry reserves for the checkout at `root`, if it has an entry.
fn reserved(state: &Path, root: &Path) -> Option<BTreeMap<String, u16>> {
    registry(state)["checkouts"].get(root.to_str().unwrap()).map(ports_of)
}

fn values(ports: &BTreeMap<String, u16>) -> BTreeSet<u16> {
    ports.values().copied().collect()
}

fn assert_disjoint(a: &BTreeMap<String, u16>, b: &BTreeMap<String, u16>) {
    assert!(values(a).is_disjoint(&values(b)), "two checkouts share ports: {a:?} and {b:?}");
}

/// Pid and running state of every service, from `status --json`.
fn pids(c: &Checkout) -> BTreeMap<String, (i32, bool)> {
    c.status()
        .into_iter()
        .map(|(name, row)| (name, (row["pid"].as_i64().unwrap_or(0) as i32, row["running"] == true)))
        .collect()
}

/// `start` with `FORCE_MODE=true`, expected to succeed.
fn start_forced(c: &Checkout) -> String {
    let output = c.command(&["start"]).env("FORCE_MODE", "true").output().unwrap();
    let out = text(&output);
    assert!(output.status.success(), "start with FORCE_MODE=true failed:\n{out}");
    out
}

/// Asserts that A's services still run with the same pids, and that B runs
/// on ports of its own, none of A's.
fn assert_both_running(a: &Checkout, a_pids: &BTreeMap<String, (i32, bool)>, b: &Checkout, out: &str) {
    assert_eq!(&pids(a), a_pids, "a service of the other checkout was stopped or restarted:\n{out}");
    assert!(a_pids.values().all(|(pid, _)| alive(*pid)), "a service of the other checkout was killed:\n{out}");
    assert_disjoint(&a.ports(), &b.ports());
    let b_status = b.status();
    for (name, port) in b.ports() {
        assert_eq!(b_status[&name]["running"], true, "{name} of the second checkout is not running:\n{out}");
        assert_eq!(b_status[&name]["port"], port, "{name} of the second checkout runs on another port:\n{out}");
    }
}

/// Asserts that for each of A's ports the output has a line that names A's checkout.
fn assert_names_the_other_checkout(out: &str, a: &Checkout) {
    let a_path = root(a).display().to_string();
    for (name, port) in a.ports() {
        let said = out.lines().any(|l| l.starts_with(&format!("{name}: port {port} ")) && l.contains(&a_path));
        assert!(said, "no line says that {name}'s port {port} is the checkout {a_path}'s:\n{out}");
    }
}

/// Two checkouts of one ports.toml get disjoint ports, and each keeps its own from run to run, whatever the order.
#[test]
fn two_checkouts_get_disjoint_ports_and_keep_them() {
    let base = free_ports(30);
    let (state, a, b) = two_worktrees(base);
    a.ok(&["ports", "allocate"]);
    let out = b.ok(&["ports", "allocate"]);
    let (first_a, first_b) = (a.ports(), b.ports());
    assert_eq!(first_a, preferred(base), "the first checkout did not get the preferred ports");
    assert_disjoint(&first_a, &first_b);
    assert!(out.contains(&format!("is reserved by the checkout {}", root(&a).display())), "{out}");
    for (c, first) in [(&b, &first_b), (&a, &first_a), (&a, &first_a), (&b, &first_b)] {
        c.ok(&["ports", "allocate"]);
        assert_eq!(&c.ports(), first, "a second allocation changed a checkout's ports");
        assert_eq!(
            reserved(state.path(), &root(c)).as_ref(),
            Some(first),
            "the registry does not say the checkout's ports"
        );
    }
    let out = b.fails(&["ports", "set", "api", &base.to_string()]);
    assert!(out.contains(&format!("reserved by the checkout {}", root(&a).display())), "{out}");
}

/// A checkout's reservations hold while its services are stopped: a second checkout allocates and starts elsewhere.
#[test]
fn reservations_hold_while_the_services_are_stopped() {
    let base = free_ports(30);
    let (_state, a, b) = two_worktrees(base);
    a.ok(&["ports", "allocate"]);
    assert!(pids(&a).values().all(|(_, running)| !running));
    b.ok(&["ports", "allocate"]);
    assert_disjoint(&a.ports(), &b.ports());
    // Even with A's ports all free, B starts on its own.
    assert!(values(&a.ports()).into_iter().all(is_free));
    let out = b.ok(&["start"]);
    let b_status = b.status();
    for (name, port) in b.ports() {
        assert_eq!(b_status[&name]["running"], true, "{name} is not running:\n{out}");
        assert_eq!(b_status[&name]["port"], port, "{name} runs on another port:\n{out}");
    }
    assert_disjoint(&a.ports(), &b.ports());
    b.ok(&["stop"]);
    // A ran once and stopped: still reserved.
    a.ok(&["start"]);
    a.ok(&["stop"]);
    b.ok(&["ports", "reset"]);
    b.ok(&["ports", "allocate"]);
    assert_disjoint(&a.ports(), &b.ports());
}

/// FORCE_MODE never kills another checkout's services on our preferred ports: we move and say whose they are.
#[test]
fn force_mode_never_kills_the_services_of_another_checkout() {
    let base = free_ports(30);
    let (_state, a, b) = two_worktrees(base);
    a.ok(&["start"]);
    let a_pids = pids(&a);
    assert!(a_pids.values().all(|(_, running)| *running), "{a_pids:?}");
    let out = start_forced(&b);
    assert_both_running(&a, &a_pids, &b, &out);
    assert_names_the_other_checkout(&out, &a);
    // `ports` in B says whose service holds the port B would prefer.
    let shown = b.ok(&["ports"]);
    let api = shown.lines().find(|l| l.starts_with("api")).unwrap_or_default().to_owned();
    std::fs::write(b.path(".ports.json"), serde_json::to_string(&a.ports()).unwrap()).unwrap();
    let shown = b.ok(&["ports"]);
    let held = shown.lines().find(|l| l.starts_with("api")).unwrap();
    assert!(api.contains("ours"), "{api}");
    assert!(held.contains(&format!("a service of the checkout {}", root(&a).display())), "{held}");
}

/// A port of our own .ports.json held by another checkout's service: not killed (FORCE_MODE); we move, naming it.
#[test]
fn our_own_port_held_by_another_checkouts_service_is_not_killed() {
    let base = free_ports(80);
    let (_state, a, b) = two_worktrees(base);
    a.ok(&["start"]);
    let a_pids = pids(&a);
    // B prefers other ports, but its .ports.json points at A's running services.
    std::fs::write(b.path("ports.toml"), three_services(base + 50)).unwrap();
    std::fs::write(b.path(".ports.json"), serde_json::to_string(&a.ports()).unwrap()).unwrap();
    let out = start_forced(&b);
    assert_both_running(&a, &a_pids, &b, &out);
    assert_names_the_other_checkout(&out, &a);
}

/// A checkout whose ports.toml is gone (`git stash -u`, an old commit) while its services run keeps its registry
/// entry: another checkout, not asking, moves past those services, naming the checkout, and kills none of them.
#[test]
fn running_services_of_a_checkout_without_its_ports_toml_are_not_killed() {
    let base = free_ports(30);
    let (_state, a, b) = two_worktrees(base);
    b.ok(&["start"]);
    let b_pids = pids(&b);
    let stashed = b.path("ports.toml.stashed");
    std::fs::rename(b.path("ports.toml"), &stashed).unwrap();
    let output = a.run(&["start"]); // stdin is not a terminal: a stranger's holder would be killed
    // Back before any assertion, so that B's Drop can stop its services.
    std::fs::rename(&stashed, b.path("ports.toml")).unwrap();
    let out = text(&output);
    assert!(output.status.success(), "start failed:\n{out}");
    assert_both_running(&b, &b_pids, &a, &out);
    assert_names_the_other_checkout(&out, &b);
}

/// After the registry is deleted (what its parse error suggests), another
/// checkout's running services are not named in it, but still carry their
/// group's mark: not killed (FORCE_MODE), we move.
#[test]
fn services_of_a_checkout_the_registry_lost_are_not_killed() {
    let base = free_ports(30);
    let (state, a, b) = two_worktrees(base);
    a.ok(&["start"]);
    let a_pids = pids(&a);
    std::fs::remove_file(registry_file(state.path())).unwrap();
    let out = start_forced(&b);
    assert_both_running(&a, &a_pids, &b, &out);
    assert!(out.contains("it carries the mark of a service cargo xtask started"), "the move does not say why:\n{out}");
}

/// What left the group of another checkout's service (`setsid`, a daemon)
/// carries the group's mark: on a port we prefer, it is named and not killed.
#[test]
fn what_left_the_group_of_another_checkouts_service_is_not_killed() {
    let base = free_ports(20);
    let state = TempDir::new().unwrap();
    let escaping = format!(
        "[services.api]\nport = {}\ncommand = [\"sh\", \"-c\", \"setsid python3 -m http.server {base} --bind 127.0.0.1 \
         >/dev/null 2>&1 & exec python3 -m http.server {{port}} --bind 127.0.0.1\"]\n",
        base + 10
    );
    let b = Checkout::sharing(XTASK, &escaping, state.path());
    let a = Checkout::sharing(XTASK, &http_service("api", base, ""), state.path());
    b.ok(&["start"]);
    assert!(wait_for(Duration::from_secs(10), || !is_free(base)), "B's api never served port {base}");
    let [(escaped, _)] = processes_with(&format!("http.server {base} ")).try_into().unwrap();
    let out = start_forced(&a);
    assert!(alive(escaped), "what left B's group was killed:\n{out}");
    let said = format!("api: port {base} is held by pid {escaped}");
    let line = out.lines().find(|l| l.starts_with(&said)).unwrap_or_else(|| panic!("no line \"{said}\":\n{out}"));
    assert!(line.contains(&format!("a service of the checkout {}", root(&b).display())), "{line}");
    assert_ne!(a.ports()["api"], base);
    assert!(b.ok(&["ports", "who", &base.to_string()]).contains("this checkout's api"));
}

/// `ports reset` releases the checkout's reservations: another checkout can then take those ports.
#[test]
fn reset_releases_the_reservations() {
    let base = free_ports(30);
    let (state, a, b) = two_worktrees(base);
    a.ok(&["ports", "allocate"]);
    b.ok(&["ports", "allocate"]);
    assert_ne!(b.ports(), preferred(base));
    a.ok(&["ports", "reset"]);
    assert_eq!(reserved(state.path(), &root(&a)), None, "reset left the checkout in the registry");
    assert!(!a.path(".ports.json").exists());
    b.ok(&["ports", "allocate"]);
    assert_ne!(b.ports(), preferred(base), "an allocation without reset moved the checkout's ports");
    b.ok(&["ports", "reset"]);
    b.ok(&["ports", "allocate"]);
    assert_eq!(b.ports(), preferred(base), "the released ports were not given to the other checkout");
    // Now A is the one that moves.
    a.ok(&["ports", "allocate"]);
    assert_disjoint(&a.ports(), &b.ports());
}

/// A deleted checkout's reservations are pruned; `ports --all` lists every existing checkout, as text and JSON.
#[test]
fn deleted_checkouts_are_pruned_and_ports_all_lists_the_others() {
    let base = free_ports(30);
    let (state, a, b) = two_worktrees(base);
    let gone = Checkout::sharing(XTASK, &three_services(base), state.path());
    gone.ok(&["ports", "allocate"]);
    a.ok(&["ports", "allocate"]);
    b.ok(&["ports", "allocate"]);
    let (a_path, b_path, gone_path) = (root(&a), root(&b), root(&gone));

    let out = b.ok(&["ports", "--all"]);
    for (c, path) in [(&a, &a_path), (&b, &b_path), (&gone, &gone_path)] {
        let lines: Vec<&str> = out.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with(&path.display().to_string()))
            .unwrap_or_else(|| panic!("{path:?} not listed:\n{out}"));
        assert_eq!(lines[at].ends_with("(this checkout)"), path == &b_path, "{out}");
        for (service, port) in c.ports() {
            let listed =
                lines[at + 1..].iter().take(3).any(|l| l.split_whitespace().eq([service.as_str(), &port.to_string()]));
            assert!(listed, "{service} {port} of {path:?} not listed:\n{out}");
        }
    }
    let json: serde_json::Value = serde_json::from_str(&b.ok(&["ports", "--all", "--json"])).unwrap();
    let checkouts = json["checkouts"].as_object().unwrap_or_else(|| panic!("no checkouts: {json}"));
    let listed: BTreeMap<PathBuf, BTreeMap<String, u16>> =
        checkouts.iter().map(|(path, entry)| (PathBuf::from(path), ports_of(entry))).collect();
    let want =
        BTreeMap::from([(a_path.clone(), a.ports()), (b_path.clone(), b.ports()), (gone_path.clone(), gone.ports())]);
    assert_eq!(listed, want);

    std::fs::remove_dir_all(gone.dir.path()).unwrap();
    let out = b.ok(&["ports", "--all"]);
    assert!(!out.contains(&gone_path.display().to_string()), "a deleted checkout is still listed:\n{out}");
    assert!(out.contains(&a_path.display().to_string()) && out.contains(&b_path.display().to_string()), "{out}");
    let json: serde_json::Value = serde_json::from_str(&b.ok(&["ports", "--all", "--json"])).unwrap();
    assert_eq!(json["checkouts"].as_object().unwrap().len(), 2, "{json}");
    assert_eq!(reserved(state.path(), &gone_path), None, "the deleted checkout is still in the registry file");
    // The deleted checkout had the preferred ports: they are free to take again.
    b.ok(&["ports", "reset"]);
    b.ok(&["ports", "allocate"]);
    assert_eq!(b.ports(), preferred(base), "the deleted checkout still reserves its ports");
}

/// Concurrent allocations in three checkouts (four each, all at once) never hand out one port twice.
/// `ports --all` only reads (unless a checkout is gone): a hand-formatted
/// registry is left as written.
#[test]
fn ports_all_leaves_the_registry_as_written() {
    let base = free_ports(30);
    let (state, a, _b) = two_worktrees(base);
    a.ok(&["ports", "allocate"]);
    let compact = serde_json::to_string(&registry(state.path())).unwrap();
    std::fs::write(registry_file(state.path()), &compact).unwrap();
    a.ok(&["ports", "--all"]);
    assert_eq!(std::fs::read_to_string(registry_file(state.path())).unwrap(), compact);
}

#[test]
fn concurrent_allocations_in_several_checkouts_are_disjoint() {
    let base = free_ports(30);
    let state = TempDir::new().unwrap();
    let checkouts: Vec<Checkout> =
        (0..3).map(|_| Checkout::sharing(XTASK, &three_services(base), state.path())).collect();
    for round in 0..3 {
        let children: Vec<_> = checkouts
            .iter()
            .flat_map(|c| (0..4).map(move |_| c.command(&["ports", "allocate"])))
            .map(|mut command| command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
            .collect();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "round {round}: {}", text(&output));
        }
        let mut seen = BTreeMap::new();
        for (i, c) in checkouts.iter().enumerate() {
            for (service, port) in c.ports() {
                if let Some(other) = seen.insert(port, (i, service.clone())) {
                    panic!("round {round}: port {port} given to {other:?} and to {:?}", (i, service));
                }
            }
            assert_eq!(
                reserved(state.path(), &root(c)),
                Some(c.ports()),
                "round {round}: the registry disagrees with .ports.json"
            );
        }
        assert_eq!(registry(state.path())["checkouts"].as_object().unwrap().len(), 3);
        for c in &checkouts {
            c.ok(&["ports", "reset"]);
        }
    }
}

/// The registry lives in `$XDG_STATE_HOME/cargo-xtask-ports/`, else in `$HOME/.local/state/cargo-xtask-ports/`.
#[test]
fn the_registry_lives_under_xdg_state_home_or_home() {
    let base = free_ports(30);
    let (home, state) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let c = Checkout::sharing(XTASK, &three_services(base), state.path());
    for args in [&["ports", "allocate"][..], &["ports", "--all"], &["ports", "reset"], &["ports", "allocate"]] {
        let output = c.command(args).env("HOME", home.path()).output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
    }
    assert_eq!(reserved(state.path(), &root(&c)), Some(preferred(base)));
    assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0, "something was written under HOME");
    c.ok(&["ports", "reset"]);

    // XDG_STATE_HOME unset, or empty: the default under HOME.
    for xdg in [None, Some("")] {
        let home = TempDir::new().unwrap();
        let run = |args: &[&str]| {
            let mut command = c.command(args);
            match xdg {
                None => command.env_remove("XDG_STATE_HOME"),
                Some(value) => command.env("XDG_STATE_HOME", value),
            };
            let output = command.env("HOME", home.path()).output().unwrap();
            assert!(output.status.success(), "XDG_STATE_HOME={xdg:?}: {}", text(&output));
        };
        run(&["ports", "allocate"]);
        let state_home = home.path().join(".local/state");
        assert!(registry_file(&state_home).is_file(), "XDG_STATE_HOME={xdg:?}: no registry under HOME");
        assert_eq!(reserved(&state_home, &root(&c)), Some(preferred(base)), "XDG_STATE_HOME={xdg:?}");
        run(&["ports", "reset"]);
        assert_eq!(reserved(&state_home, &root(&c)), None, "XDG_STATE_HOME={xdg:?}");
    }
    assert_eq!(reserved(state.path(), &root(&c)), None, "the runs without XDG_STATE_HOME wrote to it");
}

/// A port reserved by another (stopped) checkout is not ours to free: whoever holds it is not killed, even forced.
#[test]
fn a_port_reserved_by_another_checkout_is_never_freed_by_a_kill() {
    let base = free_ports(30);
    let (_state, a, b) = two_worktrees(base);
    a.ok(&["ports", "allocate"]);
    let squatter = Squatter::start(base, "127.0.0.1", None);
    let out = start_forced(&b);
    assert_disjoint(&a.ports(), &b.ports());
    assert!(alive(squatter.pid()), "a process was killed to free a port reserved by another checkout:\n{out}");
}

/// A relative `XDG_STATE_HOME` is ignored, as the XDG spec requires: checkouts still share one registry under HOME.
#[test]
fn a_relative_xdg_state_home_is_ignored() {
    let base = free_ports(30);
    let (home, state) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let a = Checkout::sharing(XTASK, &three_services(base), state.path());
    let b = Checkout::sharing(XTASK, &three_services(base), state.path());
    for c in [&a, &b] {
        let mut command = c.command(&["ports", "allocate"]);
        let output = command.env("XDG_STATE_HOME", "state").env("HOME", home.path()).output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
    }
    assert_disjoint(&a.ports(), &b.ports());
    assert!(registry_file(&home.path().join(".local/state")).is_file(), "no registry under HOME/.local/state");
}

/// While a checkout waits seconds on one holder (it ignores TERM), another
/// checkout starts a service on the first one's next port: that service is
/// not killed, and the first checkout moves past its reservation.
#[test]
fn a_slow_kill_does_not_make_a_service_another_checkout_started_meanwhile_a_stranger() {
    let base = free_ports(10);
    let state = TempDir::new().unwrap();
    let toml = format!("[ports]\nattempts = 5\n{}{}", http_service("s1", base, ""), http_service("s2", base + 1, ""));
    let (a, b) = (Checkout::sharing(XTASK, &toml, state.path()), Checkout::sharing(XTASK, &toml, state.path()));
    let serve = format!("trap '' TERM; exec python3 -m http.server {base} --bind 127.0.0.1");
    let mut stubborn = std::process::Command::new("sh")
        .args(["-c", &serve])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Listening, not merely bound: http.server looks up its host name in
    // between, and a bound port has no holder to kill (a would move on).
    let listening = || std::net::TcpStream::connect(("127.0.0.1", base)).is_ok();
    assert!(wait_for(std::time::Duration::from_secs(10), listening));
    let mut slow = a.command(&["start"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Once a waits out the grace of the holder of s1's port (it holds a
    // pidfd of it), b starts and moves its s1 past it, to s2's port.
    let waiting = || pidfds_of(slow.id() as i32).contains(&(stubborn.id() as i32));
    if !wait_for(std::time::Duration::from_secs(10), waiting) {
        let _ = stubborn.kill();
        let _ = slow.kill();
        panic!("a did not try to kill the holder:\n{}", text(&slow.wait_with_output().unwrap()));
    }
    let b_out = b.ok(&["start", "--no-kill"]);
    let (b_s1, b_ports) = (b.pid_of("s1").unwrap(), b.ports());
    let out = text(&slow.wait_with_output().unwrap());
    let _ = stubborn.kill();
    let _ = stubborn.wait();
    assert_eq!(b_ports["s1"], base + 1, "b:\n{b_out}\na:\n{out}");
    assert!(alive(b_s1), "a killed b's s1:\n{out}");
    assert!(out.contains(&format!("s2: port {} is reserved by the checkout", base + 1)), "{out}");
}

/// The processes `pid` holds a pidfd of (`Pid:` in its descriptors' fdinfo).
fn pidfds_of(pid: i32) -> Vec<i32> {
    let infos = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).into_iter().flatten().flatten();
    let texts = infos.filter_map(|info| std::fs::read_to_string(info.path()).ok());
    texts.filter_map(|t| t.lines().find_map(|l| l.strip_prefix("Pid:")?.trim().parse().ok())).collect()
}

/// `ports set` in one checkout gives its other services ports that no other checkout holds.
#[test]
fn set_leaves_the_other_checkouts_ports_alone() {
    let base = free_ports(30);
    let (state, a, b) = two_worktrees(base);
    a.ok(&["start"]);
    b.ok(&["ports", "set", "api", &(base + 5).to_string()]);
    assert_eq!(b.ports()["api"], base + 5);
    assert_disjoint(&a.ports(), &b.ports());
    assert_eq!(reserved(state.path(), &root(&b)), Some(b.ports()));
    let a_ports = a.ports();
    a.ok(&["ports", "allocate"]);
    assert_eq!(a.ports(), a_ports, "a checkout's running services were moved");
}

/// A running service keeps its port even when another checkout's entry (wrongly) reserves it.
#[test]
fn a_running_service_keeps_its_port_whatever_the_registry_says() {
    let base = free_ports(30);
    let (state, a, b) = two_worktrees(base);
    a.ok(&["start"]);
    let entry = serde_json::json!({ "ports": { "web": base + 10 } });
    let mut entries = registry(state.path());
    entries["checkouts"][root(&b).to_str().unwrap()] = entry;
    std::fs::write(registry_file(state.path()), entries.to_string()).unwrap();
    a.ok(&["ports", "allocate"]);
    assert_eq!(a.ports(), preferred(base), "a running service was moved on paper");
    assert!(a.read(".env.runtime").unwrap().contains(&format!("WEB_PORT={}\n", base + 10)));
}

/// An empty registry is one without entries; a broken one is an error that names its place once.
#[test]
fn an_empty_registry_is_empty_and_a_broken_one_names_the_place() {
    let base = free_ports(30);
    let (state, a, _b) = two_worktrees(base);
    std::fs::create_dir_all(registry_file(state.path()).parent().unwrap()).unwrap();
    std::fs::write(registry_file(state.path()), "").unwrap();
    a.ok(&["ports", "allocate"]);
    assert_eq!(reserved(state.path(), &root(&a)), Some(preferred(base)));
    std::fs::write(registry_file(state.path()), "{").unwrap();
    let out = a.fails(&["ports", "allocate"]);
    let want = format!("{}:1:1: EOF while parsing an object\n", registry_file(state.path()).display());
    assert!(out.contains(&want), "{out}");
}

/// A checkout copied with its records (`cp -a`, while its services run):
/// the copy does not take them for its own, to stop, or to share ports with.
#[test]
fn a_copied_checkout_leaves_the_originals_services_alone() {
    let base = free_ports(30);
    let (_state, a, b) = two_worktrees(base);
    a.ok(&["start", "api"]);
    let pid = a.pid_of("api").unwrap();
    let copied = std::process::Command::new("cp").arg("-a").arg(a.path(".")).arg(b.dir.path()).output().unwrap();
    assert!(copied.status.success(), "{}", text(&copied));
    assert!(b.path(".pids/api.json").is_file(), "the record was not copied");
    assert_eq!(b.pid_of("api"), None, "the copy shows the original's api as its own");
    let out = b.ok(&["stop"]);
    assert!(alive(pid), "the copy's stop killed the original's api:\n{out}");
    b.ok(&["start", "api"]);
    assert!(alive(pid), "the copy's start killed the original's api");
    assert_ne!(b.ports()["api"], a.ports()["api"], "the copy shares the original's port");
    assert_eq!(a.pid_of("api"), Some(pid));
}

/// A subfolder whose `ports.toml` is not a readable file (a dangling link,
/// a folder, a file this user may not read) is not a way to the checkout
/// above: commands there fail naming it, and the checkout's services run on.
#[test]
fn a_ports_toml_that_is_no_readable_file_is_an_error_not_the_checkout_above() {
    let base = free_ports(10);
    let runner = RunnerCopy::new(XTASK);
    let c = Checkout::new(XTASK, &http_service("api", base, ""));
    c.ok(&["start"]);
    let pid = c.pid_of("api").unwrap();
    let sub = c.path("sub");
    let file = sub.join("ports.toml");
    let broken: [(&str, &dyn Fn()); 3] = [
        ("is a symbolic link to gone.toml, which does not exist", &|| {
            std::os::unix::fs::symlink("gone.toml", &file).unwrap()
        }),
        ("is a folder, not a file", &|| std::fs::create_dir(&file).unwrap()),
        ("cannot be read: Permission denied (os error 13)", &|| {
            std::fs::write(&file, http_service("api", base, "")).unwrap();
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        }),
    ];
    for (problem, make) in broken {
        std::fs::create_dir(&sub).unwrap();
        make();
        for args in [&["stop"][..], &["status"], &["ports", "allocate"]] {
            let as_nobody = is_root() && problem.contains("Permission");
            let mut command = if as_nobody {
                // Root reads any file: ask as nobody, who may enter the checkout.
                std::os::unix::fs::chown(c.dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
                c.command_as_nobody(&runner, args)
            } else {
                c.command(args)
            };
            command.current_dir(&sub);
            let output = command.output().unwrap();
            let out = text(&output);
            assert!(!output.status.success(), "{args:?} from a folder whose ports.toml {problem}:\n{out}");
            assert!(out.contains(&format!("{} {problem}; cargo xtask works on the checkout", file.display())), "{out}");
            assert!(out.contains("make it a readable file, or remove it"), "{out}");
            assert_eq!(
                c.pid_of("api"),
                Some(pid),
                "{args:?} from {} stopped the checkout's api:\n{out}",
                sub.display()
            );
        }
        std::fs::remove_dir_all(&sub).unwrap();
    }
    assert!(c.ok(&["stop"]).contains("api"));
}
