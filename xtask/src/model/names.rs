//! Named URLs (ARCHITECTURE.md, "Named URLs"): `http://<service>.<checkout>.localhost:<proxy port>/`.
//! The DNS-safe labels every part is made of, the labels of services and
//! checkouts, a checkout's URLs, and a request's Host header read as one.

use std::collections::BTreeSet;

/// The name under which a checkout's dashboard is reached: no service may have it.
pub const DASHBOARD: &str = "dashboard";

/// What a checkout's named URLs are made of: its label, and the port of the
/// user's proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub checkout: String,
    pub proxy: u16,
}

impl Names {
    /// `<service>.<checkout>.localhost`, for a service of `ports.toml` (or the dashboard).
    pub fn host(&self, service: &str) -> String {
        format!("{}.{}.localhost", service_label(service), self.checkout)
    }

    /// `http://<service>.<checkout>.localhost:<proxy port>`: `NAME_PUBLIC_URL`.
    pub fn url(&self, service: &str) -> String {
        format!("http://{}:{}", self.host(service), self.proxy)
    }
}

/// A service's label: its name with `_` as `-` (`my_api` -> `my-api`).
/// `ports.toml` refuses two services with one label.
pub fn service_label(name: &str) -> String {
    to_label(name).unwrap_or_default() // a service name starts with a letter
}

/// A checkout's label, from the name of its folder, made unique among
/// `taken` with a number (`app`, `app-2`, ...); `checkout` when the name has
/// nothing a label can hold.
pub fn checkout_label(folder: &str, taken: &BTreeSet<String>) -> String {
    let base = to_label(folder).unwrap_or_else(|| "checkout".into());
    if !taken.contains(&base) {
        return base;
    }
    (2..)
        .map(|n: u32| {
            let suffix = format!("-{n}");
            let cut = base[..base.len().min(63 - suffix.len())].trim_end_matches('-');
            format!("{cut}{suffix}")
        })
        .find(|label| !taken.contains(label))
        .expect("a number that is not taken")
}

/// A Host header understood as a named URL. Both parts are DNS-safe labels,
/// lower-cased (browsers lower-case names; a hand-typed header may not be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub service: String,
    pub checkout: String,
}

/// Why a Host header is not a named URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotNamed {
    /// Not `name[:port]` at all: empty, a character no host name has, a bad port.
    Invalid,
    /// A well-formed name outside `.localhost` (or an IP address): a name that
    /// resolves here only through DNS rebinding or a hand-made request.
    Outside(String),
    /// Under `.localhost`, but not `<service>.<checkout>.localhost`.
    Shape(String),
}

impl Host {
    /// The name as a browser shows it, without the port.
    pub fn name(&self) -> String {
        format!("{}.{}.localhost", self.service, self.checkout)
    }

    /// Reads a Host header. The port, if any, plays no part: routes come from
    /// the name alone, so the header can never steer the proxy to a port.
    pub fn parse(value: &[u8]) -> Result<Host, NotNamed> {
        let value = std::str::from_utf8(value).map_err(|_| NotNamed::Invalid)?;
        let name = match value.strip_prefix('[') {
            // An IPv6 literal, `[::1]:7300`: well-formed, but no name.
            Some(rest) => {
                let (literal, after) = rest.split_once(']').ok_or(NotNamed::Invalid)?;
                if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
                    return Err(NotNamed::Invalid);
                }
                if literal.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(NotNamed::Invalid);
                }
                return Err(NotNamed::Outside(format!("[{literal}]")));
            }
            None => match value.split_once(':') {
                Some((name, port)) if is_port(port) => name,
                Some(_) => return Err(NotNamed::Invalid),
                None => value,
            },
        };
        // One trailing dot is the same name, fully qualified: Chromium sends it
        // as typed (`frontend.c1.localhost.`).
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let well_formed = name
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        if !well_formed {
            return Err(NotNamed::Invalid);
        }
        let labels: Vec<&str> = match name.strip_suffix("localhost") {
            Some("") => Vec::new(),
            Some(before) => match before.strip_suffix('.') {
                Some(before) => before.split('.').collect(),
                None => return Err(NotNamed::Outside(name)), // `mylocalhost`
            },
            None => return Err(NotNamed::Outside(name)),
        };
        match labels[..] {
            [service, checkout] if is_label(service) && is_label(checkout) => {
                Ok(Host { service: service.to_owned(), checkout: checkout.to_owned() })
            }
            _ => Err(NotNamed::Shape(name)),
        }
    }
}

