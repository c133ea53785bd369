//! What passes through: keep-alive, pipelining, bodies, 100-continue,
//! HTTP/1.0, streams, WebSockets, and routes that change between requests.

use std::io::{BufRead, Read};

use super::*;

#[test]
fn keep_alive_reuses_the_upstream_connection_and_sets_the_forwarding_fields() {
    let app = Upstream::start("app");
    let fixture = Fixture::new(&[("app.c1", app.target())], Limits::default());
    let mut client = fixture.client();
    let host = format!("App.C1.localhost:{}", fixture.port);
    for number in ["1", "2"] {
        client.send(format!(
            "GET /page?q={number} HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\n\
             Forwarded: for=6.6.6.6\r\nAccept: text/html\r\n\r\n"
        ));
        let response = client.response();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.field("x-request"), Some(number), "both on one upstream connection: {response:?}");
        assert_eq!(response.field("x-connection"), Some("0"), "{response:?}");
        let expected = format!(
            "GET /page?q={number} HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\nX-Forwarded-Host: {host}\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n"
        );
        assert_eq!(response.body, expected, "Host unchanged, the client's forwarding fields replaced by ours");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let app = Upstream::start("app");
    let fixture = Fixture::new(&[("app.c1", app.target())], Limits::default());
    let mut client = fixture.client();
    let host = "Host: app.c1.localhost\r\n";
    client.send(format!(
        "GET /1 HTTP/1.1\r\n{host}\r\n\
         POST /2 HTTP/1.1\r\n{host}Content-Length: 5\r\n\r\nhello\
         POST /3 HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: t\r\n\r\n\
         GET /4 HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
    ));
    for (path, body) in [("/1", ""), ("/2", "hello"), ("/3", "abcde"), ("/4", "")] {
        let response = client.response();
        assert!(response.body.contains(&format!(" {path} HTTP/1.1\r\n")), "{path} in order: {response:?}");
        assert!(response.body.ends_with(&format!("\r\n\r\n{body}")), "{path}: {response:?}");
        assert_eq!(response.field("x-connection"), Some("0"), "{response:?}");
    }
    assert!(client.closed(), "closed after `Connection: close`");
}

#[test]
fn a_head_larger_than_the_first_buffer_is_read_whole() {
    let app = Upstream::start("app");
    let fixture = Fixture::new(&[("app.c1", app.target())], Limits::default());
    let mut client = fixture.client();
    // The first head leaves the second cut at the end of the 8 KiB buffer:
    // what is left moves to its start, then the buffer grows.
    let cookie: String = (0..20_000u32).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    client.send(
        get("app.c1.localhost", "/1")
            + &format!("GET /2 HTTP/1.1\r\nHost: app.c1.localhost\r\nCookie: {cookie}\r\n\r\n"),
    );
    assert!(client.response().body.starts_with("GET /1 "));
    let second = client.response();
    assert!(
        second.body.starts_with("GET /2 ") && second.body.contains(&format!("\r\nCookie: {cookie}\r\n")),
        "{second:?}"
    );
}

