//! Listing and calling tools: results, the two kinds of error, progress,
//! cancellation, and the end of the input.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Client, PATIENCE, info, tool};
use crate::mcp::protocol::{Call, Tool, Tools, serve};

fn call(name: &str, arguments: Value) -> Value {
    json!({"name": name, "arguments": arguments})
}

fn with_token(mut params: Value, token: Value) -> Value {
    params["_meta"] = json!({"progressToken": token});
    params
}

#[test]
fn tools_are_listed_with_their_schemas_and_hints() {
    let mut client = Client::legacy();
    let tools = client.result(1, "tools/list", json!({}))["tools"].clone();
    let names: Vec<&str> = tools.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["echo", "count", "wait", "fail", "broken"]);
    let echo = &tools[0];
    assert_eq!(echo["title"], "The echo tool");
    assert_eq!(echo["inputSchema"]["required"], json!(["text"]));
    assert_eq!(echo["outputSchema"]["properties"]["text"], json!({"type": "string"}));
    let hints = json!({"readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false});
    assert_eq!(echo["annotations"], hints);
    assert!(tools[1].get("outputSchema").is_none(), "{}", tools[1]);
    let (code, _) = client.error(2, "tools/list", json!({"cursor": "2"}));
    assert_eq!(code, -32602, "we never hand out a cursor");
}

#[test]
fn a_result_is_structured_content_and_the_same_json_as_text() {
    let mut client = Client::legacy();
    let result = client.result(1, "tools/call", call("echo", json!({"text": "a\nb", "times": 2})));
    assert_eq!(result["structuredContent"], json!({"text": "a\nba\nb"}));
    assert_eq!(result["isError"], false);
    assert_eq!(result["content"].as_array().unwrap().len(), 1);
    assert_eq!(result["content"][0]["type"], "text");
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, result["structuredContent"]);
}

/// What a tool finds wrong is a result the model reads, not a protocol error.
#[test]
fn tool_errors_are_results() {
    let mut client = Client::legacy();
    let result = client.result(1, "tools/call", call("fail", json!({"service": "db"})));
    assert_eq!(result["isError"], true);
    assert_eq!(result["content"], json!([{"type": "text", "text": "no service named db"}]));
    assert!(result.get("structuredContent").is_none(), "{result}");
}

/// Arguments against the input schema are refused before the tool runs, as
/// a tool error saying what each must be (the spec: "input validation
/// errors" are the model's to fix).
#[test]
fn wrong_arguments_never_reach_the_tool() {
    let mut client = Client::legacy();
    let cases = [
        (json!({"text": "x", "times": 4}), "times must be an integer from 1 to 3"),
        (json!({"text": 5}), "text must be a string"),
        (json!({}), "text is required"),
        (json!({"text": "x", "loud": true}), "unknown argument loud: the arguments are text, times"),
    ];
    for (i, (arguments, wrong)) in cases.into_iter().enumerate() {
        let result = client.result(i as u64 + 1, "tools/call", call("echo", arguments));
        assert_eq!(result["isError"], true, "{result}");
        assert_eq!(result["content"][0]["text"], format!("Invalid arguments for tool echo: {wrong}"));
    }
    client.result(9, "tools/call", call("echo", json!({"text": "x"})));
    let (_, events) = client.close();
    assert_eq!(events, ["ran echo"], "only the good call ran");
}

/// What is wrong with the request itself is a protocol error.
#[test]
fn malformed_calls_are_protocol_errors() {
    let mut client = Client::legacy();
    let cases = [
        (call("nope", json!({})), "Unknown tool: nope"),
        (json!({"arguments": {}}), "tools/call needs the tool's name in params.name"),
        (call("echo", json!(["x"])), "params.arguments must be an object"),
        (
            with_token(call("echo", json!({"text": "x"})), json!(1.5)),
            "params._meta.progressToken must be a string or an integer",
        ),
    ];
    for (i, (params, message)) in cases.into_iter().enumerate() {
        assert_eq!(client.error(i as u64 + 1, "tools/call", params), (-32602, message.to_owned()));
    }
    let (_, events) = client.close();
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn progress_comes_in_order_before_the_answer() {
    let mut client = Client::legacy();
    for token in [json!("tok"), json!(7)] {
        client.send_request(1, "tools/call", with_token(call("count", json!({"to": 3})), token.clone()));
        for done in 1..=3 {
            let progress = client.recv();
            assert_eq!(progress["method"], "notifications/progress", "{progress}");
            let expected =
                json!({"progressToken": token, "progress": done, "total": 3, "message": format!("{done} of 3")});
            assert_eq!(progress["params"], expected);
        }
        let answer = client.recv();
        assert_eq!(answer["result"]["structuredContent"], json!({"counted": 3}), "{answer}");
    }
    // No token, no progress.
    client.result(2, "tools/call", call("count", json!({"to": 2})));
}

#[test]
fn a_cancelled_call_stops_and_sends_nothing_more() {
    let mut client = Client::legacy();
    client.send_request(7, "tools/call", with_token(call("wait", json!({})), json!("w")));
    assert_eq!(client.recv()["params"]["message"], "waiting");
    // The loop reads on while the call waits; answers come as they are ready.
    assert_eq!(client.result(8, "tools/call", call("echo", json!({"text": "x"})))["isError"], false);
    client.send_line(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7,"reason":"t"}}"#);
    let mut events = std::iter::from_fn(|| client.events.recv_timeout(PATIENCE).ok());
    let stopped = events.find(|e| e.starts_with("wait "));
    assert_eq!(stopped.as_deref(), Some("wait cancelled"), "the tool stops waiting");
    client.ping(9);
    let (rest, _) = client.close();
    assert!(rest.is_empty(), "nothing for a cancelled call: {rest:?}");
}

