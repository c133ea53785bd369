//! The dashboard: a page that shows every service (port, state, pid,
//! health, URL, recent log lines) and the other checkouts' reservations,
//! and can start, stop, restart a service or change its port.
//!
//! It listens on 127.0.0.1 only, on a port allocated like any other (and
//! reserved in the registry, so two checkouts never fight over it), and is
//! reached through the proxy as `dashboard.<checkout>.localhost` too. The
//! API answers only with the secret token printed in the address, only to a
//! Host header of its own (loopback, or its named URL: DNS rebinding) and
//! never to another origin.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::json;

use crate::engine::Checkout;
use crate::engine::actions::{self, Action};
use crate::engine::control::Background;
use crate::engine::proxy;
use crate::engine::snapshot;
use crate::engine::supervisor::{self, Event};
use crate::model::alloc;
use crate::model::names::DASHBOARD;
use crate::model::policy::Mode;
use crate::system::http::response::Response;
use crate::system::http::server::{self, Request, Server};
use crate::system::logfile;
use crate::system::paths::Project;
use crate::system::probe;
use crate::system::process::ProcId;
use crate::system::records::{self, Dashboard as Record};
use crate::system::registry::Registry;
use crate::system::term::say;

/// Where the dashboard's port walk starts.
const PREFERRED_PORT: u16 = 7400;
/// How many log lines each service shows.
const LOG_LINES: usize = 40;
/// How often a service's health is checked while the page polls.
const HEALTH_EVERY: Duration = Duration::from_secs(10);

/// Who carries out the page's actions.
pub enum Control {
    /// The `cargo xtask dev` of this process, through its event loop.
    Foreground(Sender<Event>),
    /// Services in the background, through the same code as the CLI
    /// (one action at a time).
    Background(Arc<Mutex<()>>),
}

pub struct Dashboard {
    pub url: String,
    server: Server,
    project: Project,
}

impl Dashboard {
    pub fn close(self) {
        self.server.close();
        let _ = records::forget_dashboard(&self.project, ProcId::myself()); // not another's that took its place
    }
}

struct Shared {
    project: Project,
    control: Control,
    token: String,
    port: u16,
    /// Recent health checks by service: (when, port, healthy). A page polls
    /// every second; the services' logs should not fill with health checks.
    health: Mutex<BTreeMap<String, (Instant, u16, bool)>>,
}

/// Starts serving the dashboard in a background thread.
pub fn serve(project: &Project, control: Control) -> anyhow::Result<Dashboard> {
    let token = token()?;
    let (listener, port) = bind(project)?;
    let url = format!("http://127.0.0.1:{port}/?token={token}");
    records::save_dashboard(project, &Record { url: url.clone(), owner: ProcId::myself() })?;
    let health = Mutex::default();
    let shared = Arc::new(Shared { project: project.clone(), control, token, port, health });
    // A thread per request: an action may take seconds, polls must not wait.
    let server = server::serve(listener, Arc::new(move |request: &Request| hardened(answer(&shared, request))))?;
    Ok(Dashboard { url, server, project: project.clone() })
}

/// `cargo xtask ui`: serves the dashboard for background services until
/// Ctrl-C; if `cargo xtask dev` runs, points at its dashboard instead.
pub fn run(project: &Project) -> anyhow::Result<()> {
    if let Some(running) = records::dashboard(project) {
        say!("The dashboard of pid {} is already serving this checkout: {}", running.owner.pid, running.url);
        return Ok(());
    }
    // Before any action: the signals are the dashboard's, not its actions'.
    let (sender, events) = channel();
    supervisor::forward_signals(sender, None)?; // the services run on: nothing to hurry
    let actions = Arc::new(Mutex::new(()));
    let dashboard = serve(project, Control::Background(actions.clone()))?;
    proxy::start_if_needed(); // for its named URL, and those it shows
    // What it notes of the port book, once: refreshes and actions read it quietly.
    for note in Checkout::read(project).map(|(_, notes)| notes).unwrap_or_default() {
        eprintln!("note: {note}");
    }
    say!("Dashboard: {}", dashboard.url);
    say!("Ctrl-C stops the dashboard (the services keep running).");
    let _ = events.recv();
    dashboard.close();
    // An action under way ends as it would have: what it starts runs on.
    if actions.try_lock().is_err() {
        say!("waiting for the action under way to finish");
    }
    let _done = actions.lock().unwrap_or_else(|e| e.into_inner());
    Ok(())
}

