//! `ports.toml`: the services, the ports they prefer and how to run them
//! (DESIGN.md section 3). `parse` is pure; `load` only reads the file.
//!
//! Parsing is two steps, as in process-compose's loader: serde reads the raw
//! file (unknown keys are errors there), then small named validators check
//! what serde cannot, each pointing at the offending value's line and column.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use toml::Spanned;

use crate::model::alloc::MIN_PORT;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Window for alternative ports.
    pub range: (u16, u16),
    /// Successive ports tried from the preferred one.
    pub attempts: u16,
    pub programs: BTreeMap<String, Program>,
    /// By name; `order` gives them in dependency order.
    pub services: BTreeMap<String, Service>,
    /// Services in dependency order (dependencies first, then by name).
    pub order: Vec<String>,
    /// Extra `.env.runtime` lines, by name.
    pub env: BTreeMap<String, Template>,
}

/// A system program the services need, and how to get it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = r#"a table like { install = "apt-get install -y postgresql" }"#)]
pub struct Program {
    /// What to run to install it, shown when it is missing.
    pub install: Option<String>,
    /// Folders to look in besides PATH; `*` matches one path component.
    #[serde(default)]
    pub search: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub port: u16,
    pub command: Vec<Template>,
    /// Working directory, relative to the checkout's root.
    pub cwd: Option<String>,
    pub depends_on: Vec<String>,
    pub ready: Ready,
    /// `NAME_URL` in .env.runtime; default `http://localhost:{port}`.
    pub url: Template,
    /// When the runner is root, run the service (and its setup) as this account.
    pub user: Option<String>,
    /// Where `command`, `cwd` and `user` are written (line, column): what is
    /// wrong with them (a program, folder or account missing) is found only
    /// when starting.
    pub places: BTreeMap<&'static str, (usize, usize)>,
    /// Folders created before setup, owned by `user` when it applies.
    pub dirs: Vec<String>,
    pub setup: Vec<Step>,
    pub env: BTreeMap<String, Template>,
    /// How long it may take to stop after TERM before it gets KILL.
    pub stop_grace: Duration,
}

impl Service {
    /// `ports.toml:LINE:COL` of its `key`, for what starting finds wrong there.
    pub fn place(&self, ports_toml: &Path, key: &str) -> String {
        place(&self.places, ports_toml, key)
    }
}

impl Step {
    /// `ports.toml:LINE:COL` of its `key` (`command` or `cwd`).
    pub fn place(&self, ports_toml: &Path, key: &str) -> String {
        place(&self.places, ports_toml, key)
    }
}

fn place(places: &BTreeMap<&'static str, (usize, usize)>, ports_toml: &Path, key: &str) -> String {
    match places.get(key) {
        Some((line, col)) => format!("{}:{line}:{col}", ports_toml.display()),
        None => ports_toml.display().to_string(),
    }
}

/// `stop_grace` when `ports.toml` does not say.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// When a started service counts as ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// A TCP connection to its port succeeds.
    Tcp,
    /// `GET path` answers 2xx.
    Http(String),
}

/// A set-up step, run before a service first starts, and again when the
/// contents of its `inputs` change or what it `creates` is missing.
#[derive(Debug, Clone)]
pub struct Step {
    pub command: Vec<String>,
    /// The folder it runs in, relative to the checkout's root (default: the root).
    pub cwd: Option<String>,
    pub inputs: Vec<String>,
    pub creates: Option<String>,
    /// Where its `command` and `cwd` are written (line, column), for what
    /// starting finds wrong there (a missing program or folder).
    pub places: BTreeMap<&'static str, (usize, usize)>,
}

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
}

impl Service {
    /// The services whose ports this one's command or environment uses, and
    /// those it depends on: when one of their ports moves, this one restarts.
    pub fn refers_to(&self) -> BTreeSet<&str> {
        let templates = self.command.iter().chain(self.env.values()).chain([&self.url]);
        templates.flat_map(Template::refers_to).chain(self.depends_on.iter().map(String::as_str)).collect()
    }

    /// The name used in `.env.runtime`: `backend` -> `BACKEND`.
    pub fn env_prefix(&self) -> String {
        env_prefix(&self.name)
    }

    /// `Backend`, as the seed's status lines show it.
    pub fn title(&self) -> String {
        let mut chars = self.name.chars();
        chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
    }
}

