//! The parser and its validators, fed `ports.toml` texts.

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
    let words: Vec<String> = api.command().unwrap().iter().map(|t| t.render(Some("api"), &p, None)).collect();
    assert_eq!(words, ["uvicorn", "app:app", "--port", "8001", "--db", "host 5433"]);
    assert_eq!(api.ready, Ready::Http("/health".into()));
    assert_eq!(config.services["db"].ready, Ready::Tcp);
    assert_eq!(api.url.render(Some("api"), &p, None), "http://localhost:8001");
    assert_eq!(config.env["DATABASE_URL"].render(None, &p, None), "postgresql://127.0.0.1:5433/app");
    let web = &config.services["web"];
    assert_eq!(web.refers_to(), BTreeSet::from(["api"]));
    assert_eq!(api.refers_to(), BTreeSet::from(["db"]));
    assert_eq!(config.closure(Some(&["api".to_string()])).unwrap(), ["db", "api"]);
    assert_eq!(config.dependents_closure(&["api".to_string()]), ["api", "web"]);
    assert_eq!(api.title(), "Api");
}

/// A service serves HTTP (and has a named URL) when it is ready on an HTTP
/// path, or its URL says http:// or https:// (the default one does).
#[test]
fn which_services_serve_http() {
    let text = "[services.a]\nport = 2000\ncommand = 'x'\n\
                [services.b]\nport = 2001\ncommand = 'x'\nurl = 'https://127.0.0.1:{port}'\n\
                [services.c]\nport = 2002\ncommand = 'x'\nurl = 'redis://127.0.0.1:{port}'\nready = { http = '/' }\n\
                [services.d]\nport = 2003\ncommand = 'x'\nurl = 'postgresql://127.0.0.1:{port}'\n\
                [env]\nX = '{a.public_url} {b.public_url} {c.public_url}'\n";
    let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let http: Vec<(&str, bool)> = config.services.values().map(|s| (s.name.as_str(), s.http)).collect();
    assert_eq!(http, [("a", true), ("b", true), ("c", true), ("d", false)]);
}

#[test]
fn braces_can_be_escaped() {
    let text = "[services.a]\nport = 2000\ncommand = ['echo', '{{\"port\": {port}}}']\n";
    let config = parse(text).unwrap();
    let word = config.services["a"].command().unwrap()[1].render(Some("a"), &ports(&[("a", 2001)]), None);
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
        ("[services.a]\nport = 2000\ncommand = ['x', '--p={nope.port}']\n", (3, 22), "unknown reference {nope.port}"),
        ("[services.a]\nport = 2000\ncommand = 'x {prot}'\n", (3, 14), "unknown reference {prot}"),
        ("[env]\nX = 'http://{port}'\n[services.z]\nport = 2000\ncommand = 'x'\n", (2, 13), "unknown reference {port}"),
        ("[services.a]\nport = 2000\ncommand = 'x \"unclosed'\n", (3, 11), "unclosed quote"),
        ("[services.a]\nport = 2000\ncommand = []\n", (3, 11), "is empty"),
        ("[services.a]\nport = 2000\ncommand = ['', 'x']\n", (3, 12), "starts with an empty program name"),
        ("[services.a]\nport = 2000\ncommand = '\"\" x'\n", (3, 11), "starts with an empty program name"),
        ("[ports]\nrange = [9000, 8000]\n[services.z]\nport = 2000\ncommand = 'x'\n", (2, 9), "range must be"),
        ("[services.a]\nport = 2000\n", (1, 11), "a says nothing to run: give it one of `command`"),
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
            "[services.a]\nport = 2000\ncommand = 'x'\n[env]\nA_PUBLIC_URL = 'x'\n",
            (5, 1),
            "A_PUBLIC_URL is already set",
        ),
        (
            "[services.web_]\nport = 2000\ncommand = 'x'\n[services.web]\nport = 2001\ncommand = 'y'\n",
            (4, 11),
            "web_ and the service web would both be named web in the named URLs (http://web.<checkout>.localhost)",
        ),
        (
            "[services.dashboard]\nport = 2000\ncommand = 'x'\n",
            (1, 11),
            "the dashboard and the service dashboard would both be named dashboard",
        ),
        (
            "[services.dashboard]\nport = 2000\ncommand = 'x'\nurl = 'redis://127.0.0.1:{port}'\n",
            (1, 11),
            "the dashboard and the service dashboard would both be named dashboard",
        ),
        (
            "[services.db]\nport = 2000\nurl = 'redis://127.0.0.1:{port}'\ncommand = 'x'\n[env]\nU = 'x{db.public_url}'\n",
            (6, 7),
            "db has no public_url: only a service that serves HTTP has a named URL",
        ),
        (
            "[services.a]\nport = 2000\ncommand = ['x', '{public_url}']\nurl = 'tcp://h:{port}'\n",
            (3, 18),
            "a has no public_url",
        ),
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
        ("[services.a]\nport = 2000\ncommand = 'x'\ncwd = '/srv/a'\n", (4, 7), "\"/srv/a\" in `cwd` of a is absolute"),
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
    each_error_at_its_place("", cases);
}

