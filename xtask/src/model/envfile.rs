//! `.env.runtime`: every service's port and URL, and the extra `[env]` lines,
//! so each service knows where the others are (ARCHITECTURE.md, "Generated
//! files").
//! Pure: the engine writes it, only when it would say something else.

use crate::model::book::Ports;
use crate::model::config::Config;

/// The variables, in file order: per service `NAME_PORT` and `NAME_URL`
/// (services by name), then `[env]` by name.
pub fn vars(config: &Config, ports: &Ports) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for (name, service) in &config.services {
        let prefix = service.env_prefix();
        let port = ports.get(name).map_or_else(String::new, u16::to_string);
        vars.push((format!("{prefix}_PORT"), port));
        vars.push((format!("{prefix}_URL"), service.url.render(Some(name), ports)));
    }
    for (key, template) in &config.env {
        vars.push((key.clone(), template.render(None, ports)));
    }
    vars
}

pub fn render(config: &Config, ports: &Ports) -> String {
    let mut text =
        String::from("# Auto-generated runtime configuration\n# DO NOT EDIT MANUALLY - managed by cargo xtask\n");
    for (key, value) in vars(config, ports) {
        text += &format!("{key}={}\n", quoted(&value));
    }
    text
}

/// A value as python-dotenv and Node's dotenv both read it back: bare when
/// plain, else in single quotes, which both (and a shell) take literally.
/// `config` rejects what single quotes cannot carry (a quote, a backslash,
/// a line break, `${`). Bare, `#` would start a comment and spaces be trimmed.
fn quoted(value: &str) -> String {
    if value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/@%+,".contains(c)) {
        value.to_owned()
    } else {
        format!("'{value}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config;

    #[test]
    fn golden() {
        let config = config::parse(
            r#"
[services.backend]
port = 8000
url = "http://127.0.0.1:{port}"
command = "x"
[services.frontend]
port = 3000
command = "y"
[services.my-db]
port = 5432
url = "postgresql://127.0.0.1:{port}/app"
command = "z"
[env]
NEXT_PUBLIC_API_URL = "http://127.0.0.1:{backend.port}"
"#,
        )
        .unwrap();
        let ports = Ports::from([("backend".into(), 8001), ("frontend".into(), 3000), ("my-db".into(), 5433)]);
        assert_eq!(
            render(&config, &ports),
            "# Auto-generated runtime configuration
# DO NOT EDIT MANUALLY - managed by cargo xtask
BACKEND_PORT=8001
BACKEND_URL=http://127.0.0.1:8001
FRONTEND_PORT=3000
FRONTEND_URL=http://localhost:3000
MY_DB_PORT=5433
MY_DB_URL=postgresql://127.0.0.1:5433/app
NEXT_PUBLIC_API_URL=http://127.0.0.1:8001
"
        );
    }

    /// Bare, python-dotenv and Node's dotenv would cut `a #b` at `#` and trim
    /// the spaces; in single quotes both read these back unchanged.
    #[test]
    fn values_dotenv_would_change_are_quoted() {
        let config = config::parse(
            "[services.a]\nport = 2000\ncommand = 'x'\nurl = 'http://h:{port}/?q=1#top'\n\
             [env]\nHASH = 'a #b'\nSPACES = ' x '\nPRICE = '$5 {a.port}'\nEMPTY = ''\n",
        )
        .unwrap();
        let ports = Ports::from([("a".into(), 2001)]);
        let lines: Vec<String> = render(&config, &ports).lines().skip(2).map(str::to_owned).collect();
        assert_eq!(
            lines,
            [
                "A_PORT=2001",
                "A_URL='http://h:2001/?q=1#top'",
                "EMPTY=",
                "HASH='a #b'",
                "PRICE='$5 2001'",
                "SPACES=' x '",
            ]
        );
    }
}
