//! The real stack end to end (ARCHITECTURE.md, "Testing"): a fresh copy of this
//! repository comes up around preferred ports that others hold, the backend's
//! tests pass against its postgres and redis, headless Chromium sees data
//! that made the round trip, by the numeric URL and by the named ones (hot
//! reload through the proxy, the backend moved without the frontend
//! restarted, cookies kept apart from another checkout's, the proxy's pages,
//! the proxy outliving a deleted checkout), and `stop all` leaves nothing
//! behind.
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

/// Runs `node e2e/SCRIPT args`; its JSON line, or the test fails with what it said.
fn browser(script: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new("node").arg(repo().join("e2e").join(script)).args(args).output().unwrap();
    assert!(output.status.success(), "{script} {args:?} failed:\n{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{script}: {e}:\n{}", text(&output)))
}

/// A service that answers with the Cookie header it got, and sets a cookie.
const COOKIE_ECHO: &str = r#"
import http.server, sys
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("cookie: " + (self.headers.get("Cookie") or "")).encode()
        self.send_response(200)
        self.send_header("Set-Cookie", "from_other=set-there; Path=/")
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"#;

/// `cargo xtask proxy --json`.
fn proxy_state(c: &Checkout) -> serde_json::Value {
    serde_json::from_str(&c.ok(&["proxy", "--json"])).unwrap()
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

    // The browser: the page's request to the backend, through postgres and
    // redis; the page opened by its port, then by its name. Either way it
    // reaches the backend by the backend's name, through the proxy.
    let (frontend, named) = (format!("http://localhost:{}", ports["frontend"]), env["FRONTEND_PUBLIC_URL"].clone());
    let backend_named = env["BACKEND_PUBLIC_URL"].clone();
    assert_eq!(env["NEXT_PUBLIC_API_URL"], backend_named, "the browser reaches the backend by its name");
    assert!(named.starts_with("http://frontend.") && named.contains(".localhost:"), "{named}");
    for url in [&frontend, &named] {
        let seen = browser("stack.mjs", &[url]);
        assert_eq!(seen["backendPort"], ports["backend"], "{url}: {seen}");
        assert_eq!(seen["backendUrl"], backend_named.as_str(), "{url}: {seen}");
        for service in ["backend", "frontend", "postgres", "redis"] {
            assert_eq!(
                seen["ports"][service], ports[service],
                "{url}: the page shows the wrong {service} port: {seen}"
            );
        }
        assert!(seen["postgresCount"].as_i64().unwrap() >= 2 && seen["redisCounter"].as_i64().unwrap() >= 2, "{seen}");
    }
    let proxy = proxy_state(&c);
    let proxy_pid = proxy["pid"].clone();
    assert!(proxy["running"] == true, "{proxy}");

    // Hot reload through the proxy: the heading changes, the page is not reloaded.
    let hmr = browser("hmr.mjs", &[&named, c.path("frontend/app/page.tsx").to_str().unwrap()]);
    assert_eq!((&hmr["heading"], &hmr["mark"]), (&"Stack check, hot".into(), &"kept".into()), "{hmr}");
    let host = named.strip_prefix("http://").unwrap();
    assert!(hmr["websocket"].as_str().unwrap().starts_with(&format!("ws://{host}/_next/")), "{hmr}");

    // The dashboard, in the browser, by its named URL: every service with
    // its port; restart changes the backend's pid; a port change reaches
    // .ports.json and .env.runtime, and the browser follows the backend's
    // name to it, the frontend running on, not restarted.
    let (mut ui, url) = spawn_dashboard(&c, "ui");
    let token = url.split_once("/?token=").unwrap().1;
    let dashboard_named = named.replacen("http://frontend.", "http://dashboard.", 1) + "/?token=" + token;
    let frontend_pid = c.pid_of("frontend");
    let moved_to = (ports["backend"] + 50..ports["backend"] + 150).find(|p| is_free(*p)).unwrap();
    let seen = browser("dashboard.mjs", &[&dashboard_named, "backend", "backend", &moved_to.to_string()]);
    for (service, port) in &ports {
        assert_eq!(seen["services"][service], *port, "the dashboard lists {service} wrongly: {seen}");
    }
    assert_ne!(seen["restarted"]["before"], seen["restarted"]["after"], "{seen}");
    assert_eq!(c.ports()["backend"], moved_to);
    let env = env_runtime(&c);
    assert_eq!(env["BACKEND_PORT"], moved_to.to_string());
    assert_eq!(env["NEXT_PUBLIC_API_URL"], backend_named, "a name stays when the port moves");
    assert_eq!(c.pid_of("frontend"), frontend_pid, "the frontend was restarted for the backend's move");
    let seen = browser("stack.mjs", &[&named]);
    assert_eq!(seen["backendPort"], moved_to, "the browser did not reach the moved backend: {seen}");
    assert_eq!(seen["backendUrl"], backend_named.as_str(), "{seen}");
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

    // A second checkout, on the same machine: its frontend (a small one that
    // says the cookies it gets) has a name of its own, and never gets a
    // cookie the first one's page set; with numeric URLs (one host, two
    // ports) it would.
    let echo = format!("command = [\"python3\", \"-c\", {COOKIE_ECHO:?}, \"{{port}}\"]");
    let other_toml =
        format!("[services.frontend]\nport = {}\n{echo}\n{}", free_ports(1), http_service("echo", free_ports(1), ""));
    let other = Checkout::sharing(XTASK, &other_toml, &c.state);
    other.ok(&["start"]);
    let other_env = env_runtime(&other);
    let other_named = other_env["FRONTEND_PUBLIC_URL"].clone();
    assert_ne!(other_named, named, "two checkouts, one name");
    let other_numeric = format!("http://localhost:{}", other_env["FRONTEND_PORT"]);
    let cookies = browser("names.mjs", &["cookies", &named, &other_named, &frontend, &other_numeric]);
    let (by_name, by_port) = (&cookies["named"], &cookies["numeric"]);
    assert_eq!(by_name["otherGot"], "", "a cookie of one checkout's page went to another's: {cookies}");
    assert_eq!(by_name["frontendHas"], "named_frontend=set-here", "{cookies}");
    assert!(by_port["otherGot"].as_str().unwrap().contains("numeric_frontend=set-here"), "no control: {cookies}");

    // The proxy's own pages: a stopped service, and names that lead nowhere,
    // never to another checkout's service (the other has an `echo`).
    other.ok(&["stop", "frontend"]);
    let name = |url: &str| url.strip_prefix("http://frontend.").unwrap().split('.').next().unwrap().to_owned();
    let port = named.rsplit(':').next().unwrap();
    let nope = format!("http://nope.{}.localhost:{port}/", name(&named));
    let echo = format!("http://echo.{}.localhost:{port}/", name(&named));
    let seen = browser("names.mjs", &["pages", &other_named, &nope, &echo]);
    let other_root = other.dir.path().canonicalize().unwrap();
    let expected = [
        (503, "frontend is stopped", format!("Start it: cd {} && cargo xtask start frontend", other_root.display())),
        (404, "No route to nope.", format!("service nope of checkout {}", name(&named))),
        (404, "No route to echo.", "has no service echo; its named URLs lead to backend, frontend".to_owned()),
    ];
    for (page, (status, title, text)) in seen.as_array().unwrap().iter().zip(expected) {
        assert_eq!(page["status"], status, "{page}");
        let (shown_title, shown) = (page["title"].as_str().unwrap(), page["text"].as_str().unwrap());
        assert!(shown_title.contains(title) && shown.contains(&text), "{page}");
    }

    // The proxy outlives a checkout that is deleted.
    other.ok(&["stop"]);
    std::fs::remove_dir_all(other.dir.path()).unwrap();
    let seen = browser("stack.mjs", &[&named]);
    assert_eq!(seen["backendPort"], moved_to, "{seen}");
    assert_eq!(proxy_state(&c)["pid"], proxy_pid, "the proxy was restarted");

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