/// Each of `cases` (after `head`), a text with one mistake, gives one error
/// at its line and column, saying what the case expects.
fn each_error_at_its_place(head: &str, cases: &[(&str, (usize, usize), &str)]) {
    for (text, (line, col), needle) in cases {
        let text = format!("{head}{text}");
        let errors = parse(&text).expect_err(&text);
        let located = errors.located();
        assert_eq!(located.len(), 1, "{text}: {located:?}");
        let (l, c, msg) = located[0];
        assert!(msg.contains(needle), "{text}: {msg:?} lacks {needle:?}");
        assert_eq!((l, c), (*line, *col), "{text}: {msg}");
    }
}

/// A service runs one of a command, an image and a compose file's service,
/// with the keys of its kind and none of another's.
#[test]
fn containers_errors_name_line_and_column() {
    let a = "[services.a]\nport = 2000\n";
    let cases: &[(&str, (usize, usize), &str)] = &[
        ("command = 'x'\nimage = 'redis:7'\n", (4, 9), "a has both `command` and `image`: a service runs one of"),
        ("compose = { file = 'c.yaml', service = 'db' }\nimage = 'r'\n", (4, 9), "a has both `compose` and `image`"),
        (
            "command = 'x'\ncontainer_port = 80\n",
            (4, 18),
            "`container_port` is for a service with `image`, and a has `command`",
        ),
        ("command = 'x'\nargs = ['-v']\n", (4, 9), "`args` is for a service with `image`"),
        (
            "compose = { file = 'c.yaml', service = 'db' }\nvolumes = ['d:/d']\n",
            (4, 12),
            "`volumes` is for a service with `image`, and a has `compose`",
        ),
        ("image = 'r'\ncwd = 'x'\n", (4, 7), "`cwd` is for a service with `command`, and a has `image`"),
        (
            "compose = { file = 'c.yaml', service = 'db' }\nuser = 'pg'\n",
            (4, 8),
            "`user` is for a service with `command`",
        ),
        (
            "image = '--privileged'\n",
            (3, 9),
            "image of a must be an image's name, like \"redis:7\": \"--privileged\" is not lower-case letters",
        ),
        (
            "image = 'Xtask-test/httpd:1'\n",
            (3, 9),
            "image of a must be an image's name, like \"redis:7\": \"Xtask-test\" has capital letters",
        ),
        ("image = 'redis 7'\n", (3, 9), "image of a must be an image's name"),
        ("image = ''\n", (3, 9), "image of a must be an image's name"),
        ("image = 'r'\ncontainer_port = 0\n", (4, 18), "container_port 0 of a is outside 1..65535"),
        ("image = 'r'\ncontainer_port = 65536\n", (4, 18), "container_port 65536 of a is outside 1..65535"),
        ("image = 'r'\nargs = ['--port', '{nope.port}']\n", (4, 20), "unknown reference {nope.port}"),
        (
            "image = 'r'\nvolumes = ['.data/a']\n",
            (4, 12),
            "\".data/a\" in `volumes` of a must be HOST:INSIDE, or HOST:INSIDE:ro",
        ),
        ("image = 'r'\nvolumes = ['.data/a:data']\n", (4, 12), "must be HOST:INSIDE"),
        ("image = 'r'\nvolumes = [':/data']\n", (4, 12), "must be HOST:INSIDE"),
        ("image = 'r'\nvolumes = ['.data/a:/data:z']\n", (4, 12), "must be HOST:INSIDE"),
        ("image = 'r'\nvolumes = ['.data/a:/data:ro:x']\n", (4, 12), "must be HOST:INSIDE"),
        ("image = 'r'\nvolumes = ['../x:/data']\n", (4, 12), "\"../x\" in `volumes` of a leads out of the checkout"),
        ("image = 'r'\nvolumes = ['/srv:/data']\n", (4, 12), "\"/srv\" in `volumes` of a is absolute"),
        (
            "compose = { file = '../c.yaml', service = 'db' }\n",
            (3, 20),
            "\"../c.yaml\" in `compose.file` of a leads out",
        ),
        (
            "compose = { file = 'c.yaml', service = '-db' }\n",
            (3, 40),
            "\"-db\" in `compose.service` of a is not a compose service's name",
        ),
        ("compose = { file = 'c.yaml' }\n", (3, 11), "missing field `service`"),
        ("compose = { file = 'c.yaml', service = 'db', project = 'p' }\n", (3, 46), "unknown field `project`"),
        (
            "compose = 'compose.yaml'\n",
            (3, 11),
            "services.a.compose is 'compose.yaml', but must be a table like { file = \"compose.yaml\", service = \"db\" }",
        ),
        (
            "compose = { file = 'c.yaml', service = 'db' }\nenv = { X = '1', A_PORT = '5' }\n",
            (4, 18),
            "`env` of a sets A_PORT, which .env.runtime sets",
        ),
        (
            "compose = { file = 'c.yaml', service = 'db' }\nenv = { DB = '{a.port}' }\n[env]\nDB = 'x'\n",
            (4, 9),
            "`env` of a sets DB, which .env.runtime sets",
        ),
        (
            "compose = { file = 'c.yaml', service = 'db' }\n[services.b]\nport = 2001\ncompose = { file = 'd.yaml', service = 'db' }\n",
            (6, 40),
            "a and b both run the compose service \"db\": the checkout's compose project has one container of that name",
        ),
    ];
    each_error_at_its_place(a, cases);
}

