//! The nine tools as `tools/list` describes them to an agent: what each
//! does, the arguments it takes (in the subset `protocol::schema` checks)
//! and the shape of what it returns, which is the command line's `--json`
//! (an object at the root, as legacy clients require). The same list for
//! every checkout, whatever its `ports.toml`: listing reads nothing.

use serde_json::{Value, json};

use super::protocol::{Annotations, Tool};

/// Every tool, in a fixed order.
pub fn tools() -> Vec<Tool> {
    let selection = json!({
        "type": "array",
        "items": {"type": "string"},
        "description": "service names from ports.toml; omitted or empty: every service",
    });
    let services = arguments(json!({"services": selection}), &[]);
    vec![
        tool(
            "status",
            "Service status",
            "Every service of this checkout: its port, whether it runs (pid), its URL and whether it answers. \
             The same as `cargo xtask status --json`, under `services`.",
            arguments(json!({}), &[]),
            status(),
            LOOK,
        ),
        tool(
            "ports",
            "Port allocations",
            "This checkout's port for each service, its preferred port, and who holds each port (with whose \
             service each holder is), as `cargo xtask ports --json`; with `all`, the ports every checkout on \
             this machine reserves, as `cargo xtask ports --all --json`.",
            arguments(
                json!({"all": {"type": "boolean", "default": false, "description": "every checkout's reservations"}}),
                &[],
            ),
            json!({"type": "object", "anyOf": [ports_view(), checkouts()]}),
            LOOK,
        ),
        tool(
            "who_holds",
            "Who holds a port",
            "The processes listening on each port, and whose they are: this checkout's service, another \
             checkout's, or a stranger's. As `cargo xtask ports who --json`.",
            arguments(
                json!({"ports": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "minItems": 1,
                    "description": "the ports to look up",
                }}),
                &["ports"],
            ),
            all_of(json!({"ports": list(who())})),
            LOOK,
        ),
        tool(
            "logs",
            "Service logs",
            "The last lines a service wrote (its log in .logs/), optionally only those containing a text.",
            arguments(
                json!({
                    "service": {"type": "string", "description": "a service name from ports.toml"},
                    "lines": {"type": "integer", "minimum": 1, "default": 50, "description": "how many lines, at most"},
                    "contains": {"type": "string", "description": "only lines containing this text (case matters)"},
                }),
                &["service"],
            ),
            all_of(json!({
                "service": {"type": "string"},
                "file": {"type": "string", "description": "the log's path"},
                "lines": list(json!({"type": "string"})),
            })),
            LOOK,
        ),
        tool(
            "start",
            "Start services",
            "Starts services in the background, with what they depend on, and waits until they are ready \
             (reporting progress). A port held by a process that is not this checkout's is never freed by \
             killing it: the service moves to a free port, and `moved` says so.",
            services.clone(),
            action(),
            acting(false, true),
        ),
        tool(
            "stop",
            "Stop services",
            "Stops services and what depends on them, dependents first, with every process they started.",
            services.clone(),
            action(),
            acting(true, true),
        ),
        tool(
            "restart",
            "Restart services",
            "Stops services and what depends on them, then starts them all again and waits until they are \
             ready (reporting progress). Moves, never kills, as `start` does.",
            services,
            action(),
            acting(true, false),
        ),
        tool(
            "set_port",
            "Set a service's port",
            "Pins a service to a port in .ports.json and .env.runtime; the running services that use its port \
             restart with it. If the port is held by a process that is not this checkout's, the service moves \
             on: `message` and `moved` say where.",
            arguments(
                json!({
                    "service": {"type": "string", "description": "a service name from ports.toml"},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                }),
                &["service", "port"],
            ),
            action(),
            acting(false, true),
        ),
        tool(
            "urls",
            "Service URLs",
            "Every service's URL on this machine, its named URL for a browser, and whether it runs.",
            arguments(json!({}), &[]),
            all_of(json!({"services": list(urls())})),
            LOOK,
        ),
    ]
}

/// The hints of a tool that only looks.
const LOOK: Annotations =
    Annotations { read_only_hint: true, destructive_hint: false, idempotent_hint: true, open_world_hint: false };

