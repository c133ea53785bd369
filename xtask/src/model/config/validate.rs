//! The validators: what serde cannot check, each error pointing at the
//! offending value's line and column. What a service runs: `kinds`.

mod kinds;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Component, Path};
use std::time::Duration;

use toml::Spanned;

use super::diagnostics::{Errors, Lines, duplicate_key, wrong_type};
use super::raw::{RawCommand, RawFile, RawPorts, RawReady, RawService};
use super::template::{Scope, Template};
use super::{Config, DEFAULT_STOP_GRACE, MIN_PORT, Ready, Service, Step, env_prefix};
use crate::model::names::{DASHBOARD, service_label};
use kinds::run_key;

/// Parses and validates the text of a `ports.toml`.
pub fn parse(text: &str) -> Result<Config, Errors> {
    let mut v = Validator { text, lines: Lines::of(text), errors: Vec::new() };
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = match e.message().trim_end() {
                "duplicate key" => duplicate_key(text, &span),
                message => wrong_type(text, &e, &span).unwrap_or_else(|| message.to_owned()),
            };
            v.error(span, message);
            return Err(v.finish());
        }
    };
    let config = v.config(raw);
    match config {
        Some(config) if v.errors.is_empty() => Ok(config),
        _ => Err(v.finish()),
    }
}

