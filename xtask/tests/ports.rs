//! The runner's core through its command line: ports.toml errors,
//! allocation, .ports.json and .env.runtime, who holds a port.

use std::process::Stdio;

use harness::*;

/// The runner under test, as cargo built it for these tests.
const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

fn two_services(base: u16) -> String {
    format!(
        "[ports]\nattempts = 5\n{}{}[env]\nAPI = \"http://127.0.0.1:{{api.port}}\"\n",
        http_service("api", base, ""),
        http_service("web", base + 10, "depends_on = [\"api\"]"),
    )
}

#[test]
fn first_run_writes_the_preferred_ports_in_the_seed_formats() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    c.ok(&["ports", "allocate"]);
    assert_eq!(c.read(".ports.json").unwrap(), format!("{{\n  \"api\": {base},\n  \"web\": {}\n}}\n", base + 10));
    assert_eq!(
        c.read(".env.runtime").unwrap(),
        format!(
            "# Auto-generated runtime configuration\n# DO NOT EDIT MANUALLY - managed by cargo xtask\n\
             API_PORT={base}\nAPI_URL=http://localhost:{base}\nWEB_PORT={web}\nWEB_URL=http://localhost:{web}\n\
             API=http://127.0.0.1:{base}\n",
            web = base + 10
        )
    );
}

#[test]
fn a_listener_on_any_one_address_moves_the_service() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    for host in ["127.0.0.1", "0.0.0.0", "::1", "::"] {
        let Ok(listener) = std::net::TcpListener::bind((host, base)) else { continue }; // no IPv6 here
        let _ = std::fs::remove_file(c.path(".ports.json"));
        let out = c.ok(&["ports", "allocate"]);
        assert_eq!(c.ports()["api"], base + 1, "a listener on {host} was not seen:\n{out}");
        assert!(out.contains(&format!("api: port {base} is held by pid {}", std::process::id())), "{out}");
        assert!(c.read(".env.runtime").unwrap().contains(&format!("API_PORT={}\n", base + 1)));
        drop(listener);
    }
}

#[test]
fn hand_edits_are_honoured_and_kept_as_written() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    let edited = format!("{{\"api\": {},   \"web\": {}}}", base + 3, base + 10);
    std::fs::write(c.path(".ports.json"), &edited).unwrap();
    c.ok(&["ports", "allocate"]);
    assert_eq!(c.read(".ports.json").unwrap(), edited, "an unchanged allocation rewrote the hand-edited file");
    assert!(c.read(".env.runtime").unwrap().contains(&format!("API_PORT={}\n", base + 3)));
}

#[test]
fn invalid_ports_json_is_an_error_and_changes_nothing() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    for bad in
        ["{\"api\": 8000,", "{\"apx\": \"8000\"}", "{\"api\": \"8000\"}", "[1]", "{\"api\": 8000, \"api\": 8001}"]
    {
        std::fs::write(c.path(".ports.json"), bad).unwrap();
        let out = c.fails(&["ports", "allocate"]);
        assert!(out.contains(".ports.json:1:"), "{bad}: the error does not name the file and place:\n{out}");
        assert_eq!(c.read(".ports.json").unwrap(), bad, "{bad}: the file was overwritten");
        assert_eq!(c.read(".env.runtime"), None, "{bad}: .env.runtime was written");
    }
}

/// A teammate renamed `api` to `api2`: the entry of `api` is noted and
/// dropped at the next write, and no command fails over it.
#[test]
fn an_entry_of_a_renamed_service_is_noted_and_dropped() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    let stale = format!("{{\n  \"api\": {},\n  \"web\": {}\n}}\n", base + 3, base + 10);
    std::fs::write(c.path(".ports.json"), &stale).unwrap();
    std::fs::write(c.path("ports.toml"), two_services(base).replace("api", "api2")).unwrap();
    let note = format!(
        "note: {}:2:3: ignoring \"api\", a service ports.toml does not have (it has api2, web); \
         it will be dropped at the next write\n",
        c.path(".ports.json").display()
    );
    for args in [&["status"][..], &["ports"], &["ports", "--json"]] {
        let output = c.run(args);
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && err.matches(&note).count() == 1, "{args:?}:\n{}", text(&output));
        assert_eq!(c.read(".ports.json").unwrap(), stale, "{args:?} wrote .ports.json");
    }
    let out = c.ok(&["start"]);
    assert_eq!(out.matches(&note).count(), 1, "{out}");
    assert_eq!(c.ports(), [("api2".to_owned(), base), ("web".to_owned(), base + 10)].into());
    assert!(!c.ok(&["ports", "allocate"]).contains("note:"), "the entry was written back");
}