pub fn env_prefix(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

impl Config {
    /// The named services plus everything they depend on, in dependency order;
    /// every service when `names` is `None`.
    pub fn closure(&self, names: Option<&[String]>) -> anyhow::Result<Vec<String>> {
        let Some(names) = names else {
            return Ok(self.order.clone());
        };
        let mut wanted = BTreeSet::new();
        let mut todo: Vec<&str> = Vec::new();
        for name in names {
            anyhow::ensure!(
                self.services.contains_key(name),
                "unknown service {name:?}: ports.toml has {}",
                self.names().join(", ")
            );
            todo.push(name);
        }
        while let Some(name) = todo.pop() {
            if wanted.insert(name) {
                todo.extend(self.services[name].depends_on.iter().map(String::as_str));
            }
        }
        Ok(self.order.iter().filter(|n| wanted.contains(n.as_str())).cloned().collect())
    }

    /// The named services plus everything that depends on them, in dependency order.
    pub fn dependents_closure(&self, names: &[String]) -> Vec<String> {
        let mut wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        for name in &self.order {
            if self.services[name].depends_on.iter().any(|d| wanted.contains(d.as_str())) {
                wanted.insert(name);
            }
        }
        self.order.iter().filter(|n| wanted.contains(n.as_str())).cloned().collect()
    }

    pub fn names(&self) -> Vec<&str> {
        self.services.keys().map(String::as_str).collect()
    }

    pub fn preferred_ports(&self) -> BTreeMap<String, u16> {
        self.services.iter().map(|(name, s)| (name.clone(), s.port)).collect()
    }
}

/// Reads and parses `ports.toml`.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode(bytes).and_then(|text| parse(&text)).map_err(|errors| anyhow::anyhow!(errors.with_path(path)))
}

/// The text of `ports.toml`, or an error at its first byte that is not UTF-8.
fn decode(bytes: Vec<u8>) -> Result<String, Errors> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let mut bytes = e.into_bytes();
        let message = format!("the byte 0x{:02x} is not UTF-8: save ports.toml as UTF-8", bytes[valid]);
        bytes.truncate(valid);
        let text = String::from_utf8(bytes).expect("valid up to there");
        Errors { text, errors: vec![(valid..valid, message)], path: None }
    })
}

/// Errors found in `ports.toml`, each with its place in the text.
#[derive(Debug)]
pub struct Errors {
    text: String,
    errors: Vec<(Range<usize>, String)>,
    path: Option<PathBuf>,
}

impl Errors {
    fn with_path(mut self, path: &Path) -> Errors {
        self.path = Some(path.to_path_buf());
        self
    }

    /// `(line, column)` of each error, 1-based, with its message; for tests.
    pub fn located(&self) -> Vec<(usize, usize, &str)> {
        let lines = Lines::of(&self.text);
        self.errors
            .iter()
            .map(|(span, msg)| {
                let (line, col) = lines.place(&self.text, span.start);
                (line, col, msg.as_str())
            })
            .collect()
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.as_deref().unwrap_or(Path::new("ports.toml"));
        for (i, (line, col, msg)) in self.located().into_iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{line}:{col}: {msg}", path.display())?;
        }
        write!(f, "\nnothing was started or written: fix ports.toml and run the command again")
    }
}

impl std::error::Error for Errors {}

/// Where each line of a text starts: a place in it is found without
/// reading the text from its start each time (for each service of a file
/// of thousands, that took seconds).
struct Lines(Vec<usize>);

impl Lines {
    fn of(text: &str) -> Lines {
        Lines(std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect())
    }

    /// The line and column (in characters) of byte `offset`, 1-based.
    fn place(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let line = self.0.partition_point(|start| *start <= offset);
        (line, text[self.0[line - 1]..offset].chars().count() + 1)
    }
}

// ---- the raw file, as serde reads it ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    ports: RawPorts,
    #[serde(default)]
    programs: BTreeMap<String, Program>,
    /// Spanned, to blame a `[services]` table that names none.
    services: Option<Spanned<BTreeMap<Spanned<String>, RawService>>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table like { range = [1024, 65535], attempts = 100 }")]
