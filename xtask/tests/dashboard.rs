//! The dashboard's server: loopback only, a token for the API, no other
//! Host or Origin, a reserved port per checkout, and actions that do what
//! the CLI does. (The page itself is driven in Chromium by the stack test.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use harness::*;

/// The runner under test, as cargo built it for these tests.
const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// `xtask ui` (or `dev`) in the background of the test, with its address.
struct Served {
    /// A failed test leaves no dashboard behind (dev's guard then stops its services).
    child: Running,
    port: u16,
    token: String,
}

/// Dashboards take the first free port from 7400: one starting while a test
/// moves a service past its own dashboard's port could take the port the
/// service was given. Starting one reads this; that test writes it.
static STARTING: std::sync::RwLock<()> = std::sync::RwLock::new(());

impl Served {
    fn start(c: &Checkout, command: &str) -> Served {
        let _starting = STARTING.read().unwrap_or_else(|e| e.into_inner());
        let (child, url) = spawn_dashboard(c, command);
        let rest = url.strip_prefix("http://127.0.0.1:").expect("the dashboard listens on 127.0.0.1");
        let (port, token) = rest.split_once("/?token=").unwrap();
        Served { child, port: port.parse().unwrap(), token: token.to_owned() }
    }

    /// A raw request, so that every header is ours to choose.
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        for (name, value) in headers {
            head += &format!("{name}: {value}\r\n");
        }
        write!(stream, "{head}\r\n{body}").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let code = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn api(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let host = self.host();
        let (code, body) = self.request(method, path, &[("Host", &host), ("X-Token", &self.token)], body);
        (code, serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}")))
    }

    fn stop(mut self) {
        std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        self.child.wait().unwrap();
    }
}

fn two_services(base: u16) -> String {
    http_service("a", base, "") + &http_service("b", base + 1, "depends_on = [\"a\"]")
}

#[test]
fn the_api_needs_the_token_a_loopback_host_and_no_other_origin() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &two_services(base));
    c.ok(&["start"]);
    let ui = Served::start(&c, "ui");
    let host = ui.host();
    let (code, state) = ui.api("GET", "/api/state", "");
    assert_eq!(code, 200);
    assert_eq!(state["mode"], "background");
    assert_eq!(state["services"][0]["name"], "a");
    assert_eq!(state["services"][0]["port"], base);
    assert_eq!(state["services"][1]["running"], true);
    assert!(state["services"][0]["log"][0].as_str().unwrap().contains("Serving HTTP"));

    let pid = c.pid_of("a");
    let refusals: [&[(&str, &str)]; 4] = [
        &[("Host", &host)],
        &[("Host", &host), ("X-Token", "0123")],
        &[("Host", "evil.example"), ("X-Token", &ui.token)],
        &[("Host", &host), ("X-Token", &ui.token), ("Origin", "http://evil.example")],
    ];
    for headers in refusals {
        let (code, body) = ui.request("POST", "/api/services/a/restart", headers, "");
        assert_eq!(code, 403, "{headers:?} was not refused: {body}");
        let (code, _) = ui.request("GET", "/api/state", headers, "");
        assert_eq!(code, 403, "{headers:?} could read the state");
    }
    assert_eq!(c.pid_of("a"), pid, "a refused action was carried out");
    let (code, page) = ui.request("GET", "/", &[("Host", &format!("localhost:{}", ui.port))], "");
    assert!(code == 200 && page.contains("<html"), "the page itself needs no token");
    let (_, answer) = ui.request("GET", "/", &[("Host", &host)], "");
    assert!(!answer.contains("Access-Control-Allow-Origin"));
    ui.stop();
}

