//! `.ports.json`: the seed's flat map of service -> port, which users may edit
//! by hand (DESIGN.md section 4). `parse` is pure and strict: a file we cannot
//! read exactly is an error that names it, never something to overwrite.
//! An entry of a service ports.toml no longer has is the exception: a `git
//! pull` that renames a service must not stop every command, so it is only
//! noted, and dropped at the next write.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::bail;
use serde::Deserialize;

use crate::model::config::Config;
use crate::system::files;

pub type Ports = BTreeMap<String, u16>;

/// Parses the text of `.ports.json` against the services of `config`: the
/// ports, and a note for each entry of a service that ports.toml does not have.
pub fn parse(text: &str, path: &Path, config: &Config) -> anyhow::Result<(Ports, Vec<String>)> {
    let at = |line: usize, col: usize| format!("{}:{line}:{col}", path.display());
    let entries: Entries = match serde_json::from_str(text) {
        Ok(entries) => entries,
        Err(e) => bail!(
            "{}\n.ports.json must be a JSON object of service name to port, like {{\"backend\": 8000}}: \
             fix it by hand, or remove it with `cargo xtask ports reset`",
            json_error(path, &e)
        ),
    };
    let mut ports = Ports::new();
    let mut stale = Vec::new();
    let (_, hi) = config.range;
    for (name, value) in entries.0 {
        // Looked up only for a message: a search of the text for each entry
        // of a file of thousands took seconds.
        let again = ports.contains_key(&name);
        let place = || {
            let (line, col) = locate_key(text, &name, again);
            at(line, col)
        };
        let port = match value.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) {
            Some(port) => port,
            None => {
                let mut shown = value.to_string();
                if shown.len() > 40 {
                    shown = format!("{}…", shown.chars().take(40).collect::<String>());
                }
                bail!("{}: the port of {name} must be a whole number from 1 to 65535, not {shown}", place())
            }
        };
        if !config.services.contains_key(&name) {
            stale.push(format!(
                "{}: ignoring {name:?}, a service ports.toml does not have (it has {}); it will be dropped at the next write",
                place(),
                config.names().join(", ")
            ));
            continue;
        }
        if let Some(first) = ports.get(&name) {
            bail!("{}: {name} is in .ports.json twice ({first} and {port}): keep one", place());
        }
        // The walk for a free port goes up: from above the range it finds none.
        if port > hi {
            bail!(
                "{}: the port of {name}, {port}, is above the range of ports.toml (up to {hi}): \
                 lower it, or run `cargo xtask ports reset`",
                place()
            );
        }
        ports.insert(name, port);
    }
    Ok((ports, stale))
}

/// The object's entries in file order, a repeated key included (a map would
/// keep the last one silently).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// A serde_json error as `path:line:col: message`, the place said once:
/// serde_json's message repeats it, and says column 0 before a line's first
/// character.
pub fn json_error(path: &Path, e: &serde_json::Error) -> String {
    let message = e.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message);
    format!("{}:{}:{}: {message}", path.display(), e.line(), e.column().max(1))
}

/// Where `"name"` appears as a key, 1-based: its first place, or its second
/// when `again`; (1, 1) if not found.
pub fn locate_key(text: &str, name: &str, again: bool) -> (usize, usize) {
    let quoted = serde_json::to_string(name).unwrap_or_default();
    text.match_indices(&quoted).nth(usize::from(again)).map_or((1, 1), |(offset, _)| {
        let before = &text[..offset];
        (before.matches('\n').count() + 1, offset - before.rfind('\n').map_or(0, |i| i + 1) + 1)
    })
}

pub fn render(ports: &Ports) -> String {
    serde_json::to_string_pretty(ports).expect("a map of strings to numbers serialises") + "\n"
}

/// The current allocations: empty when the file does not exist yet.
pub fn load(path: &Path, config: &Config) -> anyhow::Result<Ports> {
    // A command reads the file several times, the dashboard on every refresh:
    // each note is said once, on stderr so that `--json` output stays JSON.
    static SAID: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let Some(text) = files::read_optional(path)? else {
        return Ok(Ports::new());
    };
    let (ports, stale) = parse(&text, path, config)?;
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    for note in stale {
        if said.insert(note.clone()) {
            eprintln!("note: {note}");
        }
    }
    Ok(ports)
}

/// The write that makes the file say `ports`, for `files::write_all_atomic`:
/// none when it already says exactly that, so a hand-formatted file is left
/// as its author wrote it.
pub fn pending_write(path: &Path, config: &Config, ports: &Ports) -> anyhow::Result<Option<(PathBuf, String)>> {
    if let Some(text) = files::read_optional(path)?
        && parse(&text, path, config).is_ok_and(|(old, stale)| stale.is_empty() && &old == ports)
    {
        return Ok(None);
    }
    Ok(Some((path.to_path_buf(), render(ports))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config;

    fn config() -> Config {
        config::parse(
            "[ports]\nrange = [1024, 40000]\n\
             [services.backend]\nport = 8000\ncommand = 'x'\n[services.web]\nport = 3000\ncommand = 'y'\n",
        )
        .unwrap()
    }

    #[test]
    fn reads_the_seed_format() {
        let (ports, stale) =
            parse("{ \"backend\": 8001, \"web\": 3000 }", Path::new(".ports.json"), &config()).unwrap();
        assert!(stale.is_empty());
        assert_eq!(ports, Ports::from([("backend".into(), 8001), ("web".into(), 3000)]));
        assert_eq!(render(&ports), "{\n  \"backend\": 8001,\n  \"web\": 3000\n}\n");
    }

    #[test]
    fn rejects_what_it_cannot_read_exactly() {
        let cases = [
            ("{ \"backend\": 8001,", "/r/.ports.json:1:18: EOF while parsing"),
            ("[8000]", "/r/.ports.json:1:1: invalid type"),
            ("{\"gone\": \"x\", \"web\": 3000}", "/r/.ports.json:1:2: the port of gone must be"),
            ("{\n\"backend\": 70000}", "/r/.ports.json:2:1: the port of backend must be a whole number"),
            ("{\"backend\": \"8000\"}", "the port of backend must be"),
            ("{\"backend\": 0}", "the port of backend must be"),
            ("{\"web\": 3001,\n \"web\": 3002}", "/r/.ports.json:2:2: web is in .ports.json twice (3001 and 3002)"),
            ("{\"web\": 40001}", "/r/.ports.json:1:2: the port of web, 40001, is above the range of ports.toml"),
        ];
        for (text, want) in cases {
            let err = parse(text, Path::new("/r/.ports.json"), &config()).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        // A long value is cut in the message.
        let text = format!("{{\"web\": \"{}\"}}", "x".repeat(10_000));
        let err = parse(&text, Path::new("/r/.ports.json"), &config()).unwrap_err().to_string();
        assert!(err.ends_with(&format!("not \"{}…", "x".repeat(39))) && err.len() < 200, "{err}");
    }

    /// ports.toml renamed `api` (a `git pull`): its entry is noted, not an error.
    #[test]
    fn an_entry_of_a_service_ports_toml_lacks_is_noted_and_left_out() {
        let text = "{\n  \"api\": 8001,\n  \"web\": 3001\n}\n";
        let (ports, stale) = parse(text, Path::new("/r/.ports.json"), &config()).unwrap();
        assert_eq!(ports, Ports::from([("web".into(), 3001)]));
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert!(stale[0].starts_with("/r/.ports.json:2:3: ignoring \"api\""), "{stale:?}");
        assert!(
            stale[0].contains("it has backend, web") && stale[0].contains("dropped at the next write"),
            "{stale:?}"
        );
    }
}
