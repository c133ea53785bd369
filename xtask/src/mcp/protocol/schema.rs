//! The part of JSON Schema our tools' input schemas use, checked before a
//! tool runs, so a malformed argument is refused with what it must be.
//!
//! Known: `type` (object, array, string, integer, boolean), `properties`,
//! `required`, `additionalProperties: false`, `items`, `minItems`,
//! `minimum`, `maximum`, `enum`, and the annotations `title`,
//! `description`, `default`. `supported` refuses any other keyword, so a
//! schema never promises a check that is not made.

use serde_json::{Map, Value};

const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "minimum",
    "maximum",
    "enum",
    "title",
    "description",
    "default",
];
const TYPES: &[&str] = &["object", "array", "string", "integer", "boolean"];

/// Whether `check` knows every keyword of a tool's input schema, whose root
/// MCP requires to be an object.
pub fn supported(schema: &Value) -> Result<(), String> {
    if schema.get("type") != Some(&Value::from("object")) {
        return Err("the root must have \"type\": \"object\"".into());
    }
    known(schema, "the root")
}

fn known(schema: &Value, place: &str) -> Result<(), String> {
    let schema = schema.as_object().ok_or_else(|| format!("{place} is not a schema object"))?;
    if let Some(keyword) = schema.keys().find(|k| !KEYWORDS.contains(&k.as_str())) {
        return Err(format!("{place} uses `{keyword}`, which the argument check does not know"));
    }
    if let Some(kind) = schema.get("type").filter(|t| !TYPES.iter().any(|known| *t == known)) {
        return Err(format!("{place} has type {kind}; the argument check knows {}", TYPES.join(", ")));
    }
    if schema.get("additionalProperties").is_some_and(|a| a != false) {
        return Err(format!("{place}: additionalProperties may only be false"));
    }
    let required = schema.get("required").map(|r| r.as_array().filter(|r| r.iter().all(Value::is_string)));
    if required.is_some_and(|r| r.is_none()) {
        return Err(format!("{place}: required must be a list of names"));
    }
    if ["minimum", "maximum"].iter().any(|k| schema.get(*k).is_some_and(|v| !v.is_number())) {
        return Err(format!("{place}: minimum and maximum must be numbers"));
    }
    if schema.get("enum").is_some_and(|e| !e.is_array()) {
        return Err(format!("{place}: enum must be a list"));
    }
    if schema.get("minItems").is_some_and(|m| !m.is_u64()) {
        return Err(format!("{place}: minItems must be a whole number"));
    }
    for (name, property) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
        known(property, &format!("property {name}"))?;
    }
    if let Some(items) = schema.get("items") {
        known(items, &format!("the items of {place}"))?;
    }
    Ok(())
}

/// Checks `value` against `schema` (one `supported` accepted), saying of
/// each wrong argument what it must be; all of them, so one retry can fix
/// everything.
pub fn check(schema: &Value, value: &Value) -> Result<(), String> {
    let mut wrong = Vec::new();
    check_at(schema, value, "the arguments", &mut wrong);
    if wrong.is_empty() { Ok(()) } else { Err(wrong.join("; ")) }
}

fn check_at(schema: &Value, value: &Value, name: &str, wrong: &mut Vec<String>) {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let names: Vec<String> =
                allowed.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect();
            wrong.push(format!("{name} must be one of {}", names.join(", ")));
        }
        return;
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => match value.as_object() {
            Some(object) => check_object(schema, object, name, wrong),
            None => wrong.push(format!("{name} must be an object")),
        },
        Some("array") => match value.as_array() {
            Some(items) => check_array(schema, items, name, wrong),
            None => wrong.push(format!("{name} must be an array")),
        },
        Some("string") if !value.is_string() => wrong.push(format!("{name} must be a string")),
        Some("boolean") if !value.is_boolean() => wrong.push(format!("{name} must be a boolean")),
        Some("integer") => {
            // Only a number written as an integer: a tool reads it with as_i64/as_u64.
            let fits = value.as_i64().map(|n| n as f64).or(value.as_u64().map(|n| n as f64)).is_some_and(|n| {
                schema["minimum"].as_f64().is_none_or(|min| n >= min)
                    && schema["maximum"].as_f64().is_none_or(|max| n <= max)
            });
            if !fits {
                wrong.push(format!("{name} must be an integer{}", range(schema)));
            }
        }
        _ => {}
    }
}

fn check_object(schema: &Value, object: &Map<String, Value>, name: &str, wrong: &mut Vec<String>) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let inner = |key: &str| if name == "the arguments" { key.to_owned() } else { format!("{name}.{key}") };
    for (key, value) in object {
        match properties.and_then(|p| p.get(key)) {
            Some(property) => check_at(property, value, &inner(key), wrong),
            None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                let known: Vec<&str> = properties.into_iter().flat_map(|p| p.keys()).map(String::as_str).collect();
                let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                wrong.push(format!("unknown argument {}: the arguments are {known}", inner(key)));
            }
            None => {}
        }
    }
    let required = schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
    for key in required.filter(|key| !object.contains_key(*key)) {
        wrong.push(format!("{} is required", inner(key)));
    }
}

fn check_array(schema: &Value, items: &[Value], name: &str, wrong: &mut Vec<String>) {
    if let Some(least) = schema.get("minItems").and_then(Value::as_u64).filter(|least| (items.len() as u64) < *least) {
        wrong.push(format!("{name} must have at least {least} item{}", if least == 1 { "" } else { "s" }));
    }
    if let Some(item) = schema.get("items") {
        for (i, value) in items.iter().enumerate() {
            check_at(item, value, &format!("{name}[{i}]"), wrong);
        }
    }
}