#[test]
fn bad_ports_toml_names_the_place_and_writes_nothing() {
    let base = free_ports(20);
    let good = two_services(base);
    let cases = [
        (good.replace("command = \"python3", "colour = 1\ncommand = \"python3"), "unknown field `colour`"),
        (good.replace(&format!("port = {base}"), "port = 70000"), "outside 1..65535"),
        (good.replace(&format!("port = {}", base + 10), &format!("port = {base}")), "prefers too"),
        (good.replace("depends_on = [\"api\"]", "depends_on = [\"db\"]"), "unknown service \"db\""),
        (good.replace("{api.port}", "{db.port}"), "unknown reference {db.port}"),
        (good.replace("[ports]\n", &format!("[ports]\nrange = [1024, {}]\n", base + 5)), "above the range"),
        (good.replace("[env]\n", "[env]\nNOTE = \"line1\\nEVIL=1\"\n"), "NOTE contains a line break"),
        (
            good.replace("[env]", "[services.api2]\nport = 1\ncommand = 'x'\ndepends_on = ['web']\n[env]")
                .replace("depends_on = [\"api\"]", "depends_on = [\"api2\"]"),
            "dependency cycle",
        ),
    ];
    for (text, needle) in cases {
        let c = Checkout::new(XTASK, &text);
        for args in [&["ports", "allocate"][..], &["start"], &["dev"], &["ports"]] {
            let out = c.fails(args);
            assert!(out.contains("ports.toml:") && out.contains(needle), "{args:?} {needle}:\n{out}");
            let place = out.split("ports.toml:").nth(1).unwrap();
            let mut numbers = place.split(':').take(2).map(|n| n.parse::<usize>());
            assert!(numbers.all(|n| n.is_ok_and(|n| n > 0)), "no line:column in {out}");
        }
        for generated in [".ports.json", ".env.runtime", ".pids", ".logs"] {
            assert!(!c.path(generated).exists(), "{needle}: {generated} was written");
        }
    }
}

/// A ports.toml that names no service (empty, only comments, a bare
/// `[services]`) is an error at the file: nothing is allocated, written or
/// registered.
#[test]
fn a_ports_toml_without_services_is_an_error_and_writes_nothing() {
    for (text, place) in
        [("", "1:1"), ("# the services, one day\n", "1:1"), ("[ports]\nattempts = 5\n[services]\n", "3:1")]
    {
        let c = Checkout::new(XTASK, text);
        for args in [&["ports", "allocate"][..], &["start"], &["dev"]] {
            let out = c.fails(args);
            let want = format!("{}:{place}: no services: name at least one", c.path("ports.toml").display());
            assert!(out.contains(&want), "{text:?} {args:?}:\n{out}");
        }
        for generated in [".ports.json", ".env.runtime", ".pids", ".logs"] {
            assert!(!c.path(generated).exists(), "{text:?}: {generated} was written");
        }
        let registry = c.state.join("cargo-xtask-ports/registry.json");
        assert!(!registry.exists(), "{text:?}: the checkout was registered: {:?}", std::fs::read_to_string(&registry));
    }
}