struct RawPorts {
    range: Option<Spanned<Vec<i64>>>,
    attempts: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = r#"a table like { port = 8000, command = "server --port {port}" }"#)]
struct RawService {
    port: Spanned<i64>,
    command: Spanned<RawCommand>,
    cwd: Option<Spanned<String>>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
    ready: Option<RawReady>,
    url: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    #[serde(default)]
    dirs: Vec<Spanned<String>>,
    #[serde(default)]
    setup: Vec<RawStep>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    stop_grace: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a table like { http = "/health" }, or be left out to wait for a TCP connection"#
)]
struct RawReady {
    http: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = r#"a table like { command = "npm ci", inputs = ["package-lock.json"] }"#)]
struct RawStep {
    command: Spanned<RawCommand>,
    cwd: Option<Spanned<String>>,
    #[serde(default)]
    inputs: Vec<Spanned<String>>,
    creates: Option<Spanned<String>>,
}

/// `command` is an array of words (each with its own place, for errors), or
/// one string split as a POSIX shell would split it.
enum RawCommand {
    Line(String),
    Words(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawCommand;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command line string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawCommand, E> {
                Ok(RawCommand::Line(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawCommand, A::Error> {
                let mut words = Vec::new();
                while let Some(word) = seq.next_element()? {
                    words.push(word);
                }
                Ok(RawCommand::Words(words))
            }
        }
        d.deserialize_any(Visitor)
    }
}

// ---- validation ----

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

/// toml says only "duplicate key": name it, and where it was first written
/// when an earlier line of its table starts the same way.
fn duplicate_key(text: &str, span: &Range<usize>) -> String {
    let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    // `port`, `env.X`, or `[services.api` for a table defined twice.
    let written = text[line_start..span.end].trim_start();
    let header = written.starts_with('[');
    let ends: &[char] = if header { &[']', ' ', '\t'] } else { &['=', '.', ' ', '\t'] };
    let mut end = line_start;
    let first = text[..line_start]
        .split_inclusive('\n')
        .rev()
        .map(|line| {
            end -= line.len();
            (end + line.len() - line.trim_start().len(), line.trim_start())
        })
        .take_while(|(_, line)| header || !line.starts_with('['))
        .find(|(_, line)| line.strip_prefix(written).is_some_and(|rest| rest.starts_with(ends)));
    match first {
        Some((at, _)) => {
            let (line, col) = Lines::of(text).place(text, at);
            format!("{} is defined twice, first at {line}:{col}: keep one", written.trim_start_matches('['))
        }
        None => format!("{} is defined twice: keep one", &text[span.clone()]),
    }
}

/// serde's words for a value of the wrong type name Rust types (`i64`, `a
/// sequence`, `integer as i128`): say instead which key, what is written
/// there, and what to write.
fn wrong_type(text: &str, e: &toml::de::Error, span: &Range<usize>) -> Option<String> {
    let message = e.message();
    let wrong = message.strip_prefix("invalid type: ").or_else(|| message.strip_prefix("invalid value: "))?;
    let expected = match wrong.rsplit_once(", expected ")?.1 {
        // Every whole number of ports.toml is a port or a count of ports.
        "i64" => "a whole number from 1 to 65535",
        "f64" => "a number",
        "a sequence" => "an array",
        "a map" => "a table",
        other => other,
    };
    // toml keeps the key's path private, but shows it when it has no source to quote.
    let mut bare = e.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    let key = shown.lines().find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))?;
    let written = text.get(span.clone())?.lines().next()?;
    if written.starts_with("[[") {
        return Some(format!("[[{key}]] makes {key} an array of tables, but it must be one table: write [{key}]"));
    }
    let subject =
        if text[..span.start].trim_end().ends_with('=') { key.to_owned() } else { format!("an item of {key}") };
    Some(format!("{subject} is {written}, but must be {expected}"))
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

