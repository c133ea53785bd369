//! Named URLs with small services: checkouts get names, `.env.runtime` the
//! services' named URLs, and the user's proxy leads each name to its own
//! checkout's service only, follows a port that moves, refuses what it must,
//! outlives a checkout that is deleted, and is shown and stopped by `cargo
//! xtask proxy`. (Chromium through the names: stack.rs.)

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use harness::*;
use tempfile::TempDir;

/// The runner under test, as cargo built it for these tests.
const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// `web` and `api` serve the checkout's folder over HTTP; `db` serves it too,
/// but its URL says it is no HTTP service.
fn services(base: u16) -> String {
    format!(
        "{}{}[services.db]\nport = {}\nurl = \"redis://127.0.0.1:{{port}}\"\n\
         command = \"python3 -m http.server {{port}} --bind 127.0.0.1\"\n",
        http_service("web", base, ""),
        http_service("api", base + 1, "ready = { http = \"/\" }"),
        base + 2,
    )
}

/// A checkout whose `who.txt` says which it is.
fn checkout(ports_toml: &str, state: &Path, who: &str) -> Checkout {
    let c = Checkout::sharing(XTASK, ports_toml, state);
    std::fs::write(c.path("who.txt"), who).unwrap();
    c
}

fn env_runtime(c: &Checkout) -> BTreeMap<String, String> {
    let text = c.read(".env.runtime").unwrap();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// `http://<service>.<checkout>.localhost:<port>`, read: the host and the port.
fn named(url: &str) -> (String, u16) {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("not a named URL: {url}"));
    let (host, port) = rest.split_once(':').unwrap();
    assert!(host.ends_with(".localhost"), "{url}");
    (host.to_owned(), port.parse().unwrap())
}

/// The checkout's name, from its web's named URL.
fn name_of(c: &Checkout) -> String {
    let (host, _) = named(&env_runtime(c)["WEB_PUBLIC_URL"]);
    host.strip_prefix("web.").unwrap().strip_suffix(".localhost").unwrap().to_owned()
}

/// `cargo xtask proxy --json`.
fn proxy_state(c: &Checkout) -> serde_json::Value {
    serde_json::from_str(&c.ok(&["proxy", "--json"])).unwrap()
}

/// A request to the proxy on `port` for `host` (any Host header, as curl or
/// a browser would send it: no name is resolved); the status and the body.
fn get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("port {port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let fields: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{fields}Connection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{answer:?}"));
    (status, answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default())
}

#[test]
fn two_checkouts_get_two_names_and_each_name_leads_to_its_own_services_only() {
    let (base_a, base_b) = (free_ports(10), free_ports(10));
    let state = TempDir::new().unwrap();
    let a = checkout(&services(base_a), state.path(), "checkout A");
    // B has no api: a name of B must never lead to A's.
    let b = checkout(&http_service("web", base_b, ""), state.path(), "checkout B");
    a.ok(&["start"]);
    b.ok(&["start"]);
    let (env_a, env_b) = (env_runtime(&a), env_runtime(&b));
    let (name_a, name_b) = (name_of(&a), name_of(&b));
    assert_ne!(name_a, name_b, "two checkouts, one name");
    let (_, proxy) = named(&env_a["WEB_PUBLIC_URL"]);
    assert_eq!(env_a["WEB_PUBLIC_URL"], format!("http://web.{name_a}.localhost:{proxy}"));
    assert_eq!(env_a["API_PUBLIC_URL"], format!("http://api.{name_a}.localhost:{proxy}"));
    assert_eq!(env_b["WEB_PUBLIC_URL"], format!("http://web.{name_b}.localhost:{proxy}"), "one proxy for both");
    assert!(!env_a.contains_key("DB_PUBLIC_URL"), "db does not serve HTTP: {env_a:?}");
    assert!(c_status_shows_names(&a, &name_a, proxy));

    for (c, name, who) in [(&a, &name_a, "checkout A"), (&b, &name_b, "checkout B")] {
        // Host names as a browser may send them: any case, a trailing dot, a port.
        for host in [format!("web.{name}.localhost:{proxy}"), format!("WEB.{}.LocalHost.", name.to_uppercase())] {
            assert_eq!(get(proxy, &host, "/who.txt", &[]), (200, who.to_owned()), "{host}");
        }
        assert_eq!(c.status()["web"]["public_url"], format!("http://web.{name}.localhost:{proxy}"));
    }
    assert_eq!(get(proxy, &format!("api.{name_a}.localhost"), "/who.txt", &[]), (200, "checkout A".to_owned()));
    let (status, page) = get(proxy, &format!("api.{name_b}.localhost"), "/who.txt", &[]);
    assert_eq!(status, 404, "B's name led to A's api: {page}");
    assert!(page.contains("has no service api; its named URLs lead to web, dashboard"), "{page}");
    let (status, page) = get(proxy, &format!("db.{name_a}.localhost"), "/who.txt", &[]);
    assert!(status == 404 && page.contains("does not serve HTTP"), "{status}: {page}");
    let (status, page) = get(proxy, &format!("web.nope-{name_a}.localhost"), "/", &[]);
    assert!(status == 404 && page.contains(&format!("these have one: {}", sorted(&name_a, &name_b))), "{page}");
    // Not a named URL: never forwarded, whatever port the Host names.
    for host in [format!("127.0.0.1:{base_a}"), format!("example.com:{base_a}"), format!("{name_a}.localhost")] {
        let (status, page) = get(proxy, &host, "/who.txt", &[]);
        assert!(matches!(status, 400 | 404) && !page.contains("checkout A"), "{host}: {status} {page}");
    }
}