struct Validator<'a> {
    text: &'a str,
    lines: Lines,
    errors: Vec<(Range<usize>, String)>,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push((span, message.into()));
    }

    fn finish(self) -> Errors {
        Errors::new(self.text, self.errors)
    }

    fn config(&mut self, raw: RawFile) -> Option<Config> {
        let (range, attempts) = self.ports(&raw.ports);
        let (table, raw_services) = match raw.services {
            Some(services) => (services.span(), services.into_inner()),
            None => (0..0, BTreeMap::new()),
        };
        self.some_service(&raw_services, table);
        self.ports_in_range(&raw_services, range);
        let names: BTreeSet<String> = raw_services.keys().map(|k| k.get_ref().clone()).collect();
        let http: BTreeSet<String> =
            raw_services.iter().filter(|(_, raw)| serves_http(raw)).map(|(name, _)| name.get_ref().clone()).collect();
        let scope = Scope { services: &names, http: &http };
        let mut services = BTreeMap::new();
        for (name, raw) in &raw_services {
            self.service_name(name);
            if let Some(service) = self.service(name, raw, &scope) {
                services.insert(name.get_ref().clone(), service);
            }
        }
        self.unique_ports(&raw_services);
        self.unique_compose_services(&raw_services);
        self.unique_env_names(&raw_services, &http, &raw.env);
        self.unique_labels(&raw_services, &http);
        self.compose_env(&raw_services, &http, &raw.env);
        let order = self.dependency_order(&raw_services);
        let mut env = BTreeMap::new();
        for (key, value) in &raw.env {
            self.env_name(key);
            let template = self.template(value, None, &scope)?;
            self.env_value(&format!("the value of {}", key.get_ref()), value.span(), &template);
            env.insert(key.get_ref().clone(), template);
        }
        Some(Config { range, attempts, programs: raw.programs, services, order: order?, env })
    }

    fn ports(&mut self, raw: &RawPorts) -> ((u16, u16), u16) {
        let mut range = (1024, 65535);
        if let Some(r) = &raw.range {
            let min = i64::from(MIN_PORT);
            match r.get_ref()[..] {
                [lo, hi] if (1..=65535).contains(&lo) && (lo..=65535).contains(&hi) && hi >= min => {
                    range = (lo as u16, hi as u16)
                }
                [lo, hi] if 1 <= lo && lo <= hi && hi < min => self.error(
                    r.span(),
                    format!("range ends at {hi}, and ports below {MIN_PORT} are never handed out: raise its high end to {MIN_PORT} or more"),
                ),
                _ => self.error(r.span(), "range must be [low, high] with 1 <= low <= high <= 65535"),
            }
        }
        let mut attempts = 100;
        if let Some(a) = &raw.attempts {
            match u16::try_from(*a.get_ref()) {
                Ok(n) if n >= 1 => attempts = n,
                _ => self.error(a.span(), "attempts must be a whole number from 1 to 65535"),
            }
        }
        (range, attempts)
    }

    /// A file with no service would run nothing, yet allocate and register
    /// as if it did (an empty file, a stash that left only comments): an
    /// error at its `[services]` table, or at its start when it has none.
    fn some_service(&mut self, services: &BTreeMap<Spanned<String>, RawService>, table: Range<usize>) {
        if services.is_empty() {
            self.error(
                table,
                "no services: name at least one, like [services.web] with port = 3000 and command = \"npm run dev -- --port {port}\"",
            );
        }
    }

    fn service_name(&mut self, name: &Spanned<String>) {
        let n = name.get_ref();
        let ok = n.starts_with(|c: char| c.is_ascii_lowercase())
            && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok || n == "all" {
            self.error(
                name.span(),
                format!("service name {n:?} must be lowercase letters, digits, - and _, start with a letter, and not be `all`"),
            );
        } else if n.len() > 64 {
            // It names files (.pids/NAME.json, .logs/NAME.log) and an environment variable.
            self.error(name.span(), format!("service name {n:?} is longer than 64 characters: shorten it"));
        }
    }

    fn env_name(&mut self, key: &Spanned<String>) {
        let k = key.get_ref();
        let ok = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            self.error(key.span(), format!("{k:?} is not a valid environment variable name"));
        }
    }

    /// Paths of ports.toml are joined to the checkout's root: an absolute one,
    /// or one whose `..` climb above the root, would reach outside the
    /// checkout (and `dirs` are given to `user`).
    /// A folder of `dirs` must also not be the root itself: it is given to `user`.
    fn inside(&mut self, path: &Spanned<String>, key: &str, name: &str) -> String {
        let p = path.get_ref();
        let depth = Path::new(p).components().try_fold(0usize, |depth, c| match c {
            Component::ParentDir => depth.checked_sub(1),
            Component::Normal(_) => Some(depth + 1),
            _ => Some(depth),
        });
        let problem = if Path::new(p).is_absolute() {
            "is absolute"
        } else if depth.is_none() {
            "leads out of the checkout"
        } else if depth == Some(0) && key == "dirs" {
            "is the checkout itself"
        } else {
            return p.clone();
        };
        self.error(
            path.span(),
            format!(
                "{p:?} in `{key}` of {name} {problem}: write a path relative to the folder of ports.toml \
                 that stays inside it, like \"backend\" or \".data/{name}\""
            ),
        );
        p.clone()
    }

    fn service(&mut self, key: &Spanned<String>, raw: &RawService, scope: &Scope) -> Option<Service> {
        let name = key.get_ref().as_str();
        let cwd = raw.cwd.as_ref().map(|c| self.inside(c, "cwd", name));
        let dirs = raw.dirs.iter().map(|d| self.inside(d, "dirs", name)).collect();
        let port = match u16::try_from(*raw.port.get_ref()) {
            Ok(p) if p >= 1 => p,
            _ => {
                let p = raw.port.get_ref();
                self.error(raw.port.span(), format!("port {p} of {name} is outside 1..65535"));
                0
            }
        };
        for dep in &raw.depends_on {
            if !scope.services.contains(dep.get_ref()) {
                let known = scope.services.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
                self.error(
                    dep.span(),
                    format!("{name} depends on unknown service {:?}; known: {known}", dep.get_ref()),
                );
            }
        }
        let run = self.run(key, raw, port, scope)?;
        let url = match &raw.url {
            Some(url) => {
                let template = self.template(url, Some(name), scope)?;
                self.env_value(&format!("the url of {name}"), url.span(), &template);
                template
            }
            None => Template::own_url(),
        };
        let mut env = BTreeMap::new();
        for (key, value) in &raw.env {
            self.env_name(key);
            env.insert(key.get_ref().clone(), self.template(value, Some(name), scope)?);
        }
        let setup = raw
            .setup
            .iter()
            .map(|step| {
                let inputs = step.inputs.iter().map(|i| self.inside(i, "setup.inputs", name)).collect();
                let creates = step.creates.as_ref().map(|c| self.inside(c, "setup.creates", name));
                let cwd = step.cwd.as_ref().map(|c| self.inside(c, "setup.cwd", name));
                let words = self.words(&step.command, &format!("setup command of {name}"))?;
                let command = words.into_iter().map(|(_, w)| w).collect();
                let spans = [("command", Some(step.command.span())), ("cwd", step.cwd.as_ref().map(|c| c.span()))];
                let places = spans
                    .into_iter()
                    .filter_map(|(key, span)| Some((key, self.lines.place(self.text, span?.start))))
                    .collect();
                Some(Step { command, cwd, inputs, creates, places })
            })
            .collect::<Option<Vec<_>>>()?;
        let ready = match &raw.ready {
            None => Ready::Tcp,
            Some(RawReady { http }) if http.get_ref().starts_with('/') => Ready::Http(http.get_ref().clone()),
            Some(RawReady { http }) => {
                self.error(http.span(), format!("ready.http of {name} must be a path starting with /"));
                Ready::Tcp
            }
        };
        let stop_grace = match &raw.stop_grace {
            None => DEFAULT_STOP_GRACE,
            Some(g) if (0.0..=3600.0).contains(g.get_ref()) => Duration::from_secs_f64(*g.get_ref()),
            Some(g) => {
                self.error(g.span(), format!("stop_grace of {name} must be a number of seconds from 0 to 3600"));
                Duration::ZERO
            }
        };
        let volumes = raw.volumes.first().map(|v| ("volumes", v.span()));
        Some(Service {
            name: name.to_owned(),
            port,
            run,
            cwd,
            depends_on: raw.depends_on.iter().map(|d| d.get_ref().clone()).collect(),
            ready,
            url,
            http: scope.http.contains(name),
            user: raw.user.as_ref().map(|u| u.get_ref().clone()),
            places: (run_key(raw).into_iter().chain(volumes))
                .map(|(key, span)| (key, Some(span)))
                .chain([("cwd", raw.cwd.as_ref().map(|c| c.span())), ("user", raw.user.as_ref().map(|u| u.span()))])
                .chain([("dirs", raw.dirs.first().map(|d| d.span()))])
                .filter_map(|(key, span)| Some((key, self.lines.place(self.text, span?.start))))
                .collect(),
            dirs,
            setup,
            env,
            stop_grace,
        })
    }

    /// The words of a command, each with the span to blame.
    fn words(&mut self, raw: &Spanned<RawCommand>, what: &str) -> Option<Vec<(Range<usize>, String)>> {
        let words: Vec<(Range<usize>, String)> = match raw.get_ref() {
            RawCommand::Words(words) => words.iter().map(|w| (w.span(), w.get_ref().clone())).collect(),
            RawCommand::Line(line) => match shlex::split(line) {
                Some(words) => words.into_iter().map(|w| (raw.span(), w)).collect(),
                None => {
                    self.error(raw.span(), format!("{what} has an unclosed quote or a trailing backslash"));
                    return None;
                }
            },
        };
        match words.first() {
            None => self.error(raw.span(), format!("{what} is empty")),
            Some((span, program)) if program.is_empty() => {
                self.error(span.clone(), format!("{what} starts with an empty program name"))
            }
            Some(_) => return Some(words),
        }
        None
    }

    /// A template, or its error at the text to blame.
    fn template(&mut self, s: &Spanned<String>, own: Option<&str>, scope: &Scope) -> Option<Template> {
        match Template::parse(s.get_ref(), own, scope) {
            Ok(template) => Some(template),
            Err(unparsed) => {
                let at = self.find_in(s.span(), &unparsed.at);
                self.error(at, unparsed.message);
                None
            }
        }
    }

    /// Where `needle` stands in the source inside `span` (the whole span if
    /// quoting or shell splitting changed its text).
    fn find_in(&self, span: Range<usize>, needle: &str) -> Range<usize> {
        match self.text.get(span.clone()).and_then(|source| source.find(needle)) {
            Some(i) => span.start + i..span.start + i + needle.len(),
            None => span,
        }
    }

    fn unique_ports(&mut self, services: &BTreeMap<Spanned<String>, RawService>) {
        let mut seen: BTreeMap<i64, &str> = BTreeMap::new();
        let mut by_place: Vec<_> = services.iter().collect();
        by_place.sort_by_key(|(_, s)| s.port.span().start);
        for (name, service) in by_place {
            let port = *service.port.get_ref();
            if let Some(first) = seen.insert(port, name.get_ref()) {
                self.error(
                    service.port.span(),
                    format!(
                        "{} prefers port {port}, which {first} prefers too: give each service its own port",
                        name.get_ref()
                    ),
                );
            }
        }
    }

    /// The walk for a free port goes up from the preferred one, so a port
    /// above the range could never be handed out (one below starts at `lo`).
    fn ports_in_range(&mut self, services: &BTreeMap<Spanned<String>, RawService>, (lo, hi): (u16, u16)) {
        for (name, service) in services {
            let port = *service.port.get_ref();
            if (i64::from(hi) + 1..=65535).contains(&port) {
                self.error(
                    service.port.span(),
                    format!(
                        "port {port} of {} is above the range {lo}-{hi} of [ports]: pick a port up to {hi}, or widen the range",
                        name.get_ref()
                    ),
                );
            }
        }
    }

    /// Each `.env.runtime` variable has one source: names that differ only by
    /// `-` and `_` give the same `NAME_PORT`, and `[env]` must not repeat one.
    fn unique_env_names(
        &mut self,
        services: &BTreeMap<Spanned<String>, RawService>,
        http: &BTreeSet<String>,
        env: &BTreeMap<Spanned<String>, Spanned<String>>,
    ) {
        let mut seen: BTreeMap<String, &str> = BTreeMap::new(); // variable -> service
        let mut by_place: Vec<_> = services.keys().collect();
        by_place.sort_by_key(|name| name.span().start);
        for name in by_place {
            let prefix = env_prefix(name.get_ref());
            let mut vars = vec![format!("{prefix}_PORT"), format!("{prefix}_URL")];
            if http.contains(name.get_ref()) {
                vars.push(format!("{prefix}_PUBLIC_URL"));
            }
            match vars.iter().find_map(|var| Some((var, *seen.get(var)?))) {
                Some((var, first)) => {
                    let what = if seen.get(&vars[0]) == Some(&first) {
                        format!("{} and {}", vars[0], vars[1])
                    } else {
                        var.clone()
                    };
                    self.error(
                        name.span(),
                        format!(
                            "services {first} and {} would both set {what} in .env.runtime: rename one",
                            name.get_ref()
                        ),
                    )
                }
                None => seen.extend(vars.into_iter().map(|var| (var, name.get_ref().as_str()))),
            }
        }
        for key in env.keys() {
            let k = key.get_ref();
            if let Some(service) = seen.get(k) {
                self.error(
                    key.span(),
                    format!("{k} is already set in .env.runtime for the service {service}: rename it (a service's URL is set with its `url`)"),
                );
            }
        }
    }

    /// Each named URL leads to one service: names that differ only by `-`
    /// and `_` (or by a trailing one, or past 63 characters) give the same
    /// label, and `dashboard` is the dashboard's.
    fn unique_labels(&mut self, services: &BTreeMap<Spanned<String>, RawService>, http: &BTreeSet<String>) {
        let mut seen: BTreeMap<String, &str> = BTreeMap::from([(DASHBOARD.to_owned(), "the dashboard")]);
        let mut by_place: Vec<_> = services.keys().collect();
        by_place.sort_by_key(|name| name.span().start);
        for name in by_place {
            let label = service_label(name.get_ref());
            // A service without a named URL takes no name, but it is listed
            // among the routes: the dashboard's is kept from every service.
            if !http.contains(name.get_ref()) && label != DASHBOARD {
                continue;
            }
            match seen.get(&label) {
                // Names that differ only by `-` and `_`: said by `unique_env_names`.
                Some(first) if env_prefix(first) == env_prefix(name.get_ref()) => {}
                Some(first) => self.error(
                    name.span(),
                    format!(
                        "{first} and the service {} would both be named {label} in the named URLs \
                         (http://{label}.<checkout>.localhost): rename the service",
                        name.get_ref()
                    ),
                ),
                None => {
                    seen.insert(label, name.get_ref());
                }
            }
        }
    }

    /// `.env.runtime` writes a value bare or in single quotes (envfile.rs);
    /// what those cannot carry through both python-dotenv (the backend) and
    /// Node's dotenv (the frontend) unchanged is an error here.
    fn env_value(&mut self, subject: &str, span: Range<usize>, value: &Template) {
        if let Some(what) = value.dotenv_problem() {
            self.error(
                span,
                format!("{subject} contains {what}: python-dotenv and Node's dotenv would not read it back from .env.runtime as written; remove it"),
            );
        }
    }

    /// Dependencies first, then by name; a cycle is an error at the edge that closes it.
    fn dependency_order(&mut self, services: &BTreeMap<Spanned<String>, RawService>) -> Option<Vec<String>> {
        let deps: BTreeMap<&str, Vec<&Spanned<String>>> =
            services.iter().map(|(n, s)| (n.get_ref().as_str(), s.depends_on.iter().collect())).collect();
        let mut order = Vec::new();
        let mut state: BTreeMap<&str, bool> = BTreeMap::new(); // false: on the path, true: done
        let mut ok = true;
        fn visit<'a>(
            name: &'a str,
            deps: &BTreeMap<&'a str, Vec<&'a Spanned<String>>>,
            state: &mut BTreeMap<&'a str, bool>,
            path: &mut Vec<&'a str>,
            order: &mut Vec<String>,
            v: &mut Validator,
        ) -> bool {
            match state.get(name) {
                Some(true) => return true,
                Some(false) => return false,
                None => {}
            }
            state.insert(name, false);
            path.push(name);
            for dep in deps.get(name).into_iter().flatten() {
                let d = dep.get_ref().as_str();
                if !deps.contains_key(d) {
                    continue; // reported as unknown
                }
                if state.get(d) == Some(&false) {
                    let start = path.iter().position(|n| *n == d).unwrap_or(0);
                    let cycle = path[start..].iter().chain([&d]).copied().collect::<Vec<_>>().join(" -> ");
                    v.error(dep.span(), format!("dependency cycle: {cycle}"));
                    return false;
                }
                if !visit(d, deps, state, path, order, v) {
                    return false;
                }
            }
            path.pop();
            state.insert(name, true);
            order.push(name.to_owned());
            true
        }
        for name in deps.keys() {
            ok &= visit(name, &deps, &mut state, &mut Vec::new(), &mut order, self);
        }
        ok.then_some(order)
    }
}

/// Whether a service serves HTTP, and so has a named URL: it is ready when
/// an HTTP path answers, or its URL (by default `http://localhost:{port}`)
/// is an http:// or https:// one.
fn serves_http(raw: &RawService) -> bool {
    let http = |url: &str| url.starts_with("http://") || url.starts_with("https://");
    raw.ready.is_some() || raw.url.as_ref().is_none_or(|url| http(url.get_ref()))
}
