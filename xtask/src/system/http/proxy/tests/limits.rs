//! What does not pass: refusals and their pages, smuggling attempts, slow
//! and idle clients; and what is left once clients go (nothing).

use std::os::fd::AsFd;

use super::*;

#[test]
fn refusals_say_what_was_understood_and_reach_no_upstream() {
    let app = Upstream::start("app");
    let fixture =
        Fixture::new(&[("web.c1", Target::Stopped), ("gone.c1", Target::Port(closed_port()))], Limits::default());
    fixture.route("self.c1", Target::Port(fixture.port));
    // The Host's port plays no part: it names the upstream's, in vain.
    let at = app.port;
    let cases = [
        (format!("nope.c1.localhost:{at}"), 404, "service <b>nope</b> of checkout <b>c1</b>"),
        ("web.c1.localhost".into(), 503, "Start it: cargo xtask start web"),
        ("gone.c1.localhost".into(), 502, "Start it: cargo xtask start gone"),
        ("self.c1.localhost".into(), 508, "leads back to the proxy"),
        (format!("example.com:{at}"), 400, "example.com is not a named URL"),
        (format!("127.0.0.1:{at}"), 400, "127.0.0.1 is not a named URL"),
        (format!("app.localhost:{at}"), 404, "app.localhost is not a named URL"),
        (format!("app.c1.localhost.evil:{at}"), 400, "is not a named URL"),
    ];
    for (host, status, text) in cases {
        let mut client = fixture.client();
        client.send(get(&host, "/"));
        let response = client.response();
        assert_eq!(response.status, status, "{host}: {response:?}");
        assert!(response.body.contains(text), "{host}: {}", response.body);
        assert!(response.head.contains("Content-Type: text/html"), "{host}: {}", response.head);
        assert!(client.closed(), "{host}: the connection ends after a refusal");
    }
    assert_eq!(app.heads(), Vec::<String>::new(), "nothing was forwarded");
}

#[test]
fn a_client_that_speaks_no_http_is_refused_at_once() {
    let app = Upstream::start("app");
    let fixture = Fixture::new(&[("app.c1", app.target())], Limits::default());
    let mut client = fixture.client();
    client.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"); // a TLS ClientHello: https:// typed for http://
    assert_eq!(client.response().status, 400, "not held until the head's time is up");
}

#[test]
fn a_head_over_the_limit_is_refused() {
    let app = Upstream::start("app");
    let fixture = Fixture::new(&[("app.c1", app.target())], Limits::default());
    let mut client = fixture.client();
    client.send(format!("GET / HTTP/1.1\r\nHost: app.c1.localhost\r\nCookie: {}\r\n\r\n", "a".repeat(70_000)));
    assert_eq!(client.response().status, 431);
    assert!(client.closed());
    assert_eq!(app.heads(), Vec::<String>::new(), "nothing was forwarded");
}

#[test]
fn a_refusal_comes_after_the_answers_already_owed() {
    let app = Upstream::start("app");
    let fixture = Fixture::new(&[("app.c1", app.target())], Limits::default());
    let mut client = fixture.client();
    client.send(get("app.c1.localhost", "/1") + &get("nope.c1.localhost", "/2") + &get("app.c1.localhost", "/3"));
    let first = client.response();
    assert!(first.status == 200 && first.body.starts_with("GET /1 "), "{first:?}");
    assert_eq!(client.response().status, 404);
    assert!(client.closed());
    assert_eq!(app.heads().len(), 1, "/3 came after the refusal: not forwarded");
}

#[test]
fn smuggling_attempts_are_refused_before_the_upstream_reads_them() {
    let app = Upstream::start("app");
    let fixture = Fixture::new(&[("app.c1", app.target())], Limits::default());
    let host = "Host: app.c1.localhost\r\n";
    let smuggled = format!("GET /smuggled HTTP/1.1\r\n{host}\r\n");
    let attempts = [
        format!(
            "POST / HTTP/1.1\r\n{host}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
            smuggled.len() + 5
        ),
        format!(
            "POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!("POST / HTTP/1.1\r\n{host}Content-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}", smuggled.len()),
        format!("GET / HTTP/1.1\r\n{host}Host: other.c1.localhost\r\n\r\n{smuggled}"),
        format!("GET / HTTP/1.1\n{host}\r\n{smuggled}"),
    ];
    for attempt in &attempts {
        let mut client = fixture.client();
        client.send(attempt);
        let response = client.response();
        assert_eq!(response.status, 400, "{attempt:?}: {response:?}");
        assert!(client.closed(), "{attempt:?}");
    }
    assert_eq!(app.heads(), Vec::<String>::new(), "nothing was forwarded");
}