fn sorted(a: &str, b: &str) -> String {
    if a < b { format!("{a}, {b}") } else { format!("{b}, {a}") }
}

/// `status` says the checkout's name, and each HTTP service's named URL.
fn c_status_shows_names(c: &Checkout, name: &str, proxy: u16) -> bool {
    let out = c.ok(&["status"]);
    let status = c.status();
    out.starts_with(&format!("Checkout {name}: http://<service>.{name}.localhost:{proxy}, proxy running"))
        && status["web"]["public_url"] == format!("http://web.{name}.localhost:{proxy}")
        && status["db"]["public_url"].is_null()
}

#[test]
fn a_stopped_service_gets_the_page_and_a_moved_one_is_followed_at_once() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &services(base));
    std::fs::write(c.path("who.txt"), "here").unwrap();
    c.ok(&["start"]);
    let (host, proxy) = named(&env_runtime(&c)["API_PUBLIC_URL"]);
    assert_eq!(get(proxy, &host, "/who.txt", &[]), (200, "here".to_owned()));

    c.ok(&["stop", "api"]);
    let (status, page) = get(proxy, &host, "/who.txt", &[]);
    assert_eq!(status, 503, "{page}");
    let root = c.dir.path().canonicalize().unwrap();
    assert!(page.contains(&format!("Start it: cd {} &amp;&amp; cargo xtask start api", root.display())), "{page}");

    c.ok(&["start", "api"]);
    assert_eq!(get(proxy, &host, "/who.txt", &[]), (200, "here".to_owned()));
    c.ok(&["ports", "set", "api", &(base + 5).to_string()]);
    assert_eq!(c.status()["api"]["port"], base + 5);
    // The next request, with no wait and nothing restarted but api.
    assert_eq!(get(proxy, &host, "/who.txt", &[]), (200, "here".to_owned()), "the proxy did not follow the move");
    assert_eq!(env_runtime(&c)["API_PUBLIC_URL"], format!("http://{host}:{proxy}"), "a name does not move");
}

#[test]
fn the_proxy_outlives_a_checkout_that_is_deleted() {
    let (base_a, base_b) = (free_ports(10), free_ports(10));
    let state = TempDir::new().unwrap();
    let a = checkout(&http_service("web", base_a, ""), state.path(), "A");
    let b = checkout(&http_service("web", base_b, ""), state.path(), "B");
    a.ok(&["start"]);
    b.ok(&["start"]);
    let pid = proxy_state(&a)["pid"].clone();
    let (host_b, proxy) = named(&env_runtime(&b)["WEB_PUBLIC_URL"]);
    assert_eq!(get(proxy, &host_b, "/who.txt", &[]), (200, "B".to_owned()));

    b.ok(&["stop"]);
    std::fs::remove_dir_all(b.dir.path()).unwrap();
    let (status, page) = get(proxy, &host_b, "/who.txt", &[]);
    assert_eq!(status, 404, "a name of the deleted checkout: {page}");
    assert!(page.contains("Its folder is gone."), "{page}");
    let (host_a, _) = named(&env_runtime(&a)["WEB_PUBLIC_URL"]);
    assert_eq!(get(proxy, &host_a, "/who.txt", &[]), (200, "A".to_owned()));
    assert_eq!(proxy_state(&a)["pid"], pid, "the proxy was restarted");
}

