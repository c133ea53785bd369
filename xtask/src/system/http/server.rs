//! A small HTTP server: a thread per connection, one request on each
//! (`Connection: close`), its head and body bounded in size and in time, the
//! answer written whole. The dashboard answers through it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::head::{self, Bad, Body};
use super::reader::{Reader, Wait};
use super::response::Response;

/// The most a request may take to arrive, head and body.
const REQUEST_TIME: Duration = Duration::from_secs(10);
/// The largest body read: the dashboard's are a few bytes of JSON.
pub const MAX_BODY: usize = 64 * 1024;
/// How long, at most, what a client still sends is read and dropped after
/// the answer: closing with unread bytes resets the connection, and the
/// client may lose the answer.
const LINGER: Duration = Duration::from_secs(1);

/// A request, read whole.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path and query.
    pub target: String,
    fields: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The value of the first field called `name` (a value that is not
    /// UTF-8 is read with replacement characters: it matches nothing).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Answers a request; it runs on the connection's own thread, and may take
/// its time.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A server accepting connections until closed.
pub struct Server {
    listener: Arc<TcpListener>,
    closed: Arc<AtomicBool>,
}

impl Server {
    /// Accepts no more connections; those being served finish.
    pub fn close(self) {
        self.closed.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then drops the listener.
        let _ = rustix::net::shutdown(self.listener.as_fd(), rustix::net::Shutdown::Read);
    }
}

/// Serves what `listener` accepts with `handler`, in background threads.
pub fn serve(listener: TcpListener, handler: Handler) -> anyhow::Result<Server> {
    let (listener, closed) = (Arc::new(listener), Arc::new(AtomicBool::new(false)));
    let (accepting, stop) = (listener.clone(), closed.clone());
    std::thread::Builder::new()
        .name("http-accept".into())
        .spawn(move || {
            for stream in accepting.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match stream {
                    Ok(stream) => {
                        let handler = handler.clone();
                        // If no thread can start, the client is closed with the closure.
                        let _ = std::thread::Builder::new().name("http-conn".into()).spawn(move || {
                            let _ = answer(stream, &handler);
                        });
                    }
                    // Out of descriptors, say: others will close.
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
        .context("cannot start the server's thread")?;
    Ok(Server { listener, closed })
}

/// Reads one request, answers it, and closes the connection.
fn answer(stream: TcpStream, handler: &Handler) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(REQUEST_TIME))?;
    let mut reader = Reader::new(stream, REQUEST_TIME);
    let (response, head_only) = match read(&mut reader, Instant::now() + REQUEST_TIME) {
        Ok(Some(request)) => (handler(&request), request.method == "HEAD"),
        Ok(None) => return Ok(()), // closed, or said nothing in time
        Err(refused) => (refused, false),
    };
    let stream = &mut reader.stream;
    stream.write_all(&response.to_bytes(head_only))?;
    stream.shutdown(Shutdown::Write)?;
    let until = Instant::now() + LINGER;
    let mut sink = [0; 4096];
    while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        stream.set_read_timeout(Some(left))?;
        if stream.read(&mut sink)? == 0 {
            break;
        }
    }
    Ok(())
}

/// The request, None if the client closed or sent nothing in time, or the
/// answer that refuses it.
fn read(reader: &mut Reader, deadline: Instant) -> Result<Option<Request>, Response> {
    let refuse = |status: u16, why: &str| Response::new(status, "text/plain; charset=utf-8", format!("{why}\n"));
    let timed_out = || refuse(408, "the request took too long to arrive");
    let (request, mut body) = loop {
        let mut fields = head::fields();
        match head::parse(reader.data(), &mut fields) {
            Ok(Some(head)) => {
                let length = match head.body {
                    Body::Empty => 0,
                    Body::Length(n) if n <= MAX_BODY as u64 => n as usize,
                    Body::Length(_) => return Err(refuse(413, "the body is too large")),
                    Body::Chunked => return Err(refuse(411, "a body must come with its Content-Length")),
                };
                let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
                let request = Request {
                    method: head.method.to_owned(),
                    target: head.target.to_owned(),
                    fields: head.fields.iter().map(|f| (f.name.to_owned(), text(f.value))).collect(),
                    body: Vec::with_capacity(length),
                };
                let len = head.len;
                reader.consume(len);
                break (request, length);
            }
            Ok(None) if reader.is_full() => return Err(refuse(431, "the request head is too large")),
            Ok(None) => match reader.fill(Wait::Until(deadline)) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut && !reader.data().is_empty() => return Err(timed_out()),
                Err(_) => return Ok(None),
            },
            Err(Bad::TooLarge) => return Err(refuse(431, "the request head is too large")),
            Err(Bad::Malformed(why)) => return Err(refuse(400, why)),
        }
    };
    let mut request = request;
    while body > 0 {
        if reader.data().is_empty() {
            match reader.fill(Wait::Until(deadline)) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(_) => return Err(timed_out()),
            }
        }
        let n = reader.data().len().min(body);
        request.body.extend_from_slice(&reader.data()[..n]);
        reader.consume(n);
        body -= n;
    }
    Ok(Some(request))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that echoes the method, path, a field and the body.
    fn echo() -> (Server, u16) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let handler: Handler = Arc::new(|request: &Request| {
            let text = format!(
                "{} {} {:?} {}",
                request.method,
                request.path(),
                request.field("x-a"),
                String::from_utf8_lossy(&request.body)
            );
            Response::new(200, "text/plain", text)
        });
        (serve(listener, handler).unwrap(), port)
    }

    fn exchange(port: u16, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn one_request_per_connection_read_whole() {
        let (_server, port) = echo();
        let answer = exchange(port, b"POST /api/x?y=1 HTTP/1.1\r\nHost: h\r\nX-A: b\r\nContent-Length: 5\r\n\r\nhello");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.contains("Connection: close\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nPOST /api/x Some(\"b\") hello"), "{answer}");
        // A body sent in pieces, after the head.
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        stream.write_all(b"cd").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.ends_with("POST / None abcd"), "{answer}");
        let head = exchange(port, b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(head.ends_with("\r\n\r\n") && !head.contains("Content-Length: 0\r\n"), "{head}");
    }

    #[test]
    fn what_cannot_be_read_is_refused() {
        let (_server, port) = echo();
        let big = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        let cookie = format!("GET / HTTP/1.1\r\nHost: h\r\nCookie: {}\r\n\r\n", "a".repeat(head::MAX_HEAD));
        let cases = [
            (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "400 Bad Request"),
            (b"GET / HTTP/1.1\nHost: h\r\n\r\n".to_vec(), "400 Bad Request"),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
                "411 Length Required",
            ),
            (big.into_bytes(), "413 Content Too Large"),
            (cookie.into_bytes(), "431 Request Header Fields Too Large"),
        ];
        for (request, status) in cases {
            let answer = exchange(port, &request);
            assert!(answer.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{status}: {answer}");
        }
    }

    #[test]
    fn a_closed_server_accepts_no_more() {
        let (server, port) = echo();
        assert!(exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").starts_with("HTTP/1.1 200"));
        server.close();
        let refused = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            TcpStream::connect(("127.0.0.1", port)).is_err()
        });
        assert!(refused, "port {port} still accepts connections after close");
    }
}