#[test]
fn a_malformed_chunked_body_ends_the_connection_where_it_goes_wrong() {
    let bodies = [
        ("5;a\nb\r\nhello\r\n0\r\n\r\n", ""), // a bare LF, which a lenient parser takes as the line's end
        ("5\r\nhello\n0\r\n\r\n", "5\r\nhello"), // no CRLF after the data
        ("5\r\nhello!!0\r\n\r\n", "5\r\nhello"), // two bytes too many, in the place of the CRLF
        ("5\r\nhello\r\n0\r\nX: y\n\r\n", "5\r\nhello\r\n0\r\n"), // a bare LF in a trailer
    ];
    let host = "Host: app.c1.localhost\r\n";
    for (body, valid) in bodies {
        let (target, received) = sink();
        let fixture = Fixture::new(&[("app.c1", target)], Limits::default());
        let mut client = fixture.client();
        let head = format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n");
        client.send(format!("{head}\r\n{body}GET /smuggled HTTP/1.1\r\n{host}\r\n"));
        assert!(client.closed(), "{body:?}: no answer");
        // At most the head and the body's valid start, as they came.
        let forwarded = format!(
            "{head}X-Forwarded-Host: app.c1.localhost\r\nX-Forwarded-Proto: http\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n{valid}"
        );
        let received = String::from_utf8(received.recv().unwrap()).unwrap();
        assert!(forwarded.starts_with(&received), "{body:?}: forwarded past the fault: {received:?}");
    }
}

#[test]
fn slow_clients_hold_no_one_up_and_are_let_go() {
    let app = Upstream::start("app");
    let limits = Limits { head: Duration::from_secs(1), ..Limits::default() };
    let fixture = Fixture::new(&[("app.c1", app.target())], limits);
    let mut mute = fixture.client(); // connects, says nothing
    let first = fixture.client(); // trickles its first head
    let mut later = fixture.client(); // trickles its second head
    later.send(get("app.c1.localhost", "/"));
    assert_eq!(later.response().status, 200);
    let mut slow = [first, later];
    for client in &mut slow {
        client.send("GET / HTTP/1.1\r\nHo");
    }
    let mut quick = fixture.client();
    quick.send(get("app.c1.localhost", "/"));
    assert_eq!(quick.response().status, 200, "answered while the slow heads are pending");
    // A byte every 20 ms: the rest of a head would take 8 s, eight times the limit.
    let rest = format!("st: app.c1.localhost\r\nX-Padding: {}\r\n\r\n", "x".repeat(350));
    let mut open = [true, true];
    for byte in rest.bytes() {
        for (client, open) in slow.iter_mut().zip(&mut open) {
            *open = *open && client.stream.write_all(&[byte]).is_ok();
        }
        if open == [false, false] {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (client, which) in slow.iter_mut().zip(["first", "second"]) {
        assert!(client.closed(), "the trickled {which} head is cut off, not answered (all sent: {open:?})");
    }
    assert!(mute.closed(), "a client that says nothing is let go after the head's limit, not the idle one");
}

#[test]
fn a_silent_connection_is_closed() {
    let app = Upstream::start("app"); // keeps its connections open, however idle
    let limits = Limits { idle: Duration::from_secs(1), ..Limits::default() };
    let fixture = Fixture::new(&[("app.c1", app.target())], limits);
    let mut client = fixture.client();
    client.send(get("app.c1.localhost", "/"));
    assert_eq!(client.response().status, 200);
    assert!(client.closed(), "closed by the proxy within PATIENCE, not by a read timeout here");
}

#[test]
fn no_thread_is_left_when_clients_go() {
    let app = Upstream::start("app");
    let limits = Limits { drain: Duration::from_secs(1), ..Limits::default() };
    let fixture = Fixture::new(&[("app.c1", app.target())], limits);
    let mut clients = Vec::new();
    // Kept alive after an answer (the upstream keeps its side open).
    for _ in 0..3 {
        let mut client = fixture.client();
        client.send(get("app.c1.localhost", "/"));
        assert_eq!(client.response().status, 200);
        clients.push(client);
    }
    // Reset instead of closed.
    let mut reset = fixture.client();
    reset.send(get("app.c1.localhost", "/"));
    assert_eq!(reset.response().status, 200);
    rustix::net::sockopt::set_socket_linger(reset.stream.as_fd(), Some(Duration::ZERO)).unwrap();
    clients.push(reset);
    // Gone in the middle of a body.
    let mut partial = fixture.client();
    partial.send("POST / HTTP/1.1\r\nHost: app.c1.localhost\r\nContent-Length: 1000\r\n\r\nonly this");
    clients.push(partial);
    // An upgraded connection.
    let mut socket = fixture.client();
    socket.send("GET / HTTP/1.1\r\nHost: app.c1.localhost\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(socket.response().status, 101);
    clients.push(socket);
    // A stream the upstream holds open (gate closed): it does not answer the
    // half-close, the drain limit ends it.
    let mut stream = fixture.client();
    stream.send(get("app.c1.localhost", "/sse"));
    super::read_head(&mut stream.reader).unwrap().unwrap();
    clients.push(stream);
    // A refused one, and one that never said anything.
    let mut refused = fixture.client();
    refused.send(get("nope.c1.localhost", "/"));
    assert_eq!(refused.response().status, 404);
    clients.push(refused);
    clients.push(fixture.client());
    assert!(fixture.proxy.threads() >= 2 * 6, "a reader and a copier per connection: {}", fixture.proxy.threads());
    drop(clients);
    assert_eq!(fixture.threads_left(), 0, "threads of the proxy still running after their clients went");
    app.open_gate();
}