/// 1 to 5 digits, at most 65535.
fn is_port(text: &str) -> bool {
    (1..=5).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

/// Is `text` a DNS-safe label: 1 to 63 lower-case letters, digits and
/// hyphens, neither first nor last a hyphen (RFC 1123)? Underscores, which
/// service names may have, are not: some resolvers and browsers refuse them.
pub fn is_label(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// The DNS-safe label closest to `text` (a folder or service name):
/// lower-cased, every run of other characters turned into one hyphen,
/// trimmed to 63 characters. None if nothing is left. Two texts may give the
/// same label (`my_api`, `my-api`): making labels unique is the caller's part.
pub fn to_label(text: &str) -> Option<String> {
    let mut label = String::new();
    for c in text.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            label.push(c);
        } else if !label.is_empty() && !label.ends_with('-') {
            label.push('-');
        }
    }
    label.truncate(63); // ASCII only, so on a character boundary
    let label = label.trim_end_matches('-');
    (!label.is_empty()).then(|| label.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(service: &str, checkout: &str) -> Result<Host, NotNamed> {
        Ok(Host { service: service.into(), checkout: checkout.into() })
    }

    #[test]
    fn hosts() {
        let outside = |name: &str| Err(NotNamed::Outside(name.into()));
        let shape = |name: &str| Err(NotNamed::Shape(name.into()));
        let cases: &[(&[u8], Result<Host, NotNamed>)] = &[
            (b"frontend.c1.localhost:7300", named("frontend", "c1")),
            (b"frontend.c1.localhost", named("frontend", "c1")),
            (b"Frontend.C1.LOCALHOST.:7300", named("frontend", "c1")), // Chromium keeps the dot
            (b"api-2.my-repo-3.localhost:1", named("api-2", "my-repo-3")),
            (b"frontend.c1.localhost:65535", named("frontend", "c1")),
            // The port is read only to be well-formed.
            (b"frontend.c1.localhost:65536", Err(NotNamed::Invalid)),
            (b"frontend.c1.localhost:", Err(NotNamed::Invalid)),
            (b"frontend.c1.localhost:+80", Err(NotNamed::Invalid)),
            (b"frontend.c1.localhost:80:80", Err(NotNamed::Invalid)),
            (b"", Err(NotNamed::Invalid)),
            (b"frontend..localhost", Err(NotNamed::Invalid)),
            (b"frontend.c1.localhost..", Err(NotNamed::Invalid)),
            (b"front end.c1.localhost", Err(NotNamed::Invalid)),
            (b"user@frontend.c1.localhost", Err(NotNamed::Invalid)),
            (b"frontend.c1.localhost/x", Err(NotNamed::Invalid)),
            (b"fr\xc3\xa9.c1.localhost", Err(NotNamed::Invalid)),
            (b"[::1", Err(NotNamed::Invalid)),
            (b"[nope]:80", Err(NotNamed::Invalid)),
            (b"[::1]x", Err(NotNamed::Invalid)),
            // Outside .localhost.
            (b"example.com", outside("example.com")),
            (b"frontend.c1.localhost.example.com", outside("frontend.c1.localhost.example.com")),
            (b"frontend.mylocalhost", outside("frontend.mylocalhost")),
            (b"127.0.0.1:7300", outside("127.0.0.1")),
            (b"[::1]:7300", outside("[::1]")),
            // Ours, but not a named URL.
            (b"localhost:7300", shape("localhost")),
            (b"c1.localhost", shape("c1.localhost")),
            (b"a.frontend.c1.localhost", shape("a.frontend.c1.localhost")),
            (b"my_api.c1.localhost", shape("my_api.c1.localhost")),
            (b"-x.c1.localhost", shape("-x.c1.localhost")),
        ];
        for (value, expected) in cases {
            assert_eq!(&Host::parse(value), expected, "{}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn labels() {
        let long = "a".repeat(63);
        for good in ["a", "c1", "my-repo", "0day", long.as_str()] {
            assert!(is_label(good), "{good}");
        }
        let too_long = "a".repeat(64);
        for bad in ["", "-a", "a-", "A", "my_api", "a.b", "é", too_long.as_str()] {
            assert!(!is_label(bad), "{bad}");
        }
    }

    #[test]
    fn labels_from_names() {
        let cases = [
            ("i18", Some("i18")),
            ("My Repo (copy)", Some("my-repo-copy")),
            ("my_api", Some("my-api")),
            ("--feature--x--", Some("feature-x")),
            ("café", Some("caf")),
            ("___", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(to_label(text).as_deref(), expected, "{text}");
        }
        let cut = to_label(&format!("{}-b", "a".repeat(62))).unwrap();
        assert_eq!(cut, "a".repeat(62), "cut to 63, then no hyphen at the end");
        for text in ["Weird/Name.git", "x".repeat(100).as_str(), "ß-Ü"] {
            assert!(to_label(text).is_none_or(|l| is_label(&l)), "{text}");
        }
    }

    #[test]
    fn checkout_labels_are_unique() {
        let taken = |labels: &[&str]| labels.iter().map(|l| l.to_string()).collect::<BTreeSet<String>>();
        let long = "a".repeat(70);
        let cases = [
            ("i18", taken(&[]), "i18".to_owned()),
            ("My Feature", taken(&["other"]), "my-feature".to_owned()),
            ("app", taken(&["app"]), "app-2".to_owned()),
            ("App", taken(&["app", "app-2", "app-3"]), "app-4".to_owned()),
            (".tmpAbC12", taken(&[]), "tmpabc12".to_owned()),
            ("___", taken(&[]), "checkout".to_owned()),
            ("___", taken(&["checkout"]), "checkout-2".to_owned()),
            (long.as_str(), taken(&[&long[..63]]), format!("{}-2", &long[..61])),
        ];
        for (folder, taken, expected) in cases {
            let label = checkout_label(folder, &taken);
            assert_eq!(label, expected, "{folder} beside {taken:?}");
            assert!(is_label(&label), "{label}");
        }
    }

    #[test]
    fn named_urls() {
        let names = Names { checkout: "i18".into(), proxy: 7300 };
        assert_eq!(names.url("frontend"), "http://frontend.i18.localhost:7300");
        assert_eq!(names.url("my_api"), "http://my-api.i18.localhost:7300");
        assert_eq!(names.host(DASHBOARD), "dashboard.i18.localhost");
        let host = Host::parse(format!("{}:7300", names.host("my_api")).as_bytes()).unwrap();
        assert_eq!((host.service.as_str(), host.checkout.as_str()), ("my-api", "i18"));
    }
}