/// A tool that changes something, on this machine only: whether it may
/// undo something (`destructive`), and whether a second call changes more.
fn acting(destructive: bool, idempotent: bool) -> Annotations {
    Annotations {
        read_only_hint: false,
        destructive_hint: destructive,
        idempotent_hint: idempotent,
        open_world_hint: false,
    }
}

fn tool(name: &str, title: &str, description: &str, input: Value, output: Value, annotations: Annotations) -> Tool {
    Tool {
        name: name.into(),
        title: title.into(),
        description: description.into(),
        input_schema: input,
        output_schema: Some(output),
        annotations,
    }
}

/// The arguments a tool takes: these properties, of which `required` must
/// be given, and no others.
fn arguments(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// A result's object, every property of which is there.
fn all_of(properties: Value) -> Value {
    let names: Vec<String> = properties.as_object().into_iter().flat_map(|p| p.keys().cloned()).collect();
    json!({"type": "object", "properties": properties, "required": names})
}

fn list(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

fn or_null(kind: &str, description: &str) -> Value {
    json!({"type": [kind, "null"], "description": description})
}

/// `engine::snapshot::ServiceState`: a row of `status --json`.
fn service_state() -> Value {
    all_of(json!({
        "service": {"type": "string"},
        "port": {"type": "integer"},
        "running": {"type": "boolean"},
        "pid": or_null("integer", "its process group, while it runs"),
        "url": or_null("string", "null when ports.toml cannot be read"),
        "public_url": or_null(
            "string",
            "its named URL, http://<service>.<checkout>.localhost:<port>, which stays when its port moves; \
             null for a service that does not serve HTTP, or before the checkout has a name",
        ),
        "healthy": or_null("boolean", "whether it answers its readiness check; null when ports.toml cannot be read"),
        "suspended": {"type": "boolean", "description": "stopped by a signal (SIGSTOP): it cannot answer"},
        "container": or_null("string", "the container it runs in, for a service in a container"),
    }))
}

/// `engine::snapshot::Status`.
fn status() -> Value {
    let warning = json!({"type": "string", "description": "why only the records were read (ports.toml is broken)"});
    json!({
        "type": "object",
        "properties": {"services": list(service_state()), "warning": warning},
        "required": ["services"],
    })
}

/// `engine::snapshot::Held`: a process holding a port.
fn held() -> Value {
    all_of(json!({
        "pid": or_null("integer", "null when it cannot be seen"),
        "user": {"type": "string"},
        "command": {"type": "string"},
        "ours": {"type": "boolean", "description": "one of this checkout's services"},
        "service": or_null("string", "this checkout's service it is"),
        "checkout": or_null("string", "the other checkout whose service it is"),
    }))
}

/// `engine::snapshot::PortsView`: `ports --json`.
fn ports_view() -> Value {
    let row = all_of(json!({
        "service": {"type": "string"},
        "port": {"type": "integer"},
        "preferred": {"type": "integer"},
        "why_moved": or_null("string", "why the port is not the preferred one, when the kernel's range explains it"),
        "free": {"type": "boolean"},
        "holders": list(held()),
    }));
    all_of(json!({
        "allocated": {"type": "boolean", "description": "false: .ports.json does not exist yet, these are the preferred ports"},
        "services": list(row),
    }))
}

/// `system::registry::Entries`: `ports --all --json`.
fn checkouts() -> Value {
    let entry = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "its name in the named URLs, once it has one"},
            "ports": {"type": "object", "additionalProperties": {"type": "integer"}},
            "dashboard": {"type": "integer"},
        },
        "required": ["ports"],
    });
    let process = all_of(json!({"pid": {"type": "integer"}, "start": {"type": "integer"}}));
    let proxy = json!({
        "type": "object",
        "properties": {"port": {"type": "integer"}, "process": process},
        "required": ["port"],
        "description": "the proxy of the named URLs, once there is one: its port, and its process while it runs",
    });
    json!({
        "type": "object",
        "properties": {
            "checkouts": {"type": "object", "additionalProperties": entry, "description": "by checkout path"},
            "proxy": proxy,
        },
        "required": ["checkouts"],
    })
}

/// `engine::snapshot::Who`: a row of `ports who --json`.
fn who() -> Value {
    all_of(json!({"port": {"type": "integer"}, "holders": list(held())}))
}

