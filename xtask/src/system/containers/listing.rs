//! What the engine says about containers: the lines `docker ps` prints in
//! our format, and a container's health, parsed (pure).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer};

/// The Go template `docker ps` prints each container with: one JSON object
/// a line, labels by key (`identity`'s). Not `{{json .}}`: its `Labels` is one string of
/// `k=v` joined by commas, which a checkout's path may hold too.
pub const FORMAT: &str = concat!(
    r#"{"id":{{json .ID}},"name":{{json .Names}},"image":{{json .Image}},"#,
    r#""state":{{json .State}},"ports":{{json .Ports}},"#,
    r#""checkout":{{json (.Label "dev.xtask.checkout")}},"service":{{json (.Label "dev.xtask.service")}},"#,
    r#""project":{{json (.Label "com.docker.compose.project")}},"#,
    r#""compose_service":{{json (.Label "com.docker.compose.service")}}}"#,
);

/// A container as `docker ps` lists it. A label it lacks is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    /// `created`, `running`, `exited`, ...
    pub state: String,
    /// As `docker ps` shows them: `127.0.0.1:18080->8080/tcp`.
    pub ports: String,
    #[serde(deserialize_with = "label")]
    pub checkout: Option<String>,
    #[serde(deserialize_with = "label")]
    pub service: Option<String>,
    #[serde(deserialize_with = "label")]
    pub project: Option<String>,
    #[serde(deserialize_with = "label")]
    pub compose_service: Option<String>,
}

impl Container {
    /// The host ports it publishes for TCP, from `ports`
    /// (`0.0.0.0:8000-8001->8000-8001/tcp, :::8000-8001->...`).
    pub fn host_ports(&self) -> BTreeSet<u16> {
        let mut found = BTreeSet::new();
        for mapping in self.ports.split(", ") {
            let Some((host, inside)) = mapping.split_once("->") else { continue }; // exposed, not published
            let Some((_, ports)) = host.rsplit_once(':').filter(|_| inside.ends_with("/tcp")) else { continue };
            let (lo, hi) = ports.split_once('-').unwrap_or((ports, ports));
            if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>()) {
                found.extend(lo..=hi);
            }
        }
        found
    }
}

/// A container as `docker inspect` shows it (`argv::inspect`), for readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub running: bool,
    pub health: Health,
    /// Its addresses on its networks (none on the host's network).
    pub addresses: Vec<IpAddr>,
    /// Each host port it publishes for TCP, with the port inside it leads to.
    pub published: Vec<(u16, u16)>,
}

impl Inspected {
    /// The port inside that host port `port` leads to, if it publishes it.
    pub fn port_inside(&self, port: u16) -> Option<u16> {
        self.published.iter().find_map(|(host, inside)| (*host == port).then_some(*inside))
    }
}

/// `{{.Label "k"}}` prints an empty string for a label a container lacks.
fn label<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(String::deserialize(d)?).filter(|v| !v.is_empty()))
}

/// The containers in the output of `docker ps --format FORMAT`.
pub fn containers(text: &str) -> anyhow::Result<Vec<Container>> {
    let lines = text.lines().filter(|l| !l.trim().is_empty());
    lines.map(|l| serde_json::from_str(l).with_context(|| format!("unexpected line from docker ps: {l}"))).collect()
}

/// A container's health, from the image's HEALTHCHECK (or `--health-cmd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// No check is defined: readiness must ask the server itself.
    None,
    Starting,
    Healthy,
    /// With what its last check printed.
    Unhealthy(String),
}

