//! A request head: read with httparse, checked for what would let the proxy
//! and the upstream disagree on where a request ends (RFC 9112 sections 6.1,
//! 6.3), and written anew for the upstream with the proxy's X-Forwarded-*.

use std::net::IpAddr;

use super::host::{self, Host, NotNamed};
use super::page::Refusal;

/// The largest head read; the connection's buffer grows up to this.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields read (browsers send about 20).
pub const MAX_FIELDS: usize = 100;

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body: requests are never delimited by the connection's close.
    Empty,
    Length(u64),
    Chunked,
}

/// A request head, checked and ready to forward.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// Its length in the input: the body (or the next head) starts there.
    pub len: usize,
    pub host: Host,
    pub body: Body,
    /// A WebSocket upgrade: after it, the connection carries raw bytes.
    pub upgrade: bool,
    /// A HEAD request, whose answer has no body.
    pub head_only: bool,
    /// What the upstream gets: the request line and fields as read, one
    /// `name: value` CRLF-ended line each, X-Forwarded-* replaced by ours.
    pub forward: Vec<u8>,
}

/// Reads the head at the start of `input`, from a client at `peer`.
/// None: the head is not complete yet.
pub fn parse(input: &[u8], peer: IpAddr) -> Result<Option<Head>, Refusal> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::BadRequest("the request head is malformed")),
    };
    // httparse takes a bare LF as a line end; another parser may not.
    if !crlf_only(&input[..len]) {
        return Err(Refusal::BadRequest("a line of the request head does not end with CRLF"));
    }
    let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
        return Err(Refusal::BadRequest("the request head is malformed"));
    };
    // Origin-form only: an absolute URL or CONNECT asks for a forward proxy.
    if !(target.starts_with('/') || (target == "*" && method == "OPTIONS")) || method == "CONNECT" {
        return Err(Refusal::BadRequest("the proxy forwards requests for a path only: it is not a forward proxy"));
    }
    let mut forward = Vec::with_capacity(len + 160);
    forward.extend_from_slice(format!("{method} {target} HTTP/1.{version}\r\n").as_bytes());
    let (mut host, mut length, mut chunked, mut upgrade) = (None, None, false, false);
    for field in request.headers.iter() {
        let name = field.name;
        let value = field.value;
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(Refusal::BadRequest("the request has more than one Host header"));
            }
            host = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(Refusal::BadRequest("the request has more than one Content-Length header"));
            }
            length = Some(parse_length(value).ok_or(Refusal::BadRequest("Content-Length is not a number"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only `chunked`, once: the final coding must be chunked, and
            // any other coding of a request is one the proxy cannot frame.
            if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(Refusal::BadRequest("Transfer-Encoding is not exactly `chunked`"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            // WebSocket only: `h2c` (curl --http2) would switch the
            // connection to raw bytes for an upgrade the upstream refuses.
            if !value.eq_ignore_ascii_case(b"websocket") {
                continue;
            }
            upgrade = true;
        } else if is_forwarding(name) {
            continue; // the client's claims: the proxy is the first hop
        }
        forward.extend_from_slice(name.as_bytes());
        forward.extend_from_slice(b": ");
        forward.extend_from_slice(value);
        forward.extend_from_slice(b"\r\n");
    }
    let body = match (length, chunked) {
        (Some(_), true) => {
            return Err(Refusal::BadRequest("the request has both Content-Length and Transfer-Encoding"));
        }
        (None, true) if version == 0 => {
            return Err(Refusal::BadRequest("HTTP/1.0 has no Transfer-Encoding"));
        }
        (None, true) => Body::Chunked,
        (None | Some(0), false) => Body::Empty,
        (Some(n), false) => Body::Length(n),
    };
    let raw_host = host.ok_or(Refusal::BadRequest("the request has no Host header"))?;
    let host = host::parse(raw_host).map_err(|e| match e {
        NotNamed::Invalid => Refusal::BadRequest("the Host header is not a host name and port"),
        NotNamed::Outside(name) => Refusal::Outside(name),
        NotNamed::Shape(name) => Refusal::Shape(name),
    })?;
    // With the port: Next's Server Actions compare it with the Origin.
    forward.extend_from_slice(b"X-Forwarded-Host: ");
    forward.extend_from_slice(raw_host);
    forward.extend_from_slice(format!("\r\nX-Forwarded-Proto: http\r\nX-Forwarded-For: {peer}\r\n\r\n").as_bytes());
    Ok(Some(Head { len, host, body, upgrade, head_only: method == "HEAD", forward }))
}

/// Every CR is followed by LF and every LF follows a CR.
fn crlf_only(head: &[u8]) -> bool {
    head.iter().enumerate().all(|(at, &b)| match b {
        b'\r' => head.get(at + 1) == Some(&b'\n'),
        b'\n' => at > 0 && head[at - 1] == b'\r',
        _ => true,
    })
}

/// Digits only (`+5`, `5, 5` and `-1` are not lengths), without overflow.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// `X-Forwarded-*` and `Forwarded`, which only the proxy may set.
fn is_forwarding(name: &str) -> bool {
    name.eq_ignore_ascii_case("forwarded")
        || name.get(..12).is_some_and(|prefix| prefix.eq_ignore_ascii_case("x-forwarded-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn head(text: &str) -> Head {
        parse(text.as_bytes(), PEER).unwrap().unwrap_or_else(|| panic!("incomplete: {text}"))
    }

    #[test]
    fn forwarded_head() {
        let request = "GET /a?b=c HTTP/1.1\r\nHost: Frontend.c1.localhost:7300\r\nX-Forwarded-For: 6.6.6.6\r\n\
                       Accept: */*\r\nx-forwarded-host: evil.example\r\nForwarded: for=6.6.6.6\r\n\
                       X-Forwarded-Proto: https\r\nX-Real-IP: 6.6.6.6\r\n\r\nnext";
        let parsed = head(request);
        let expected = "GET /a?b=c HTTP/1.1\r\nHost: Frontend.c1.localhost:7300\r\nAccept: */*\r\nX-Real-IP: 6.6.6.6\r\n\
                        X-Forwarded-Host: Frontend.c1.localhost:7300\r\nX-Forwarded-Proto: http\r\n\
                        X-Forwarded-For: 127.0.0.1\r\n\r\n";
        assert_eq!(String::from_utf8(parsed.forward).unwrap(), expected);
        assert_eq!(parsed.len, request.len() - "next".len());
        assert_eq!(parsed.host, Host { service: "frontend".into(), checkout: "c1".into() });
        assert_eq!((parsed.body, parsed.upgrade, parsed.head_only), (Body::Empty, false, false));

        let v6 = parse(b"HEAD / HTTP/1.0\r\nHost: a.b.localhost\r\n\r\n", "::1".parse().unwrap()).unwrap().unwrap();
        let forward = String::from_utf8(v6.forward).unwrap();
        assert!(
            forward.starts_with("HEAD / HTTP/1.0\r\n") && forward.contains("X-Forwarded-For: ::1\r\n"),
            "{forward}"
        );
        assert!(v6.head_only);
    }

    #[test]
    fn bodies_and_upgrades() {
        let cases = [
            ("POST / HTTP/1.1\r\nHost: a.b.localhost\r\nContent-Length: 12\r\n\r\n", Body::Length(12), false),
            ("POST / HTTP/1.1\r\nHost: a.b.localhost\r\nContent-Length: 0\r\n\r\n", Body::Empty, false),
            ("POST / HTTP/1.1\r\nHost: a.b.localhost\r\nTransfer-Encoding: Chunked\r\n\r\n", Body::Chunked, false),
            (
                "GET / HTTP/1.1\r\nHost: a.b.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                Body::Empty,
                true,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a.b.localhost\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
                Body::Empty,
                false,
            ),
        ];
        for (text, body, upgrade) in cases {
            let parsed = head(text);
            assert_eq!((parsed.body, parsed.upgrade), (body, upgrade), "{text}");
            let forward = String::from_utf8(parsed.forward).unwrap();
            assert_eq!(forward.contains("Upgrade: "), upgrade, "only a WebSocket upgrade is forwarded: {forward}");
        }
    }

    #[test]
    fn incomplete_heads_wait() {
        for text in [
            "",
            "GET / HTTP/1.1\r\n",
            "GET / HTTP/1.1\r\nHost: a.b.localhost\r\n",
            "GET / HTTP/1.1\r\nHost: a.b.localhost\r\n\r",
        ] {
            assert_eq!(parse(text.as_bytes(), PEER), Ok(None), "{text:?}");
        }
    }

    #[test]
    fn refusals() {
        let host = "Host: a.b.localhost\r\n";
        let bad = |why| Err(Refusal::BadRequest(why));
        let both = bad("the request has both Content-Length and Transfer-Encoding");
        let length = bad("Content-Length is not a number");
        let coding = bad("Transfer-Encoding is not exactly `chunked`");
        let form = bad("the proxy forwards requests for a path only: it is not a forward proxy");
        let many_fields: String = (0..MAX_FIELDS).map(|i| format!("X-{i}: y\r\n")).collect();
        let cases: Vec<(String, Result<(), Refusal>)> = vec![
            // Smuggling: framing that two parsers may read two ways.
            (format!("POST / HTTP/1.1\r\n{host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), both.clone()),
            (format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), both),
            (
                format!("POST / HTTP/1.1\r\n{host}Content-Length: 5\r\nContent-Length: 5\r\n\r\n"),
                bad("the request has more than one Content-Length header"),
            ),
            (format!("POST / HTTP/1.1\r\n{host}Content-Length: +5\r\n\r\n"), length.clone()),
            (format!("POST / HTTP/1.1\r\n{host}Content-Length: 5, 5\r\n\r\n"), length.clone()),
            (format!("POST / HTTP/1.1\r\n{host}Content-Length: -1\r\n\r\n"), length.clone()),
            (format!("POST / HTTP/1.1\r\n{host}Content-Length: 18446744073709551616\r\n\r\n"), length),
            (format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: gzip, chunked\r\n\r\n"), coding.clone()),
            (
                format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
                coding.clone(),
            ),
            (format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked, identity\r\n\r\n"), coding),
            (
                format!("POST / HTTP/1.0\r\n{host}Transfer-Encoding: chunked\r\n\r\n"),
                bad("HTTP/1.0 has no Transfer-Encoding"),
            ),
            (
                format!("GET / HTTP/1.1\r\n{host}Host: c.d.localhost\r\n\r\n"),
                bad("the request has more than one Host header"),
            ),
            (format!("GET / HTTP/1.1\n{host}\r\n"), bad("a line of the request head does not end with CRLF")),
            (format!("GET / HTTP/1.1\r\n{host}X: y\n\r\n"), bad("a line of the request head does not end with CRLF")),
            (format!("GET / HTTP/1.1\r\n{host} folded\r\n\r\n"), bad("the request head is malformed")),
            ("GET / HTTP/1.1\r\nHost : a.b.localhost\r\n\r\n".into(), bad("the request head is malformed")),
            (format!("GET / HTTP/2.0\r\n{host}\r\n"), bad("the request head is malformed")),
            // Not for a path of a named URL.
            (format!("GET http://a.b.localhost/ HTTP/1.1\r\n{host}\r\n"), form.clone()),
            (format!("CONNECT a.b.localhost:80 HTTP/1.1\r\n{host}\r\n"), form.clone()),
            (format!("GET * HTTP/1.1\r\n{host}\r\n"), form),
            ("GET / HTTP/1.0\r\n\r\n".into(), bad("the request has no Host header")),
            (
                "GET / HTTP/1.1\r\nHost: a.b.localhost:x\r\n\r\n".into(),
                bad("the Host header is not a host name and port"),
            ),
            ("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".into(), Err(Refusal::Outside("example.com".into()))),
            ("GET / HTTP/1.1\r\nHost: b.localhost\r\n\r\n".into(), Err(Refusal::Shape("b.localhost".into()))),
            (format!("GET / HTTP/1.1\r\n{host}{many_fields}\r\n"), Err(Refusal::TooLarge)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text.as_bytes(), PEER).map(|_| ()), expected, "{text:?}");
        }
    }

    #[test]
    fn lengths() {
        let cases: [(&[u8], Option<u64>); 6] = [
            (b"0", Some(0)),
            (b"007", Some(7)),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None),
            (b"", None),
            (b"1e3", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_length(text), expected, "{}", String::from_utf8_lossy(text));
        }
    }
}
