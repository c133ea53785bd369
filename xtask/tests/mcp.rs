//! The agent interface, `cargo xtask mcp`, driven by a real MCP client that
//! nobody here wrote: the official Python SDK (`mcp` 2.3.0, from PyPI, in a
//! virtualenv this test makes under the target folder and keeps between
//! runs), through `tests/mcp/client.py`, in both eras of the protocol,
//! against real services; beside a `dev` in another terminal; and, line by
//! line, what the server writes on stdout, and what a signal does.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use harness::*;
use serde_json::{Value, json};

/// The runner under test, as cargo built it for these tests.
const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
/// The SDK, pinned: its 2.x line breaks its API between majors.
const SDK_VERSION: &str = "2.3.0";

/// The virtualenv's python, with the SDK: made once (a lock keeps the
/// tests of this and other runs from making it at once), then reused.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-venv");
        let lock = File::create(venv.with_extension("lock")).unwrap();
        lock.lock().unwrap();
        let python = venv.join("bin/python");
        let check = format!("import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '{SDK_VERSION}')");
        let has_sdk =
            || Command::new(&python).args(["-c", &check]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if !has_sdk() {
            let venv_made = Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv).output().unwrap();
            assert!(
                venv_made.status.success(),
                "python3 -m venv failed (on Debian and Ubuntu: apt-get install python3-venv):\n{}",
                text(&venv_made)
            );
            let pip = ["-m", "pip", "install", "--disable-pip-version-check", "--quiet"];
            let installed = Command::new(&python).args(pip).arg(format!("mcp=={SDK_VERSION}")).output().unwrap();
            assert!(installed.status.success(), "installing the MCP SDK from PyPI failed:\n{}", text(&installed));
            assert!(has_sdk(), "mcp {SDK_VERSION} is not importable in {}", venv.display());
        }
        python
    })
}

/// `client.py` connected to `xtask mcp` in a checkout: one JSON step a
/// line in, one answer a line out.
struct Client {
    child: Child,
    input: Option<ChildStdin>,
    answers: Receiver<String>,
    /// What the client, and the server through it, wrote on stderr.
    log: PathBuf,
    /// The version negotiated and the server's name.
    hello: Value,
}

impl Client {
    /// `mode`: `auto` (the current revision, as the SDK probes first) or `legacy`.
    fn connect(c: &Checkout, mode: &str) -> Client {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py");
        let args =
            [script.as_os_str(), "--mode".as_ref(), mode.as_ref(), "--".as_ref(), XTASK.as_ref(), "mcp".as_ref()];
        let log = c.path(&format!("mcp-{mode}.err"));
        let mut child = c
            .other_command(python(), &args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let (lines, answers) = channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || stdout.lines().map_while(Result::ok).try_for_each(|l| lines.send(l)));
        let input = child.stdin.take();
        let mut client = Client { child, input, answers, log, hello: Value::Null };
        client.hello = client.next();
        client
    }

