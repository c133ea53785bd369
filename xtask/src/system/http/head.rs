//! A request head, read with httparse and checked for what would let two
//! parsers disagree on where a request ends (RFC 9112 sections 6.1 and 6.3):
//! what the proxy and the dashboard's server both read.

/// The largest head read; a connection's buffer grows up to this.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields read (browsers send about 20).
pub const MAX_FIELDS: usize = 100;

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body: requests are never delimited by the connection's close.
    Empty,
    Length(u64),
    Chunked,
}

/// Why a head is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// 400: the head is malformed or ambiguous; says how.
    Malformed(&'static str),
    /// 431: over `MAX_HEAD` or `MAX_FIELDS`.
    TooLarge,
}

/// Where httparse reads a head's fields into: one per call of `parse`.
pub type Fields<'b> = [httparse::Header<'b>; MAX_FIELDS];

pub fn fields<'b>() -> Fields<'b> {
    [httparse::EMPTY_HEADER; MAX_FIELDS]
}

/// A request head, checked.
#[derive(Debug)]
pub struct Request<'h, 'b> {
    /// Its length in the input: the body (or the next head) starts there.
    pub len: usize,
    pub method: &'b str,
    /// The path and query (origin form), or `*` for OPTIONS.
    pub target: &'b str,
    /// The minor version: 0 or 1.
    pub version: u8,
    /// Every field as read, in order.
    pub fields: &'h [httparse::Header<'b>],
    /// The one Host field's value.
    pub host: &'b [u8],
    pub body: Body,
}

/// Reads the head at the start of `input` into `fields`. None: the head is
/// not complete yet.
pub fn parse<'h, 'b>(input: &'b [u8], fields: &'h mut [httparse::Header<'b>]) -> Result<Option<Request<'h, 'b>>, Bad> {
    let mut request = httparse::Request::new(fields);
    let len = match request.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Bad::TooLarge),
        Err(_) => return Err(Bad::Malformed("the request head is malformed")),
    };
    // httparse takes a bare LF as a line end; another parser may not.
    if !crlf_only(&input[..len]) {
        return Err(Bad::Malformed("a line of the request head does not end with CRLF"));
    }
    let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
        return Err(Bad::Malformed("the request head is malformed"));
    };
    // Origin form only: an absolute URL or CONNECT asks for a forward proxy.
    if !(target.starts_with('/') || (target == "*" && method == "OPTIONS")) || method == "CONNECT" {
        return Err(Bad::Malformed("the request's target is not a path: this is no forward proxy"));
    }
    let fields: &'h [httparse::Header<'b>] = request.headers;
    let (mut host, mut length, mut chunked) = (None, None, false);
    for field in fields {
        let (name, value) = (field.name, field.value);
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(Bad::Malformed("the request has more than one Host header"));
            }
            host = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(Bad::Malformed("the request has more than one Content-Length header"));
            }
            length = Some(parse_length(value).ok_or(Bad::Malformed("Content-Length is not a number"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only `chunked`, once: the final coding must be chunked, and
            // any other coding of a request is one that cannot be framed.
            if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(Bad::Malformed("Transfer-Encoding is not exactly `chunked`"));
            }
            chunked = true;
        }
    }
    let body = match (length, chunked) {
        (Some(_), true) => return Err(Bad::Malformed("the request has both Content-Length and Transfer-Encoding")),
        (None, true) if version == 0 => return Err(Bad::Malformed("HTTP/1.0 has no Transfer-Encoding")),
        (None, true) => Body::Chunked,
        (None | Some(0), false) => Body::Empty,
        (Some(n), false) => Body::Length(n),
    };
    let host = host.ok_or(Bad::Malformed("the request has no Host header"))?;
    Ok(Some(Request { len, method, target, version, fields, host, body }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Option<(String, String, Body, usize)>, Bad> {
        let mut fields = fields();
        let request = parse(text.as_bytes(), &mut fields)?;
        Ok(request.map(|r| (r.method.to_owned(), String::from_utf8_lossy(r.host).into_owned(), r.body, r.len)))
    }

    #[test]
    fn heads_and_their_bodies() {
        let host = "Host: a.b.localhost\r\n";
        let cases = [
            (format!("GET /a?b HTTP/1.1\r\n{host}\r\nnext"), "GET", Body::Empty),
            (format!("POST / HTTP/1.1\r\n{host}Content-Length: 12\r\n\r\n"), "POST", Body::Length(12)),
            (format!("POST / HTTP/1.1\r\n{host}Content-Length: 0\r\n\r\n"), "POST", Body::Empty),
            (format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: Chunked\r\n\r\n"), "POST", Body::Chunked),
            (format!("OPTIONS * HTTP/1.1\r\n{host}\r\n"), "OPTIONS", Body::Empty),
        ];
        for (text, method, body) in cases {
            let len = text.find("\r\n\r\n").unwrap() + 4;
            assert_eq!(read(&text), Ok(Some((method.into(), "a.b.localhost".into(), body, len))), "{text:?}");
        }
        let mut fields = fields();
        let request = parse(b"GET / HTTP/1.0\r\nHost: x\r\nX-Token: t\r\n\r\n", &mut fields).unwrap().unwrap();
        let read: Vec<(&str, &[u8])> = request.fields.iter().map(|f| (f.name, f.value)).collect();
        assert_eq!((request.version, read), (0, vec![("Host", &b"x"[..]), ("X-Token", &b"t"[..])]));
    }

    #[test]
    fn incomplete_heads_wait() {
        for text in ["", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: a\r\n", "GET / HTTP/1.1\r\nHost: a\r\n\r"] {
            assert_eq!(read(text), Ok(None), "{text:?}");
        }
    }

    #[test]
    fn refusals() {
        let host = "Host: a.b.localhost\r\n";
        let bad = |why| Err(Bad::Malformed(why));
        let both = bad("the request has both Content-Length and Transfer-Encoding");
        let length = bad("Content-Length is not a number");
        let coding = bad("Transfer-Encoding is not exactly `chunked`");
        let form = bad("the request's target is not a path: this is no forward proxy");
        let crlf = bad("a line of the request head does not end with CRLF");
        let malformed = bad("the request head is malformed");
        let many_fields: String = (0..MAX_FIELDS).map(|i| format!("X-{i}: y\r\n")).collect();
        let cases = [
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
            (format!("GET / HTTP/1.1\n{host}\r\n"), crlf.clone()),
            (format!("GET / HTTP/1.1\r\n{host}X: y\n\r\n"), crlf),
            (format!("GET / HTTP/1.1\r\n{host} folded\r\n\r\n"), malformed.clone()),
            ("GET / HTTP/1.1\r\nHost : a.b.localhost\r\n\r\n".into(), malformed.clone()),
            (format!("GET / HTTP/2.0\r\n{host}\r\n"), malformed),
            // Not for a path.
            (format!("GET http://a.b.localhost/ HTTP/1.1\r\n{host}\r\n"), form.clone()),
            (format!("CONNECT a.b.localhost:80 HTTP/1.1\r\n{host}\r\n"), form.clone()),
            (format!("GET * HTTP/1.1\r\n{host}\r\n"), form),
            ("GET / HTTP/1.0\r\n\r\n".into(), bad("the request has no Host header")),
            (format!("GET / HTTP/1.1\r\n{host}{many_fields}\r\n"), Err(Bad::TooLarge)),
        ];
        for (text, expected) in cases {
            assert_eq!(read(&text).map(|_| ()), expected, "{text:?}");
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