/// `.env.runtime` or `.ports.json` as a symbolic link to a file outside the
/// checkout (someone's `.env`): refused before anything is written, and the
/// file is left as it was. A link inside the checkout is written through.
#[test]
fn a_link_out_of_the_checkout_is_refused_and_changes_nothing() {
    let base = free_ports(20);
    let elsewhere = tempfile::TempDir::new().unwrap();
    let outside = elsewhere.path().canonicalize().unwrap().join("shared");
    let cases = [
        (".env.runtime", "SECRET_KEY=do-not-lose-me\nAPI_PORT=1\n".to_owned()),
        (".ports.json", format!("{{\"api\": {}, \"a-key-of-another-tool\": 1}}\n", base + 3)),
    ];
    // A process `start` would kill for api's port (this user's, no one asked).
    let squatter = Squatter::start(base, "127.0.0.1", None);
    for (name, text) in cases {
        let c = Checkout::new(XTASK, &two_services(base));
        std::fs::write(&outside, &text).unwrap();
        std::os::unix::fs::symlink(&outside, c.path(name)).unwrap();
        for args in [&["ports", "allocate"][..], &["start"], &["ports", "set", "web", &(base + 12).to_string()]] {
            let out = c.fails(args);
            let want =
                format!("{} is a symbolic link to {}, outside the checkout", c.path(name).display(), outside.display());
            assert!(out.contains(&want) && out.contains("remove the link"), "{name} {args:?}:\n{out}");
            assert_eq!(
                std::fs::read_to_string(&outside).unwrap(),
                text,
                "{name} {args:?}: the file outside was changed"
            );
            let other = if name == ".ports.json" { ".env.runtime" } else { ".ports.json" };
            assert!(!c.path(other).exists(), "{name} {args:?}: {other} was written");
            assert!(!c.state.join("cargo-xtask-ports/registry.json").exists(), "{name} {args:?}: registered");
            assert!(alive(squatter.pid()), "{name} {args:?}: the holder of api's port was killed:\n{out}");
            assert!(!c.path(".pids/api.json").exists(), "{name} {args:?}: api started");
        }
    }
    // Inside the checkout, a link is written through and stays a link.
    drop(squatter);
    let c = Checkout::new(XTASK, &two_services(base));
    std::fs::create_dir(c.path("generated")).unwrap();
    std::os::unix::fs::symlink("generated/env.runtime", c.path(".env.runtime")).unwrap();
    c.ok(&["ports", "allocate"]);
    assert!(c.path(".env.runtime").is_symlink());
    assert!(c.read("generated/env.runtime").unwrap().contains(&format!("API_PORT={base}\n")));
}

#[test]
fn no_free_port_fails_naming_service_range_and_holders() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    let squatters: Vec<_> = (base..base + 5).map(|p| Squatter::start(p, "127.0.0.1", None)).collect();
    let out = c.fails(&["ports", "allocate"]);
    assert!(out.contains(&format!("no free port for api: tried {base}-{}", base + 4)), "{out}");
    assert!(out.contains(&format!("pid {}", squatters[0].pid())) && out.contains("http.server"), "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert!(!c.path(".ports.json").exists() && !c.path(".env.runtime").exists());
    assert!(squatters.iter().all(|s| alive(s.pid())), "allocation killed a holder");
}

/// The only port a service may have went to another service of the
/// checkout: the message says so, and does not call the port busy.
#[test]
fn no_port_left_names_the_service_it_was_given_to() {
    let base = free_ports(20);
    let c = Checkout::new(
        XTASK,
        &format!(
            "[ports]\nattempts = 1\n{}{}",
            http_service("api", base, ""),
            http_service("web", base + 10, "depends_on = [\"api\"]")
        ),
    );
    let hand_edit = format!("{{\"web\": {base}}}");
    std::fs::write(c.path(".ports.json"), &hand_edit).unwrap();
    for args in [&["ports", "allocate"][..], &["start"]] {
        let out = c.fails(args);
        let want = format!(
            "no free port for web: tried {base}, and nothing was changed\n  {base}: given to api, of this checkout\n\
             give web another port with `cargo xtask ports set web PORT`, or widen `range` or `attempts` in ports.toml"
        );
        assert!(out.contains(&want), "{args:?}:\n{out}");
        assert_eq!(c.read(".ports.json").unwrap(), hand_edit, "{args:?}");
        assert!(is_free(base), "{args:?}: api started:\n{out}");
    }
}

/// A command that fails for want of a port says that nothing was changed:
/// it leaves the checkout as it found it, without even the folders of its
/// locks (and of dev's guard log).
#[test]
fn a_command_that_finds_no_port_leaves_the_checkout_as_it_was() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    // Held by this process, the runner's parent, which is never killed.
    let _held: Vec<_> = (base..base + 5).map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).unwrap()).collect();
    for args in [&["ports", "allocate"][..], &["start", "--no-kill"], &["dev", "--no-kill"]] {
        let out = c.fails(args);
        assert!(out.contains("no free port for api") && out.contains("nothing was changed"), "{args:?}:\n{out}");
        let made: Vec<_> = std::fs::read_dir(c.dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(made, ["ports.toml"], "{args:?}:\n{out}");
    }
}

