//! The server driven as a client drives it: JSON lines through pipes, to
//! tools made for the tests (a fast one, one that counts with progress, one
//! that waits until cancelled, failing and broken ones).

mod calls;
mod lifecycle;

use std::io::{BufRead, BufReader, PipeWriter, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use anyhow::bail;
use serde_json::{Map, Value, json};

use super::lifecycle::MODERN;
use super::{Annotations, Call, Info, Tool, Tools, serve};

/// How long a test waits for a message before failing: a hung server fails
/// the test instead of hanging it. Not a measure of anything.
const PATIENCE: Duration = Duration::from_secs(30);

fn info() -> Info {
    Info { name: "test-server".into(), version: "1.2.3".into(), instructions: "Test tools.".into() }
}

/// A client talking to a server that runs on a thread.
struct Client {
    input: Option<PipeWriter>,
    output: Receiver<String>,
    /// What the server returned, once it has.
    ended: Receiver<anyhow::Result<()>>,
    /// What the tools did: "ran echo", "wait cancelled"...
    events: Receiver<String>,
}

impl Client {
    fn start() -> Client {
        let (events_to, events) = channel();
        let (input, server_input) = std::io::pipe().unwrap();
        let (output, server_output) = std::io::pipe().unwrap();
        let tools = Arc::new(TestTools { events: events_to });
        let (ended_to, ended) = channel();
        std::thread::spawn(move || ended_to.send(serve(BufReader::new(input), server_output, info(), tools)));
        let (lines_to, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines() {
                let _ = lines_to.send(line.unwrap());
            }
        });
        Client { input: Some(server_input), output: lines, ended, events }
    }

    /// A client past the legacy handshake.
    fn legacy() -> Client {
        let mut client = Client::start();
        let params =
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}});
        client.request(0, "initialize", params);
        client.send_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        client
    }

    fn send_line(&mut self, line: &str) {
        let input = self.input.as_mut().unwrap();
        input.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    fn send(&mut self, message: Value) {
        self.send_line(&message.to_string());
    }

    fn send_request(&mut self, id: impl Into<Value>, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "id": id.into(), "method": method, "params": params}));
    }

    /// The server's next message.
    fn recv(&mut self) -> Value {
        let line = self.output.recv_timeout(PATIENCE).expect("the server should have written a message");
        message(&line)
    }

    /// Sends a request and reads the next message, which must answer it.
    fn request(&mut self, id: impl Into<Value>, method: &str, params: Value) -> Value {
        let id = id.into();
        self.send_request(id.clone(), method, params);
        let answer = self.recv();
        assert_eq!(answer["id"], id, "not the answer to {method}: {answer}");
        answer
    }

    /// The result of a request that must succeed.
    fn result(&mut self, id: impl Into<Value>, method: &str, params: Value) -> Value {
        let answer = self.request(id, method, params);
        assert!(answer.get("error").is_none(), "{method} failed: {answer}");
        answer["result"].clone()
    }

    /// The error a request must get: (code, message).
    fn error(&mut self, id: impl Into<Value>, method: &str, params: Value) -> (i64, String) {
        let answer = self.request(id, method, params);
        let error = &answer["error"];
        (
            error["code"].as_i64().unwrap_or_else(|| panic!("no error: {answer}")),
            error["message"].as_str().unwrap().into(),
        )
    }

    /// The next message, which must be the (only) answer to a ping: all the
    /// messages before it have been handled.
    fn ping(&mut self, id: u64) {
        let answer = self.request(id, "ping", json!({}));
        assert!(answer.get("result").is_some(), "{answer}");
    }

    /// Closes the server's input, waits for it to return, and gives what it
    /// wrote meanwhile and what its tools did.
    fn close(mut self) -> (Vec<Value>, Vec<String>) {
        drop(self.input.take());
        let ended = self.ended.recv_timeout(PATIENCE).expect("the server should end at the end of its input");
        ended.expect("the server should end well");
        let rest = self.output.iter().map(|line| message(&line)).collect();
        (rest, self.events.try_iter().collect())
    }
}

/// A line the server wrote: one JSON-RPC 2.0 message, nothing else.
fn message(line: &str) -> Value {
    let message: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(message["jsonrpc"], "2.0", "not a JSON-RPC message: {line}");
    message
}

/// Params of a request in the current revision: its envelope in `_meta`.
fn modern(mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
    });
    params
}

struct TestTools {
    events: Sender<String>,
}

impl TestTools {
    fn event(&self, event: String) {
        self.events.send(event).unwrap();
    }
}

fn tool(name: &str, input_schema: Value, output_schema: Option<Value>) -> Tool {
    Tool {
        name: name.into(),
        title: format!("The {name} tool"),
        description: format!("Does what {name} says."),
        input_schema,
        output_schema,
        annotations: Annotations {
            read_only_hint: true,
            destructive_hint: false,
            idempotent_hint: true,
            open_world_hint: false,
        },
    }
}

impl Tools for TestTools {
    fn list(&self) -> Vec<Tool> {
        let strict = |properties: Value, required: Value| json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
        vec![
            tool(
                "echo",
                strict(
                    json!({"text": {"type": "string"}, "times": {"type": "integer", "minimum": 1, "maximum": 3}}),
                    json!(["text"]),
                ),
                Some(json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})),
            ),
            tool("count", strict(json!({"to": {"type": "integer", "minimum": 1, "maximum": 10}}), json!(["to"])), None),
            tool("wait", strict(json!({}), json!([])), None),
            tool("fail", strict(json!({"service": {"type": "string"}}), json!(["service"])), None),
            tool("broken", strict(json!({"how": {"enum": ["panic", "array"]}}), json!(["how"])), None),
        ]
    }

    fn call(&self, name: &str, arguments: &Map<String, Value>, call: &Call) -> anyhow::Result<Value> {
        self.event(format!("ran {name}"));
        match name {
            "echo" => {
                let times = arguments.get("times").and_then(Value::as_u64).unwrap_or(1);
                Ok(json!({"text": arguments["text"].as_str().unwrap().repeat(times as usize)}))
            }
            "count" => {
                let to = arguments["to"].as_u64().unwrap();
                for done in 1..=to {
                    call.progress(done, Some(to), &format!("{done} of {to}"));
                    call.progress(done, Some(to), "again"); // not greater: dropped
                }
                Ok(json!({"counted": to}))
            }
            "wait" => {
                call.progress(1, None, "waiting");
                while !call.cancelled() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.event("wait cancelled".into());
                call.progress(2, None, "after the cancel"); // must not be sent
                Ok(json!({"late": true})) // must not be sent
            }
            "fail" => bail!("no service named {}", arguments["service"].as_str().unwrap()),
            "broken" if arguments["how"] == "panic" => panic!("broken on purpose"),
            "broken" => Ok(json!([1, 2])),
            _ => bail!("no tool {name}"),
        }
    }
}
