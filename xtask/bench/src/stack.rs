//! The stacks of tiny services the cases run: each a listener with a
//! start-up delay, written as the runner's `ports.toml` and as the
//! baseline's `services.sh`.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

/// A service that does nothing but start: it sleeps its start-up delay
/// (second argument), then accepts connections on its port (first argument).
/// Perl with only `Socket` loaded answers about 15 ms after it is spawned
/// (case 4 measures it), so what is measured around it is the tool that
/// starts it. (No braces: ports.toml would read them as references.)
const LISTENER: &str = "select(undef,undef,undef,$ARGV[1]); socket(my $s,PF_INET,SOCK_STREAM,0) or die $!; \
    setsockopt($s,SOL_SOCKET,SO_REUSEADDR,1); bind($s,pack_sockaddr_in($ARGV[0],INADDR_LOOPBACK)) or die $!; \
    listen($s,16) or die $!; close C while accept(C,$s)";

/// A service of a bench stack: `LISTENER` with a start-up delay.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    pub name: &'static str,
    /// Seconds from start until it listens.
    pub delay: f64,
    pub after: &'static [&'static str],
}

impl Service {
    pub fn new(name: &'static str, delay: f64, after: &'static [&'static str]) -> Service {
        Service { name, delay, after }
    }

    /// A stack shaped like a real one: db, cache, queue and search start at
    /// once; api needs db and cache, worker needs queue and db, web needs
    /// api. The critical path db-api-web is 1.0 s; one after another they
    /// take 2.6 s. Without delays, the same stack ready at once.
    pub fn stack(delays: bool) -> Vec<Service> {
        let delay = |seconds: f64| if delays { seconds } else { 0.0 };
        vec![
            Service::new("db", delay(0.4), &[]),
            Service::new("cache", delay(0.3), &[]),
            Service::new("queue", delay(0.4), &[]),
            Service::new("search", delay(0.5), &[]),
            Service::new("api", delay(0.3), &["db", "cache"]),
            Service::new("worker", delay(0.4), &["queue", "db"]),
            Service::new("web", delay(0.3), &["api"]),
        ]
    }

    /// Four services without delays, for the cases about a running stack.
    pub fn four() -> Vec<Service> {
        Service::stack(false).into_iter().take(4).collect()
    }

    /// Its command line; `port` is a number, or a template's `{port}`.
    pub fn command(&self, port: impl fmt::Display) -> Vec<String> {
        ["perl", "-MSocket", "-e", LISTENER]
            .map(String::from)
            .into_iter()
            .chain([port.to_string(), self.delay.to_string()])
            .collect()
    }
}

/// The longest chain of start-up delays, and how many services are on it:
/// no tool can have the stack ready sooner.
pub fn critical_path(stack: &[Service]) -> (f64, usize) {
    fn ready_at(stack: &[Service], name: &str) -> (f64, usize) {
        let service = find(stack, name);
        let (before, chain) = service.after.iter().map(|d| ready_at(stack, d)).fold((0.0, 0), longer);
        (before + service.delay, chain + 1)
    }
    fn longer(a: (f64, usize), b: (f64, usize)) -> (f64, usize) {
        if b > a { b } else { a }
    }
    stack.iter().map(|s| ready_at(stack, s.name)).fold((0.0, 0), longer)
}

/// `names` and every service they need, directly or not.
pub fn needed<'a>(stack: &'a [Service], names: &[&'a str]) -> BTreeSet<&'a str> {
    let mut needed = BTreeSet::new();
    let mut todo = names.to_vec();
    while let Some(name) = todo.pop() {
        if needed.insert(name) {
            todo.extend(find(stack, name).after);
        }
    }
    needed
}

fn find<'a>(stack: &'a [Service], name: &str) -> &'a Service {
    stack.iter().find(|s| s.name == name).expect("a dependency is in the stack")
}

/// The stack as the runner's `ports.toml`, on ports from `base` up.
pub fn ports_toml(stack: &[Service], base: u16) -> String {
    let mut text = String::new();
    for (port, service) in (base..).zip(stack) {
        let command = toml_strings(service.command("{port}").iter().map(String::as_str));
        let after = toml_strings(service.after.iter().copied());
        text +=
            &format!("[services.{}]\nport = {port}\ncommand = [{command}]\ndepends_on = [{after}]\n\n", service.name);
    }
    text
}

/// Words as the items of a TOML array: a JSON string is also a TOML basic string.
fn toml_strings<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words.into_iter().map(|w| Value::from(w).to_string()).collect::<Vec<_>>().join(", ")
}

/// The stack as the baseline's `services.sh`, in start order.
pub fn services_sh(stack: &[Service], base: u16) -> anyhow::Result<String> {
    let mut text = String::from("# service NAME PORT COMMAND...; {port} is the service's port\n");
    for (port, service) in (base..).zip(stack) {
        let words = service.command("{port}");
        let quoted = words.iter().map(|w| shlex::try_quote(w)).collect::<Result<Vec<_>, _>>()?;
        text += &format!("service {} {port} {}\n", service.name, quoted.join(" "));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_critical_path_is_the_longest_chain() {
        let (seconds, chain) = critical_path(&Service::stack(true));
        assert!((seconds - 1.0).abs() < 1e-9, "{seconds}");
        assert_eq!(chain, 3); // db, api, web
        assert_eq!(critical_path(&[Service::new("x", 0.5, &[])]), (0.5, 1));
    }

    #[test]
    fn a_service_needs_what_its_dependencies_need() {
        let stack = Service::stack(true);
        assert_eq!(needed(&stack, &["web"]), BTreeSet::from(["web", "api", "db", "cache"]));
        assert_eq!(needed(&stack, &["worker", "db"]), BTreeSet::from(["worker", "queue", "db"]));
    }
}