#[test]
fn actions_do_what_the_cli_does() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &two_services(base));
    c.ok(&["start"]);
    let ui = Served::start(&c, "ui");
    let (a, b) = (c.pid_of("a").unwrap(), c.pid_of("b").unwrap());

    let (code, reply) = ui.api("POST", "/api/services/a/restart", "");
    assert_eq!((code, &reply["ok"]), (200, &serde_json::json!(true)), "{reply}");
    let (a2, b2) = (c.pid_of("a").unwrap(), c.pid_of("b").unwrap());
    assert!(a2 != a && b2 != b, "restart of a did not restart a and its dependent b");

    let (code, reply) = ui.api("POST", "/api/services/a/port", &format!("{{\"port\": {}}}", base + 5));
    assert_eq!(code, 200, "{reply}");
    assert_eq!(c.ports()["a"], base + 5);
    assert!(c.read(".env.runtime").unwrap().contains(&format!("A_PORT={}\n", base + 5)));
    assert_eq!(c.status()["a"]["healthy"], true);
    assert_ne!(c.pid_of("b").unwrap(), b2, "b depends on a but was not restarted with its new port");

    let (code, reply) = ui.api("POST", "/api/services/a/port", "{\"port\": 80}");
    assert_eq!(code, 409);
    assert!(reply["error"].as_str().unwrap().contains("below 1024"), "{reply}");

    let (code, _) = ui.api("POST", "/api/services/a/stop", "");
    assert_eq!(code, 200);
    let status = c.status();
    assert!(
        status["a"]["running"] == false && status["b"]["running"] == false,
        "stop a left its dependent b: {status:?}"
    );
    let (code, _) = ui.api("POST", "/api/services/b/start", "");
    assert_eq!(code, 200);
    assert!(c.status().values().all(|s| s["healthy"] == true), "start b did not start its dependency a");
    let b3 = c.pid_of("b");
    let (code, reply) = ui.api("POST", "/api/services/b/start", "");
    assert_eq!((code, c.pid_of("b")), (200, b3), "{reply}");
    assert!(reply.to_string().contains("b is already running"), "{reply}");
    ui.stop();
}

#[test]
fn dev_serves_the_dashboard_and_takes_its_actions() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &two_services(base));
    let dev = Served::start(&c, "dev");
    assert!(wait_for(Duration::from_secs(30), || c.status().values().all(|s| s["healthy"] == true)));
    let (_, state) = dev.api("GET", "/api/state", "");
    assert_eq!(state["mode"], "dev");
    let b = c.pid_of("b").unwrap();
    let (code, reply) = dev.api("POST", "/api/services/b/restart", "");
    assert_eq!(code, 200, "{reply}");
    assert_ne!(c.pid_of("b").unwrap(), b);
    // `ui` in another terminal points at this dashboard instead of serving a second one.
    let out = c.ok(&["ui"]);
    assert!(out.contains(&format!("http://127.0.0.1:{}/?token={}", dev.port, dev.token)), "{out}");
    dev.stop();
    assert!(is_free(base) && is_free(base + 1));
}

#[test]
fn each_checkout_gets_its_own_dashboard_port() {
    let state = tempfile::TempDir::new().unwrap();
    let base = free_ports(10);
    let one = Checkout::sharing(XTASK, &two_services(base), state.path());
    let two = Checkout::sharing(XTASK, &two_services(base), state.path());
    let (ui1, ui2) = (Served::start(&one, "ui"), Served::start(&two, "ui"));
    assert_ne!(ui1.port, ui2.port);
    let port1 = ui1.port;
    ui1.stop();
    // The port stays reserved: another checkout does not take it while the first is closed...
    let registry = std::fs::read_to_string(state.path().join("cargo-xtask-ports/registry.json")).unwrap();
    assert!(registry.contains(&format!("\"dashboard\": {port1}")), "{registry}");
    // ...and the first checkout gets it back.
    let again = Served::start(&one, "ui");
    assert_eq!(again.port, port1);
    again.stop();
    ui2.stop();
}

/// The dashboard's walk for a port, like a service's, goes past the kernel's
/// ephemeral range rather than into it.
#[test]
fn the_dashboard_moves_past_the_kernels_ephemeral_range() {
    let Some((lo, hi)) = ephemeral_range() else {
        eprintln!("skipped: this machine has no ephemeral range with room on both sides");
        return;
    };
    let c = Checkout::new(XTASK, &two_services(free_ports(10)));
    // Its last port, just below the range, is now held by someone else.
    let root = std::fs::canonicalize(c.dir.path()).unwrap();
    let registry = serde_json::json!({ "checkouts": { root.to_str().unwrap(): { "ports": {}, "dashboard": lo - 1 } } });
    std::fs::create_dir_all(c.state.join("cargo-xtask-ports")).unwrap();
    std::fs::write(c.state.join("cargo-xtask-ports/registry.json"), registry.to_string()).unwrap();
    assert!(is_free(lo - 1), "port {} is busy: this test needs it", lo - 1);
    let _squatter = Squatter::start(lo - 1, "127.0.0.1", None);
    let ui = Served::start(&c, "ui");
    assert!(ui.port > hi && ui.port <= hi + 100, "the dashboard took port {}", ui.port);
    ui.stop();
}

