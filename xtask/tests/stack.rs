//! The real stack end to end (ARCHITECTURE.md, "Testing"): a fresh copy of this
//! repository comes up around preferred ports that others hold, the backend's
//! tests pass against its postgres and redis, headless Chromium sees data
//! that made the round trip, and `stop all` leaves nothing behind.
//!
//! Ignored by plain `cargo test` (it needs postgres, redis-server, node and
//! chromium, and takes a minute); `cargo xtask test` runs it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::*;

/// The runner under test, as cargo built it for these tests.
const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// What a fresh clone holds: tracked files plus new ones not ignored.
fn copy_checkout(to: &Path) {
    let listed =
        Command::new("git").args(["ls-files", "-z", "-co", "--exclude-standard"]).current_dir(repo()).output().unwrap();
    assert!(listed.status.success());
    for name in String::from_utf8(listed.stdout).unwrap().split('\0').filter(|n| !n.is_empty()) {
        let (from, dest) = (repo().join(name), to.join(name));
        if from.is_file() {
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&from, &dest).unwrap();
        }
    }
}

fn env_runtime(c: &Checkout) -> BTreeMap<String, String> {
    let text = c.read(".env.runtime").unwrap();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

#[test]
#[ignore = "needs postgres, redis-server, node and chromium: run by `cargo xtask test`"]
fn the_stack_comes_up_around_held_ports_and_the_browser_sees_the_round_trip() {
    let c = Checkout::new(XTASK, &std::fs::read_to_string(repo().join("ports.toml")).unwrap());
    copy_checkout(c.dir.path());
    // postgres runs as its own account when we are root: it must reach the checkout.
    std::fs::set_permissions(c.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // The preferred ports of the backend, the frontend and postgres are held
    // by processes the runner must not kill: another user's when we can.
    let holder = is_root().then_some(NOBODY);
    let squatters: Vec<Squatter> = [8000, 3000, 5432]
        .into_iter()
        .filter(|p| is_free(*p))
        .map(|p| Squatter::start(p, "127.0.0.1", holder))
        .collect();
    // Kill nothing that is not ours: force mode only proves something when
    // the holders are another user's and redis's port is free.
    let mode = if holder.is_some() && is_free(6379) { "--force" } else { "--no-kill" };

    let out = c.ok(&["start", mode]);
    for s in &squatters {
        assert!(alive(s.pid()), "the holder of port {} was killed:\n{out}", s.port);
    }
    let ports = c.ports();
    for (service, preferred) in [("backend", 8000), ("frontend", 3000), ("postgres", 5432)] {
        assert_ne!(ports[service], preferred, "{service} was given a held port:\n{out}");
    }
    let status = c.status();
    assert!(status.values().all(|s| s["healthy"] == true), "{status:?}\n{out}");

    // The backend's own tests, against this stack's postgres and redis.
    let env = env_runtime(&c);
    let pytest = Command::new(c.path("backend/.venv/bin/python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(c.path("backend"))
        .env("DATABASE_URL", &env["DATABASE_URL"])
        .env("REDIS_URL", &env["REDIS_URL"])
        .output()
        .unwrap();
    assert!(pytest.status.success(), "backend tests failed:\n{}", text(&pytest));

    // The browser: the page's request to the backend, through postgres and redis.
    let frontend = format!("http://localhost:{}", ports["frontend"]);
    let browser = Command::new("node").arg(repo().join("e2e/stack.mjs")).arg(&frontend).output().unwrap();
    assert!(browser.status.success(), "the browser check failed:\n{}", text(&browser));
    let seen: serde_json::Value = serde_json::from_slice(&browser.stdout).unwrap();
    assert_eq!(seen["backendPort"], ports["backend"], "{seen}");
    assert_eq!(seen["backendUrl"], env["NEXT_PUBLIC_API_URL"], "{seen}");
    for service in ["backend", "frontend", "postgres", "redis"] {
        assert_eq!(seen["ports"][service], ports[service], "the page shows the wrong {service} port: {seen}");
    }
    assert!(seen["postgresCount"].as_i64().unwrap() >= 2 && seen["redisCounter"].as_i64().unwrap() >= 2, "{seen}");

    // The dashboard, in the browser: every service with its port; restart
    // changes the backend's pid; a port change reaches .ports.json,
    // .env.runtime and the frontend's view of the backend.
    let (mut ui, url) = spawn_dashboard(&c, "ui");
    let moved_to = (ports["backend"] + 50..ports["backend"] + 150).find(|p| is_free(*p)).unwrap();
    let dashboard = Command::new("node")
        .arg(repo().join("e2e/dashboard.mjs"))
        .args([&url, "backend", "backend", &moved_to.to_string()])
        .output()
        .unwrap();
    assert!(dashboard.status.success(), "the dashboard check failed:\n{}", text(&dashboard));
    let seen: serde_json::Value = serde_json::from_slice(&dashboard.stdout).unwrap();
    for (service, port) in &ports {
        assert_eq!(seen["services"][service], *port, "the dashboard lists {service} wrongly: {seen}");
    }
    assert_ne!(seen["restarted"]["before"], seen["restarted"]["after"], "{seen}");
    assert_eq!(c.ports()["backend"], moved_to);
    let env = env_runtime(&c);
    assert_eq!(env["BACKEND_PORT"], moved_to.to_string());
    assert_eq!(env["NEXT_PUBLIC_API_URL"], format!("http://127.0.0.1:{moved_to}"));
    let browser = Command::new("node").arg(repo().join("e2e/stack.mjs")).arg(&frontend).output().unwrap();
    assert!(browser.status.success(), "the browser check after the move failed:\n{}", text(&browser));
    let seen: serde_json::Value = serde_json::from_slice(&browser.stdout).unwrap();
    assert_eq!(
        seen["backendUrl"],
        format!("http://127.0.0.1:{moved_to}"),
        "the frontend still uses the old backend: {seen}"
    );
    let without_token = url.split("?token=").next().unwrap();
    let refused = Command::new("node")
        .arg(repo().join("e2e/dashboard.mjs"))
        .args(["--no-token", without_token])
        .output()
        .unwrap();
    assert!(refused.status.success(), "an action without the token was not refused:\n{}", text(&refused));
    Command::new("kill").args(["-INT", &ui.id().to_string()]).status().unwrap();
    ui.wait().unwrap();
    let ports = c.ports();

    // Stop everything: no process left, every port free.
    let groups = c.status().into_values().filter_map(|s| s["pid"].as_i64());
    let processes: Vec<i32> = groups.flat_map(|g| group_members(g as i32)).map(|m| m.pid).collect();
    assert!(processes.len() > 4, "the services' children are not in their groups: {processes:?}");
    c.ok(&["stop", "all"]);
    let left: Vec<_> = processes.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "left running after stop: {left:?}");
    for port in ports.values() {
        assert!(is_free(*port), "port {port} is still busy after stop");
    }
}