#[test]
fn large_bodies_arrive_intact() {
    let app = Upstream::start("app");
    let fixture = Fixture::new(&[("app.c1", app.target())], Limits::default());
    let mut client = fixture.client();
    // More than the proxy's buffer, in pieces of every size.
    let data: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    client.send(format!("PUT /length HTTP/1.1\r\nHost: app.c1.localhost\r\nContent-Length: {}\r\n\r\n", data.len()));
    for piece in data.chunks(70_001) {
        client.send(piece);
    }
    let response = client.response();
    assert!(response.body.ends_with(std::str::from_utf8(&data).unwrap()), "Content-Length body intact");
    client.send("PUT /chunked HTTP/1.1\r\nHost: app.c1.localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
    let (mut sent, mut size) = (0, 1);
    while sent < data.len() {
        let chunk = &data[sent..(sent + size).min(data.len())];
        client.send([format!("{:X}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat());
        (sent, size) = (sent + chunk.len(), size * 3);
    }
    client.send("0\r\n\r\n");
    let response = client.response();
    assert!(response.body.starts_with("PUT /chunked "), "{}", response.head);
    assert!(response.body.ends_with(std::str::from_utf8(&data).unwrap()), "chunked body intact");
}

#[test]
fn expect_100_continue_gets_the_upstream_answer_before_the_body() {
    let app = Upstream::start("app");
    let fixture = Fixture::new(&[("app.c1", app.target())], Limits::default());
    let mut client = fixture.client();
    client.send("POST /upload HTTP/1.1\r\nHost: app.c1.localhost\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    // The head went on at once: the client waits for this before sending its body.
    assert_eq!(client.response().status, 100);
    client.send("data");
    let response = client.response();
    assert_eq!(response.status, 200);
    assert!(response.body.ends_with("\r\n\r\ndata"), "{response:?}");
}

#[test]
fn http_1_0_is_answered_up_to_the_upstream_close() {
    let app = Upstream::start("app");
    let fixture = Fixture::new(&[("app.c1", app.target())], Limits::default());
    let mut client = fixture.client();
    client.send("GET /old HTTP/1.0\r\nHost: app.c1.localhost\r\n\r\n");
    let response = client.response(); // read to the end of the connection: no length
    assert!(response.head.starts_with("HTTP/1.0 200 OK\r\n"), "{response:?}");
    assert!(response.body.starts_with("GET /old HTTP/1.0\r\n"), "forwarded as HTTP/1.0: {response:?}");
}

#[test]
fn events_stream_through_before_the_answer_ends() {
    let app = Upstream::start("app");
    let fixture = Fixture::new(&[("app.c1", app.target())], Limits::default());
    let mut client = fixture.client();
    client.send(get("app.c1.localhost", "/sse"));
    let head = super::read_head(&mut client.reader).unwrap().unwrap();
    assert!(head.contains("text/event-stream"), "{head}");
    // The upstream holds the rest of its answer until the gate opens.
    let mut first = [0; 16];
    client.reader.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"b\r\ndata: one\n\n\r\n");
    app.open_gate();
    let mut rest = String::new();
    while !rest.ends_with("0\r\n\r\n") {
        assert!(client.reader.read_line(&mut rest).unwrap() > 0, "{rest:?}");
    }
    assert_eq!(rest, "b\r\ndata: two\n\n\r\n0\r\n\r\n");
}

#[test]
fn websocket_upgrades_become_raw_copies_both_ways() {
    let app = Upstream::start("app");
    let fixture = Fixture::new(&[("app.c1", app.target())], Limits::default());
    let mut client = fixture.client();
    client.send(
        "GET /_next/hmr HTTP/1.1\r\nHost: app.c1.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(client.response().status, 101);
    // Frames are bytes the proxy does not read: not even as a request head.
    for frame in [&b"\x81\x05hello"[..], b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"] {
        client.send(frame);
        let mut echo = vec![0; frame.len()];
        client.reader.read_exact(&mut echo).unwrap();
        assert_eq!(echo, frame);
    }
    assert_eq!(app.heads().len(), 1, "one head, then raw bytes");
}

#[test]
fn each_request_is_routed_anew_on_a_kept_connection() {
    let (one, two) = (Upstream::start("one"), Upstream::start("two"));
    let fixture = Fixture::new(&[("app.c1", one.target()), ("api.c1", two.target())], Limits::default());
    let mut client = fixture.client();
    let mut ask = |host: &str| {
        client.send(get(host, "/"));
        let response = client.response();
        assert_eq!(response.status, 200, "{response:?}");
        response.field("x-upstream").unwrap().to_owned()
    };
    assert_eq!(ask("app.c1.localhost"), "one");
    fixture.route("app.c1", two.target()); // its port moved
    assert_eq!(ask("app.c1.localhost"), "two", "the new port, on the next request");
    assert_eq!(ask("api.c1.localhost"), "two");
    fixture.route("api.c1", one.target());
    assert_eq!(ask("api.c1.localhost"), "one");
    assert_eq!(ask("app.c1.localhost"), "two", "another Host on the same connection");
}

#[test]
fn both_loopback_addresses_are_served() {
    let listeners = super::super::bind(0).unwrap();
    let port = listeners[0].local_addr().unwrap().port();
    let dual = std::net::TcpListener::bind("[::1]:0").is_ok();
    assert_eq!(listeners.len(), if dual { 2 } else { 1 }, "::1 is served where the machine has it");
    if !dual {
        eprintln!("no ::1 on this machine: only 127.0.0.1 is checked");
    }
    // A service that listens on ::1 only is reached too.
    let v6_only = std::net::TcpListener::bind("[::1]:0").ok().map(|l| Upstream::on(l, "v6"));
    let app = Upstream::start("app");
    let routes = [("app.c1", app.target()), ("v6.c1", v6_only.as_ref().map_or(Target::Unknown, Upstream::target))];
    let routes = Arc::new(Mutex::new(routes.iter().map(|(name, target)| (name.to_string(), *target)).collect()));
    let _proxy = super::super::serve(listeners, router(&routes), Limits::default()).unwrap();
    let mut client = Client::new(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap());
    client.send(get("app.c1.localhost", "/"));
    assert!(client.response().body.contains("X-Forwarded-For: 127.0.0.1\r\n"));
    if dual {
        let mut client = Client::new(TcpStream::connect(("::1", port)).unwrap());
        client.send(get("app.c1.localhost", "/"));
        assert!(client.response().body.contains("X-Forwarded-For: ::1\r\n"));
        client.send(get("v6.c1.localhost", "/"));
        assert_eq!(client.response().field("x-upstream"), Some("v6"));
    }
}