/// A service whose port this checkout's dashboard serves on moves: the
/// dashboard is the runner's own, not a stranger to kill (FORCE_MODE).
#[test]
fn a_service_on_the_dashboards_port_moves() {
    let c = Checkout::new(XTASK, &http_service("a", free_ports(5), ""));
    let ui = Served::start(&c, "ui");
    std::fs::write(c.path("ports.toml"), http_service("a", ui.port, "")).unwrap();
    let alone = STARTING.write().unwrap_or_else(|e| e.into_inner());
    let out = c.ok(&["start"]);
    drop(alone);
    assert!(out.contains("it is this checkout's dashboard"), "{out}");
    assert_ne!(c.ports()["a"], ui.port);
    let (code, _) = ui.api("GET", "/api/state", "");
    assert_eq!(code, 200, "the dashboard stopped answering:\n{out}");
    ui.stop();
}

/// A service that listens only after 2 s.
fn slow_service(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[services.{name}]\nport = {port}\n\
         command = [\"sh\", \"-c\", \"sleep 2; exec python3 -m http.server {{port}} --bind 127.0.0.1\"]\n{extra}\n"
    )
}

/// Posts an action from another thread: the answer comes once it is done.
fn act_later(served: &Served, path: &str) -> std::thread::JoinHandle<String> {
    let (port, token, path) = (served.port, served.token.clone(), path.to_owned());
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Token: {token}\r\n");
        write!(stream, "{head}Connection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
}

fn interrupt(served: &Served) {
    std::process::Command::new("kill").args(["-INT", &served.child.id().to_string()]).status().unwrap();
}

#[test]
fn ctrl_c_during_an_action_of_dev_stops_dev() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &(http_service("a", base, "") + &slow_service("slow", base + 1, "")));
    let mut dev = Served::start(&c, "dev");
    assert!(wait_for(Duration::from_secs(30), || c.status().values().all(|s| s["healthy"] == true)));
    let slow = c.pid_of("slow").unwrap();
    let restart = act_later(&dev, "/api/services/slow/restart");
    assert!(wait_for(Duration::from_secs(30), || c.pid_of("slow").is_some_and(|p| p != slow)));
    interrupt(&dev);
    let stopped = wait_for(Duration::from_secs(30), || dev.child.try_wait().unwrap().is_some());
    if !stopped {
        interrupt(&dev); // a second Ctrl-C, so that the failure leaves nothing running
    }
    assert!(stopped, "dev runs on after a Ctrl-C during an action: {}", restart.join().unwrap());
    assert!(dev.child.wait().unwrap().success());
    assert!(c.status().values().all(|s| s["running"] == false));
    assert!(is_free(base) && is_free(base + 1));
}

#[test]
fn ctrl_c_in_ui_stops_no_service_and_lets_the_action_under_way_finish() {
    let base = free_ports(10);
    let toml = slow_service("slow", base, "")
        + &http_service("b", base + 1, "depends_on = [\"slow\"]")
        + &http_service("k", base + 2, "");
    let c = Checkout::new(XTASK, &toml);
    c.ok(&["start", "k"]);
    let mut ui = Served::start(&c, "ui");
    let start = act_later(&ui, "/api/services/b/start");
    assert!(wait_for(Duration::from_secs(30), || c.pid_of("slow").is_some()), "the start did not begin");
    interrupt(&ui);
    assert!(ui.child.wait().unwrap().success());
    start.join().unwrap();
    let status = c.status();
    assert!(status.values().all(|s| s["healthy"] == true), "Ctrl-C in ui cut a start short: {status:?}");
}