#[test]
fn ports_shows_who_holds_each_port() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    let squatter = Squatter::start(base + 10, "127.0.0.1", None);
    let out = c.ok(&["ports"]);
    assert!(out.contains("not allocated yet"), "{out}");
    let web = out.lines().find(|l| l.starts_with("web")).unwrap();
    assert!(web.contains(&format!("held by pid {}", squatter.pid())) && web.contains("http.server"), "{out}");
    assert!(out.lines().find(|l| l.starts_with("api")).unwrap().ends_with("free"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&c.ok(&["ports", "--json"])).unwrap();
    let web = &json["services"][1];
    assert_eq!(web["service"], "web");
    assert_eq!(web["holders"][0]["pid"], squatter.pid());
    assert!(web["holders"][0]["user"].is_string());
    assert_eq!(json["services"][0]["free"], true);
    assert!(!c.path(".ports.json").exists(), "`ports` is read-only");
}

/// `ports who` answers lsof's question about any port, and says which
/// holder is this checkout's service.
#[test]
fn ports_who_names_the_holders_and_whose_services_they_are() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    c.ok(&["start", "api"]);
    let api = c.pid_of("api").unwrap();
    let squatter = Squatter::start(base + 5, "127.0.0.1", None);
    let asked = [base, base + 5, base + 7].map(|p| p.to_string());
    let out = c.ok(&["ports", "who", &asked[0], &asked[1], &asked[2]]);
    let line = |port: u16| out.lines().find(|l| l.trim_start().starts_with(&port.to_string())).unwrap();
    assert!(line(base).contains(&format!("held by pid {api} (")), "{out}");
    assert!(line(base).ends_with(": this checkout's api"), "{out}");
    assert!(line(base + 5).contains(&format!("held by pid {} (", squatter.pid())), "{out}");
    assert!(!line(base + 5).contains("this checkout"), "{out}");
    assert!(line(base + 7).ends_with("free"), "{out}");
    let json = c.ok(&["ports", "who", "--json", &asked[0], &asked[1], &asked[0]]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["ports"][2]["holders"][0]["pid"], api, "a port asked twice: {json}");
    assert_eq!(json["ports"][0]["holders"][0]["pid"], api, "{json}");
    assert_eq!(json["ports"][0]["holders"][0]["service"], "api", "{json}");
    assert_eq!(json["ports"][1]["holders"][0]["pid"], squatter.pid(), "{json}");
    assert_eq!(json["ports"][1]["holders"][0]["service"], serde_json::Value::Null, "{json}");
}

#[test]
fn eight_concurrent_allocations_leave_whole_consistent_files() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    let _squatter = Squatter::start(base, "127.0.0.1", None);
    // Allocations racing with port changes, so that the files keep changing.
    let children: Vec<_> = (0..8u16)
        .map(|i| {
            let port = (base + 2 + i).to_string();
            let args = if i % 2 == 0 { vec!["ports", "allocate"] } else { vec!["ports", "set", "api", &port] };
            c.command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    // Meanwhile a reader (a service, an editor) never sees half a file.
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(json) = c.read(".ports.json") {
                    let ports: std::collections::BTreeMap<String, u16> =
                        serde_json::from_str(&json).unwrap_or_else(|e| panic!("half a .ports.json ({e}): {json:?}"));
                    assert_eq!(ports.len(), 2, "{json}");
                }
                if let Some(env) = c.read(".env.runtime") {
                    assert!(env.ends_with('\n') && env.lines().count() == 7, "half an .env.runtime: {env:?}");
                }
            }
        });
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "{}", text(&output));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let ports = c.ports();
    let env = c.read(".env.runtime").unwrap();
    for (name, port) in &ports {
        assert!(env.contains(&format!("{}_PORT={port}\n", name.to_uppercase())), "{env}");
    }
    assert_ne!(ports["api"], base, "the busy port was handed out");
    let leftovers: Vec<_> = std::fs::read_dir(c.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn set_pins_a_port_and_reset_forgets() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    c.ok(&["ports", "set", "api", &(base + 7).to_string()]);
    assert_eq!(c.ports()["api"], base + 7);
    assert!(c.read(".env.runtime").unwrap().contains(&format!("API=http://127.0.0.1:{}\n", base + 7)));
    let out = c.fails(&["ports", "set", "web", &(base + 7).to_string()]);
    assert!(out.contains("already given to api"), "{out}");
    assert!(c.fails(&["ports", "set", "nope", "9000"]).contains("unknown service \"nope\""));
    assert!(c.fails(&["ports", "set", "api", "80"]).contains("below 1024"));
    assert!(c.fails(&["ports", "set", "api", "6000"]).contains("blocked by browsers"));
    c.ok(&["ports", "reset"]);
    assert!(!c.path(".ports.json").exists() && !c.path(".env.runtime").exists());
    c.ok(&["ports", "allocate"]);
    assert_eq!(c.ports()["api"], base, "reset did not forget the pinned port");
}

