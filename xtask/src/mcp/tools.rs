//! The nine tools, each carried out by the engine as its command is:
//! looks through `snapshot` and `logfile`, actions through
//! `actions::act` on the background services, with the same checks as the
//! command line and the dashboard. Nobody can answer a question over MCP:
//! actions run as `--no-kill` does, so a port held by a process that is not
//! this checkout's moves the service, and the result says where.

use std::cell::{Cell, RefCell};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, ensure};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::catalog;
use super::protocol::{Call, Tool, Tools};
use crate::engine::actions::{self, Action, Selection};
use crate::engine::allocation::Move;
use crate::engine::control::{self, Background};
use crate::engine::watch::Watch;
use crate::engine::{self, Checkout, snapshot};
use crate::model::policy::Mode;
use crate::system::logfile;
use crate::system::paths::Project;

/// The tools of one checkout, the one the server was started in.
pub struct CheckoutTools {
    project: Project,
    /// Held (shared) by each action under way; taken whole when the server
    /// is stopped, once every action has ended.
    actions: RwLock<()>,
    /// Set when the server is stopped by a signal: starts under way are
    /// called off, and no action begins.
    closing: AtomicBool,
}

impl CheckoutTools {
    pub fn new(project: Project) -> CheckoutTools {
        CheckoutTools { project, actions: RwLock::new(()), closing: AtomicBool::new(false) }
    }

    /// Calls off the starts under way, which stop what they started, and
    /// waits until every action has ended: the server is about to leave.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        drop(self.actions.write().unwrap_or_else(|e| e.into_inner()));
    }

    fn act(&self, action: Action, call: &Call) -> anyhow::Result<Value> {
        let _acting = self.actions.read().unwrap_or_else(|e| e.into_inner());
        ensure!(!self.closing.load(Ordering::SeqCst), "the MCP server is closing");
        let following = Following { call, closing: &self.closing, steps: Cell::new(0), moves: RefCell::default() };
        let message = match &action {
            // As `cargo xtask stop`: from the records alone if ports.toml is broken.
            Action::Stop(selection) => control::stop_services(&self.project, selection)?,
            _ => {
                let checkout = Checkout::load(&self.project)?;
                let mut background = Background::new(checkout, Mode::NoKill).watched(&following);
                actions::act(&mut background, &action)?
            }
        };
        let services = snapshot::status_now(&self.project)?.services;
        Ok(json!({"message": message, "moved": following.moves.take(), "services": services}))
    }

    fn logs(&self, arguments: Logs) -> anyhow::Result<Value> {
        let Logs { service, lines, contains } = arguments;
        engine::load_config(&self.project)?.closure(Some(std::slice::from_ref(&service)))?; // checks the name
        let file = self.project.log_file(&service);
        let lines = match contains {
            Some(text) => logfile::last_lines_containing(&file, lines, &text),
            None => logfile::last_lines(&file, lines),
        };
        Ok(json!({"service": service, "file": file, "lines": lines}))
    }

    fn urls(&self) -> anyhow::Result<Value> {
        let checkout = Checkout::load(&self.project)?;
        let states = snapshot::status(&checkout, |_, _| false); // where, not whether it answers
        // The named URL of a service (`http://<service>.<checkout>.localhost:<port>/`,
        // issue 18) joins its row here, beside `url`, once the proxy exists.
        let services: Vec<Value> = states
            .into_iter()
            .map(|state| json!({"service": state.service, "running": state.running, "url": state.url}))
            .collect();
        Ok(json!({ "services": services }))
    }
}

impl Tools for CheckoutTools {
    fn list(&self) -> Vec<Tool> {
        catalog::tools()
    }

    fn call(&self, name: &str, arguments: &Map<String, Value>, call: &Call) -> anyhow::Result<Value> {
        let arguments = Value::Object(arguments.clone());
        let project = &self.project;
        let value = match name {
            "status" => serde_json::to_value(snapshot::status_now(project)?)?,
            "ports" => {
                let Ports { all } = serde_json::from_value(arguments)?;
                if all {
                    // As `ports --all`: a broken ports.toml fails it before the registry is pruned.
                    engine::load_config(project)?;
                    serde_json::to_value(snapshot::checkouts()?)?
                } else {
                    serde_json::to_value(snapshot::ports(&Checkout::load(project)?)?)?
                }
            }
            "who_holds" => {
                let WhoHolds { ports } = serde_json::from_value(arguments)?;
                json!({ "ports": snapshot::who(project, &ports)? })
            }
            "logs" => self.logs(serde_json::from_value(arguments)?)?,
            "urls" => self.urls()?,
            "start" | "stop" | "restart" => {
                let Services { services } = serde_json::from_value(arguments)?;
                let selection: Selection = services.filter(|names| !names.is_empty());
                let action = match name {
                    "start" => Action::Start(selection),
                    "stop" => Action::Stop(selection),
                    _ => Action::Restart(selection),
                };
                self.act(action, call)?
            }
            "set_port" => {
                let SetPort { service, port } = serde_json::from_value(arguments)?;
                self.act(Action::SetPort(service, port), call)?
            }
            _ => bail!("no tool is named {name}"), // the server calls listed tools only
        };
        Ok(value)
    }
}

// The arguments of each tool, as its input schema (`catalog`) allows them:
// the server has checked them against it before the call.

#[derive(Deserialize)]
struct Ports {
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize)]
struct WhoHolds {
    ports: Vec<u16>,
}

#[derive(Deserialize)]
struct Logs {
    service: String,
    #[serde(default = "fifty")]
    lines: usize,
    contains: Option<String>,
}

fn fifty() -> usize {
    50
}

#[derive(Deserialize)]
struct Services {
    services: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct SetPort {
    service: String,
    port: u16,
}

/// A start as the client follows it: each step a progress notification
/// (when it asked for them), each move kept for the result; called off
/// when the client cancels the call, or the server is stopped.
struct Following<'a> {
    call: &'a Call,
    closing: &'a AtomicBool,
    steps: Cell<u64>,
    moves: RefCell<Vec<Move>>,
}

impl Following<'_> {
    fn step(&self, message: &str) {
        self.steps.set(self.steps.get() + 1);
        self.call.progress(self.steps.get(), None, message);
    }
}

impl Watch for Following<'_> {
    fn starting(&self, service: &str, port: u16) {
        self.step(&format!("{service}: starting on port {port}"));
    }

    fn ready(&self, service: &str, url: &str) {
        self.step(&format!("{service}: ready at {url}"));
    }

    fn moved(&self, moved: &Move) {
        self.step(&moved.to_string());
        self.moves.borrow_mut().push(moved.clone());
    }

    fn cancelled(&self) -> bool {
        self.call.cancelled() || self.closing.load(Ordering::SeqCst)
    }
}
