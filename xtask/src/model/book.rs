//! The port book, `.ports.json`: the seed's flat map of service -> port,
//! which users may edit by hand (ARCHITECTURE.md, "Generated files"), and
//! how its ports meet the preferred ones and those services run on. `parse` is strict: a file we
//! cannot read exactly is an error that names it, never something to overwrite.
//! An entry of a service ports.toml no longer has is the exception: a `git
//! pull` that renames a service must not stop every command, so it is only
//! noted, and dropped at the next write.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::bail;
use serde::Deserialize;

use crate::model::config::Config;
use crate::model::json::{json_error, locate_key};

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

pub fn render(ports: &Ports) -> String {
    serde_json::to_string_pretty(ports).expect("a map of strings to numbers serialises") + "\n"
}

/// Whether `text`, read from `path`, already says exactly `ports`: a
/// hand-formatted file that does is left as its author wrote it.
pub fn says(text: &str, path: &Path, config: &Config, ports: &Ports) -> bool {
    parse(text, path, config).is_ok_and(|(old, stale)| stale.is_empty() && &old == ports)
}

/// Every service's port now: the one it runs on, else the one the book
/// gives it, else its preferred one. The one place these three meet.
pub fn effective(config: &Config, book: &Ports, running: &Ports) -> Ports {
    let mut ports = config.preferred_ports();
    ports.extend(book.iter().map(|(name, port)| (name.clone(), *port)));
    ports.extend(running.iter().filter(|(name, _)| config.services.contains_key(*name)).map(|(n, p)| (n.clone(), *p)));
    ports
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

    #[test]
    fn a_running_port_beats_the_book_which_beats_the_preferred_one() {
        let config = config();
        let book = Ports::from([("backend".into(), 8001), ("web".into(), 3001)]);
        let running = Ports::from([("web".into(), 3005), ("gone".into(), 9000)]);
        let ports = effective(&config, &book, &running);
        assert_eq!(ports, Ports::from([("backend".into(), 8001), ("web".into(), 3005)]));
        assert_eq!(effective(&config, &Ports::new(), &Ports::new()), config.preferred_ports());
    }
}