#[test]
fn cargo_xtask_proxy_shows_its_state_and_routes_and_stops_it() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &services(base));
    let state = proxy_state(&c);
    assert!(state["port"].is_null() && state["running"] == false, "{state}");
    assert!(c.ok(&["proxy"]).contains("proxy: none yet"));

    c.ok(&["start"]);
    let state = proxy_state(&c);
    let (port, pid) = (state["port"].as_u64().unwrap() as u16, state["pid"].as_i64().unwrap() as i32);
    assert!(state["running"] == true && alive(pid), "{state}");
    let name = name_of(&c);
    let [checkout] = state["checkouts"].as_array().unwrap().as_slice() else { panic!("{state}") };
    assert_eq!(checkout["name"], name.as_str());
    let routes: BTreeMap<String, (serde_json::Value, bool)> = checkout["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["host"].as_str().unwrap().to_owned(), (s["port"].clone(), s["http"] == true)))
        .collect();
    let host = |service: &str| format!("{service}.{name}.localhost");
    let expected = BTreeMap::from([
        (host("web"), (base.into(), true)),
        (host("api"), ((base + 1).into(), true)),
        (host("db"), ((base + 2).into(), false)),
        (host("dashboard"), (serde_json::Value::Null, true)),
    ]);
    assert_eq!(routes, expected);
    let shown = c.ok(&["proxy"]);
    for line in [
        format!("proxy: running (pid {pid}) on 127.0.0.1 and ::1, port {port}"),
        format!("http://web.{name}.localhost:{port}"),
        "no named URL (not HTTP): db".to_owned(),
    ] {
        assert!(shown.contains(&line), "`proxy` does not say {line:?}:\n{shown}");
    }
    let who = c.ok(&["ports", "who", &port.to_string()]);
    assert!(who.contains("the proxy of the named URLs"), "{who}");
    // Its port is given to no service, by hand neither.
    let (book, web) = (c.read(".ports.json"), c.pid_of("web"));
    let out = c.fails(&["ports", "set", "web", &port.to_string()]);
    assert!(out.contains(&format!("port {port} is the proxy's")), "{out}");
    assert_eq!((c.read(".ports.json"), c.pid_of("web")), (book, web), "{out}");

    let out = c.ok(&["proxy", "stop"]);
    assert!(out.contains(&format!("proxy: stopped (pid {pid})")), "{out}");
    assert!(wait_for(LONG, || !alive(pid)), "the proxy still runs");
    assert!(wait_for(LONG, || !answers(port)), "port {port} still answers");
    assert!(c.ok(&["proxy", "stop"]).contains("proxy: not running"));
    let state = proxy_state(&c);
    assert!(state["port"] == port && state["running"] == false, "its port stays the user's: {state}");
    assert_eq!(c.status()["web"]["running"], true, "stopping the proxy stopped a service");

    // The next command that starts services starts it again, on its port.
    c.ok(&["start"]);
    let state = proxy_state(&c);
    let again = state["pid"].as_i64().unwrap() as i32;
    assert!(state["port"] == port && state["running"] == true && again != pid, "{state}");
    assert_eq!(get(port, &host("web"), "/", &[]).0, 200);

    // So it does after the proxy was killed (or crashed), whose pid the
    // registry still names.
    assert!(std::process::Command::new("kill").args(["-KILL", &again.to_string()]).status().unwrap().success());
    assert!(wait_for(LONG, || !alive(again)), "the proxy outlived its KILL");
    c.ok(&["start"]);
    let state = proxy_state(&c);
    assert!(state["port"] == port && state["running"] == true && state["pid"] != again, "{state}");
    assert_eq!(get(port, &host("web"), "/", &[]).0, 200, "no proxy answers after a start");
}

#[test]
fn the_dashboard_answers_at_its_named_url_with_the_same_token_rules() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("web", base, ""));
    c.ok(&["start"]);
    let (dashboard, url) = spawn_dashboard(&c, "ui");
    let _dashboard = dashboard;
    let token = url.split_once("?token=").unwrap().1.to_owned();
    let name = name_of(&c);
    let proxy = proxy_state(&c)["port"].as_u64().unwrap() as u16;
    let host = format!("dashboard.{name}.localhost:{proxy}");
    let origin = format!("http://{host}");

    let (status, page) = get(proxy, &host, "/", &[]);
    assert!(status == 200 && page.contains("<html"), "{status}: {page}");
    let (status, state) = get(proxy, &host, "/api/state", &[("X-Token", &token), ("Origin", &origin)]);
    assert_eq!(status, 200, "{state}");
    // Fully qualified, as a browser sends it when typed so, in any case.
    let dotted = format!("Dashboard.{}.localhost.:{proxy}", name.to_uppercase());
    let (status, _) =
        get(proxy, &dotted, "/api/state", &[("X-Token", &token), ("Origin", &format!("http://{dotted}"))]);
    assert_eq!(status, 200, "{dotted}");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["name"], name.as_str());
    assert_eq!(state["services"][0]["public_url"], format!("http://web.{name}.localhost:{proxy}"));
    let refused: [&[(&str, &str)]; 3] =
        [&[], &[("X-Token", "0123")], &[("X-Token", &token), ("Origin", "http://evil.example")]];
    for headers in refused {
        assert_eq!(get(proxy, &host, "/api/state", headers).0, 403, "{headers:?}");
    }
    // Another checkout's name for it, or another port: not its own.
    let port = url.strip_prefix("http://127.0.0.1:").unwrap().split('/').next().unwrap().parse::<u16>().unwrap();
    for other in [format!("dashboard.x{name}.localhost:{proxy}"), format!("dashboard.{name}.localhost:{}", proxy + 1)] {
        assert_eq!(get(port, &other, "/api/state", &[("X-Token", &token)]).0, 403, "{other}");
    }
}
