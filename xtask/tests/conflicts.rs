//! Who holds a service's preferred port, and what the runner may do about
//! it (DESIGN.md section 6), through `start` in every mode.

mod common;

use common::*;

fn one_service(base: u16) -> String {
    http_service("api", base, "")
}

#[test]
fn non_interactive_kills_a_process_of_the_same_user() {
    let base = free_ports(10);
    let c = Checkout::new(&one_service(base));
    let squatter = Squatter::start(base, "127.0.0.1", None);
    let out = c.ok(&["start"]); // stdin is not a terminal
    assert!(out.contains(&format!("api: killed pid {} (", squatter.pid())), "{out}");
    assert!(out.contains(&format!("to free port {base}")), "{out}");
    assert!(!alive(squatter.pid()));
    assert_eq!(c.ports()["api"], base);
}

#[test]
fn no_kill_always_moves() {
    let base = free_ports(10);
    let c = Checkout::new(&one_service(base));
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
    let c = Checkout::new(&one_service(base));
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
        let c = Checkout::new(&one_service(base));
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
    let c = Checkout::new(&one_service(base));
    let squatter = Squatter::start(base, "127.0.0.1", None);
    let (ok, out) = run_in_terminal(&c, "start", "", &[("FORCE_MODE", "true")]);
    assert!(ok, "{out}");
    assert!(!out.contains("[y/N]"), "FORCE_MODE asked:\n{out}");
    assert!(!alive(squatter.pid()));
    let (ok, out) = run_in_terminal(&c, "restart --force", "", &[]);
    assert!(ok && !out.contains("[y/N]"), "{out}");
}

#[test]
fn another_users_process_is_never_killed() {
    if !is_root() {
        eprintln!("skipped: starting a process of another user needs root");
        return;
    }
    let base = free_ports(10);
    let c = Checkout::new(&one_service(base));
    let squatter = Squatter::start(base, "127.0.0.1", Some(NOBODY));
    let out = c.command(&["start"]).env("FORCE_MODE", "true").output().unwrap();
    let out = text(&out);
    assert!(out.contains("not killing it: it belongs to user nobody"), "{out}");
    assert!(alive(squatter.pid()));
    assert_eq!(c.ports()["api"], base + 1);
}

#[test]
fn an_ancestor_of_the_runner_is_never_killed() {
    let base = free_ports(10);
    let c = Checkout::new(&one_service(base));
    // This test process holds the port and is the runner's parent: a kill
    // would end the test itself.
    let _listener = std::net::TcpListener::bind(("127.0.0.1", base)).unwrap();
    let out = c.ok(&["start", "--force"]);
    assert!(out.contains("not killing it: it is an ancestor of this runner"), "{out}");
    assert_eq!(c.ports()["api"], base + 1);
}