/// `xtask dev ARGS` in the background of the test, with its dashboard.
fn dev_of(c: &Checkout, args: &[&str]) -> Served {
    use std::io::BufRead;
    let _starting = STARTING.read().unwrap_or_else(|e| e.into_inner());
    let command = c.command(&[&["dev"], args].concat()).stdout(std::process::Stdio::piped()).spawn();
    let mut child = command.unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines.by_ref().map(|l| l.unwrap()).find_map(|l| l.strip_prefix("Dashboard: ").map(str::to_owned));
    std::thread::spawn(move || lines.for_each(drop));
    let url = url.expect("no dashboard address printed");
    let (port, token) = url.strip_prefix("http://127.0.0.1:").unwrap().split_once("/?token=").unwrap();
    Served { child: Running(child), port: port.parse().unwrap(), token: token.to_owned() }
}

#[test]
fn start_from_the_dashboard_of_dev_sets_the_service_up() {
    let base = free_ports(10);
    let web = "dirs = [\".data/web\"]\n[[services.web.setup]]\ncommand = [\"touch\", \".data/web/set-up\"]";
    let c = Checkout::new(XTASK, &(http_service("other", base, "") + &http_service("web", base + 1, web)));
    let dev = dev_of(&c, &["other"]);
    let (code, reply) = dev.api("POST", "/api/services/web/start", "");
    assert_eq!(code, 200, "{reply}");
    assert!(c.path(".data/web/set-up").exists(), "web was started without its set-up: {reply}");
    assert_eq!(c.status()["web"]["healthy"], true);
    dev.stop();
}

#[test]
fn set_port_in_dev_says_where_the_service_really_went() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("a", base, ""));
    let dev = Served::start(&c, "dev");
    assert!(wait_for(Duration::from_secs(30), || c.status()["a"]["healthy"] == true));
    let holder = Squatter::start(base + 5, "127.0.0.1", None);
    let (code, reply) = dev.api("POST", "/api/services/a/port", &format!("{{\"port\": {}}}", holder.port));
    assert_eq!(code, 200, "{reply}");
    assert_eq!(c.ports()["a"], base + 6);
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains(&format!("moved to port {}", base + 6)), "{message}");
    dev.stop();
}

/// While another launch holds the checkout, dev's dashboard refuses a
/// restart or a port change before it stops or writes anything.
#[test]
fn a_dev_action_refused_for_another_launch_changes_nothing() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &two_services(base));
    let dev = dev_of(&c, &[]);
    let before = (c.pid_of("a"), c.pid_of("b"), c.ports());
    // What a `start` in another terminal holds while it starts services.
    let launch = std::fs::File::open(c.path(".pids/launch.lock")).unwrap();
    launch.try_lock().unwrap();
    let (code, reply) = dev.api("POST", "/api/services/a/restart", "");
    assert_eq!(code, 409, "{reply}");
    assert_eq!((c.pid_of("a"), c.pid_of("b"), c.ports()), before, "the refused restart stopped them: {reply}");
    let (code, reply) = dev.api("POST", "/api/services/a/port", &format!("{{\"port\": {}}}", base + 5));
    assert_eq!(code, 409, "{reply}");
    assert_eq!((c.pid_of("a"), c.pid_of("b"), c.ports()), before, "{reply}");
    drop(launch);
    dev.stop();
}

/// While a dev runs, a `start` in another terminal is refused, even of what
/// dev does not run: its dashboard starts it.
#[test]
fn a_start_beside_dev_is_refused_and_its_dashboard_starts_instead() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &(http_service("a", base, "") + &http_service("b", base + 1, "")));
    let dev = dev_of(&c, &["a"]);
    let (code, reply) = dev.api("POST", "/api/services/a/stop", "");
    assert_eq!(code, 200, "{reply}");
    let out = c.fails(&["start", "a"]);
    assert!(out.contains(&format!("`cargo xtask dev` (pid {}) runs this checkout", dev.child.id())), "{out}");
    assert!(is_free(base), "the refused start started a:\n{out}");
    let (code, reply) = dev.api("POST", "/api/services/a/start", "");
    assert_eq!(code, 200, "{reply}");
    let servers = processes_with(&format!("http.server {base} "));
    assert_eq!(servers.len(), 1, "a was started twice: {reply} {servers:?}");
    dev.stop();
}