/// What `docker inspect --format` printed for `argv::inspect`: a line
/// each for whether it runs, its health, its addresses and its ports
/// (`{"8080/tcp":[{"HostIp":"127.0.0.1","HostPort":"23580"}],"9000/tcp":null}`).
pub fn inspected(text: &str) -> anyhow::Result<Inspected> {
    type Ports = BTreeMap<String, Option<Vec<Binding>>>;
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Binding {
        host_port: String,
    }
    let unexpected = || format!("unexpected answer from docker inspect: {text}");
    let [running, health_line, addresses, ports] = text.lines().collect::<Vec<_>>()[..] else { bail!(unexpected()) };
    let addresses = addresses.split_whitespace().map(str::parse).collect::<Result<_, _>>().with_context(unexpected)?;
    let ports: Ports = serde_json::from_str::<Option<Ports>>(ports).with_context(unexpected)?.unwrap_or_default();
    let mut published = Vec::new();
    for (inside, bindings) in ports {
        let Some(Ok(inside)) = inside.strip_suffix("/tcp").map(str::parse::<u16>) else { continue };
        let hosts = bindings.into_iter().flatten().filter_map(|b| b.host_port.parse::<u16>().ok());
        published.extend(hosts.map(|host| (host, inside)).filter(|p| !published.contains(p)).collect::<Vec<_>>());
    }
    Ok(Inspected { running: running == "true", health: health(health_line)?, addresses, published })
}