#[test]
fn set_refuses_a_port_outside_the_range_and_changes_nothing() {
    let base = free_ports(20);
    let c = Checkout::new(
        XTASK,
        &two_services(base).replace("[ports]\n", &format!("[ports]\nrange = [{base}, {}]\n", base + 19)),
    );
    for port in [base - 1, base + 20] {
        let out = c.fails(&["ports", "set", "api", &port.to_string()]);
        assert!(
            out.contains(&format!("port {port} is outside the range of ports.toml ({base}-{})", base + 19)),
            "{out}"
        );
        assert!(!c.path(".ports.json").exists() && !c.path(".env.runtime").exists(), "{port}: a file was written");
    }
}

#[test]
fn a_move_says_why_the_port_was_not_used() {
    let base = free_ports(20);
    // api's port is held, so api takes web's; web moves because api has it, not because it is busy.
    let c = Checkout::new(
        XTASK,
        &format!(
            "[ports]\nrange = [{}, {}]\n{}{}",
            base + 1,
            base + 19,
            http_service("api", base + 1, ""),
            http_service("web", base + 2, "depends_on = [\"api\"]")
        ),
    );
    let _squatter = Squatter::start(base + 1, "127.0.0.1", None);
    let out = c.ok(&["ports", "allocate"]);
    assert!(out.contains(&format!("web: port {} is given to api; using {}", base + 2, base + 3)), "{out}");
    // A port below the range (here a hand edit) moves into it.
    std::fs::write(c.path(".ports.json"), format!("{{\"api\": {base}}}")).unwrap();
    let out = c.ok(&["ports", "allocate"]);
    let want = format!("api: port {base} is below the range of ports.toml ({}-{})", base + 1, base + 19);
    assert!(out.contains(&want), "{out}");
}

