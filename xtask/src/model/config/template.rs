//! `{port}` and `{NAME.port}` in the strings of `ports.toml`: parsed once,
//! filled in with the ports whenever they change.

use std::collections::{BTreeMap, BTreeSet};

/// A string with `{port}` and `{NAME.port}` references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    OwnPort,
    PortOf(String),
}

impl Template {
    /// Fills in the ports. `own` is the service the template belongs to, if any.
    pub fn render(&self, own: Option<&str>, ports: &BTreeMap<String, u16>) -> String {
        let port = |name: &str| ports.get(name).map_or_else(String::new, u16::to_string);
        self.0
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.clone(),
                Part::OwnPort => own.map(port).unwrap_or_default(),
                Part::PortOf(name) => port(name),
            })
            .collect()
    }

    /// Its text, when it has no port to fill in.
    pub fn plain(&self) -> Option<String> {
        self.0.iter().all(|part| matches!(part, Part::Text(_))).then(|| self.render(None, &BTreeMap::new()))
    }

    /// The services whose port this template uses.
    pub fn refers_to(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|part| match part {
            Part::PortOf(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// `http://localhost:{port}`, a service's URL when ports.toml gives none.
    pub fn own_url() -> Template {
        Template(vec![Part::Text("http://localhost:".into()), Part::OwnPort])
    }

    /// What `.env.runtime` could not carry as written (it writes a value
    /// bare or in single quotes: envfile.rs) through both python-dotenv and
    /// Node's dotenv, if anything.
    pub fn dotenv_problem(&self) -> Option<&'static str> {
        self.0.iter().find_map(|part| match part {
            Part::Text(text) if text.contains(char::is_control) => Some("a line break or another control character"),
            Part::Text(text) if text.contains('\'') => Some("a single quote"),
            Part::Text(text) if text.contains('\\') => Some("a backslash"),
            Part::Text(text) if text.contains("${") => Some("`${`, which python-dotenv expands"),
            _ => None,
        })
    }

    /// Parses `{port}` (when `own` names the service it belongs to),
    /// `{NAME.port}` of a service in `names`, and `{{` / `}}` for literal
    /// braces. An error names the text to blame in it.
    pub fn parse(text: &str, own: Option<&str>, names: &BTreeSet<String>) -> Result<Template, Unparsed> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            let Some(end) = tail.find('}').filter(|_| tail.starts_with('{')) else {
                let message = format!("unmatched brace in {text:?}: write {{{{ or }}}} for a literal one");
                return Err(Unparsed { at: tail[..1].to_owned(), message });
            };
            let reference = &tail[1..end];
            let part = match reference.split_once('.') {
                None if reference == "port" && own.is_some() => Part::OwnPort,
                Some((name, "port")) if names.contains(name) => Part::PortOf(name.to_owned()),
                _ => {
                    let own_hint = if own.is_some() { "{port} or " } else { "" };
                    let known = names.iter().map(|n| format!("{{{n}.port}}")).collect::<Vec<_>>().join(", ");
                    let message = format!("unknown reference {{{reference}}}: use {own_hint}one of {known}");
                    return Err(Unparsed { at: tail[..=end].to_owned(), message });
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template(parts))
    }
}

/// A template that does not parse: the text to blame in it, and why.
#[derive(Debug)]
pub struct Unparsed {
    pub at: String,
    pub message: String,
}
