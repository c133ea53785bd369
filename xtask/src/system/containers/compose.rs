//! Compose, for a service of an existing compose file: its command line
//! (pure). The file's `ports:` interpolate the variables of `.env.runtime`,
//! passed as the env file, under a project of the checkout's. Its container
//! is stopped as any other, through the engine (`Backing`).

use std::path::PathBuf;

/// Which compose there is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compose {
    /// `docker compose` (v2): the engine's program, with its plugin.
    Plugin(String),
    /// `docker-compose` (v1): its program.
    Standalone(String),
}

/// A compose file as the runner runs it.
#[derive(Debug, Clone)]
pub struct ComposeFile {
    /// `Identity::project`: two checkouts never share containers, networks or volumes.
    pub project: String,
    pub file: PathBuf,
    /// `.env.runtime`, absolute (compose resolves a relative one from its
    /// working folder). Compose reads a variable from its own environment
    /// first: the command must run without other values of these names.
    pub env_file: PathBuf,
}

impl Compose {
    /// `up` of one service in the foreground, its output the service's log:
    /// without compose's colours (written even to a pipe) or its `name |`
    /// prefix (the runner prefixes lines itself), and without the compose
    /// file's `depends_on` (the runner starts each service it is told of, so
    /// that one client runs one container, which `docker stop` ends).
    pub fn up(&self, file: &ComposeFile, service: &str) -> Vec<String> {
        self.command(file, &["up", "--no-deps", "--no-log-prefix", service])
    }

    fn command(&self, file: &ComposeFile, verb: &[&str]) -> Vec<String> {
        let mut argv = match self {
            Compose::Plugin(docker) => vec![docker.clone(), "compose".into()],
            Compose::Standalone(compose) => vec![compose.clone()],
        };
        let (path, env_file) = (file.file.to_string_lossy(), file.env_file.to_string_lossy());
        let options = ["--ansi", "never", "-p", &file.project, "-f", &path, "--env-file", &env_file];
        argv.extend(options.iter().chain(verb).map(|w| (*w).to_owned()));
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argvs_of_both_versions() {
        let file = ComposeFile {
            project: "xtask-app-36118851a1fd8860".into(),
            file: "/src/app/compose.yaml".into(),
            env_file: "/src/app/.env.runtime".into(),
        };
        let common =
            "--ansi never -p xtask-app-36118851a1fd8860 -f /src/app/compose.yaml --env-file /src/app/.env.runtime";
        let rows = [
            (Compose::Plugin("/usr/bin/docker".into()), "/usr/bin/docker compose"),
            (Compose::Standalone("/usr/bin/docker-compose".into()), "/usr/bin/docker-compose"),
        ];
        for (compose, program) in rows {
            assert_eq!(
                compose.up(&file, "db").join(" "),
                format!("{program} {common} up --no-deps --no-log-prefix db")
            );
        }
        // Words stay whole: a path with a space is one argument.
        let spaced = ComposeFile { file: "/my app/compose.yaml".into(), ..file };
        assert!(Compose::Standalone("dc".into()).up(&spaced, "db").contains(&"/my app/compose.yaml".to_owned()));
    }
}
