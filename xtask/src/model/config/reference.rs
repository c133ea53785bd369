//! An image's reference, `[host[:port]/]path[:tag][@digest]`, checked by the
//! grammar Docker's own parser applies (distribution's `reference`), so that
//! a name `docker run` would refuse is an error at its place in `ports.toml`
//! before anything is stopped, killed or written.

/// What is wrong with `reference`, if anything.
pub fn problem(reference: &str) -> Option<String> {
    if reference.is_empty() {
        return Some("it is empty".into());
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest
        && !is_digest(digest)
    {
        return Some(format!("its digest {digest:?} is not ALGORITHM:HEX (like sha256: and 64 hex digits)"));
    }
    // A tag follows the last `:` that comes after the last `/` (a host's port comes before it).
    let (name, tag) = match rest.rfind(':').filter(|&colon| !rest[colon..].contains('/')) {
        Some(colon) => (&rest[..colon], Some(&rest[colon + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag
        && !is_tag(tag)
    {
        return Some(format!("its tag {tag:?} is not letters, digits, `_`, `.` and `-` (128 at most)"));
    }
    if name.len() > 255 {
        return Some("its name is over 255 characters".into());
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // The first part is a registry's host when it could not be a path's.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        if !is_host(host) {
            return Some(format!("{host:?} is no registry's host[:port]"));
        }
    }
    match parts.iter().find(|part| !is_path_part(part)) {
        Some(part) if part.bytes().any(|b| b.is_ascii_uppercase()) => {
            Some(format!("{part:?} has capital letters: a repository's name is in lower case"))
        }
        Some(part) => {
            Some(format!("{part:?} is not lower-case letters and digits, joined by `.`, `_`, `__` or dashes"))
        }
        None => None,
    }
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or any run of `-`.
fn is_path_part(part: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = part.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else { return false };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between two alphanumeric runs: exactly one of the separators.
    let separators = part.split(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()).filter(|s| !s.is_empty());
    separators.into_iter().all(|s| s == "." || s == "_" || s == "__" || s.bytes().all(|b| b == b'-'))
}

/// A host name's labels (letters, digits, inner dashes) and an optional port.
fn is_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    name.split('.').all(label)
        && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    tag.len() <= 128 && tag.bytes().next().is_some_and(word) && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

/// `ALGORITHM:HEX`, the hex of 32 digits or more.
fn is_digest(digest: &str) -> bool {
    digest.split_once(':').is_some_and(|(algorithm, hex)| {
        algorithm.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && algorithm.bytes().all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b))
            && hex.len() >= 32
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::problem;

    #[test]
    fn what_docker_takes() {
        let sha = "sha256:".to_owned() + &"ab".repeat(32);
        for good in [
            "redis:7".to_owned(),
            "postgres".into(),
            "library/postgres:16-alpine".into(),
            "xtask-test/httpd:1".into(),
            "ghcr.io/org/app_one/web__x:v1.2_rc-3".into(),
            "Registry.Example.com:5000/team/app:latest".into(),
            "localhost:5000/app".into(),
            "a--b".into(),
            format!("redis@{sha}"),
            format!("redis:7@{sha}"),
        ] {
            assert_eq!(problem(&good), None, "{good}");
        }
    }

    #[test]
    fn what_docker_refuses_is_said() {
        for (bad, says) in [
            ("", "empty"),
            ("Xtask-test/httpd:1", "capital letters"),
            ("redis:7 ", "tag"),
            ("-it", "not lower-case letters"),
            ("redis:", "tag"),
            ("a..b", "not lower-case letters"),
            ("a___b", "not lower-case letters"),
            ("app_", "not lower-case letters"),
            ("ex ample.com/app", "registry's host"),
            ("example.com:port/app", "registry's host"),
            ("redis@sha256:12", "digest"),
            ("team//app", "not lower-case letters"),
        ] {
            let said = problem(bad).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(said.contains(says), "{bad:?}: {said}");
        }
    }
}