/// A service moved from a busy port never lands in the kernel's ephemeral
/// range, whose ports outgoing connections take; one the user chose there
/// stays, with a warning when it is allocated, not when it is shown.
#[test]
fn a_move_goes_past_the_kernels_ephemeral_range() {
    let Some((lo, hi)) = ephemeral_range() else {
        eprintln!("skipped: this machine has no ephemeral range with room on both sides");
        return;
    };
    let chosen = (lo + 1000..hi).find(|p| is_free(*p)).expect("a free port in the ephemeral range");
    let services = format!("{}{}", http_service("api", lo - 1, ""), http_service("web", chosen, ""));
    let c = Checkout::new(XTASK, &format!("[ports]\nattempts = 5\n{services}"));
    assert!(is_free(lo - 1), "port {} is busy: this test needs it", lo - 1);
    let squatter = Squatter::start(lo - 1, "127.0.0.1", None);
    let out = c.ok(&["ports", "allocate"]);
    let ports = c.ports();
    assert!(ports["api"] > hi && ports["api"] <= hi + 5, "api was given {}:\n{out}", ports["api"]);
    let reason = format!("the kernel's ephemeral range {lo}-{hi} is left to outgoing connections");
    let moved = format!("api: port {} is held by pid {}", lo - 1, squatter.pid());
    assert!(out.contains(&moved) && out.contains(&format!("using {}, as {reason}", ports["api"])), "{out}");
    assert_eq!(ports["web"], chosen, "a preferred port in the ephemeral range was not honoured");
    let fragile = format!("web: port {chosen} is in the kernel's ephemeral range {lo}-{hi}");
    assert!(out.contains(&fragile), "{out}");
    assert_eq!(out.matches("may be busy at a later start").count(), 1, "{out}");

    // `ports` says why api is not on its preferred port, and warns of nothing.
    let out = c.ok(&["ports"]);
    let api = out.lines().find(|l| l.starts_with("api")).unwrap();
    assert!(api.ends_with(&format!("(not {}: {reason})", lo - 1)), "{out}");
    assert!(!out.contains("may be busy at a later start"), "{out}");
    assert!(!c.ok(&["status"]).contains("may be busy at a later start"));
    let json: serde_json::Value = serde_json::from_str(&c.ok(&["ports", "--json"])).unwrap();
    assert_eq!(
        (&json["services"][0]["preferred"], &json["services"][0]["why_moved"]),
        (&(lo - 1).into(), &reason.into())
    );
    assert_eq!(json["services"][1]["why_moved"], serde_json::Value::Null);

    // A range that ends inside the ephemeral one leaves api no other port: it says so and writes nothing.
    let c = Checkout::new(
        XTASK,
        &format!("[ports]\nrange = [{}, {}]\n{}", lo - 1, lo + 100, http_service("api", lo - 1, "")),
    );
    let out = c.fails(&["ports", "allocate"]);
    let want = format!(
        "no free port for api: tried {}, and the rest of the range of ports.toml is in the kernel's ephemeral \
         range {lo}-{hi}, where no port is chosen in place of a busy one, and nothing was changed",
        lo - 1
    );
    assert!(out.contains(&want) && out.contains("widen the range of ports.toml"), "{out}");
    assert!(!c.path(".ports.json").exists() && !c.path(".env.runtime").exists());
}

#[test]
fn status_says_stopped_before_anything_runs() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    let out = c.ok(&["status"]);
    assert!(out.contains(&format!("Api (port {base}): ✗ Stopped")), "{out}");
    assert_eq!(c.status()["web"]["running"], false);
}

#[test]
fn a_hand_edit_for_a_running_service_is_not_applied_silently() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("web", base, ""));
    c.ok(&["start"]);
    std::fs::write(c.path(".ports.json"), format!("{{\"web\": {}}}\n", base + 3)).unwrap();
    let status = c.status();
    let url = format!("http://localhost:{base}");
    assert_eq!((&status["web"]["port"], &status["web"]["url"]), (&base.into(), &url.into()), "{status:?}");
    let out = c.ok(&["ports", "allocate"]);
    let said = format!("web: keeps port {base} while it runs, not the {} of .ports.json", base + 3);
    assert!(out.contains(&said), "{out}");
    assert_eq!(c.ports()["web"], base);
}

/// A step that fails after the allocation (here `.env.runtime` is a folder)
/// leaves `.ports.json` as it was.
/// `ports set` of a running service that could not start again (here its
/// `cwd` is gone) is refused before the new port is written.
#[test]
fn set_refuses_a_restart_that_would_fail_and_changes_nothing() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    c.ok(&["start"]);
    let (before, pid) = (c.read(".ports.json").unwrap(), c.pid_of("api").unwrap());
    std::fs::write(
        c.path("ports.toml"),
        two_services(base).replace("[services.api]\n", "[services.api]\ncwd = \"srv\"\n"),
    )
    .unwrap();
    let out = c.fails(&["ports", "set", "api", &(base + 5).to_string()]);
    assert!(out.contains("the folder") && out.contains("does not exist"), "{out}");
    assert_eq!(c.read(".ports.json").unwrap(), before, "the new port was written:\n{out}");
    assert_eq!(c.pid_of("api"), Some(pid), "api was stopped:\n{out}");
}

/// A checkout whose path is not UTF-8 cannot be named in the registry: a
/// clear error, not a crash.
#[test]
fn a_checkout_path_that_is_not_utf8_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let c = Checkout::new(XTASK, &two_services(free_ports(20)));
    let odd = c.dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir(&odd).unwrap();
    std::fs::copy(c.path("ports.toml"), odd.join("ports.toml")).unwrap();
    let output = c.command(&["ports", "allocate"]).current_dir(&odd).output().unwrap();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("is not valid UTF-8: rename its folders"), "{out}");
    assert!(!odd.join(".ports.json").exists());
}

