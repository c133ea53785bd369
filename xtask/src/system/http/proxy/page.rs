//! The proxy's own answers: a small HTML page with an error status that says
//! what the proxy understood of the request and what to do about it.

use crate::model::names::Host;
use crate::system::http::head::{Bad, MAX_FIELDS, MAX_HEAD};
use crate::system::http::response::{Response, reason};

/// Why the proxy answers a request itself instead of forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the request is malformed or ambiguous; says how.
    BadRequest(&'static str),
    /// 431: the head is over the limits.
    TooLarge,
    /// 400: a Host outside `.localhost`. Only DNS rebinding or a hand-made
    /// request sends one here, and nothing is served under it.
    Outside(String),
    /// 404: under `.localhost` but not `<service>.<checkout>.localhost`.
    /// Every `.localhost` name that reaches this port is the proxy's to
    /// answer, and it knows this one names nothing: the same answer as an
    /// unknown route. (421 Misdirected Request would tell the client to try
    /// another connection, which leads nowhere else.)
    Shape(String),
    /// 404: no such checkout or service; the router's help.
    Unknown(Host, String),
    /// 503: a known service that is not running; the router's help.
    Stopped(Host, String),
    /// 502: the route's port refused the connection; the router's help.
    Down(Host, u16, String),
    /// 508: the route leads to the proxy's own port, where each request
    /// would come back as a new one, without end.
    Loop(Host, u16),
}

impl From<Bad> for Refusal {
    fn from(bad: Bad) -> Refusal {
        match bad {
            Bad::Malformed(why) => Refusal::BadRequest(why),
            Bad::TooLarge => Refusal::TooLarge,
        }
    }
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) | Refusal::Outside(_) => 400,
            Refusal::TooLarge => 431,
            Refusal::Shape(_) | Refusal::Unknown(..) => 404,
            Refusal::Stopped(..) => 503,
            Refusal::Down(..) => 502,
            Refusal::Loop(..) => 508,
        }
    }

    /// The whole response, which closes the connection: the proxy forwards
    /// nothing more on it, and a client may have sent a body it did not read.
    pub fn response(&self, head_only: bool) -> Vec<u8> {
        let code = self.status();
        Response::new(code, "text/html; charset=utf-8", self.page(code, reason(code)))
            .with("Cache-Control", "no-store")
            .with("X-Content-Type-Options", "nosniff")
            .to_bytes(head_only)
    }

    fn page(&self, code: u16, reason: &str) -> String {
        const FORM: &str = "Named URLs have the form <code>http://&lt;service&gt;.&lt;checkout&gt;.localhost:&lt;port&gt;/</code>, \
                            on the port of the dev runner's proxy.";
        let understood = |host: &Host| {
            format!(
                "<p>Understood: service <b>{}</b> of checkout <b>{}</b>.</p>",
                escape(&host.service),
                escape(&host.checkout)
            )
        };
        let help = |text: &str| format!("<p style=\"white-space: pre-wrap\">{}</p>", escape(text));
        let (title, text) = match self {
            Refusal::BadRequest(why) => ("Bad request".to_owned(), format!("<p>{}.</p>", escape(why))),
            Refusal::TooLarge => (
                "Request head too large".to_owned(),
                format!("<p>The proxy reads heads up to {} KiB and {MAX_FIELDS} fields.</p>", MAX_HEAD / 1024),
            ),
            Refusal::Outside(name) => (format!("{} is not a named URL", escape(name)), format!("<p>{FORM}</p>")),
            Refusal::Shape(name) => (format!("{} is not a named URL", escape(name)), format!("<p>{FORM}</p>")),
            Refusal::Unknown(host, text) => {
                (format!("No route to {}", host.name()), format!("{}{}", understood(host), help(text)))
            }
            Refusal::Stopped(host, text) => {
                (format!("{} is stopped", escape(&host.service)), format!("{}{}", understood(host), help(text)))
            }
            Refusal::Down(host, port, text) => (
                format!("{} does not answer on port {port}", escape(&host.service)),
                format!("{}{}", understood(host), help(text)),
            ),
            Refusal::Loop(host, port) => (
                format!("{} leads back to the proxy", host.name()),
                format!("{}<p>Its route is the proxy's own port, {port}.</p>", understood(host)),
            ),
        };
        format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {title}</title></head>\n\
             <body style=\"font-family: sans-serif; max-width: 40em; margin: 3em auto\">\n\
             <h1>{title}</h1>\n{text}\n<p><small>{code} {reason} · the dev runner's proxy</small></p>\n</body></html>\n"
        )
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host { service: "frontend".into(), checkout: "c1".into() }
    }

    fn split(response: &[u8]) -> (String, String) {
        let text = String::from_utf8(response.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), body.to_owned())
    }

    #[test]
    fn pages_name_what_was_understood_and_the_help() {
        let help = "Start it: cargo xtask start frontend\n(in /src/c1)";
        let cases = [
            (Refusal::Unknown(host(), help.into()), "404 Not Found", "No route to frontend.c1.localhost"),
            (Refusal::Stopped(host(), help.into()), "503 Service Unavailable", "frontend is stopped"),
            (Refusal::Down(host(), 3001, help.into()), "502 Bad Gateway", "frontend does not answer on port 3001"),
        ];
        for (refusal, status, title) in cases {
            let (head, body) = split(&refusal.response(false));
            assert!(head.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{head}");
            assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{head}");
            assert!(head.ends_with("Connection: close"), "{head}");
            assert!(body.contains(&format!("<h1>{title}</h1>")), "{body}");
            assert!(body.contains("service <b>frontend</b> of checkout <b>c1</b>"), "{body}");
            assert!(body.contains(help), "{body}");
        }
    }

    #[test]
    fn statuses_of_requests_that_name_nothing() {
        let cases = [
            (Refusal::BadRequest("two Host headers"), 400, "two Host headers."),
            (Refusal::TooLarge, 431, "64 KiB"),
            (Refusal::Outside("example.com".into()), 400, "example.com is not a named URL"),
            (Refusal::Shape("c1.localhost".into()), 404, "&lt;service&gt;.&lt;checkout&gt;.localhost"),
        ];
        for (refusal, code, text) in cases {
            assert_eq!(refusal.status(), code, "{refusal:?}");
            let (_, body) = split(&refusal.response(false));
            assert!(body.contains(text), "{body}");
        }
    }

    #[test]
    fn text_is_escaped_and_head_requests_get_no_body() {
        let refusal = Refusal::Unknown(host(), "<script>alert('x')</script> & \"more\"".into());
        let (_, body) = split(&refusal.response(false));
        assert!(!body.contains("<script>"), "{body}");
        assert!(body.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;"), "{body}");
        let (head, body) = split(&refusal.response(true));
        assert!(head.contains("Content-Length: ") && !head.contains("Content-Length: 0\r\n"), "{head}");
        assert_eq!(body, "");
    }
}