    fn finish(mut self) -> Errors {
        self.errors.sort_by_key(|(span, _)| span.start);
        Errors { text: self.text.to_owned(), errors: self.errors, path: None }
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
        let mut services = BTreeMap::new();
        for (name, raw) in &raw_services {
            self.service_name(name);
            if let Some(service) = self.service(name.get_ref(), raw, &names) {
                services.insert(name.get_ref().clone(), service);
            }
        }
        self.unique_ports(&raw_services);
        self.unique_env_names(&raw_services, &raw.env);
        let order = self.dependency_order(&raw_services);
        let mut env = BTreeMap::new();
        for (key, value) in &raw.env {
            self.env_name(key);
            let template = self.template(value, None, &names)?;
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

    fn service(&mut self, name: &str, raw: &RawService, names: &BTreeSet<String>) -> Option<Service> {
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
            if !names.contains(dep.get_ref()) {
                let known = names.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
                self.error(
                    dep.span(),
                    format!("{name} depends on unknown service {:?}; known: {known}", dep.get_ref()),
                );
            }
        }
        let words = self.words(&raw.command, &format!("command of {name}"))?;
        let command = words
            .iter()
            .map(|(span, word)| self.template(&Spanned::new(span.clone(), word.clone()), Some(name), names))
            .collect::<Option<Vec<_>>>()?;
        let url = match &raw.url {
            Some(url) => {
                let template = self.template(url, Some(name), names)?;
                self.env_value(&format!("the url of {name}"), url.span(), &template);
                template
            }
            None => Template(vec![Part::Text("http://localhost:".into()), Part::OwnPort]),
        };
        let mut env = BTreeMap::new();
        for (key, value) in &raw.env {
            self.env_name(key);
            env.insert(key.get_ref().clone(), self.template(value, Some(name), names)?);
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
        Some(Service {
            name: name.to_owned(),
            port,
            command,
            cwd,
            depends_on: raw.depends_on.iter().map(|d| d.get_ref().clone()).collect(),
            ready,
            url,
            user: raw.user.as_ref().map(|u| u.get_ref().clone()),
            places: [("command", Some(raw.command.span())), ("cwd", raw.cwd.as_ref().map(|c| c.span()))]
                .into_iter()
                .chain([("user", raw.user.as_ref().map(|u| u.span())), ("dirs", raw.dirs.first().map(|d| d.span()))])
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

    /// Parses `{port}`, `{NAME.port}`, and `{{` / `}}` for literal braces.
    fn template(&mut self, s: &Spanned<String>, own: Option<&str>, names: &BTreeSet<String>) -> Option<Template> {
        let text = s.get_ref();
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            let Some(end) = tail.find('}').filter(|_| tail.starts_with('{')) else {
                let at = self.find_in(s.span(), &tail[..1]);
                self.error(at, format!("unmatched brace in {text:?}: write {{{{ or }}}} for a literal one"));
                return None;
            };
            let reference = &tail[1..end];
            let part = match reference.split_once('.') {
                None if reference == "port" && own.is_some() => Part::OwnPort,
                Some((name, "port")) if names.contains(name) => Part::PortOf(name.to_owned()),
                _ => {
                    let own_hint = if own.is_some() { "{port} or " } else { "" };
                    let known = names.iter().map(|n| format!("{{{n}.port}}")).collect::<Vec<_>>().join(", ");
                    let at = self.find_in(s.span(), &tail[..=end]);
                    self.error(at, format!("unknown reference {{{reference}}}: use {own_hint}one of {known}"));
                    return None;
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
        Some(Template(parts))
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
        env: &BTreeMap<Spanned<String>, Spanned<String>>,
    ) {
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        let mut by_place: Vec<_> = services.keys().collect();
        by_place.sort_by_key(|name| name.span().start);
        for name in by_place {
            let prefix = env_prefix(name.get_ref());
            match seen.get(&prefix) {
                Some(first) => self.error(
                    name.span(),
                    format!(
                        "services {first} and {} would both set {prefix}_PORT and {prefix}_URL in .env.runtime: rename one",
                        name.get_ref()
                    ),
                ),
                None => {
                    seen.insert(prefix, name.get_ref());
                }
            }
        }
        for key in env.keys() {
            let k = key.get_ref();
            let prefix = k.strip_suffix("_PORT").or_else(|| k.strip_suffix("_URL"));
            if let Some(service) = prefix.and_then(|p| seen.get(p)) {
                self.error(
                    key.span(),
                    format!("{k} is already set in .env.runtime for the service {service}: rename it (a service's URL is set with its `url`)"),
                );
            }
        }
    }

    /// `.env.runtime` writes a value bare or in single quotes (envfile.rs);
    /// what those cannot carry through both python-dotenv (the backend) and
    /// Node's dotenv (the frontend) unchanged is an error here.
    fn env_value(&mut self, subject: &str, span: Range<usize>, value: &Template) {
        let problem = value.0.iter().find_map(|part| match part {
            Part::Text(text) if text.contains(char::is_control) => Some("a line break or another control character"),
            Part::Text(text) if text.contains('\'') => Some("a single quote"),
            Part::Text(text) if text.contains('\\') => Some("a backslash"),
            Part::Text(text) if text.contains("${") => Some("`${`, which python-dotenv expands"),
            _ => None,
        });
        if let Some(what) = problem {
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[ports]
attempts = 20

[services.db]
port = 5432
command = ["postgres", "-p", "{port}"]

[services.api]
port = 8000
command = "uvicorn app:app --port {port} --db 'host {db.port}'"
depends_on = ["db"]
ready = { http = "/health" }

[services.web]
port = 3000
command = ["next", "dev", "-p", "{port}"]
depends_on = ["api"]
env = { API = "http://127.0.0.1:{api.port}" }

[env]
DATABASE_URL = "postgresql://127.0.0.1:{db.port}/app"
"#;

    fn ports(pairs: &[(&str, u16)]) -> BTreeMap<String, u16> {
        pairs.iter().map(|(n, p)| (n.to_string(), *p)).collect()
    }

    #[test]
    fn parses_services_commands_and_templates() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.attempts, 20);
        assert_eq!(config.range, (1024, 65535));
        assert_eq!(config.order, ["db", "api", "web"]);
        let api = &config.services["api"];
        let p = ports(&[("db", 5433), ("api", 8001)]);
        let words: Vec<String> = api.command.iter().map(|t| t.render(Some("api"), &p)).collect();
        assert_eq!(words, ["uvicorn", "app:app", "--port", "8001", "--db", "host 5433"]);
        assert_eq!(api.ready, Ready::Http("/health".into()));
        assert_eq!(config.services["db"].ready, Ready::Tcp);
        assert_eq!(api.url.render(Some("api"), &p), "http://localhost:8001");
        assert_eq!(config.env["DATABASE_URL"].render(None, &p), "postgresql://127.0.0.1:5433/app");
        let web = &config.services["web"];
        assert_eq!(web.refers_to(), BTreeSet::from(["api"]));
        assert_eq!(api.refers_to(), BTreeSet::from(["db"]));
        assert_eq!(config.closure(Some(&["api".to_string()])).unwrap(), ["db", "api"]);
        assert_eq!(config.dependents_closure(&["api".to_string()]), ["api", "web"]);
        assert_eq!(api.title(), "Api");
    }

    #[test]
    fn braces_can_be_escaped() {
        let text = "[services.a]\nport = 2000\ncommand = ['echo', '{{\"port\": {port}}}']\n";
        let config = parse(text).unwrap();
        let word = config.services["a"].command[1].render(Some("a"), &ports(&[("a", 2001)]));
        assert_eq!(word, r#"{"port": 2001}"#);
    }

    /// Each bad input gives one error at the right line and column.
    #[test]
    fn errors_name_line_and_column() {
        let cases: &[(&str, (usize, usize), &str)] = &[
            ("[services.a]\nport = 2000\ncommand = 'x'\ncolour = 1\n", (4, 1), "unknown field `colour`"),
            ("[services.a]\nport = 70000\ncommand = 'x'\n", (2, 8), "outside 1..65535"),
            ("[services.a]\nport = 0\ncommand = 'x'\n", (2, 8), "outside 1..65535"),
            (
                "[services.a]\nport = 2000\ncommand = 'x'\n[services.b]\nport = 2000\ncommand = 'y'\n",
                (5, 8),
                "which a prefers too",
            ),
            ("[services.a]\nport = 2000\ncommand = 'x'\ndepends_on = ['zz']\n", (4, 15), "unknown service \"zz\""),
            (
                "[services.a]\nport = 2000\ncommand = 'x'\ndepends_on = ['b']\n[services.b]\nport = 2001\ncommand = 'y'\ndepends_on = ['a']\n",
                (8, 15),
                "dependency cycle: a -> b -> a",
            ),
            (
                "[services.a]\nport = 2000\ncommand = ['x', '--p={nope.port}']\n",
                (3, 22),
                "unknown reference {nope.port}",
            ),
            ("[services.a]\nport = 2000\ncommand = 'x {prot}'\n", (3, 14), "unknown reference {prot}"),
            (
                "[env]\nX = 'http://{port}'\n[services.z]\nport = 2000\ncommand = 'x'\n",
                (2, 13),
                "unknown reference {port}",
            ),
            ("[services.a]\nport = 2000\ncommand = 'x \"unclosed'\n", (3, 11), "unclosed quote"),
            ("[services.a]\nport = 2000\ncommand = []\n", (3, 11), "is empty"),
            ("[services.a]\nport = 2000\ncommand = ['', 'x']\n", (3, 12), "starts with an empty program name"),
            ("[services.a]\nport = 2000\ncommand = '\"\" x'\n", (3, 11), "starts with an empty program name"),
            ("[ports]\nrange = [9000, 8000]\n[services.z]\nport = 2000\ncommand = 'x'\n", (2, 9), "range must be"),
            ("[services.a]\nport = 2000\n", (1, 1), "missing field `command`"),
            ("[services.a]\nport = 2000\ncommand = 'x'\nready = { http = 'health' }\n", (4, 18), "starting with /"),
            ("[services.A]\nport = 2000\ncommand = 'x'\n", (1, 11), "service name \"A\""),
            (&format!("[services.{}]\nport = 2000\ncommand = 'x'\n", "a".repeat(65)), (1, 11), "longer than 64"),
            ("[services.a\n", (1, 12), ""),
            (
                "[ports]\nrange = [2000, 3000]\n[services.a]\nport = 3001\ncommand = 'x'\n",
                (4, 8),
                "port 3001 of a is above the range 2000-3000",
            ),
            (
                "[ports]\nrange = [1, 1000]\n[services.z]\nport = 2000\ncommand = 'x'\n",
                (2, 9),
                "range ends at 1000, and ports below 1024",
            ),
            // The second in the file is blamed, whatever the names' order.
            (
                "[services.my_db]\nport = 2000\ncommand = 'x'\n[services.my-db]\nport = 2001\ncommand = 'y'\n",
                (4, 11),
                "services my_db and my-db would both set MY_DB_PORT and MY_DB_URL",
            ),
            ("[services.a]\nport = 2000\ncommand = 'x'\n[env]\nA_URL = 'x'\n", (5, 1), "A_URL is already set"),
            (
                "[env]\nNOTE = \"line1\\nEVIL=1\"\n[services.z]\nport = 2000\ncommand = 'x'\n",
                (2, 8),
                "NOTE contains a line break",
            ),
            ("[services.a]\nport = 2000\ncommand = 'x'\nurl = \"http://x/'\"\n", (4, 7), "a single quote"),
            ("[env]\nX = 'a\\b'\n[services.z]\nport = 2000\ncommand = 'x'\n", (2, 5), "a backslash"),
            (
                "[env]\nX = '${{HOME}}'\n[services.z]\nport = 2000\ncommand = 'x'\n",
                (2, 5),
                "`${`, which python-dotenv expands",
            ),
            ("[services.a]\nport = 2000\ncommand = 'x'\nport = 2001\n", (4, 1), "port is defined twice, first at 2:1"),
            (
                "[services.a]\nport = 2000\ncommand = 'x'\n[services.a.env]\n[services.b]\nport = 2001\ncommand = 'y'\n[services.a]\n",
                (8, 11),
                "services.a is defined twice, first at 1:1",
            ),
            (
                "[services.a]\nport = 2000\ncommand = 'x'\nready = { http = '/', http = '/x' }\n",
                (4, 23),
                "http is defined twice",
            ),
            (
                "[services.a]\nport = 2000\ncommand = 'x'\nready = 'http'\n",
                (4, 9),
                "services.a.ready is 'http', but must be a table like { http = \"/health\" }, or be left out",
            ),
            ("[services]\napi = 1\n", (2, 7), "services.api is 1, but must be a table like { port = 8000, command ="),
            (
                "[services.a]\nport = 99999999999999999999\ncommand = 'x'\n",
                (2, 8),
                "services.a.port is 99999999999999999999, but must be a whole number from 1 to 65535",
            ),
            (
                "[services.a]\nport = 2000\ncommand = [3]\n",
                (3, 12),
                "an item of services.a.command is 3, but must be a string",
            ),
            ("[[services.a]]\nport = 2000\n", (1, 1), "[[services.a]] makes services.a an array of tables"),
            (
                "[services.a]\nport = 2000\ncommand = 'x'\ncwd = '/srv/a'\n",
                (4, 7),
                "\"/srv/a\" in `cwd` of a is absolute",
            ),
            (
                "[services.a]\nport = 2000\ncommand = 'x'\ndirs = ['.data/a', 'x/../../outside']\n",
                (4, 20),
                "\"x/../../outside\" in `dirs` of a leads out of the checkout: write a path relative to the folder of ports.toml",
            ),
            (
                "[services.a]\nport = 2000\ncommand = 'x'\ndirs = ['x/..']\n",
                (4, 9),
                "\"x/..\" in `dirs` of a is the checkout itself",
            ),
            (
                "[services.a]\nport = 2000\ncommand = 'x'\n[[services.a.setup]]\ncommand = 'y'\ninputs = ['../a.lock']\n",
                (6, 11),
                "\"../a.lock\" in `setup.inputs` of a leads out",
            ),
            (
                "[services.a]\nport = 2000\ncommand = 'x'\n[[services.a.setup]]\ncommand = 'y'\ncreates = '/var/db'\n",
                (6, 11),
                "\"/var/db\" in `setup.creates` of a is absolute",
            ),
            (
                "[services.a]\nport = 2000\ncommand = 'x'\n[[services.a.setup]]\ncommand = 'y'\ncwd = '../web'\n",
                (6, 7),
                "\"../web\" in `setup.cwd` of a leads out",
            ),
        ];
        for (text, (line, col), needle) in cases {
            let errors = parse(text).expect_err(text);
            let located = errors.located();
            assert_eq!(located.len(), 1, "{text}: {located:?}");
            let (l, c, msg) = located[0];
            assert!(msg.contains(needle), "{text}: {msg:?} lacks {needle:?}");
            assert_eq!((l, c), (*line, *col), "{text}: {msg}");
        }
    }

    /// Nothing to run is an error at the `[services]` table, or at the start.
    #[test]
    fn a_file_without_services_is_an_error() {
        let cases: &[(&str, (usize, usize))] = &[
            ("", (1, 1)),
            ("# the services of this repository\n\n", (1, 1)),
            ("[ports]\nattempts = 5\n", (1, 1)),
            ("[services]\n", (1, 1)),
            ("# services:\n[ports]\nattempts = 5\n\n[services] # none yet\n[env]\nX = 'y'\n", (5, 1)),
            ("services = {}\n", (1, 12)),
        ];
        for (text, place) in cases {
            let errors = parse(text).expect_err(text);
            let located = errors.located();
            assert_eq!(located.len(), 1, "{text:?}: {located:?}");
            let (line, col, msg) = located[0];
            assert_eq!((line, col), *place, "{text:?}: {msg}");
            assert!(msg.starts_with("no services: name at least one, like [services.web]"), "{text:?}: {msg}");
        }
    }

    /// serde names Rust types; the user wrote TOML.
    #[test]
    fn type_errors_do_not_name_rust_types() {
        let service = "[services.a]\nport = 2000\ncommand = 'x'\n";
        let lines = [
            "ready = 'http'",
            "port = 1.5",
            "setup = ['x']",
            "setup = { command = 'x' }",
            "dirs = 'x'",
            "env = 1",
            "stop_grace = 'x'",
            "[ports]\nrange = 5",
            "[programs]\npg = 1",
            "ports = 1",
        ];
        for line in lines {
            let text = format!("{service}{line}\n");
            let errors = parse(&text).expect_err(&text);
            let (_, _, msg) = errors.located()[0];
            for rust in ["struct", "Raw", "i64", "i128", "f64", "sequence", "map"] {
                assert!(!msg.contains(rust), "{line}: {msg}");
            }
        }
    }

    #[test]
    fn paths_inside_the_checkout_are_fine() {
        let text = "[services.a]\nport = 2000\ncommand = 'x'\ncwd = '.'\ndirs = ['.data/a', 'a/../b']\n";
        let config = parse(text).unwrap();
        assert_eq!(config.services["a"].cwd.as_deref(), Some("."));
    }

    #[test]
    fn a_byte_that_is_not_utf8_is_placed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ports.toml");
        std::fs::write(&path, b"[services.a]\nport = 2000 # caf\xc3\xa9 \xff\ncommand = 'x'\n").unwrap();
        let shown = format!("{:#}", load(&path).unwrap_err());
        let want = format!("{}:2:20: the byte 0xff is not UTF-8: save ports.toml as UTF-8", path.display());
        assert!(shown.starts_with(&want), "{shown}");
        assert!(shown.contains("nothing was started or written"), "{shown}");
    }

    #[test]
    fn display_names_the_file_and_says_what_to_do() {
        let errors =
            parse("[services.a]\nport = 0\ncommand = 'x'\n").unwrap_err().with_path(Path::new("/r/ports.toml"));
        let shown = errors.to_string();
        assert!(shown.starts_with("/r/ports.toml:2:8: port 0 of a is outside 1..65535"), "{shown}");
        assert!(shown.contains("nothing was started or written"), "{shown}");
    }
}