    fn next(&mut self) -> Value {
        // Ample: a client that hangs fails the test rather than hanging it.
        let line = self.answers.recv_timeout(Duration::from_secs(120));
        let line = line.unwrap_or_else(|_| panic!("no answer from the client; its log:\n{}", self.log()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn step(&mut self, step: Value) -> Value {
        let input = self.input.as_mut().unwrap();
        writeln!(input, "{step}").unwrap();
        self.next()
    }

    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.step(json!({"call": tool, "arguments": arguments, "progress": true}))
    }

    /// The structured result of a call that must succeed.
    fn ok(&mut self, tool: &str, arguments: Value) -> Value {
        let answer = self.call(tool, arguments.clone());
        let result = &answer["result"];
        assert_eq!(result["isError"], false, "{tool} {arguments} failed: {answer}\n{}", self.log());
        // The same JSON as text, for clients that read only text.
        let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(text, result["structuredContent"]);
        result["structuredContent"].clone()
    }

    /// The text of a tool error.
    fn tool_error(&mut self, tool: &str, arguments: Value) -> String {
        let answer = self.call(tool, arguments.clone());
        assert_eq!(answer["result"]["isError"], true, "{tool} {arguments} should fail: {answer}");
        answer["result"]["content"][0]["text"].as_str().unwrap().to_owned()
    }
}

impl Drop for Client {
    /// Closes the connection the SDK's way (it closes the server's input).
    fn drop(&mut self) {
        drop(self.input.take());
        if !wait_for(LONG, || matches!(self.child.try_wait(), Ok(Some(_)))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs `args` and parses its JSON output.
fn cli_json(c: &Checkout, args: &[&str]) -> Value {
    serde_json::from_str(&c.ok(args)).unwrap()
}

/// a; b, which depends on a and is given its port; c, on `base + 20`.
fn three_services(base: u16) -> String {
    let b = "depends_on = [\"a\"]\nready = { http = \"/\" }\nenv = { A_PORT = \"{a.port}\" }";
    format!("{}{}{}", http_service("a", base, ""), http_service("b", base + 10, b), http_service("c", base + 20, ""))
}

fn the_official_sdk_drives_the_services(mode: &str, version: &str) {
    let base = free_ports(30);
    let c = Checkout::new(XTASK, &three_services(base));
    let mut client = Client::connect(&c, mode);
    assert_eq!(client.hello["protocolVersion"], version, "{}", client.hello);
    assert_eq!(client.hello["serverInfo"]["name"], "xtask");

    let tools = client.step(json!({"list": {}}))["tools"].clone();
    let names: Vec<&str> = tools.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["status", "ports", "who_holds", "logs", "start", "stop", "restart", "set_port", "urls"]);

    // c's port is held by a process of this user: over MCP nobody can be
    // asked, so c moves, and the result says so; nothing is killed.
    let squatter = Squatter::start(base + 20, "127.0.0.1", None);
    let answer = client.call("start", json!({}));
    let started = &answer["result"]["structuredContent"];
    assert_eq!(started["message"], "every service started", "{answer}\n{}", client.log());
    let moved = started["moved"].as_array().unwrap();
    assert_eq!(moved.len(), 1, "{answer}");
    assert_eq!((&moved[0]["service"], &moved[0]["from"]), (&json!("c"), &json!(base + 20)));
    let why = moved[0]["why"].as_str().unwrap();
    assert!(why.contains(&format!("is held by pid {}", squatter.pid())) && why.contains("not killing it"), "{why}");
    assert!(alive(squatter.pid()), "the squatter was killed");
    let c_port = moved[0]["to"].as_u64().unwrap() as u16;
    assert_eq!(c.ports()["c"], c_port);
    let progress: Vec<&str> =
        answer["progress"].as_array().unwrap().iter().map(|p| p["message"].as_str().unwrap()).collect();
    for step in [format!("a: starting on port {base}"), format!("b: ready at http://localhost:{}", base + 10)] {
        assert!(progress.contains(&step.as_str()), "no progress {step:?} in {progress:?}");
    }
    assert!(progress.iter().any(|p| p.starts_with(&format!("c: port {} is held by pid", base + 20))), "{progress:?}");
    let counts: Vec<f64> =
        answer["progress"].as_array().unwrap().iter().map(|p| p["progress"].as_f64().unwrap()).collect();
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "progress must grow: {counts:?}");

    // What the command line's --json says, the same.
    let status = client.ok("status", json!({}));
    assert_eq!(status["services"], cli_json(&c, &["status", "--json"]));
    assert!(status["services"].as_array().unwrap().iter().all(|s| s["running"] == true && s["healthy"] == true));
    assert_eq!(client.ok("ports", json!({})), cli_json(&c, &["ports", "--json"]));
    assert_eq!(client.ok("ports", json!({"all": true})), cli_json(&c, &["ports", "--all", "--json"]));
    let who = client.ok("who_holds", json!({"ports": [base + 20, base]}));
    assert_eq!(who, cli_json(&c, &["ports", "who", "--json", &(base + 20).to_string(), &base.to_string()]));
    assert_eq!(who["ports"][0]["holders"][0]["pid"], squatter.pid());
    assert_eq!(who["ports"][1]["holders"][0]["service"], "a");
    let urls = client.ok("urls", json!({}));
    let url_of =
        |name: &str| urls["services"].as_array().unwrap().iter().find(|s| s["service"] == name).unwrap()["url"].clone();
    assert_eq!(url_of("c"), format!("http://localhost:{c_port}"));

    // A port set by hand: a and b, which uses its port, restart.
    let b_pid = c.pid_of("b").unwrap();
    let set = client.ok("set_port", json!({"service": "a", "port": base + 5}));
    assert_eq!(set["message"], format!("a moved to port {}", base + 5));
    assert_eq!(c.ports()["a"], base + 5);
    assert_ne!(c.pid_of("b"), Some(b_pid), "b did not restart with a's new port");
    assert!(c.read(".env.runtime").unwrap().contains(&format!("A_PORT={}", base + 5)));
    // c set to the squatter's port moves on, and says so.
    let set = client.ok("set_port", json!({"service": "c", "port": base + 20}));
    let message = set["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("c could not bind port {}: moved to port", base + 20)), "{set}");
    assert_eq!(set["moved"][0]["service"], "c", "{set}");
    assert!(alive(squatter.pid()), "the squatter was killed");

    // Logs, the last lines containing a text.
    let marker = format!("mcp-was-here-{base}");
    get(base + 5, &marker);
    assert!(wait_for(LONG, || c.read(".logs/a.log").is_some_and(|l| l.contains(&marker))));
    let logs = client.ok("logs", json!({"service": "a", "contains": marker, "lines": 5}));
    let lines = logs["lines"].as_array().unwrap();
    assert!(lines.len() == 1 && lines[0].as_str().unwrap().contains(&format!("GET /{marker}")), "{logs}");
    assert_eq!(client.ok("logs", json!({"service": "a", "lines": 1}))["lines"].as_array().unwrap().len(), 1);

    // Bad input: a precise error, and nothing changes.
    let before = cli_json(&c, &["status", "--json"]);
    assert_eq!(
        client.tool_error("start", json!({"services": ["a", "nope"]})),
        "unknown service \"nope\": ports.toml has a, b, c"
    );
    assert_eq!(
        client.tool_error("stop", json!({"services": ["nope"]})),
        "unknown service \"nope\": ports.toml has a, b, c"
    );
    assert_eq!(
        client.tool_error("logs", json!({"service": "nope"})),
        "unknown service \"nope\": ports.toml has a, b, c"
    );
    assert_eq!(
        client.tool_error("set_port", json!({"service": "a", "port": 70000})),
        "Invalid arguments for tool set_port: port must be an integer from 1 to 65535"
    );
    assert_eq!(
        client.tool_error("set_port", json!({"service": "a", "port": 80})),
        "port 80 is below 1024: pick a port from 1024 up"
    );
    assert_eq!(
        client.tool_error("who_holds", json!({"ports": []})),
        "Invalid arguments for tool who_holds: ports must have at least 1 item"
    );
    assert_eq!(cli_json(&c, &["status", "--json"]), before);
    assert_eq!(c.ports()["a"], base + 5);
    // Malformed requests are protocol errors.
    let unknown = client.step(json!({"call": "explode", "arguments": {}}));
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    assert_eq!(unknown["error"]["message"], "Unknown tool: explode");
    let nameless = client.step(json!({"request": "tools/call", "params": {}}));
    assert_eq!(nameless["error"]["code"], -32602, "{nameless}");
    assert_eq!(client.step(json!({"request": "services/list"}))["error"]["code"], -32601);

    let processes = service_processes(&c);
    let stopped = client.ok("stop", json!({}));
    assert_eq!(stopped["message"], "every service stopped");
    assert_all_gone(&c, &processes, &[base + 5, base + 10, c_port]);
    assert!(alive(squatter.pid()), "the squatter was killed");
}

/// GETs `/path` on 127.0.0.1:`port`, which the service logs.
fn get(port: u16, path: &str) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    stream.read_to_string(&mut String::new()).unwrap();
}

#[test]
fn the_official_sdk_drives_the_services_in_the_current_revision() {
    the_official_sdk_drives_the_services("auto", "2026-07-28");
}

#[test]
fn the_official_sdk_drives_the_services_after_the_legacy_handshake() {
    the_official_sdk_drives_the_services("legacy", "2025-11-25");
}

/// The client cancels the start at its first progress: the server stops
/// waiting, stops the service it had started and removes its record.
#[test]
fn a_start_cancelled_at_its_first_progress_leaves_nothing_half_started() {
    let base = free_ports(10);
    // Never ready (it listens on nothing): the start waits until cancelled.
    let c = Checkout::new(XTASK, &format!("[services.slow]\nport = {base}\ncommand = \"sleep {base}\"\n"));
    let mut client = Client::connect(&c, "auto");
    let answer = client.step(json!({"call": "start", "arguments": {}, "cancel_after_progress": 1}));
    assert_eq!(answer["cancelled"], true, "{answer}");
    assert_eq!(answer["progress"][0]["message"], format!("slow: starting on port {base}"), "{answer}");
    let sleeping = || processes_with(&format!("sleep {base}"));
    assert!(wait_for(LONG, || sleeping().is_empty()), "the half-started service runs on: {:?}", sleeping());
    let records = || {
        std::fs::read_dir(c.path(".pids")).unwrap().flatten().any(|e| e.path().extension().is_some_and(|x| x == "json"))
    };
    assert!(wait_for(LONG, || !records()), "a record is left in .pids");
    let status = client.ok("status", json!({}));
    assert_eq!(status["services"][0]["running"], false, "{status}");
    assert!(client.log().contains("cancelled"), "{}", client.log());
}

/// Beside a `dev` in another terminal, the tools see its services, and a
/// selection is refused as the command line refuses it.
#[test]
fn beside_a_dev_it_sees_its_services_and_refuses_a_selection_as_the_command_line_does() {
    let base = free_ports(20);
    let c = Checkout::new(XTASK, &format!("{}{}", http_service("a", base, ""), http_service("b", base + 10, "")));
    let (mut dev, _) = spawn_dev(&c, &[]);
    wait_running(&c, 2);
    let mut client = Client::connect(&c, "legacy");
    let status = client.ok("status", json!({}));
    assert_eq!(status["services"], cli_json(&c, &["status", "--json"]));
    assert!(status["services"].as_array().unwrap().iter().all(|s| s["running"] == true));
    let port = (base + 5).to_string();
    let cases = [
        ("start", json!({"services": ["a"]}), vec!["start", "a"]),
        ("stop", json!({"services": ["a"]}), vec!["stop", "a"]),
        ("restart", json!({"services": ["b"]}), vec!["restart", "b"]),
        ("set_port", json!({"service": "a", "port": base + 5}), vec!["ports", "set", "a", &port]),
    ];
    for (tool, arguments, command) in cases {
        let refused = client.tool_error(tool, arguments);
        assert!(refused.contains(&format!("`cargo xtask dev` (pid {})", dev.id())), "{tool}: {refused}");
        let said = c.fails(&command);
        assert!(said.contains(&format!("error: {refused}")), "{tool} said {refused:?}; {command:?} said:\n{said}");
    }
    assert_eq!(client.ok("status", json!({}))["services"], status["services"], "a refused action changed something");
    assert_eq!(c.ports()["a"], base);
    Command::new("kill").args(["-INT", &dev.id().to_string()]).status().unwrap();
    dev.wait().unwrap();
}

/// `xtask mcp` spoken to through pipes, as any client may.
struct Raw {
    child: Child,
    input: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

impl Raw {
    fn start(c: &Checkout) -> Raw {
        let mut child =
            c.command(&["mcp"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // Each line as it comes, and all of it once it ends (when every
        // holder of the pipe has closed it).
        let (lines, all) = (channel(), channel());
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut text = String::new();
            for line in stdout.lines().map_while(Result::ok) {
                text += &format!("{line}\n");
                let _ = lines.0.send(line);
            }
            let _ = all.0.send(text);
        });
        let (stderr, mut err) = (channel(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            let _ = stderr.0.send(text);
        });
        let input = child.stdin.take();
        Raw { child, input, lines: lines.1, stdout: all.1, stderr: stderr.1 }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.input.as_mut().unwrap(), "{line}").unwrap();
    }

    fn next(&mut self) -> Value {
        let line = self.lines.recv_timeout(LONG).expect("the server should have answered");
        serde_json::from_str(&line).unwrap()
    }

    fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string());
        loop {
            let message = self.next();
            if message["id"] == id {
                return message;
            }
        }
    }

    fn initialize(&mut self) {
        let hello =
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}});
        assert_eq!(self.request(1, "initialize", hello)["result"]["protocolVersion"], "2025-11-25");
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    }

    /// Everything it wrote on stdout and stderr, once both have ended:
    /// while anything holds either pipe open (a service it started), they
    /// would not end.
    fn outputs(&self) -> (String, String) {
        let stdout = self.stdout.recv_timeout(LONG).expect("stdout did not end: something else holds it open");
        let stderr = self.stderr.recv_timeout(LONG).expect("stderr did not end: something else holds it open");
        (stdout, stderr)
    }
}

