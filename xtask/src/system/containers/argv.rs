//! The docker CLI's command lines (pure): the arguments after the program,
//! which `Engine::argv` puts first.

use std::path::PathBuf;
use std::time::Duration;

use super::identity::Identity;
use super::listing::FORMAT;

/// A service's container, as `ports.toml` describes it.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub image: String,
    /// The allocated host port, the one `.env.runtime` names.
    pub port: u16,
    /// The port the server listens on inside.
    pub container_port: u16,
    pub env: Vec<(String, String)>,
    /// A host folder (absolute: resolved from the checkout; without `:`,
    /// which `-v` splits on) and where it goes inside (`/data`, `/data:ro`).
    pub volumes: Vec<(PathBuf, String)>,
    /// The image's command's arguments.
    pub args: Vec<String>,
}

/// `docker run` of `service` in the foreground, its output the service's
/// log. `--rm`: the daemon removes the container once it stops, whoever
/// stops it. `--sig-proxy=false`: a signal to the client is not passed on,
/// so the container stops only through `docker stop`, with the service's
/// grace (the client's death, even a SIGKILL, never stops it). Published on
/// 127.0.0.1 alone, as every service of the runner listens.
pub fn run(id: &Identity, service: &str, spec: &RunSpec) -> Vec<String> {
    let mut argv = words(&["run", "--rm", "--sig-proxy=false", "--name", &id.container(service)]);
    for label in id.labels(service) {
        argv.extend(["--label".into(), label]);
    }
    argv.extend(["-p".into(), format!("127.0.0.1:{}:{}", spec.port, spec.container_port)]);
    for (key, value) in &spec.env {
        argv.extend(["-e".into(), format!("{key}={value}")]);
    }
    for (host, inside) in &spec.volumes {
        argv.extend(["-v".into(), format!("{}:{inside}", host.display())]);
    }
    argv.push(spec.image.clone());
    argv.extend(spec.args.iter().cloned());
    argv
}

/// TERM to the container's first process, KILL after `grace` (whole
/// seconds, rounded up: a grace is never cut short).
pub fn stop(name: &str, grace: Duration) -> Vec<String> {
    words(&["stop", "-t", &grace.as_secs_f64().ceil().to_string(), name])
}

/// Removes containers, running or not (`created` ones too, which a client
/// killed while starting leaves behind, despite `--rm`).
pub fn remove(ids: &[String]) -> Vec<String> {
    let mut argv = words(&["rm", "-f"]);
    argv.extend(ids.iter().cloned());
    argv
}

/// Every container all of `filters` match (`label=k=v`), running or not.
pub fn list(filters: &[String]) -> Vec<String> {
    let mut argv = words(&["ps", "-a"]);
    argv.extend(filters.iter().flat_map(|f| ["--filter".to_owned(), f.clone()]));
    argv.extend(words(&["--format", FORMAT]));
    argv
}

/// The running containers, with the ports they publish.
pub fn running() -> Vec<String> {
    words(&["ps", "--format", FORMAT])
}

/// KILL to the container's processes: a stop whose grace is cut short.
pub fn kill(name: &str) -> Vec<String> {
    words(&["kill", name])
}

/// Removes the networks `filter` matches that no container uses: a compose
/// project's, once its last container is gone.
pub fn prune_networks(filter: &str) -> Vec<String> {
    words(&["network", "prune", "-f", "--filter", filter])
}

/// A line each: whether it runs; its health, `null` for a container
/// without a health check (which `{{.State.Health.Status}}` would make an
/// error); its addresses on its networks; the ports it publishes.
pub fn inspect(name: &str) -> Vec<String> {
    words(&["inspect", "--format", INSPECT, name])
}

const INSPECT: &str = concat!(
    "{{json .State.Running}}\n{{json .State.Health}}\n",
    "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}\n{{json .NetworkSettings.Ports}}"
);

/// Answered only by a daemon: the client fails when it cannot reach one.
/// The server's version, empty where it has none (podman without a service).
pub fn version() -> Vec<String> {
    words(&["version", "--format", "{{with .Server}}{{.Version}}{{end}}"])
}

fn words(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn run_argv() {
        let id = Identity::of(Path::new("/src/app"));
        let name = id.container("cache");
        let mut spec = RunSpec { image: "redis:7".into(), port: 6380, container_port: 6379, ..Default::default() };
        let head = [
            "run",
            "--rm",
            "--sig-proxy=false",
            "--name",
            &name,
            "--label",
            "dev.xtask.checkout=/src/app",
            "--label",
            "dev.xtask.service=cache",
            "-p",
            "127.0.0.1:6380:6379",
        ];
        assert_eq!(run(&id, "cache", &spec), [&head[..], &["redis:7"]].concat());
        spec.env = vec![("A".into(), "1 2".into()), ("B".into(), String::new())];
        spec.volumes = vec![("/src/app/.data/redis".into(), "/data".into()), ("/etc/x".into(), "/x:ro".into())];
        spec.args = vec!["--save".into(), String::new()];
        let tail = ["-e", "A=1 2", "-e", "B=", "-v", "/src/app/.data/redis:/data", "-v", "/etc/x:/x:ro", "redis:7"];
        assert_eq!(run(&id, "cache", &spec), [&head[..], &tail, &["--save", ""]].concat());
    }

    #[test]
    fn other_argvs() {
        let filters = ["label=k=v".to_owned(), "label=a=b".into()];
        let rows: [(Vec<String>, &[&str]); 11] = [
            (stop("c", Duration::from_secs(5)), &["stop", "-t", "5", "c"]),
            (stop("c", Duration::from_millis(1500)), &["stop", "-t", "2", "c"]),
            (stop("c", Duration::ZERO), &["stop", "-t", "0", "c"]),
            (kill("c"), &["kill", "c"]),
            (remove(&["a1".into(), "b2".into()]), &["rm", "-f", "a1", "b2"]),
            (list(&filters[..1]), &["ps", "-a", "--filter", "label=k=v", "--format", FORMAT]),
            (list(&filters), &["ps", "-a", "--filter", "label=k=v", "--filter", "label=a=b", "--format", FORMAT]),
            (running(), &["ps", "--format", FORMAT]),
            (prune_networks("label=k=v"), &["network", "prune", "-f", "--filter", "label=k=v"]),
            (inspect("c"), &["inspect", "--format", INSPECT, "c"]),
            (version(), &["version", "--format", "{{with .Server}}{{.Version}}{{end}}"]),
        ];
        for (argv, want) in rows {
            assert_eq!(argv, want);
        }
    }
}
