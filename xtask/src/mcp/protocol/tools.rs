//! What a front end gives the server: its tools' descriptions, and how to
//! call one; and what a running call can do (report progress, notice that
//! it was cancelled).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::jsonrpc::{self, Id};
use super::server::Shared;

/// A tool as `tools/list` describes it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    /// 1 to 128 of `A-Z a-z 0-9 _ - .`
    pub name: String,
    pub title: String,
    pub description: String,
    /// A JSON Schema with `"type": "object"`, in the subset `schema.rs`
    /// checks: arguments that do not match never reach the tool.
    pub input_schema: Value,
    /// The shape of the result; its root must be an object for legacy
    /// (2025-11-25) clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    pub annotations: Annotations,
}

/// Hints for the client (which may show or confirm calls by them); MCP's
/// defaults are the most cautious, so every hint is spelled out.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotations {
    /// Changes nothing.
    pub read_only_hint: bool,
    /// May undo or destroy something (stop a service).
    pub destructive_hint: bool,
    /// Calling it again with the same arguments changes nothing more.
    pub idempotent_hint: bool,
    /// Reaches beyond the machine: never for us.
    pub open_world_hint: bool,
}

/// The tools a server serves; called from a thread per call.
pub trait Tools: Send + Sync + 'static {
    /// Every tool, in the order to list them: asked once, when the server
    /// starts (the list does not change while it serves).
    fn list(&self) -> Vec<Tool>;

    /// Runs the tool `name` (one of `list`) with arguments its input schema
    /// accepted. The result is its structured content: a JSON object. An
    /// error is the tool's (an unknown service, a port held by another's
    /// process): the model reads it and may try again; it is not a protocol
    /// error. A cancelled call should undo what it did half-way and return
    /// soon: what it returns then is not sent.
    fn call(&self, name: &str, arguments: &Map<String, Value>, call: &Call) -> anyhow::Result<Value>;
}

/// A call in flight, as its tool sees it.
pub struct Call {
    id: Id,
    progress_token: Option<Id>,
    cancel: Arc<Cancel>,
    shared: Arc<Shared>,
    /// The last progress sent: each must be greater.
    last: Mutex<Option<u64>>,
}

impl Call {
    pub(super) fn new(id: Id, progress_token: Option<Id>, cancel: Arc<Cancel>, shared: Arc<Shared>) -> Call {
        Call { id, progress_token, cancel, shared, last: Mutex::new(None) }
    }

    /// Whether the client cancelled the call (or went away).
    pub fn cancelled(&self) -> bool {
        self.cancel.is_set()
    }

    /// Tells the client how far the call is, if it asked to know: `done` of
    /// `total` steps (when known), and what is happening. `done` must grow
    /// from one report to the next (MCP requires it): one that does not is
    /// dropped, as is any after a cancel.
    pub fn progress(&self, done: u64, total: Option<u64>, message: &str) {
        let Some(token) = &self.progress_token else { return };
        let mut last = self.last.lock().unwrap();
        if last.is_some_and(|last| done <= last) {
            return;
        }
        *last = Some(done);
        let mut params = json!({"progressToken": token, "progress": done, "message": message});
        if let Some(total) = total {
            params["total"] = json!(total);
        }
        self.shared.send_for(&self.id, &jsonrpc::notification("notifications/progress", params));
    }
}

/// Whether a call was cancelled.
#[derive(Default)]
pub struct Cancel(AtomicBool);

impl Cancel {
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A call's answer: the structured content, and the same JSON as text for
/// clients that read only text (the spec asks for both).
pub fn result(content: Result<Value, anyhow::Error>) -> Value {
    match content {
        Ok(content) => json!({
            "content": [{"type": "text", "text": content.to_string()}],
            "structuredContent": content,
            "isError": false,
        }),
        Err(e) => failure(&format!("{e:#}")),
    }
}

/// A tool error: the model is told what went wrong in text.
pub fn failure(message: &str) -> Value {
    json!({"content": [{"type": "text", "text": message}], "isError": true})
}

/// Whether a name is one MCP allows.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}