impl Drop for Raw {
    /// A failed test leaves no server behind (the checkout stops its services).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Only protocol messages reach stdout: what the engine says, a set-up
/// step's output and the services' own go elsewhere, and no service keeps
/// the protocol's pipe open. Malformed input gets its JSON-RPC error.
#[test]
fn only_protocol_messages_reach_stdout() {
    let base = free_ports(10);
    let setup = "[[services.a.setup]]\ncommand = [\"echo\", \"SETUP SAYS HELLO\"]\n";
    let c = Checkout::new(XTASK, &format!("{}{setup}", http_service("a", base, "")));
    let mut server = Raw::start(&c);
    server.send(r#"{"jsonrpc":"2.0","id":1,"method":"#);
    let parse_error = server.next();
    assert_eq!((&parse_error["id"], &parse_error["error"]["code"]), (&Value::Null, &json!(-32700)), "{parse_error}");
    server.send(r#"[{"jsonrpc":"2.0","id":2,"method":"ping"}]"#);
    assert_eq!(server.next()["error"]["code"], -32600);
    let early = server.request(3, "tools/list", json!({}));
    assert_eq!(early["error"]["code"], -32602, "{early}");
    server.initialize();
    let started = server.request(4, "tools/call", json!({"name": "start", "arguments": {}}));
    assert_eq!(started["result"]["structuredContent"]["message"], "every service started", "{started}");
    // The service runs on in the background after the server has gone.
    drop(server.input.take());
    assert!(server.child.wait().unwrap().success());
    let (stdout, stderr) = server.outputs();
    for line in stdout.lines() {
        let message: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line}"));
        assert_eq!(message["jsonrpc"], "2.0", "not JSON-RPC on stdout: {line}");
    }
    for said in ["SETUP SAYS HELLO", &format!("a | starting on port {base}"), "1 service ready"] {
        assert!(stderr.contains(said), "{said:?} is not on stderr:\n{stderr}");
    }
    assert_eq!(c.status()["a"]["running"], true);
}

/// SIGTERM (which an MCP client sends to a server slow to leave) calls
/// off a start under way: what it had started is stopped before the server
/// leaves.
#[test]
fn a_signal_stops_the_server_and_what_its_start_had_started() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &format!("[services.slow]\nport = {base}\ncommand = \"sleep {base}\"\n"));
    let mut server = Raw::start(&c);
    server.initialize();
    let start = json!({"name": "start", "arguments": {}, "_meta": {"progressToken": "s"}});
    server.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": start}).to_string());
    assert_eq!(server.next()["params"]["message"], format!("slow: starting on port {base}"));
    assert!(!processes_with(&format!("sleep {base}")).is_empty());
    Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    let left = wait_for(LONG, || matches!(server.child.try_wait(), Ok(Some(_))));
    assert!(left, "the server did not leave: its start still waits for the service");
    assert!(server.child.wait().unwrap().success());
    assert!(processes_with(&format!("sleep {base}")).is_empty(), "the half-started service runs on");
    assert_eq!(c.status()["slow"]["running"], false);
}
