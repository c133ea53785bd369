//! `ports.toml` as serde reads it: unknown keys are errors here, and every
//! value keeps its place in the text for the validators' messages.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use super::Program;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub ports: RawPorts,
    #[serde(default)]
    pub programs: BTreeMap<String, Program>,
    /// Spanned, to blame a `[services]` table that names none.
    pub services: Option<Spanned<BTreeMap<Spanned<String>, RawService>>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table like { range = [1024, 65535], attempts = 100 }")]
pub struct RawPorts {
    pub range: Option<Spanned<Vec<i64>>>,
    pub attempts: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = r#"a table like { port = 8000, command = "server --port {port}" }"#)]
pub struct RawService {
    pub port: Spanned<i64>,
    /// Exactly one of `command`, `image` and `compose` (`validate`).
    pub command: Option<Spanned<RawCommand>>,
    pub image: Option<Spanned<String>>,
    pub container_port: Option<Spanned<i64>>,
    #[serde(default)]
    pub args: Vec<Spanned<String>>,
    #[serde(default)]
    pub volumes: Vec<Spanned<String>>,
    pub compose: Option<Spanned<RawCompose>>,
    pub cwd: Option<Spanned<String>>,
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    pub ready: Option<RawReady>,
    pub url: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    #[serde(default)]
    pub dirs: Vec<Spanned<String>>,
    #[serde(default)]
    pub setup: Vec<RawStep>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
    pub stop_grace: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = r#"a table like { file = "compose.yaml", service = "db" }"#)]
pub struct RawCompose {
    pub file: Spanned<String>,
    pub service: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a table like { http = "/health" }, or be left out to wait for a TCP connection"#
)]
pub struct RawReady {
    pub http: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = r#"a table like { command = "npm ci", inputs = ["package-lock.json"] }"#)]
pub struct RawStep {
    pub command: Spanned<RawCommand>,
    pub cwd: Option<Spanned<String>>,
    #[serde(default)]
    pub inputs: Vec<Spanned<String>>,
    pub creates: Option<Spanned<String>>,
}

/// `command` is an array of words (each with its own place, for errors), or
/// one string split as a POSIX shell would split it.
pub enum RawCommand {
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