/// A service that runs in the background beside dev is restarted and moved
/// by dev's dashboard like dev's own.
#[test]
fn the_dashboard_of_dev_restarts_and_moves_a_background_service() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &(http_service("a", base, "") + &http_service("b", base + 1, "")));
    c.ok(&["start", "b"]);
    let b = c.pid_of("b").unwrap();
    let dev = dev_of(&c, &["a"]);
    let (code, reply) = dev.api("POST", "/api/services/b/restart", "");
    assert_eq!(code, 200, "{reply}");
    assert!(!alive(b) && c.pid_of("b").is_some_and(|p| p != b), "{reply}");
    let (code, reply) = dev.api("POST", "/api/services/b/port", &format!("{{\"port\": {}}}", base + 5));
    assert_eq!(code, 200, "{reply}");
    assert!(wait_for(Duration::from_secs(10), || c.status()["b"]["healthy"] == true && !is_free(base + 5)), "{reply}");
    assert!(is_free(base + 1), "b still listens on its old port: {reply}");
    dev.stop();
}

/// One dev per checkout: a second is refused even while the first runs
/// nothing, so the first's dashboard never starts what the second runs.
#[test]
fn a_second_dev_is_refused_even_while_the_first_runs_nothing() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &(http_service("a", base, "") + &http_service("b", base + 1, "")));
    let first = dev_of(&c, &["a"]);
    let (code, reply) = first.api("POST", "/api/services/a/stop", "");
    assert_eq!(code, 200, "{reply}");
    let mut second = Running(c.command(&["dev", "b"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let ended = wait_for(Duration::from_secs(30), || second.try_wait().unwrap().is_some());
    assert!(ended, "the second dev runs"); // and is killed as `second` drops
    let mut out = String::new();
    second.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(out.contains(&format!("`cargo xtask dev` (pid {}) runs this checkout", first.child.id())), "{out}");
    assert!(is_free(base + 1), "the second dev started b:\n{out}");
    first.stop();
}

/// A dashboard that ends leaves the record of one that took its place.
#[test]
fn a_dashboard_that_ends_leaves_anothers_record() {
    let c = Checkout::new(XTASK, &http_service("a", free_ports(5), ""));
    let ui = Served::start(&c, "ui");
    let dev = Served::start(&c, "dev");
    ui.stop();
    let record: serde_json::Value =
        serde_json::from_str(&c.read(".pids/dashboard").unwrap_or_default()).expect("dev's dashboard record is gone");
    assert_eq!(record["owner"]["pid"], dev.child.id());
    dev.stop();
}

/// A dev that runs no service is still found: a `restart` beside it is
/// refused before it stops anything, and `stop` stops it.
#[test]
fn a_dev_that_runs_no_service_is_found_by_restart_and_stop() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &(http_service("a", base, "") + &http_service("b", base + 1, "")));
    c.ok(&["start", "b"]);
    let b = c.pid_of("b").unwrap();
    let mut dev = dev_of(&c, &["a"]);
    let (code, reply) = dev.api("POST", "/api/services/a/stop", "");
    assert_eq!(code, 200, "{reply}");
    let out = c.fails(&["restart", "b"]);
    assert!(out.contains(&format!("`cargo xtask dev` (pid {}) runs this checkout", dev.child.id())), "{out}");
    assert_eq!(c.pid_of("b"), Some(b), "b was stopped before the refusal:\n{out}");
    let out = c.ok(&["stop"]);
    assert!(wait_for(Duration::from_secs(30), || dev.child.try_wait().unwrap().is_some()), "dev runs on:\n{out}");
    assert!(!alive(b), "b runs on:\n{out}");
}

/// The dashboard's record holds its token: only its user may read it.
#[test]
fn only_its_user_may_read_the_dashboards_token() {
    use std::os::unix::fs::PermissionsExt;
    let c = Checkout::new(XTASK, &http_service("a", free_ports(5), ""));
    let ui = Served::start(&c, "ui");
    let mode = std::fs::metadata(c.path(".pids/dashboard")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "others may read the token: mode {mode:o}");
    ui.stop();
}
