//! The proxy with real sockets: small upstream servers behind it and
//! clients that speak raw HTTP/1.1 to it.

mod exchanges;
mod limits;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Host, Limits, Proxy, Route, Target};

/// The longest a test waits for an answer before it fails (instead of hanging).
const PATIENCE: Duration = Duration::from_secs(20);

/// A proxy on 127.0.0.1 whose routes a test can change.
struct Fixture {
    proxy: Proxy,
    port: u16,
    routes: Arc<Mutex<HashMap<String, Target>>>,
}

impl Fixture {
    /// Routes by `<service>.<checkout>`.
    fn new(routes: &[(&str, Target)], limits: Limits) -> Fixture {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes = Arc::new(Mutex::new(routes.iter().map(|(name, target)| (name.to_string(), *target)).collect()));
        let proxy = super::serve(vec![listener], router(&routes), limits).unwrap();
        Fixture { proxy, port, routes }
    }

    fn route(&self, name: &str, target: Target) {
        self.routes.lock().unwrap().insert(name.into(), target);
    }

    fn client(&self) -> Client {
        Client::new(TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).unwrap())
    }

    /// Waits for the connection threads to end; how many are left.
    fn threads_left(&self) -> usize {
        for _ in 0..PATIENCE.as_millis() / 20 {
            if self.proxy.threads() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.proxy.threads()
    }
}

fn router(routes: &Arc<Mutex<HashMap<String, Target>>>) -> super::Router {
    let routes = routes.clone();
    Arc::new(move |host: &Host| {
        let target = routes.lock().unwrap().get(&format!("{}.{}", host.service, host.checkout)).copied();
        Route {
            target: target.unwrap_or(Target::Unknown),
            help: format!("Start it: cargo xtask start {}", host.service),
        }
    })
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// An upstream that answers nothing and, once its one connection ends,
/// hands over every byte it was sent.
fn sink() -> (Target, Receiver<Vec<u8>>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, received) = channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        sender.send(bytes).unwrap();
    });
    (Target::Port(port), received)
}

fn get(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

/// A raw HTTP/1.1 client connection.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn field(&self, name: &str) -> Option<&str> {
        field(&self.head, name)
    }
}

impl Client {
    fn new(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client { reader: BufReader::new(stream.try_clone().unwrap()), stream }
    }

    fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).unwrap();
    }

    /// The next response; its body by its framing, or up to the close.
    fn response(&mut self) -> Response {
        let head = read_head(&mut self.reader).unwrap().expect("a response, not the end of the connection");
        let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("{head}"));
        let body = match status {
            100..=199 | 204 | 304 => Vec::new(),
            _ if field(&head, "content-length").is_none() && field(&head, "transfer-encoding").is_none() => {
                let mut rest = Vec::new();
                self.reader.read_to_end(&mut rest).unwrap();
                rest
            }
            _ => read_body(&mut self.reader, &head).unwrap(),
        };
        Response { status, head, body: String::from_utf8(body).unwrap() }
    }

    /// Did the proxy end the connection (rather than answer)?
    fn closed(&mut self) -> bool {
        let mut byte = [0];
        match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}

/// A head up to its empty line; None if the connection ends first.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        if reader.read_line(&mut head)? == 0 {
            return Ok(None);
        }
    }
    Ok(Some(head))
}

fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// A body framed by Content-Length or chunked (decoded), else empty.
fn read_body(reader: &mut impl BufRead, head: &str) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if let Some(length) = field(head, "content-length") {
        body.resize(length.parse().unwrap(), 0);
        reader.read_exact(&mut body)?;
    } else if field(head, "transfer-encoding").is_some() {
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim_end().split(';').next().unwrap(), 16).unwrap();
            if size == 0 {
                while read_line(reader)? != "\r\n" {} // trailers
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            reader.read_exact(&mut body[start..])?;
            body.truncate(start + size);
        }
    }
    Ok(body)
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    Ok(line)
}

/// A small upstream: a thread per connection; echoes each request's head
/// and body, names itself, its connection and the request's number on it.
/// `/sse` streams two events, the second once the gate is opened; a
/// WebSocket upgrade gets a 101, then an echo of raw bytes.
struct Upstream {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    gate: Sender<()>,
}

impl Upstream {
    fn start(name: &'static str) -> Upstream {
        Upstream::on(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(), name)
    }

    fn on(listener: TcpListener, name: &'static str) -> Upstream {
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (gate, opened) = channel();
        let (seen, opened) = (heads.clone(), Arc::new(Mutex::new(opened)));
        std::thread::spawn(move || {
            for (id, stream) in listener.incoming().enumerate() {
                let (seen, opened) = (seen.clone(), opened.clone());
                std::thread::spawn(move || serve_upstream(stream?, name, id, &seen, &opened));
            }
            io::Result::Ok(())
        });
        Upstream { port, heads, gate }
    }

    fn target(&self) -> Target {
        Target::Port(self.port)
    }

    /// The heads it was sent, as it read them.
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    fn open_gate(&self) {
        self.gate.send(()).unwrap();
    }
}

fn serve_upstream(
    stream: TcpStream,
    name: &str,
    id: usize,
    seen: &Mutex<Vec<String>>,
    gate: &Mutex<Receiver<()>>,
) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    for number in 1.. {
        let Some(head) = read_head(&mut reader)? else { return Ok(()) };
        seen.lock().unwrap().push(head.clone());
        if field(&head, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        if field(&head, "upgrade") == Some("websocket") {
            out.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")?;
            io::copy(&mut reader, &mut out)?;
            return Ok(());
        }
        let body = read_body(&mut reader, &head)?;
        if head.starts_with("GET /sse ") {
            out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            out.write_all(b"b\r\ndata: one\n\n\r\n")?;
            let _ = gate.lock().unwrap().recv();
            out.write_all(b"b\r\ndata: two\n\n\r\n0\r\n\r\n")?;
            continue;
        }
        let echo = [head.as_bytes(), &body].concat();
        if head.lines().next().is_some_and(|line| line.ends_with("HTTP/1.0")) {
            out.write_all(format!("HTTP/1.0 200 OK\r\nX-Upstream: {name}\r\n\r\n").as_bytes())?;
            return out.write_all(&echo); // delimited by the close
        }
        let fields = format!("X-Upstream: {name}\r\nX-Connection: {id}\r\nX-Request: {number}");
        out.write_all(format!("HTTP/1.1 200 OK\r\n{fields}\r\nContent-Length: {}\r\n\r\n", echo.len()).as_bytes())?;
        out.write_all(&echo)?;
        if field(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return Ok(());
        }
    }
    Ok(())
}