/// A cancel for a request that is not in flight (done, unknown, not a
/// call) changes nothing.
#[test]
fn a_cancel_for_no_call_in_flight_is_ignored() {
    let mut client = Client::start();
    client.send_request(1, "initialize", json!({"protocolVersion": "2025-11-25"}));
    client.send_line(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#);
    assert_eq!(client.recv()["result"]["protocolVersion"], "2025-11-25");
    client.result(2, "tools/call", call("echo", json!({"text": "x"})));
    for id in [2, 99] {
        client.send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id}}));
    }
    client.result(2, "tools/call", call("echo", json!({"text": "again"}))); // its id is free again
}

#[test]
fn an_id_in_flight_is_not_reused() {
    let mut client = Client::legacy();
    client.send_request(3, "tools/call", with_token(call("wait", json!({})), json!(3)));
    client.recv(); // waiting
    let (code, message) = client.error(3, "tools/call", call("echo", json!({"text": "x"})));
    assert_eq!((code, message.as_str()), (-32600, "request id 3 is already in use by a call in flight"));
    let (_, events) = client.close();
    assert!(!events.contains(&"ran echo".to_owned()), "{events:?}");
}

/// When the client closes our input, calls that finish still answer; one
/// that does not is cancelled, and the server ends once its tool returned.
#[test]
fn the_end_of_the_input_answers_or_cancels_calls_in_flight() {
    let mut client = Client::legacy();
    client.send_request(1, "tools/call", with_token(call("wait", json!({})), json!("w")));
    client.recv(); // waiting
    client.send_request(2, "tools/call", call("count", json!({"to": 2})));
    let (rest, events) = client.close();
    let ids: Vec<&Value> = rest.iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, [&json!(2)], "{rest:?}");
    assert!(events.contains(&"wait cancelled".to_owned()), "{events:?}");
}

#[test]
fn a_broken_tool_is_an_internal_error_and_the_server_goes_on() {
    let mut client = Client::legacy();
    let (code, message) = client.error(1, "tools/call", call("broken", json!({"how": "panic"})));
    assert_eq!((code, message.as_str()), (-32603, "tool broken failed (a bug: see the server's log)"));
    let (code, message) = client.error(2, "tools/call", call("broken", json!({"how": "array"})));
    assert_eq!((code, message.as_str()), (-32603, "tool broken returned no JSON object (a bug)"));
    client.result(3, "tools/call", call("echo", json!({"text": "x"})));
}

struct Listed(Vec<Tool>);

impl Tools for Listed {
    fn list(&self) -> Vec<Tool> {
        self.0.clone()
    }
    fn call(&self, _: &str, _: &Map<String, Value>, _: &Call) -> anyhow::Result<Value> {
        unreachable!("never served")
    }
}

#[test]
fn tools_a_client_could_not_use_are_refused_at_start() {
    let object = json!({"type": "object"});
    let cases = [
        (vec![tool("a b", object.clone(), None)], "tool name \"a b\": MCP allows 1 to 128 of A-Z a-z 0-9 _ - ."),
        (vec![tool("", object.clone(), None)], "tool name \"\": MCP allows 1 to 128 of A-Z a-z 0-9 _ - ."),
        (vec![tool("a", object.clone(), None), tool("a", object.clone(), None)], "two tools are named a"),
        (
            vec![tool("a", json!({"type": "object", "properties": {"x": {"type": "string", "pattern": "y"}}}), None)],
            "tool a: inputSchema: property x uses `pattern`, which the argument check does not know",
        ),
        (
            vec![tool("a", object.clone(), Some(json!({"type": "array"})))],
            "tool a: outputSchema: the root must have \"type\": \"object\" (legacy clients require it)",
        ),
    ];
    for (tools, expected) in cases {
        let served = serve(std::io::empty(), std::io::sink(), info(), Arc::new(Listed(tools)));
        assert_eq!(served.expect_err(expected).to_string(), expected);
    }
    let good =
        vec![tool("set_port", object.clone(), Some(object)), tool("who_holds.v2-x", json!({"type": "object"}), None)];
    serve(std::io::empty(), std::io::sink(), info(), Arc::new(Listed(good))).unwrap();
}