/// 128 random bits, as hex.
fn token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Binds 127.0.0.1 on a free port, walking from this checkout's last one (or
/// 7400) past ports reserved by any checkout or kept by the kernel (as
/// `alloc::walk` says), under the registry's lock; gives the checkout its
/// names if it has none yet, for the dashboard's own.
fn bind(project: &Project) -> anyhow::Result<(TcpListener, u16)> {
    let mut registry = Registry::open()?;
    let mut taken = registry.entries.reserved_by_others(&project.root);
    let mine = registry.entries.mine(&project.root);
    taken.extend(mine.ports.values());
    let start = mine.dashboard.unwrap_or(PREFERRED_PORT);
    for port in alloc::walk(start, 100, (1024, 65535), &probe::kernel_ports()).ports {
        if taken.contains(&port) || alloc::is_browser_blocked(port) || !probe::is_free(port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            registry.entries.mine(&project.root).dashboard = Some(port);
            proxy::give_names(&mut registry, &project.root);
            registry.save()?;
            return Ok((listener, port));
        }
    }
    bail!("no free port for the dashboard from {start}: free one, or stop another dashboard")
}

/// Headers every answer carries.
fn hardened(response: Response) -> Response {
    response
        .with("Cache-Control", "no-store")
        .with("X-Content-Type-Options", "nosniff")
        .with("X-Frame-Options", "DENY")
        // The address holds the token: never send it on as a Referer.
        .with("Referrer-Policy", "no-referrer")
}

/// `host[:port]` as compared: in lower case, and without the trailing dot
/// of a fully qualified name (`dashboard.c1.localhost.:7300`, as a browser
/// sends it when typed so), as the proxy reads it.
fn canonical(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') => (name, Some(port)),
        _ => (host.as_str(), None),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    port.map_or_else(|| name.to_owned(), |port| format!("{name}:{port}"))
}

