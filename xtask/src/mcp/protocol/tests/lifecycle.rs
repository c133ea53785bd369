//! Opening a conversation in either era, and what is not a request we serve.

use serde_json::{Value, json};

use super::{Client, modern};
use crate::mcp::protocol::lifecycle::MODERN;

fn initialize(version: &str) -> Value {
    json!({"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}})
}

/// The fields of a result besides the two every result carries.
fn own_fields(result: &Value) -> Vec<&str> {
    let fields = result.as_object().unwrap().keys().map(String::as_str);
    fields.filter(|k| !["resultType", "_meta"].contains(k)).collect()
}

fn assert_complete(result: &Value) {
    assert_eq!(result["resultType"], "complete", "{result}");
    let server_info = json!({"name": "test-server", "version": "1.2.3"});
    assert_eq!(result["_meta"]["io.modelcontextprotocol/serverInfo"], server_info, "{result}");
}

#[test]
fn legacy_handshake() {
    let mut client = Client::start();
    let result = client.result(1, "initialize", initialize("2025-11-25"));
    assert_eq!(result["protocolVersion"], "2025-11-25");
    assert_eq!(result["capabilities"], json!({"tools": {"listChanged": false}}));
    assert_eq!(result["serverInfo"], json!({"name": "test-server", "version": "1.2.3"}));
    assert_eq!(result["instructions"], "Test tools.");
    assert_complete(&result);
    client.send_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let pong = client.result(2, "ping", json!({}));
    assert_eq!(own_fields(&pong), Vec::<&str>::new(), "a ping's result is empty: {pong}");
    let listed = client.result(3, "tools/list", json!({}));
    assert_eq!(listed["tools"][0]["name"], "echo");
    assert_complete(&listed);
    assert!(client.close().0.is_empty());
}

/// The client's version if we speak it, else our newest legacy one: the
/// client decides whether it can go on.
#[test]
fn initialize_negotiates_the_version() {
    let cases = [
        ("2025-11-25", "2025-11-25"),
        ("2025-06-18", "2025-06-18"),
        ("2024-11-05", "2024-11-05"),
        ("1999-01-01", "2025-11-25"),
        (MODERN, "2025-11-25"), // the current revision has no initialize
    ];
    let mut client = Client::start();
    for (i, (asked, answered)) in cases.into_iter().enumerate() {
        let result = client.result(i as u64, "initialize", initialize(asked));
        assert_eq!(result["protocolVersion"], answered, "asked {asked}");
    }
    let (code, message) = client.error(9, "initialize", json!({"capabilities": {}}));
    assert_eq!((code, message.as_str()), (-32602, "initialize needs params.protocolVersion, a string"));
}

#[test]
fn legacy_requests_wait_for_initialize() {
    let mut client = Client::start();
    let (code, message) = client.error(1, "tools/list", json!({}));
    assert_eq!(code, -32602);
    assert!(message.starts_with("send initialize first"), "{message}");
    client.ping(2); // allowed before the handshake
    client.result(3, "initialize", initialize("2025-11-25"));
    client.result(4, "tools/list", json!({}));
}

#[test]
fn modern_requests_need_no_handshake() {
    let mut client = Client::start();
    let discovered = client.result("d", "server/discover", modern(json!({})));
    assert_eq!(discovered["supportedVersions"], json!([MODERN]));
    assert_eq!(discovered["capabilities"], json!({"tools": {"listChanged": false}}));
    assert_eq!(discovered["instructions"], "Test tools.");
    assert_eq!((&discovered["ttlMs"], &discovered["cacheScope"]), (&json!(0), &json!("private")));
    assert_complete(&discovered);
    let listed = client.result(1, "tools/list", modern(json!({})));
    assert_eq!((&listed["ttlMs"], &listed["cacheScope"]), (&json!(0), &json!("private")));
    assert_complete(&listed);
    let called = client.result(2, "tools/call", modern(json!({"name": "echo", "arguments": {"text": "hi"}})));
    assert_eq!(called["structuredContent"], json!({"text": "hi"}));
    assert_complete(&called);
}

/// A dual-era server may serve both eras in one process; each request is
/// judged by its own `_meta`.
#[test]
fn modern_envelopes_are_checked_in_either_era() {
    for mut client in [Client::start(), Client::legacy()] {
        let mut old = modern(json!({}));
        old["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("1900-01-01");
        let answer = client.request(1, "tools/list", old);
        assert_eq!(answer["error"]["code"], -32022, "{answer}");
        assert_eq!(answer["error"]["message"], "Unsupported protocol version");
        let supported = json!([MODERN, "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]);
        assert_eq!(answer["error"]["data"], json!({"supported": supported, "requested": "1900-01-01"}));

        let mut no_capabilities = modern(json!({}));
        no_capabilities["_meta"].as_object_mut().unwrap().remove("io.modelcontextprotocol/clientCapabilities");
        let expected = "params._meta needs io.modelcontextprotocol/clientCapabilities, an object";
        assert_eq!(client.error(2, "server/discover", no_capabilities), (-32602, expected.into()));
        let mut bad_capabilities = modern(json!({}));
        bad_capabilities["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!("all");
        assert_eq!(client.error(3, "tools/list", bad_capabilities), (-32602, expected.into()));
        client.result(4, "tools/list", modern(json!({})));
    }
}

#[test]
fn unknown_methods_and_notifications() {
    let mut client = Client::start();
    let unknown = (-32601, "Method not found: resources/list".to_owned());
    assert_eq!(client.error(1, "resources/list", json!({})), unknown); // not "initialize first"
    assert_eq!(client.error(2, "resources/list", modern(json!({}))), unknown);
    client.send_line(r#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#);
    client.ping(3); // and nothing before it
}

/// Each bad line gets its error, with the id when it could be read; lines
/// that are no request get nothing; the server goes on.
#[test]
fn malformed_lines() {
    let mut client = Client::legacy();
    let cases = [
        ("this is not json", -32700, Value::Null),
        (r#"{"jsonrpc":"2.0","id":1,"method":"ping""#, -32700, Value::Null),
        (r#"[{"jsonrpc":"2.0","id":2,"method":"ping"}]"#, -32600, Value::Null),
        (r#"{"id":3,"method":"ping"}"#, -32600, json!(3)),
        (r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, -32600, Value::Null),
        (r#"{"jsonrpc":"2.0","id":"x","method":["ping"]}"#, -32600, json!("x")),
        (r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":[]}"#, -32602, json!(4)),
    ];
    for (line, code, id) in cases {
        client.send_line(line);
        let answer = client.recv();
        assert_eq!((&answer["error"]["code"], &answer["id"]), (&json!(code), &id), "{line} -> {answer}");
    }
    client.send_line("");
    client.send_line(r#"{"jsonrpc":"2.0","id":5,"result":{}}"#); // a response: we asked nothing
    client.send_line(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":[]}}"#);
    client.ping(6);
    let batch = r#"[{"jsonrpc":"2.0","id":7,"method":"ping"}]"#;
    client.send_line(batch);
    let refused = client.recv();
    assert!(refused["error"]["message"].as_str().unwrap().starts_with("batches are not supported"), "{refused}");
}

/// A line over the limit is refused without being kept whole (a client that
/// never sends a newline would take all the memory); the next is read.
#[test]
fn a_line_over_the_limit_is_refused_and_the_next_read() {
    let mut client = Client::legacy();
    let padding = "a".repeat(17 << 20);
    client.send_line(&format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"x":"{padding}"}}}}"#));
    let refused = client.recv();
    assert_eq!((&refused["error"]["code"], &refused["id"]), (&json!(-32600), &Value::Null), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("over 16 MiB"), "{refused}");
    client.ping(2);
}