#[test]
fn parses_services_in_containers() {
    let text = r#"
[services.cache]
port = 6379
image = "redis:7"
args = ["--port", "{port}", "--replica-of", "{db.port}"]
volumes = [".data/cache:/data", "conf/redis.conf:/etc/redis.conf:ro"]
env = { A = "1" }

[services.web]
port = 8080
image = "httpd"
container_port = 80

[services.db]
port = 5432
compose = { file = "compose.yaml", service = "postgres" }
"#;
    let config = parse(text).unwrap();
    let Run::Image(cache) = &config.services["cache"].run else { panic!("{:?}", config.services["cache"].run) };
    assert_eq!((cache.image.as_str(), cache.container_port), ("redis:7", 6379), "the preferred port by default");
    let args: Vec<String> =
        cache.args.iter().map(|t| t.render(Some("cache"), &ports(&[("cache", 6380), ("db", 5433)]), None)).collect();
    assert_eq!(args, ["--port", "6380", "--replica-of", "5433"]);
    let volumes: Vec<(&str, &str)> = cache.volumes.iter().map(|v| (v.host.as_str(), v.inside.as_str())).collect();
    assert_eq!(volumes, [(".data/cache", "/data"), ("conf/redis.conf", "/etc/redis.conf:ro")]);
    assert_eq!(config.services["cache"].refers_to(), BTreeSet::from(["db"]));
    assert!(config.services["cache"].in_container() && config.services["cache"].command().is_none());
    let Run::Image(web) = &config.services["web"].run else { panic!() };
    assert_eq!(web.container_port, 80);
    let db = &config.services["db"];
    assert_eq!(db.run, Run::Compose(ComposeService { file: "compose.yaml".into(), service: "postgres".into() }));
    assert_eq!(db.place(Path::new("ports.toml"), "compose"), "ports.toml:16:11");
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
    let bytes = b"[services.a]\nport = 2000 # caf\xc3\xa9 \xff\ncommand = 'x'\n".to_vec();
    let shown = decode(bytes).unwrap_err().with_path(Path::new("/r/ports.toml")).to_string();
    let want = "/r/ports.toml:2:20: the byte 0xff is not UTF-8: save ports.toml as UTF-8";
    assert!(shown.starts_with(want), "{shown}");
    assert!(shown.contains("nothing was started or written"), "{shown}");
}

#[test]
fn display_names_the_file_and_says_what_to_do() {
    let errors = parse("[services.a]\nport = 0\ncommand = 'x'\n").unwrap_err().with_path(Path::new("/r/ports.toml"));
    let shown = errors.to_string();
    assert!(shown.starts_with("/r/ports.toml:2:8: port 0 of a is outside 1..65535"), "{shown}");
    assert!(shown.contains("nothing was started or written"), "{shown}");
}