/// " from 1 to 65535", " of at least 1", or nothing.
fn range(schema: &Value) -> String {
    match (&schema["minimum"], &schema["maximum"]) {
        (Value::Number(min), Value::Number(max)) => format!(" from {min} to {max}"),
        (Value::Number(min), _) => format!(" of at least {min}"),
        (_, Value::Number(max)) => format!(" of at most {max}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn set_port() -> Value {
        json!({
            "type": "object",
            "properties": {
                "service": {"type": "string", "enum": ["backend", "frontend"], "description": "which service"},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "lines": {"type": "integer", "minimum": 1},
                "below": {"type": "integer", "maximum": 9},
                "follow": {"type": "boolean", "default": false},
                "text": {"type": "string"},
                "inner": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
                "names": {"type": "array", "items": {"type": "string"}},
                "ports": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 65535}, "minItems": 1},
            },
            "required": ["service", "port"],
            "additionalProperties": false,
        })
    }

    #[test]
    fn arguments_are_refused_with_what_they_must_be() {
        let cases = [
            (json!({"service": "backend", "port": 8000}), Ok(())),
            (json!({"service": "backend", "port": 1, "lines": 1, "below": -3, "follow": true, "text": ""}), Ok(())),
            (json!({"service": "backend", "port": 65535, "inner": {"n": 2}}), Ok(())),
            (json!({"service": "backend", "port": 0}), Err("port must be an integer from 1 to 65535")),
            (json!({"service": "backend", "port": 65536}), Err("port must be an integer from 1 to 65535")),
            (json!({"service": "backend", "port": "8000"}), Err("port must be an integer from 1 to 65535")),
            (json!({"service": "backend", "port": 8000.0}), Err("port must be an integer from 1 to 65535")),
            (json!({"service": "backend", "port": 80, "lines": 0}), Err("lines must be an integer of at least 1")),
            (json!({"service": "backend", "port": 80, "below": 10}), Err("below must be an integer of at most 9")),
            (json!({"service": "db", "port": 80}), Err("service must be one of backend, frontend")),
            (json!({"service": "backend", "port": 80, "follow": "yes"}), Err("follow must be a boolean")),
            (json!({"service": "backend", "port": 80, "text": 3}), Err("text must be a string")),
            (json!({"service": "backend", "port": 80, "inner": 3}), Err("inner must be an object")),
            (json!({"service": "backend", "port": 80, "inner": {}}), Err("inner.n is required")),
            (json!({"service": "backend", "port": 80, "inner": {"n": true}}), Err("inner.n must be an integer")),
            (json!({"port": 80}), Err("service is required")),
            (
                json!({"servce": "backend", "port": 80}),
                Err("unknown argument servce: the arguments are below, follow, inner, lines, names, port, ports, \
                     service, text; service is required"),
            ),
            (
                json!({"port": -1, "service": 2}),
                Err("port must be an integer from 1 to 65535; service must be one of backend, frontend"),
            ),
            (json!([]), Err("the arguments must be an object")),
            (json!({"service": "backend", "port": 80, "names": [], "ports": [1, 65535]}), Ok(())),
            (json!({"service": "backend", "port": 80, "names": ["a", "b"]}), Ok(())),
            (json!({"service": "backend", "port": 80, "names": "a"}), Err("names must be an array")),
            (json!({"service": "backend", "port": 80, "names": ["a", 2]}), Err("names[1] must be a string")),
            (json!({"service": "backend", "port": 80, "ports": []}), Err("ports must have at least 1 item")),
            (
                json!({"service": "backend", "port": 80, "ports": [0, 8000, 70000]}),
                Err("ports[0] must be an integer from 1 to 65535; ports[2] must be an integer from 1 to 65535"),
            ),
        ];
        for (arguments, expected) in cases {
            assert_eq!(check(&set_port(), &arguments), expected.map_err(str::to_owned), "{arguments}");
        }
        let no_arguments = json!({"type": "object", "additionalProperties": false});
        assert_eq!(check(&no_arguments, &json!({"x": 1})), Err("unknown argument x: the arguments are none".into()));
        assert_eq!(check(&no_arguments, &json!({})), Ok(()));
    }

    #[test]
    fn schemas_with_a_check_we_do_not_make_are_refused() {
        assert_eq!(supported(&set_port()), Ok(()));
        let cases = [
            (json!({"properties": {}}), "the root must have \"type\": \"object\""),
            (json!({"type": "string"}), "the root must have \"type\": \"object\""),
            (
                json!({"type": "object", "minProperties": 1}),
                "the root uses `minProperties`, which the argument check does not know",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}),
                "property a uses `pattern`, which the argument check does not know",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "number"}}}),
                "property a has type \"number\"; the argument check knows object, array, string, integer, boolean",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string", "format": "x"}}}}),
                "the items of property a uses `format`, which the argument check does not know",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "array", "minItems": -1}}}),
                "property a: minItems must be a whole number",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "array", "uniqueItems": true}}}),
                "property a uses `uniqueItems`, which the argument check does not know",
            ),
            (json!({"type": "object", "properties": {"a": true}}), "property a is not a schema object"),
            (json!({"type": "object", "additionalProperties": {}}), "the root: additionalProperties may only be false"),
            (json!({"type": "object", "required": "a"}), "the root: required must be a list of names"),
            (
                json!({"type": "object", "properties": {"a": {"minimum": "1"}}}),
                "property a: minimum and maximum must be numbers",
            ),
            (json!({"type": "object", "properties": {"a": {"enum": "x"}}}), "property a: enum must be a list"),
        ];
        for (schema, expected) in cases {
            assert_eq!(supported(&schema), Err(expected.to_owned()), "{schema}");
        }
    }
}