/// `engine::allocation::Move`.
fn moved() -> Value {
    all_of(json!({
        "service": {"type": "string"},
        "from": {"type": "integer"},
        "to": {"type": "integer"},
        "why": {"type": "string", "description": "why `from` could not be used"},
        "around": or_null("string", "why the walk went around the kernel's ephemeral port range"),
    }))
}

/// What `start`, `stop`, `restart` and `set_port` return.
fn action() -> Value {
    all_of(json!({
        "message": {"type": "string", "description": "what was done, in a few words"},
        "moved": list(moved()),
        "services": list(service_state()),
    }))
}

/// A row of `urls`.
fn urls() -> Value {
    all_of(json!({
        "service": {"type": "string"},
        "running": {"type": "boolean"},
        "url": {"type": "string", "description": "where it listens, on this machine"},
        "public_url": or_null(
            "string",
            "its named URL, for a browser: the same whatever its port; null for a service that does not \
             serve HTTP, or before the checkout has a name",
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::allocation::Move;
    use crate::engine::snapshot::{Held, PortRow, PortsView, ServiceState, Status, Who};
    use crate::system::process::ProcId;
    use crate::system::registry::{Entries, Entry, Proxy};

    /// The properties a schema names, and those a value has.
    fn keys(value: &Value) -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    fn same_fields(schema: &Value, value: impl serde::Serialize) {
        let value = serde_json::to_value(value).unwrap();
        assert_eq!(keys(&schema["properties"]), keys(&value), "the schema {schema} against {value}");
        for required in schema["required"].as_array().unwrap() {
            assert!(value.get(required.as_str().unwrap()).is_some(), "{required} is required but absent: {value}");
        }
    }

    /// An output schema names exactly the fields of the `--json` it
    /// describes: a field added to the engine's type fails here until the
    /// schema has it (clients check results against the schema).
    #[test]
    fn output_schemas_name_the_fields_of_the_engine_types() {
        let state = ServiceState {
            service: "api".into(),
            title: "Api".into(),
            port: 8000,
            running: true,
            pid: Some(7),
            url: Some("http://127.0.0.1:8000".into()),
            public_url: Some("http://api.c1.localhost:7300".into()),
            healthy: Some(true),
            suspended: false,
            container: None,
        };
        same_fields(&service_state(), &state);
        same_fields(&status(), Status { services: vec![state.clone()], warning: Some("broken".into()) });
        let holder = Held {
            pid: Some(7),
            user: "ann".into(),
            command: "python3".into(),
            ours: false,
            service: None,
            checkout: Some("/src/other".into()),
            said: String::new(),
        };
        same_fields(&held(), &holder);
        let row = PortRow {
            service: "api".into(),
            port: 8001,
            preferred: 8000,
            why_moved: None,
            free: false,
            holders: vec![holder.clone()],
        };
        same_fields(&ports_view()["properties"]["services"]["items"], &row);
        same_fields(&ports_view(), PortsView { allocated: true, services: vec![row] });
        same_fields(&who(), Who { port: 8000, holders: vec![holder] });
        let entry = Entry { name: "a".into(), ports: [("api".to_owned(), 8000)].into(), dashboard: Some(7400) };
        let proxy = Proxy { port: 7300, process: Some(ProcId { pid: 9, start: 4 }) };
        same_fields(&checkouts()["properties"]["proxy"], &proxy);
        same_fields(&checkouts(), Entries { checkouts: [("/src/a".into(), entry.clone())].into(), proxy: Some(proxy) });
        same_fields(&checkouts()["properties"]["checkouts"]["additionalProperties"], &entry);
        let moved_one = Move { service: "api".into(), from: 8000, to: 8001, why: "is busy".into(), around: None };
        same_fields(&moved(), &moved_one);
    }

    #[test]
    fn every_tool_is_described_in_full() {
        let tools = tools();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        let nine = ["status", "ports", "who_holds", "logs", "start", "stop", "restart", "set_port", "urls"];
        assert_eq!(names, nine);
        for tool in &tools {
            let output = tool.output_schema.as_ref().unwrap();
            assert_eq!(output["type"], "object", "{}: legacy clients need an object at the root", tool.name);
            assert_eq!(tool.input_schema["additionalProperties"], false, "{}: unknown arguments refused", tool.name);
            assert!(!tool.description.is_empty() && !tool.title.is_empty(), "{}", tool.name);
        }
    }
}