/// The health in the output of `docker inspect --format '{{json .State.Health}}'`:
/// `null` when the container has no check (`{{.State.Health.Status}}` would
/// be an error then).
fn health(text: &str) -> anyhow::Result<Health> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct State {
        status: String,
        #[serde(default)]
        log: Vec<Check>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Check {
        output: String,
    }
    let state: Option<State> =
        serde_json::from_str(text.trim()).with_context(|| format!("unexpected health from docker inspect: {text}"))?;
    let Some(state) = state else { return Ok(Health::None) };
    Ok(match state.status.as_str() {
        "none" => Health::None,
        "starting" => Health::Starting,
        "healthy" => Health::Healthy,
        "unhealthy" => Health::Unhealthy(state.log.last().map(|c| c.output.trim().to_owned()).unwrap_or_default()),
        other => bail!("unexpected health status from docker inspect: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Printed by the docker 28.2.2 and 20.10.24 clients alike (Debian 12's daemon).
    #[test]
    fn lists_containers() {
        let text = concat!(
            r#"{"id":"2ac37e2b79b1","name":"lab-a","image":"xtask-lab/httpd:1","state":"running","ports":"127.0.0.1:23456->8080/tcp","checkout":"/tmp/a,b=c","service":"web","project":"","compose_service":""}"#,
            "\n",
            r#"{"id":"9f1c0b7e2d11","name":"lab_db_1","image":"redis:7","state":"created","ports":"","checkout":"","service":"","project":"lab","compose_service":"db"}"#,
            "\n\n",
        );
        let found = containers(text).unwrap();
        assert_eq!(
            found[0],
            Container {
                id: "2ac37e2b79b1".into(),
                name: "lab-a".into(),
                image: "xtask-lab/httpd:1".into(),
                state: "running".into(),
                ports: "127.0.0.1:23456->8080/tcp".into(),
                checkout: Some("/tmp/a,b=c".into()),
                service: Some("web".into()),
                project: None,
                compose_service: None,
            }
        );
        assert_eq!((found[1].checkout.as_deref(), found[1].project.as_deref()), (None, Some("lab")));
        assert_eq!(found[1].compose_service.as_deref(), Some("db"));
        assert_eq!(containers("").unwrap(), []);
        // `{{json .}}`'s line is not ours: its labels cannot be told apart.
        let theirs = r#"{"ID":"2ac37e2b79b1","Labels":"dev.xtask.checkout=/tmp/a,b=c,dev.xtask.service=web"}"#;
        let error = format!("{:#}", containers(theirs).unwrap_err());
        assert!(error.starts_with("unexpected line from docker ps: {\"ID\""), "{error}");
    }

    #[test]
    fn host_ports_of_what_docker_ps_shows() {
        let rows: [(&str, &[u16]); 7] = [
            ("127.0.0.1:18080->8080/tcp", &[18080]),
            ("0.0.0.0:8080->80/tcp, :::8080->80/tcp", &[8080]),
            ("0.0.0.0:8080->80/tcp, [::]:8080->80/tcp", &[8080]),
            ("0.0.0.0:8000-8002->8000-8002/tcp", &[8000, 8001, 8002]),
            ("8080/tcp", &[]),
            ("127.0.0.1:5353->53/udp, 127.0.0.1:5354->53/tcp", &[5354]),
            ("", &[]),
        ];
        for (ports, want) in rows {
            let container = Container {
                id: "1".into(),
                name: "c".into(),
                image: "i".into(),
                state: "running".into(),
                ports: ports.into(),
                checkout: None,
                service: None,
                project: None,
                compose_service: None,
            };
            assert_eq!(container.host_ports(), want.iter().copied().collect(), "{ports}");
        }
    }

    #[test]
    fn the_format_asks_for_our_labels() {
        use super::super::identity::*;
        for key in [CHECKOUT_LABEL, SERVICE_LABEL, PROJECT_LABEL, COMPOSE_SERVICE_LABEL] {
            assert!(FORMAT.contains(&format!("{{{{json (.Label \"{key}\")}}}}")), "{key}");
        }
    }

    #[test]
    fn reads_health() {
        let rows = [
            ("null\n", Health::None),
            (r#"{"Status":"starting","FailingStreak":0,"Log":[]}"#, Health::Starting),
            (
                r#"{"Status":"healthy","FailingStreak":0,"Log":[{"Start":"2026-12-07T18:20:44.915212105Z","End":"2026-12-07T18:20:44.974501922Z","ExitCode":0,"Output":""}]}"#,
                Health::Healthy,
            ),
            (
                r#"{"Status":"unhealthy","FailingStreak":2,"Log":[{"Start":"2026-12-07T18:20:45.146638234Z","End":"2026-12-07T18:20:45.188464784Z","ExitCode":1,"Output":"refused\n"},{"Start":"2026-12-07T18:20:46.191061667Z","End":"2026-12-07T18:20:46.23877928Z","ExitCode":1,"Output":"failing\n"}]}"#,
                Health::Unhealthy("failing".into()),
            ),
        ];
        for (text, want) in rows {
            assert_eq!(health(text).unwrap(), want, "{text}");
        }
    }

    /// Printed by the 28.2.2 and 20.10.24 clients alike, for `argv::inspect`.
    #[test]
    fn reads_what_readiness_asks() {
        let ports = r#"{"8080/tcp":[{"HostIp":"127.0.0.1","HostPort":"23580"}],"9000/tcp":null,"53/udp":[{"HostIp":"127.0.0.1","HostPort":"5353"}]}"#;
        let two = inspected(&format!("true\nnull\n172.17.0.2 172.18.0.5 \n{ports}\n")).unwrap();
        let addresses: Vec<IpAddr> = vec!["172.17.0.2".parse().unwrap(), "172.18.0.5".parse().unwrap()];
        assert_eq!(two, Inspected { running: true, health: Health::None, addresses, published: vec![(23580, 8080)] });
        assert_eq!((two.port_inside(23580), two.port_inside(5353)), (Some(8080), None));
        // Created, not started; on the host's network (no address, no ports).
        let created = inspected("false\n{\"Status\":\"starting\"}\n\n{}\n").unwrap();
        assert_eq!(
            (created.running, created.health, created.addresses, created.published),
            (false, Health::Starting, vec![], vec![])
        );
        assert!(inspected("true\nnull\n\nnull").unwrap().published.is_empty());
        let error = format!("{:#}", inspected("true\nnull\n").unwrap_err());
        assert!(error.starts_with("unexpected answer from docker inspect"), "{error}");
        for (text, error) in [
            (r#"{"Status":"sleepy"}"#, "unexpected health status from docker inspect: sleepy"),
            ("", "unexpected health from docker inspect: : EOF while parsing"),
        ] {
            let said = format!("{:#}", health(text).unwrap_err());
            assert!(said.starts_with(error), "{said}");
        }
    }
}
