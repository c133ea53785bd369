//! The references in the strings of `ports.toml`: `{port}` and `{NAME.port}`,
//! `{public_url}` and `{NAME.public_url}`, and `{{` / `}}` for braces.
//! Parsed once, filled in whenever the ports change.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::names::Names;

/// A string with references to fill in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// A service's port: the template's own service's when `None`.
    Port(Option<String>),
    /// A service's named URL: the template's own service's when `None`.
    PublicUrl(Option<String>),
}

/// What a template may refer to: every service, and which of them serve
/// HTTP (only those have a named URL).
pub struct Scope<'a> {
    pub services: &'a BTreeSet<String>,
    pub http: &'a BTreeSet<String>,
}

impl Template {
    /// Fills in the ports and, when the checkout has them, the named URLs.
    /// `own` is the service the template belongs to, if any. What is not
    /// known is left empty.
    pub fn render(&self, own: Option<&str>, ports: &BTreeMap<String, u16>, names: Option<&Names>) -> String {
        let port = |name: &str| ports.get(name).map_or_else(String::new, u16::to_string);
        let url = |name: &str| names.map_or_else(String::new, |names| names.url(name));
        self.0
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.clone(),
                Part::Port(name) => name.as_deref().or(own).map(port).unwrap_or_default(),
                Part::PublicUrl(name) => name.as_deref().or(own).map(url).unwrap_or_default(),
            })
            .collect()
    }

    /// Its text, when it has nothing to fill in.
    pub fn plain(&self) -> Option<String> {
        self.0.iter().all(|part| matches!(part, Part::Text(_))).then(|| self.render(None, &BTreeMap::new(), None))
    }

    /// The services whose port this template uses. (A named URL stays the
    /// same when the port behind it moves.)
    pub fn refers_to(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|part| match part {
            Part::Port(Some(name)) => Some(name.as_str()),
            _ => None,
        })
    }

    /// `http://localhost:{port}`, a service's URL when ports.toml gives none.
    pub fn own_url() -> Template {
        Template(vec![Part::Text("http://localhost:".into()), Part::Port(None)])
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

    /// Parses the references of `text`: its own service's (`{port}`,
    /// `{public_url}`) when `own` names one, and those of the services of
    /// `scope`. An error names the text to blame in it.
    pub fn parse(text: &str, own: Option<&str>, scope: &Scope) -> Result<Template, Unparsed> {
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
            let at = tail[..=end].to_owned();
            let part = reference(&tail[1..end], own, scope).map_err(|message| Unparsed { at, message })?;
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

/// One reference, the text between braces.
fn reference(text: &str, own: Option<&str>, scope: &Scope) -> Result<Part, String> {
    let unknown = || {
        let own_refs = if own.is_some() { "{port}, {public_url}, or " } else { "" };
        let ports = scope.services.iter().map(|n| format!("{{{n}.port}}"));
        let urls = scope.http.iter().map(|n| format!("{{{n}.public_url}}"));
        let known = ports.chain(urls).collect::<Vec<_>>().join(", ");
        format!("unknown reference {{{text}}}: use {own_refs}one of {known}")
    };
    // The service referred to (`None`: the template's own) and what of it.
    let (service, key, name) = match (text.split_once('.'), own) {
        (Some((name, key)), _) if scope.services.contains(name) => (Some(name), key, name),
        (None, Some(own)) => (None, text, own),
        _ => return Err(unknown()),
    };
    match key {
        "port" => Ok(Part::Port(service.map(str::to_owned))),
        "public_url" if scope.http.contains(name) => Ok(Part::PublicUrl(service.map(str::to_owned))),
        "public_url" => Err(format!(
            "{name} has no public_url: only a service that serves HTTP has a named URL \
             (ready = {{ http = \"/...\" }}, or a url that starts with http://)"
        )),
        _ => Err(unknown()),
    }
}

/// A template that does not parse: the text to blame in it, and why.
#[derive(Debug)]
pub struct Unparsed {
    pub at: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form of reference, rendered; and each wrong one's message.
    #[test]
    fn grammar() {
        let services = BTreeSet::from(["api".to_owned(), "db".to_owned(), "my_web".to_owned()]);
        let http = BTreeSet::from(["api".to_owned(), "my_web".to_owned()]);
        let scope = Scope { services: &services, http: &http };
        let ports = BTreeMap::from([("api".to_owned(), 8001), ("db".to_owned(), 5433), ("my_web".to_owned(), 3000)]);
        let names = Names { checkout: "c1".into(), proxy: 7300 };
        let rendered = [
            ("plain", Some("api"), "plain"),
            ("--port={port}", Some("api"), "--port=8001"),
            ("{db.port}:{api.port}", None, "5433:8001"),
            ("{public_url}/cb", Some("api"), "http://api.c1.localhost:7300/cb"),
            ("{my_web.public_url}", None, "http://my-web.c1.localhost:7300"),
            ("{{\"port\": {port}}}", Some("db"), "{\"port\": 5433}"),
            ("}}{{", None, "}{"),
            ("", None, ""),
        ];
        for (text, own, expected) in rendered {
            let template = Template::parse(text, own, &scope).unwrap_or_else(|e| panic!("{text}: {}", e.message));
            assert_eq!(template.render(own, &ports, Some(&names)), expected, "{text}");
        }
        let unnamed = Template::parse("{public_url}|{port}", Some("api"), &scope).unwrap();
        assert_eq!(unnamed.render(Some("api"), &ports, None), "|8001", "no names yet: left empty");
        let refused = [
            (
                "{port}",
                None,
                "{port}",
                "unknown reference {port}: use one of {api.port}, {db.port}, {my_web.port}, {api.pu",
            ),
            ("x{prot}", Some("api"), "{prot}", "unknown reference {prot}: use {port}, {public_url}, or one of {api"),
            ("{nope.port}", Some("api"), "{nope.port}", "unknown reference {nope.port}"),
            ("{api.url}", None, "{api.url}", "unknown reference {api.url}"),
            ("{db.public_url}", None, "{db.public_url}", "db has no public_url: only a service that serves HTTP"),
            ("{public_url}", Some("db"), "{public_url}", "db has no public_url"),
            ("a}b", None, "}", "unmatched brace"),
            ("{port", Some("api"), "{", "unmatched brace"),
        ];
        for (text, own, at, message) in refused {
            let e = Template::parse(text, own, &scope).expect_err(text);
            assert_eq!(e.at, at, "{text}");
            assert!(e.message.starts_with(message), "{text}: {}", e.message);
        }
    }

    #[test]
    fn what_a_template_says_of_itself() {
        let services = BTreeSet::from(["api".to_owned(), "db".to_owned()]);
        let scope = Scope { services: &services, http: &services };
        let parse = |text| Template::parse(text, Some("api"), &scope).unwrap();
        assert_eq!(parse("{db.port} {api.public_url} {port}").refers_to().collect::<Vec<_>>(), ["db"]);
        assert_eq!(parse("a {{b}}").plain().as_deref(), Some("a {b}"));
        assert_eq!(parse("a {port}").plain(), None);
    }
}
