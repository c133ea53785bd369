//! JSON-RPC 2.0 as MCP uses it: one message per line, no batches; reading a
//! line into a request or a notification, and the messages we write back.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value, json};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a JSON-RPC message (or a batch, which MCP removed in 2025-06-18).
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// A request id: MCP allows a string or an integer, never null. `3` and
/// `"3"` are different requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Id {
    Number(i64),
    Text(String),
}

impl Id {
    /// Reads an id (or a progress token, which has the same type).
    pub fn from_json(value: &Value) -> Option<Id> {
        match value {
            Value::String(s) => Some(Id::Text(s.clone())),
            Value::Number(n) => n.as_i64().map(Id::Number),
            _ => None,
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into(), data: None }
    }
    pub fn with_data(self, data: Value) -> RpcError {
        RpcError { data: Some(data), ..self }
    }
}

/// One line from the client, once it parsed.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// `params` is `{}` when the request had none.
    Request {
        id: Id,
        method: String,
        params: Map<String, Value>,
    },
    Notification {
        method: String,
        params: Map<String, Value>,
    },
    /// An answer to a request of ours: we send none, so it is only logged.
    Response,
}

/// A line that is not a message we can serve: the error to answer, and to
/// which id (None: `"id": null`, when the id could not be read).
#[derive(Debug, PartialEq)]
pub struct Refused {
    pub id: Option<Id>,
    pub error: RpcError,
}

/// Reads one line; its newline, if any, is whitespace to JSON.
pub fn parse(line: &[u8]) -> Result<Incoming, Refused> {
    let refuse = |id: Option<Id>, code, message: &str| Err(Refused { id, error: RpcError::new(code, message) });
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(e) => return refuse(None, PARSE_ERROR, &format!("Parse error: {e}")),
    };
    let mut message = match value {
        Value::Object(message) => message,
        Value::Array(_) => {
            return refuse(
                None,
                INVALID_REQUEST,
                "batches are not supported (MCP 2025-06-18 removed them): send one message per line",
            );
        }
        _ => return refuse(None, INVALID_REQUEST, "a message must be a JSON object"),
    };
    let id = match message.get("id") {
        None => None,
        Some(id) => match Id::from_json(id) {
            Some(id) => Some(id),
            None => return refuse(None, INVALID_REQUEST, "id must be a string or an integer"),
        },
    };
    if message.get("jsonrpc") != Some(&json!("2.0")) {
        return refuse(id, INVALID_REQUEST, "jsonrpc must be \"2.0\"");
    }
    let method = match message.remove("method") {
        Some(Value::String(method)) => method,
        Some(_) => return refuse(id, INVALID_REQUEST, "method must be a string"),
        None if id.is_some() && (message.contains_key("result") || message.contains_key("error")) => {
            return Ok(Incoming::Response);
        }
        None => return refuse(id, INVALID_REQUEST, "a request needs a method"),
    };
    // Every MCP method takes its params by name.
    let params = match message.remove("params") {
        None => Map::new(),
        Some(Value::Object(params)) => params,
        Some(_) => return refuse(id, INVALID_PARAMS, "params must be an object"),
    };
    Ok(match id {
        Some(id) => Incoming::Request { id, method, params },
        None => Incoming::Notification { method, params },
    })
}

pub fn response(id: &Id, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub fn error(id: Option<&Id>, error: &RpcError) -> Value {
    let mut body = json!({"code": error.code, "message": error.message});
    if let Some(data) = &error.data {
        body["data"] = data.clone();
    }
    json!({"jsonrpc": "2.0", "id": id, "error": body})
}

pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_notifications() {
        let request = parse(br#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#).unwrap();
        assert_eq!(request, Incoming::Request { id: Id::Text("a".into()), method: "ping".into(), params: Map::new() });
        let notification = parse(br#"{"jsonrpc":"2.0","method":"n","params":{"x":1}}"#).unwrap();
        let params = json!({"x": 1}).as_object().unwrap().clone();
        assert_eq!(notification, Incoming::Notification { method: "n".into(), params });
        assert_eq!(parse(br#"{"jsonrpc":"2.0","id":4,"result":{}}"#).unwrap(), Incoming::Response);
    }

    /// The id a refusal names: the request's when it could be read.
    #[test]
    fn refusals_name_the_id_they_could_read() {
        let cases: &[(&[u8], Option<Id>, i64)] = &[
            (b"{", None, PARSE_ERROR),
            (b"\xff", None, PARSE_ERROR),
            (br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, None, INVALID_REQUEST),
            (b"7", None, INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, None, INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, None, INVALID_REQUEST),
            (br#"{"id":2,"method":"ping"}"#, Some(Id::Number(2)), INVALID_REQUEST),
            (br#"{"jsonrpc":"1.0","id":"x","method":"ping"}"#, Some(Id::Text("x".into())), INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":3,"method":5}"#, Some(Id::Number(3)), INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":3}"#, Some(Id::Number(3)), INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":4,"method":"ping","params":[1]}"#, Some(Id::Number(4)), INVALID_PARAMS),
        ];
        for (line, id, code) in cases {
            let refused = parse(line).expect_err(&String::from_utf8_lossy(line));
            assert_eq!((&refused.id, refused.error.code), (id, *code), "{}", String::from_utf8_lossy(line));
        }
    }
}
