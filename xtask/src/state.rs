//! `.ports.json`: the seed's flat map of service -> port, which users may edit
//! by hand (DESIGN.md section 4). `parse` is pure and strict: a file we cannot
//! read exactly is an error that names it, never something to overwrite.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;

use crate::config::Config;
use crate::files;

pub type Ports = BTreeMap<String, u16>;

/// Parses the text of `.ports.json` against the services of `config`.
pub fn parse(text: &str, path: &Path, config: &Config) -> anyhow::Result<Ports> {
    let at = |line: usize, col: usize| format!("{}:{line}:{col}", path.display());
    let values: BTreeMap<String, serde_json::Value> = match serde_json::from_str(text) {
        Ok(values) => values,
        Err(e) => bail!(
            "{}: {}\n.ports.json must be a JSON object of service name to port, like {{\"backend\": 8000}}: \
             fix it by hand, or remove it with `cargo xtask ports reset`",
            at(e.line(), e.column().max(1)),
            without_position(&e)
        ),
    };
    let mut ports = Ports::new();
    for (name, value) in values {
        let (line, col) = locate_key(text, &name);
        if !config.services.contains_key(&name) {
            bail!(
                "{}: unknown service {name:?}: ports.toml has {}\nremove it from .ports.json, or run `cargo xtask ports reset`",
                at(line, col),
                config.names().join(", ")
            );
        }
        match value.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) {
            Some(port) => ports.insert(name, port),
            None => bail!("{}: the port of {name} must be a whole number from 1 to 65535, not {value}", at(line, col)),
        };
    }
    Ok(ports)
}

/// serde_json's message without its own " at line L column C".
fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    message.split(" at line ").next().unwrap_or(&message).to_owned()
}

/// Where `"name"` first appears as a key, 1-based; (1, 1) if not found.
fn locate_key(text: &str, name: &str) -> (usize, usize) {
    let quoted = serde_json::to_string(name).unwrap_or_default();
    text.find(&quoted).map_or((1, 1), |offset| {
        let before = &text[..offset];
        (before.matches('\n').count() + 1, offset - before.rfind('\n').map_or(0, |i| i + 1) + 1)
    })
}

pub fn render(ports: &Ports) -> String {
    serde_json::to_string_pretty(ports).expect("a map of strings to numbers serialises") + "\n"
}

/// The current allocations: empty when the file does not exist yet.
pub fn load(path: &Path, config: &Config) -> anyhow::Result<Ports> {
    match files::read_optional(path)? {
        Some(text) => parse(&text, path, config),
        None => Ok(Ports::new()),
    }
}

/// Writes the ports unless the file already says exactly that, so a
/// hand-formatted file is left as its author wrote it.
pub fn save(path: &Path, config: &Config, ports: &Ports) -> anyhow::Result<bool> {
    if let Some(text) = files::read_optional(path)?
        && parse(&text, path, config).is_ok_and(|old| &old == ports)
    {
        return Ok(false);
    }
    files::write_atomic(path, &render(ports))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn config() -> Config {
        config::parse("[services.backend]\nport = 8000\ncommand = 'x'\n[services.web]\nport = 3000\ncommand = 'y'\n")
            .unwrap()
    }

    #[test]
    fn reads_the_seed_format() {
        let ports = parse("{ \"backend\": 8001, \"web\": 3000 }", Path::new(".ports.json"), &config()).unwrap();
        assert_eq!(ports, Ports::from([("backend".into(), 8001), ("web".into(), 3000)]));
        assert_eq!(render(&ports), "{\n  \"backend\": 8001,\n  \"web\": 3000\n}\n");
    }

    #[test]
    fn rejects_what_it_cannot_read_exactly() {
        let cases = [
            ("{ \"backend\": 8001,", "/r/.ports.json:1:18: EOF while parsing"),
            ("[8000]", "/r/.ports.json:1:1: invalid type"),
            ("{\n  \"backnd\": 9000\n}", "/r/.ports.json:2:3: unknown service \"backnd\""),
            ("{\n\"backend\": 70000}", "/r/.ports.json:2:1: the port of backend must be a whole number"),
            ("{\"backend\": \"8000\"}", "the port of backend must be"),
            ("{\"backend\": 0}", "the port of backend must be"),
        ];
        for (text, want) in cases {
            let err = parse(text, Path::new("/r/.ports.json"), &config()).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