fn answer(shared: &Shared, request: &Request) -> Response {
    let port = shared.port;
    let mut hosts = vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")];
    let host = request.field("Host").map(canonical);
    // Through the proxy, which passes the Host on as the browser sent it.
    if !host.as_ref().is_some_and(|h| hosts.contains(h))
        && let Some(names) = proxy::names_of(&shared.project)
    {
        hosts.push(format!("{}:{}", names.host(DASHBOARD), names.proxy));
    }
    if !host.is_some_and(|h| hosts.contains(&h)) {
        return text(403, "refused: this dashboard answers only at 127.0.0.1, localhost and its named URL");
    }
    let own = |origin: &str| {
        origin.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
            && hosts.contains(&canonical(&origin[7..]))
    };
    if !request.field("Origin").is_none_or(own) {
        return text(403, "refused: requests from other sites are not allowed");
    }
    match (request.method.as_str(), request.path()) {
        ("GET", "/") => asset(include_str!("index.html"), "text/html; charset=utf-8"),
        ("GET", "/style.css") => asset(include_str!("style.css"), "text/css; charset=utf-8"),
        ("GET", "/app.js") => asset(include_str!("app.js"), "text/javascript; charset=utf-8"),
        (method, api) if api.starts_with("/api/") => {
            let token = request.field("X-Token").unwrap_or_default();
            if !same(token, &shared.token) {
                return error(
                    403,
                    "a valid token is required: open the address printed by cargo xtask, with its token",
                );
            }
            match (method, api.trim_start_matches("/api/").split('/').collect::<Vec<_>>().as_slice()) {
                ("GET", ["state"]) => match state(shared) {
                    Ok(state) => json_reply(200, &state),
                    Err(e) => error(500, &format!("{e:#}")),
                },
                ("POST", ["services", name, verb]) => {
                    let one = Some(vec![name.to_string()]);
                    let action = match *verb {
                        "start" => Action::Start(one),
                        "stop" => Action::Stop(one),
                        "restart" => Action::Restart(one),
                        "port" => match read_port(request) {
                            Ok(port) => Action::SetPort(name.to_string(), port),
                            Err(e) => return error(400, &format!("{e:#}")),
                        },
                        _ => return error(404, "unknown action"),
                    };
                    match act(shared, action) {
                        Ok(message) => json_reply(200, &json!({ "ok": true, "message": message })),
                        Err(e) => error(409, &e),
                    }
                }
                _ => error(404, "no such endpoint"),
            }
        }
        _ => text(404, "not found"),
    }
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn read_port(request: &Request) -> anyhow::Result<u16> {
    #[derive(Deserialize)]
    struct Body {
        port: u16,
    }
    let body: Body =
        serde_json::from_slice(&request.body).context("the body must be {\"port\": N} with N from 1 to 65535")?;
    Ok(body.port)
}

fn act(shared: &Shared, action: Action) -> Result<String, String> {
    match &shared.control {
        Control::Foreground(sender) => {
            let (reply, outcome) = channel();
            sender.send(Event::Command { action, reply }).map_err(|_| "the runner is stopping".to_owned())?;
            outcome.recv_timeout(Duration::from_secs(600)).map_err(|_| "no answer from the runner".to_owned())?
        }
        Control::Background(one_at_a_time) => {
            let _guard = one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
            // A click never kills anyone's process: a busy port moves the service.
            let (checkout, _) = Checkout::read(&shared.project).map_err(|e| format!("{e:#}"))?;
            actions::act(&mut Background::new(checkout, Mode::NoKill), &action).map_err(|e| format!("{e:#}"))
        }
    }
}

fn state(shared: &Shared) -> anyhow::Result<serde_json::Value> {
    let project = &shared.project;
    // Read on every refresh: what it notes of the port book was said when it began.
    let (checkout, _) = Checkout::read(project)?;
    let config = &checkout.config;
    let mut health = shared.health.lock().unwrap_or_else(|e| e.into_inner());
    let healthy = |service: &crate::model::config::Service, port: u16| match health.get(&service.name) {
        Some((at, p, ok)) if *p == port && at.elapsed() < HEALTH_EVERY => *ok,
        _ => {
            let ok = probe::healthy(service, port);
            health.insert(service.name.clone(), (Instant::now(), port, ok));
            ok
        }
    };
    let services: Vec<_> = snapshot::status(&checkout, healthy)
        .into_iter()
        .map(|state| {
            let log = logfile::last_lines(&project.log_file(&state.service), LOG_LINES);
            json!({
                "name": state.service, "title": state.title, "port": state.port, "running": state.running,
                "pid": state.pid, "healthy": state.healthy, "url": state.url, "public_url": state.public_url,
                "suspended": state.suspended,
                "depends_on": config.services[&state.service].depends_on, "log": log,
            })
        })
        .collect();
    let registry = Registry::open()?;
    let others: Vec<_> = registry
        .entries
        .checkouts
        .iter()
        .filter(|(path, _)| **path != project.root)
        .map(|(path, entry)| json!({ "path": path, "name": entry.name, "ports": entry.ports, "dashboard": entry.dashboard }))
        .collect();
    let name = registry.entries.checkouts.get(&project.root).map(|entry| entry.name.clone());
    let proxy = registry.entries.proxy.as_ref().map(|proxy| proxy.port);
    let mode = match shared.control {
        Control::Foreground(_) => "dev",
        Control::Background(_) => "background",
    };
    Ok(json!({
        "checkout": project.root, "name": name, "proxy": proxy, "mode": mode, "services": services, "others": others,
    }))
}

fn asset(body: &str, content_type: &str) -> Response {
    Response::new(200, content_type, body).with(
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
    )
}

fn text(code: u16, body: &str) -> Response {
    Response::new(code, "text/plain; charset=utf-8", body)
}

fn json_reply(code: u16, value: &serde_json::Value) -> Response {
    Response::new(code, "application/json", value.to_string())
}

fn error(code: u16, message: &str) -> Response {
    json_reply(code, &json!({ "ok": false, "error": message }))
}
