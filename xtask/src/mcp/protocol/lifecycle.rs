//! The two eras of MCP a client may speak, served side by side (a
//! "dual-era" server): the current revision, where every request carries
//! its version and capabilities in `_meta` and `server/discover` says who
//! we are; and the legacy revisions, which open with an `initialize`
//! handshake. Real agents still speak legacy; the SDK's `Client` probes
//! modern first.

use serde_json::{Map, Value, json};

use super::jsonrpc::{INVALID_PARAMS, RpcError};

/// The current revision: stateless, no `initialize`.
pub const MODERN: &str = "2026-07-28";
/// The handshake revisions we answer `initialize` in, newest first: the
/// first is our answer to a version we do not know (the client then decides
/// whether it can speak it). Our results read the same in all of them.
pub const LEGACY: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The answer to a request in a revision we do not speak. Codes from -32020
/// on are the spec's: invent none there.
pub const UNSUPPORTED_VERSION: i64 = -32022;

const VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// Who the server is, as it tells clients.
#[derive(Debug, Clone)]
pub struct Info {
    pub name: String,
    pub version: String,
    /// For the model: what the server is for and how to use its tools.
    pub instructions: String,
}

/// The connection's state: only the legacy handshake has any.
#[derive(Default)]
pub struct Session {
    /// The version `initialize` settled on, once it has run.
    legacy: Option<String>,
}

impl Session {
    /// Answers `initialize`: the client's version if we speak it, else our
    /// newest legacy one (negotiation, not an error). A second one
    /// negotiates again: the process serves one client.
    pub fn initialize(&mut self, params: &Map<String, Value>, info: &Info) -> Result<Value, RpcError> {
        let Some(asked) = params.get("protocolVersion").and_then(Value::as_str) else {
            return Err(RpcError::new(INVALID_PARAMS, "initialize needs params.protocolVersion, a string"));
        };
        let version = LEGACY.iter().find(|v| **v == asked).unwrap_or(&LEGACY[0]);
        self.legacy = Some(version.to_string());
        Ok(json!({
            "protocolVersion": version,
            "capabilities": capabilities(),
            "serverInfo": server_info(info),
            "instructions": info.instructions,
        }))
    }

    /// Whether a request may be served: a modern one by what its `_meta`
    /// declares, a legacy one once `initialize` has been answered.
    pub fn admit(&self, params: &Map<String, Value>) -> Result<(), RpcError> {
        let meta = params.get("_meta").and_then(Value::as_object);
        let Some(version) = meta.and_then(|m| m.get(VERSION)) else {
            return match self.legacy {
                Some(_) => Ok(()),
                None => Err(RpcError::new(
                    INVALID_PARAMS,
                    format!("send initialize first, or give params._meta {VERSION} and {CAPABILITIES}"),
                )),
            };
        };
        if version != MODERN {
            let supported: Vec<&str> = [MODERN].into_iter().chain(LEGACY.iter().copied()).collect();
            let data = json!({"supported": supported, "requested": version});
            return Err(RpcError::new(UNSUPPORTED_VERSION, "Unsupported protocol version").with_data(data));
        }
        if !meta.and_then(|m| m.get(CAPABILITIES)).is_some_and(Value::is_object) {
            return Err(RpcError::new(INVALID_PARAMS, format!("params._meta needs {CAPABILITIES}, an object")));
        }
        Ok(())
    }
}

/// The answer to `server/discover`. Its versions are those a request may
/// name in `_meta`: the legacy ones are reached through `initialize`.
pub fn discover(info: &Info) -> Value {
    json!({
        "supportedVersions": [MODERN],
        "capabilities": capabilities(),
        "instructions": info.instructions,
        "ttlMs": 0,
        "cacheScope": "private",
    })
}

/// What every result carries: the current revision requires `resultType`
/// and asks for `serverInfo` in `_meta`; legacy clients ignore both, so one
/// shape serves both eras.
pub fn complete(mut result: Value, info: &Info) -> Value {
    result["resultType"] = json!("complete");
    result["_meta"] = json!({SERVER_INFO: server_info(info)});
    result
}

/// Tools only, and no notice when their list changes: `ttlMs: 0` already
/// tells the client to ask again.
fn capabilities() -> Value {
    json!({"tools": {"listChanged": false}})
}

fn server_info(info: &Info) -> Value {
    json!({"name": info.name, "version": info.version})
}
