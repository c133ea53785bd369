//! What a service runs, checked: exactly one of `command`, `image` and
//! `compose`, with the keys of its kind; an image's volumes; a compose
//! service, which one checkout runs once, and whose `env` may not repeat
//! `.env.runtime`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;

use super::Validator;
use crate::model::config::raw::{RawCompose, RawService};
use crate::model::config::reference;
use crate::model::config::template::Scope;
use crate::model::config::{ComposeService, Image, Run, Volume, env_prefix};

/// The key that says what a service runs, and where, when one does.
pub(super) fn run_key(raw: &RawService) -> Option<(&'static str, Range<usize>)> {
    let command = raw.command.as_ref().map(|c| ("command", c.span()));
    let image = || raw.image.as_ref().map(|i| ("image", i.span()));
    command.or_else(image).or_else(|| raw.compose.as_ref().map(|c| ("compose", c.span())))
}

impl Validator<'_> {
    /// What a service runs: exactly one of `command`, `image` and `compose`,
    /// with the keys that go with it and none that do not.
    pub(super) fn run(&mut self, key: &Spanned<String>, raw: &RawService, port: u16, scope: &Scope) -> Option<Run> {
        let name = key.get_ref().as_str();
        let mut given: Vec<(&str, Range<usize>)> = [
            ("command", raw.command.as_ref().map(|c| c.span())),
            ("image", raw.image.as_ref().map(|i| i.span())),
            ("compose", raw.compose.as_ref().map(|c| c.span())),
        ]
        .into_iter()
        .filter_map(|(key, span)| Some((key, span?)))
        .collect();
        given.sort_by_key(|(_, span)| span.start); // the second written is blamed
        match given.as_slice() {
            [] => {
                self.error(
                    key.span(),
                    format!(
                        "{name} says nothing to run: give it one of `command` (like \"server --port {{port}}\"), \
                         `image` (like \"redis:7\") or `compose` (like {{ file = \"compose.yaml\", service = \"db\" }})"
                    ),
                );
                return None;
            }
            [(first, _), (second, span), ..] => {
                self.error(
                    span.clone(),
                    format!("{name} has both `{first}` and `{second}`: a service runs one of `command`, `image` and `compose`: keep one"),
                );
                return None;
            }
            [_] => {}
        }
        // Keys of one kind of service: an image's, and a command's (a
        // container runs in the engine's folder, as the engine's user).
        let kind = given[0].0;
        let keyed = [
            ("container_port", "image", raw.container_port.as_ref().map(|p| p.span())),
            ("args", "image", raw.args.first().map(|a| a.span())),
            ("volumes", "image", raw.volumes.first().map(|v| v.span())),
            ("cwd", "command", raw.cwd.as_ref().map(|c| c.span())),
            ("user", "command", raw.user.as_ref().map(|u| u.span())),
        ];
        for (key, fits, span) in keyed {
            if let Some(span) = span.filter(|_| fits != kind) {
                self.error(span, format!("`{key}` is for a service with `{fits}`, and {name} has `{kind}`: remove it"));
            }
        }
        if let Some(command) = &raw.command {
            let words = self.words(command, &format!("command of {name}"))?;
            let command = words
                .iter()
                .map(|(span, word)| self.template(&Spanned::new(span.clone(), word.clone()), Some(name), scope))
                .collect::<Option<Vec<_>>>()?;
            return Some(Run::Command(command));
        }
        if let Some(compose) = &raw.compose {
            return Some(Run::Compose(self.compose(name, compose.get_ref())));
        }
        let image = raw.image.as_ref()?;
        let reference = image.get_ref();
        if let Some(problem) = reference::problem(reference) {
            self.error(image.span(), format!("image of {name} must be an image's name, like \"redis:7\": {problem}"));
        }
        let container_port = match &raw.container_port {
            None => port,
            Some(p) => match u16::try_from(*p.get_ref()) {
                Ok(p) if p >= 1 => p,
                _ => {
                    self.error(p.span(), format!("container_port {} of {name} is outside 1..65535", p.get_ref()));
                    0
                }
            },
        };
        let args = raw.args.iter().map(|a| self.template(a, Some(name), scope)).collect::<Option<Vec<_>>>()?;
        let volumes = raw.volumes.iter().map(|v| self.volume(name, v)).collect();
        Some(Run::Image(Image { image: reference.clone(), container_port, args, volumes }))
    }

    /// `HOST:INSIDE` or `HOST:INSIDE:ro` (or `:rw`): a path of the checkout,
    /// and an absolute one inside. `docker run -v` splits on `:`, so neither
    /// may hold another; the host path is given absolute (a bare name would
    /// be a named volume).
    pub(super) fn volume(&mut self, name: &str, raw: &Spanned<String>) -> Volume {
        let text = raw.get_ref();
        let mut parts = text.split(':');
        let (host, inside, options) = (parts.next().unwrap_or_default(), parts.next(), parts.next());
        let options_ok = options.is_none_or(|o| o == "ro" || o == "rw");
        match inside {
            Some(inside) if !host.is_empty() && inside.starts_with('/') && options_ok && parts.next().is_none() => {
                let host = self.inside(&Spanned::new(raw.span(), host.to_owned()), "volumes", name);
                let inside = options.map_or_else(|| inside.to_owned(), |o| format!("{inside}:{o}"));
                Volume { host, inside }
            }
            _ => {
                self.error(
                    raw.span(),
                    format!(
                        "{text:?} in `volumes` of {name} must be HOST:INSIDE, or HOST:INSIDE:ro, with a path of \
                         the checkout and an absolute one inside, like \".data/{name}:/data\""
                    ),
                );
                Volume { host: String::new(), inside: String::new() }
            }
        }
    }

    /// A service of a compose file of the checkout.
    pub(super) fn compose(&mut self, name: &str, raw: &RawCompose) -> ComposeService {
        let file = self.inside(&raw.file, "compose.file", name);
        let service = raw.service.get_ref();
        // Compose's own rule for a service's name.
        let ok = service.starts_with(|c: char| c.is_ascii_alphanumeric())
            && service.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !ok {
            self.error(
                raw.service.span(),
                format!("{service:?} in `compose.service` of {name} is not a compose service's name"),
            );
        }
        ComposeService { file, service: service.clone() }
    }

    /// A checkout runs its compose services in one project: two services of
    /// `ports.toml` naming one compose service (of one file, or of two)
    /// would be one container.
    pub(super) fn unique_compose_services(&mut self, services: &BTreeMap<Spanned<String>, RawService>) {
        let mut composed: Vec<(&str, &Spanned<String>)> = services
            .iter()
            .filter_map(|(name, s)| Some((name.get_ref().as_str(), &s.compose.as_ref()?.get_ref().service)))
            .collect();
        composed.sort_by_key(|(_, service)| service.span().start);
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, service) in composed {
            if let Some(first) = seen.insert(service.get_ref(), name) {
                self.error(
                    service.span(),
                    format!(
                        "{first} and {name} both run the compose service {:?}: the checkout's compose project has one \
                         container of that name, for one service of ports.toml: keep one",
                        service.get_ref()
                    ),
                );
            }
        }
    }

    /// Compose reads `.env.runtime`, its env file, and a compose service's
    /// `env`, its environment, which wins: one must not say another value
    /// of a variable of the other.
    pub(super) fn compose_env(
        &mut self,
        services: &BTreeMap<Spanned<String>, RawService>,
        http: &BTreeSet<String>,
        env: &BTreeMap<Spanned<String>, Spanned<String>>,
    ) {
        let runtime: BTreeSet<String> = services
            .keys()
            .flat_map(|name| {
                let p = env_prefix(name.get_ref());
                let public = http.contains(name.get_ref()).then(|| format!("{p}_PUBLIC_URL"));
                [format!("{p}_PORT"), format!("{p}_URL")].into_iter().chain(public)
            })
            .chain(env.keys().map(|k| k.get_ref().clone()))
            .collect();
        for (name, service) in services.iter().filter(|(_, s)| s.compose.is_some()) {
            for key in service.env.keys().filter(|k| runtime.contains(k.get_ref())) {
                self.error(
                    key.span(),
                    format!(
                        "`env` of {} sets {}, which .env.runtime sets, and compose would take this value over \
                         the one its env file (.env.runtime) gives: remove it",
                        name.get_ref(),
                        key.get_ref()
                    ),
                );
            }
        }
    }
}
