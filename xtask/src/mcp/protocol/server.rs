//! The server loop: reads the client's messages a line at a time, answers
//! the quick ones at once, runs each tool call on a thread of its own (so a
//! cancel can be read while it runs), and writes every message whole, a
//! line each, through one lock.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::bail;
use serde_json::{Map, Value, json};

use super::jsonrpc::{self, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, Id, Incoming, METHOD_NOT_FOUND, RpcError};
use super::lifecycle::{self, Info, Session};
use super::schema;
use super::tools::{self, Call, Cancel, Tool, Tools};

/// How long calls in flight when the client closes our input may still
/// answer (a script piping one request in gets its answer). The SDK kills a
/// server 2 s after closing its input: calls still running then are
/// cancelled first, so their tools undo what they did half-way.
const ANSWER_AFTER_EOF: Duration = Duration::from_secs(1);

/// Serves `tools` to the client writing `input` and reading `output` until
/// `input` ends. Logs go to stderr: `output` carries protocol messages only.
pub fn serve(
    mut input: impl BufRead,
    output: impl Write + Send + 'static,
    info: Info,
    tools: Arc<dyn Tools>,
) -> anyhow::Result<()> {
    let list = tools.list();
    check(&list)?;
    let listed = serde_json::to_value(&list)?;
    let shared = Arc::new(Shared { state: Mutex::new(State::new(output)), idle: Condvar::new() });
    let info = Arc::new(info);
    let mut server = Server { info, tools, list, listed, shared, session: Session::default(), workers: Vec::new() };
    let mut line = Vec::new();
    loop {
        line.clear();
        // A line is read whole before it is parsed: up to a limit, or a
        // client that never sends a newline would take all the memory.
        let read = Read::take(&mut input, LINE_LIMIT).read_until(b'\n', &mut line);
        let over = line.len() as u64 == LINE_LIMIT && !line.ends_with(b"\n");
        match read.and_then(|n| if over { skip_line(&mut input).map(|()| n) } else { Ok(n) }) {
            Ok(0) => break,
            Ok(_) if over => {
                let message = format!("Invalid Request: a message over {} MiB", LINE_LIMIT >> 20);
                server.shared.send(&jsonrpc::error(None, &RpcError::new(INVALID_REQUEST, &message)));
            }
            Ok(_) => server.handle(&line),
            Err(e) => {
                eprintln!("mcp: reading the client's messages failed: {e}");
                break;
            }
        }
    }
    server.finish();
    Ok(())
}

/// The longest message read: far more than any request of these tools.
const LINE_LIMIT: u64 = 16 << 20;

/// Reads past the rest of a line, to its newline or the end of the input.
fn skip_line(input: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => {
                input.consume(at + 1);
                return Ok(());
            }
            None => {
                let all = buffer.len();
                input.consume(all);
            }
        }
    }
}

/// Refuses tools a client could not use or whose arguments we could not check.
fn check(list: &[Tool]) -> anyhow::Result<()> {
    for (i, tool) in list.iter().enumerate() {
        let name = &tool.name;
        if !tools::valid_name(name) {
            bail!("tool name {name:?}: MCP allows 1 to 128 of A-Z a-z 0-9 _ - .");
        }
        if list[..i].iter().any(|t| t.name == *name) {
            bail!("two tools are named {name}");
        }
        if let Err(why) = schema::supported(&tool.input_schema) {
            bail!("tool {name}: inputSchema: {why}");
        }
        if tool.output_schema.as_ref().is_some_and(|s| s.get("type") != Some(&json!("object"))) {
            bail!("tool {name}: outputSchema: the root must have \"type\": \"object\" (legacy clients require it)");
        }
    }
    Ok(())
}

