//! An answer written whole, then the connection closed: the dashboard's,
//! and the proxy's own pages.

/// A status, its fields, and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub fields: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, fields: vec![("Content-Type", content_type.to_owned())], body: body.into() }
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.fields.push((name, value.into()));
        self
    }

    /// The bytes on the wire: the status line, the fields, the body's
    /// length, `Connection: close`, and the body (not for a HEAD request).
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.fields {
            head += &format!("{name}: {value}\r\n");
        }
        head += &format!("Content-Length: {}\r\nConnection: close\r\n\r\n", self.body.len());
        let mut bytes = head.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// The reason phrase of the statuses answered here.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        508 => "Loop Detected",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let response = Response::new(404, "text/plain", "gone").with("X-A", "b");
        let expected = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nX-A: b\r\nContent-Length: 4\r\n\
                        Connection: close\r\n\r\n";
        assert_eq!(String::from_utf8(response.to_bytes(false)).unwrap(), format!("{expected}gone"));
        assert_eq!(String::from_utf8(response.to_bytes(true)).unwrap(), expected, "a HEAD answer's length, no body");
    }
}