/// Two services that a hand edit gave one port: each shows its holder.
#[test]
fn ports_shows_the_holder_of_a_port_given_twice() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    std::fs::write(c.path(".ports.json"), format!("{{\"api\": {base}, \"web\": {base}}}")).unwrap();
    let _squatter = Squatter::start(base, "127.0.0.1", None);
    let shown: serde_json::Value = serde_json::from_str(&c.ok(&["ports", "--json"])).unwrap();
    for service in shown["services"].as_array().unwrap() {
        assert_eq!(service["free"], false, "{shown}");
    }
}

/// A record of a running service that a hand edit broke: `stop`, `start`
/// and `status` refuse, naming the place, and the service runs on untouched.
#[test]
fn a_broken_record_is_refused_by_start_and_stop() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    c.ok(&["start"]);
    let pid = c.pid_of("api").unwrap();
    let record = c.path(".pids/api.json");
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, text.replace(&format!("\"port\": {base}"), "\"port\": \"x\"")).unwrap();
    for command in ["stop", "start", "status"] {
        let out = c.fails(&[command]);
        assert!(out.contains(&format!("{}:", record.display())) && out.contains("fix it, or delete it"), "{out}");
        assert!(alive(pid), "{command} ended api:\n{out}");
    }
    std::fs::write(&record, text).unwrap();
    c.ok(&["stop"]);
}

#[test]
fn a_failed_write_changes_no_file() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    c.ok(&["ports", "allocate"]);
    let before = c.read(".ports.json").unwrap();
    std::fs::remove_file(c.path(".env.runtime")).unwrap();
    std::fs::create_dir(c.path(".env.runtime")).unwrap();
    let out = c.fails(&["ports", "set", "web", &(base + 5).to_string()]);
    assert!(out.contains(".env.runtime is a folder, where the runner writes a file: move it away"), "{out}");
    assert_eq!(c.read(".ports.json").unwrap(), before, ".ports.json was written before the failure:\n{out}");
}

/// The registry's folder is read-only (as another user would find it): a
/// `ports set` changes no file, and the error says which folder to fix.
#[test]
fn a_registry_that_cannot_be_written_changes_no_file() {
    use std::os::unix::fs::PermissionsExt;
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &two_services(base));
    // Root writes anywhere: run as nobody, who owns the checkout and the state folder.
    let runner = RunnerCopy::new(XTASK);
    let run = |args: &[&str]| {
        let mut command = if is_root() { c.command_as_nobody(&runner, args) } else { c.command(args) };
        command.output().unwrap()
    };
    if is_root() {
        std::os::unix::fs::chown(c.dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        std::os::unix::fs::chown(&c.state, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let output = run(&["ports", "allocate"]);
    assert!(output.status.success(), "{}", text(&output));
    let before = [".ports.json", ".env.runtime"].map(|f| c.read(f).unwrap());
    let dir = c.state.join("cargo-xtask-ports");
    let registry = std::fs::read_to_string(dir.join("registry.json")).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let output = run(&["ports", "set", "api", &(base + 7).to_string()]);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    assert_eq!([".ports.json", ".env.runtime"].map(|f| c.read(f).unwrap()), before, "a file was written:\n{out}");
    assert_eq!(std::fs::read_to_string(dir.join("registry.json")).unwrap(), registry);
    let fix = format!("may not create files in {}: fix its permissions", dir.display());
    assert!(out.contains("registry.json: Permission denied") && out.contains(&fix), "{out}");
}

/// `ports set` restarts the services that use the port as a `start` would:
/// with nobody at a terminal, a process of this user holding the new port
/// is killed for it (the dashboard, where a click answers no question,
/// moves instead).
#[test]
fn ports_set_frees_the_port_as_a_start_would() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &http_service("api", base, ""));
    c.ok(&["start"]);
    let squatter = Squatter::start(base + 5, "127.0.0.1", None);
    let out = c.ok(&["ports", "set", "api", &(base + 5).to_string()]);
    assert!(out.contains(&format!("api: killed pid {}", squatter.pid())), "{out}");
    assert!(!alive(squatter.pid()), "{out}");
    assert_eq!(c.status()["api"]["port"], base + 5, "{out}");
}
