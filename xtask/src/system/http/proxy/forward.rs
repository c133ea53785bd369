//! A request head as the proxy forwards it: its Host read as a named URL,
//! and the head written anew for the upstream with the proxy's X-Forwarded-*.

use std::net::IpAddr;

use super::page::Refusal;
use crate::model::names::{Host, NotNamed};
use crate::system::http::head::{self, Body};

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
    let mut fields = head::fields();
    let Some(request) = head::parse(input, &mut fields)? else { return Ok(None) };
    let host = Host::parse(request.host).map_err(|e| match e {
        NotNamed::Invalid => Refusal::BadRequest("the Host header is not a host name and port"),
        NotNamed::Outside(name) => Refusal::Outside(name),
        NotNamed::Shape(name) => Refusal::Shape(name),
    })?;
    let mut forward = Vec::with_capacity(request.len + 160);
    let (method, target, version) = (request.method, request.target, request.version);
    forward.extend_from_slice(format!("{method} {target} HTTP/1.{version}\r\n").as_bytes());
    let mut upgrade = false;
    for field in request.fields {
        let (name, value) = (field.name, field.value);
        if name.eq_ignore_ascii_case("upgrade") {
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
    // With the port: Next's Server Actions compare it with the Origin.
    forward.extend_from_slice(b"X-Forwarded-Host: ");
    forward.extend_from_slice(request.host);
    forward.extend_from_slice(format!("\r\nX-Forwarded-Proto: http\r\nX-Forwarded-For: {peer}\r\n\r\n").as_bytes());
    Ok(Some(Head { len: request.len, host, body: request.body, upgrade, head_only: method == "HEAD", forward }))
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
    fn upgrades() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: a.b.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nHost: a.b.localhost\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nHost: a.b.localhost\r\nTransfer-Encoding: chunked\r\n\r\n", false),
        ];
        for (text, upgrade) in cases {
            let parsed = head(text);
            assert_eq!(parsed.upgrade, upgrade, "{text}");
            let forward = String::from_utf8(parsed.forward).unwrap();
            assert_eq!(forward.contains("Upgrade: "), upgrade, "only a WebSocket upgrade is forwarded: {forward}");
            let connection = text.contains("Connection: ");
            assert_eq!(
                forward.contains("Connection: Upgrade"),
                connection,
                "passed for the upstream to read: {forward}"
            );
        }
    }

    #[test]
    fn refusals() {
        let cases = [
            ("GET / HTTP/1.0\r\n\r\n", Refusal::BadRequest("the request has no Host header")),
            (
                "GET / HTTP/1.1\r\nHost: a.b.localhost:x\r\n\r\n",
                Refusal::BadRequest("the Host header is not a host name and port"),
            ),
            ("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", Refusal::Outside("example.com".into())),
            ("GET / HTTP/1.1\r\nHost: b.localhost\r\n\r\n", Refusal::Shape("b.localhost".into())),
            (
                "GET http://a.b.localhost/ HTTP/1.1\r\nHost: a.b.localhost\r\n\r\n",
                Refusal::BadRequest("the request's target is not a path: this is no forward proxy"),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text.as_bytes(), PEER).map(|_| ()), Err(expected), "{text:?}");
        }
        let many_fields: String = (0..head::MAX_FIELDS).map(|i| format!("X-{i}: y\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\nHost: a.b.localhost\r\n{many_fields}\r\n");
        assert_eq!(parse(text.as_bytes(), PEER).map(|_| ()), Err(Refusal::TooLarge));
    }
}
