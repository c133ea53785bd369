//! `.env.runtime`: every service's port and URL (and named URL, for one that
//! serves HTTP), and the extra `[env]` lines, so each service knows where
//! the others are (ARCHITECTURE.md, "Generated files").
//! Pure: the engine writes it, only when it would say something else.

use crate::model::book::Ports;
use crate::model::config::Config;
use crate::model::names::Names;

/// The variables, in file order: per service `NAME_PORT`, `NAME_URL` and,
/// for one that serves HTTP once the checkout has names, `NAME_PUBLIC_URL`
/// (services by name), then `[env]` by name.
pub fn vars(config: &Config, ports: &Ports, names: Option<&Names>) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for (name, service) in &config.services {
        let prefix = service.env_prefix();
        let port = ports.get(name).map_or_else(String::new, u16::to_string);
        vars.push((format!("{prefix}_PORT"), port));
        vars.push((format!("{prefix}_URL"), service.url.render(Some(name), ports, names)));
        if let Some(names) = names.filter(|_| service.http) {
            vars.push((format!("{prefix}_PUBLIC_URL"), names.url(name)));
        }
    }
    for (key, template) in &config.env {
        vars.push((key.clone(), template.render(None, ports, names)));
    }
    vars
}

pub fn render(config: &Config, ports: &Ports, names: Option<&Names>) -> String {
    let mut text =
        String::from("# Auto-generated runtime configuration\n# DO NOT EDIT MANUALLY - managed by cargo xtask\n");
    for (key, value) in vars(config, ports, names) {
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
[services.my_web]
port = 3001
command = "w"
ready = { http = "/" }
url = "tcp://127.0.0.1:{port}"
[env]
API_URL = "http://127.0.0.1:{backend.port}"
NEXT_PUBLIC_API_URL = "{backend.public_url}"
"#,
        )
        .unwrap();
        let ports = Ports::from([
            ("backend".into(), 8001),
            ("frontend".into(), 3000),
            ("my-db".into(), 5433),
            ("my_web".into(), 3001),
        ]);
        let names = Names { checkout: "c1".into(), proxy: 7300 };
        assert_eq!(
            render(&config, &ports, Some(&names)),
            "# Auto-generated runtime configuration
# DO NOT EDIT MANUALLY - managed by cargo xtask
BACKEND_PORT=8001
BACKEND_URL=http://127.0.0.1:8001
BACKEND_PUBLIC_URL=http://backend.c1.localhost:7300
FRONTEND_PORT=3000
FRONTEND_URL=http://localhost:3000
FRONTEND_PUBLIC_URL=http://frontend.c1.localhost:7300
MY_DB_PORT=5433
MY_DB_URL=postgresql://127.0.0.1:5433/app
MY_WEB_PORT=3001
MY_WEB_URL=tcp://127.0.0.1:3001
MY_WEB_PUBLIC_URL=http://my-web.c1.localhost:7300
API_URL=http://127.0.0.1:8001
NEXT_PUBLIC_API_URL=http://backend.c1.localhost:7300
"
        );
        // Before the checkout has names: no named URLs, and references to them empty.
        let unnamed = render(&config, &ports, None);
        assert!(!unnamed.contains("PUBLIC_URL=http") && unnamed.contains("NEXT_PUBLIC_API_URL=\n"), "{unnamed}");
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
        let lines: Vec<String> = render(&config, &ports, None).lines().skip(2).map(str::to_owned).collect();
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