struct Server {
    info: Arc<Info>,
    tools: Arc<dyn Tools>,
    /// The tools' list, read once: it does not change (`listChanged` is
    /// false), and a call looks its tool up in it.
    list: Vec<Tool>,
    /// The same, as `tools/list` answers it.
    listed: Value,
    shared: Arc<Shared>,
    session: Session,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    fn handle(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return; // the newline after a message, doubled
        }
        match jsonrpc::parse(line) {
            Err(refused) => self.shared.send(&jsonrpc::error(refused.id.as_ref(), &refused.error)),
            Ok(Incoming::Response) => eprintln!("mcp: ignored a response: this server sends no requests"),
            Ok(Incoming::Notification { method, params }) => self.notified(&method, &params),
            Ok(Incoming::Request { id, method, params }) => {
                if let Err(error) = self.request(&id, &method, &params) {
                    self.shared.send(&jsonrpc::error(Some(&id), &error));
                }
            }
        }
    }

    fn request(&mut self, id: &Id, method: &str, params: &Map<String, Value>) -> Result<(), RpcError> {
        let result = match method {
            "initialize" => self.session.initialize(params, &self.info)?,
            "ping" => json!({}), // allowed before initialize too
            "server/discover" => {
                self.session.admit(params)?;
                lifecycle::discover(&self.info)
            }
            "tools/list" => {
                self.session.admit(params)?;
                if params.contains_key("cursor") {
                    return Err(RpcError::new(INVALID_PARAMS, "invalid cursor: the tool list has one page"));
                }
                json!({"tools": self.listed, "ttlMs": 0, "cacheScope": "private"})
            }
            "tools/call" => {
                self.session.admit(params)?;
                return self.call(id, params); // answers when the tool is done
            }
            _ => return Err(RpcError::new(METHOD_NOT_FOUND, format!("Method not found: {method}"))),
        };
        self.shared.send(&jsonrpc::response(id, lifecycle::complete(result, &self.info)));
        Ok(())
    }

    /// Starts a tool call on its own thread, once its request is known good.
    fn call(&mut self, id: &Id, params: &Map<String, Value>) -> Result<(), RpcError> {
        let invalid = |message: String| RpcError::new(INVALID_PARAMS, message);
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            return Err(invalid("tools/call needs the tool's name in params.name".into()));
        };
        let Some(tool) = self.list.iter().find(|t| t.name == name) else {
            return Err(invalid(format!("Unknown tool: {name}")));
        };
        let arguments = params.get("arguments").cloned().unwrap_or(json!({}));
        let Value::Object(arguments) = arguments else {
            return Err(invalid("params.arguments must be an object".into()));
        };
        let token = params.get("_meta").and_then(|m| m.get("progressToken"));
        let token = match token.map(Id::from_json) {
            None => None,
            Some(None) => return Err(invalid("params._meta.progressToken must be a string or an integer".into())),
            Some(token) => token,
        };
        // Wrong arguments are the model's to fix: a tool error it reads,
        // as the spec asks, not a protocol error.
        if let Err(wrong) = schema::check(&tool.input_schema, &Value::Object(arguments.clone())) {
            let failure = tools::failure(&format!("Invalid arguments for tool {name}: {wrong}"));
            self.shared.send(&jsonrpc::response(id, lifecycle::complete(failure, &self.info)));
            return Ok(());
        }
        let Some(cancel) = self.shared.begin(id) else {
            return Err(RpcError::new(
                INVALID_REQUEST,
                format!("request id {id} is already in use by a call in flight"),
            ));
        };
        let (id, name) = (id.clone(), name.to_owned());
        let (tools, shared, info) = (self.tools.clone(), self.shared.clone(), self.info.clone());
        self.workers.retain(|worker| !worker.is_finished());
        self.workers.push(std::thread::spawn(move || {
            let call = Call::new(id.clone(), token, cancel, shared.clone());
            let done = catch_unwind(AssertUnwindSafe(|| tools.call(&name, &arguments, &call)));
            let answer = match done {
                Ok(Ok(content)) if !content.is_object() => {
                    Err(RpcError::new(INTERNAL_ERROR, format!("tool {name} returned no JSON object (a bug)")))
                }
                Ok(result) => Ok(lifecycle::complete(tools::result(result), &info)),
                // The panic is on stderr already.
                Err(_) => {
                    Err(RpcError::new(INTERNAL_ERROR, format!("tool {name} failed (a bug: see the server's log)")))
                }
            };
            let message = match answer {
                Ok(result) => jsonrpc::response(&id, result),
                Err(error) => jsonrpc::error(Some(&id), &error),
            };
            shared.finish(&id, &message);
        }));
        Ok(())
    }

    fn notified(&mut self, method: &str, params: &Map<String, Value>) {
        // Unknown notifications, `notifications/initialized` among them
        // (requests are served from the initialize answer on), need nothing.
        if method != "notifications/cancelled" {
            return;
        }
        // Unknown ids and calls already answered are ignored, as the spec asks.
        if let Some(id) = params.get("requestId").and_then(Id::from_json)
            && self.shared.cancel(&id)
        {
            let reason = params.get("reason").and_then(Value::as_str).unwrap_or("no reason given");
            eprintln!("mcp: request {id} cancelled: {reason}");
        }
    }

    /// Lets calls in flight answer a moment, cancels the rest, and waits
    /// for their tools to return.
    fn finish(self) {
        let state = self.shared.state.lock().unwrap();
        let (state, _) = self.shared.idle.wait_timeout_while(state, ANSWER_AFTER_EOF, |s| !s.calls.is_empty()).unwrap();
        for cancel in state.calls.values() {
            cancel.set();
        }
        drop(state);
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

/// What the loop and the calls' threads share: the output and the calls in
/// flight, under one lock, so a cancel and a call's next message are never
/// half-way past each other.
pub struct Shared {
    state: Mutex<State>,
    /// Told when the last call in flight is done.
    idle: Condvar,
}

struct State {
    output: Box<dyn Write + Send>,
    calls: HashMap<Id, Arc<Cancel>>,
    /// Writing failed (the client is gone): said once on stderr.
    broken: bool,
}

impl State {
    fn new(output: impl Write + Send + 'static) -> State {
        State { output: Box::new(output), calls: HashMap::new(), broken: false }
    }

    /// One message, one line: compact JSON escapes every newline.
    fn write(&mut self, message: &Value) {
        let mut line = serde_json::to_vec(message).expect("a JSON value serializes");
        line.push(b'\n');
        let written = self.output.write_all(&line).and_then(|()| self.output.flush());
        if let Err(e) = written
            && !self.broken
        {
            self.broken = true;
            eprintln!("mcp: writing to the client failed: {e}");
        }
    }
}

impl Shared {
    fn send(&self, message: &Value) {
        self.state.lock().unwrap().write(message);
    }

    /// Registers a call in flight; None if its id already names one.
    fn begin(&self, id: &Id) -> Option<Arc<Cancel>> {
        let mut state = self.state.lock().unwrap();
        if state.calls.contains_key(id) {
            return None;
        }
        let cancel = Arc::new(Cancel::default());
        state.calls.insert(id.clone(), cancel.clone());
        Some(cancel)
    }

    /// Sends a message about a call in flight unless it was cancelled.
    pub(super) fn send_for(&self, id: &Id, message: &Value) {
        let mut state = self.state.lock().unwrap();
        if state.calls.get(id).is_some_and(|cancel| !cancel.is_set()) {
            state.write(message);
        }
    }

    /// Sends a call's answer unless it was cancelled; the call is over.
    fn finish(&self, id: &Id, answer: &Value) {
        let mut state = self.state.lock().unwrap();
        if let Some(cancel) = state.calls.remove(id)
            && !cancel.is_set()
        {
            state.write(answer);
        }
        if state.calls.is_empty() {
            self.idle.notify_all();
        }
    }

    /// Cancels a call in flight; false if there is none with this id.
    fn cancel(&self, id: &Id) -> bool {
        let state = self.state.lock().unwrap();
        state.calls.get(id).inspect(|cancel| cancel.set()).is_some()
    }
}
