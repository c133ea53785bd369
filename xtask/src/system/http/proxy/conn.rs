//! One client connection: its request heads read and checked one at a time,
//! each routed afresh, bodies forwarded by their framing; a second thread
//! copies the upstream's bytes back verbatim.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use super::forward::{self, Head};
use super::page::Refusal;
use super::{Limits, Router, Target, Threads};
use crate::system::http::chunked::Chunked;
use crate::system::http::head::Body;
use crate::system::http::reader::{Clock, Reader, Wait};

/// A loopback connection is accepted or refused at once, unless the
/// service's accept queue is full.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, at most, what a refused client still sends is read and dropped
/// after the page: closing with unread bytes resets the connection, and the
/// client may lose the page.
const LINGER: Duration = Duration::from_secs(2);

/// What every connection shares.
pub struct Shared {
    pub router: Router,
    pub limits: Limits,
    pub threads: Threads,
}

/// Serves one client connection until it ends; both sockets are closed on
/// every way out.
pub fn serve(client: TcpStream, shared: &Shared) {
    let Ok(mut conn) = Conn::new(client, shared) else { return };
    let _ = conn.run();
}

struct Conn<'a> {
    client: Reader,
    peer: IpAddr,
    /// The port clients came in on: a route there would loop.
    own_port: u16,
    upstream: Option<Upstream>,
    shared: &'a Shared,
}

/// The upstream connection of the current route, and the thread copying
/// its bytes to the client.
struct Upstream {
    port: u16,
    stream: TcpStream,
    /// The copier's end, once its last write is done: true if the upstream
    /// closed cleanly, false on an error.
    done: Receiver<bool>,
    /// Set when the client outlives this upstream (a route change): the
    /// copier must not close it.
    keep_client: Arc<AtomicBool>,
}

impl Upstream {
    /// Half-closes the upstream, so it answers what it has read and closes,
    /// and waits for those answers to reach the client. True if they all did.
    fn finish(self, drain: Duration) -> bool {
        let _ = self.stream.shutdown(Shutdown::Write);
        // Not a read timeout on the upstream: one set while the copier waits
        // in a read does not apply to that read.
        let clean = self.done.recv_timeout(drain).unwrap_or(false);
        let _ = self.stream.shutdown(Shutdown::Both); // wakes a copier still waiting
        clean
    }
}

impl Drop for Conn<'_> {
    /// Whatever ended the connection, nothing stays blocked on it: the copier
    /// wakes from its read when the upstream is shut.
    fn drop(&mut self) {
        if let Some(upstream) = &self.upstream {
            let _ = upstream.stream.shutdown(Shutdown::Both);
        }
        let _ = self.client.stream.shutdown(Shutdown::Both);
    }
}

impl<'a> Conn<'a> {
    fn new(client: TcpStream, shared: &'a Shared) -> io::Result<Conn<'a>> {
        client.set_nodelay(true)?; // else Nagle and delayed ACKs add 40 ms to a body sent apart
        // A client that stops reading blocks the copier no longer than this.
        client.set_write_timeout(Some(shared.limits.idle))?;
        let peer = client.peer_addr()?.ip();
        let own_port = client.local_addr()?.port();
        let client = Reader::new(client, shared.limits.idle);
        Ok(Conn { client, peer, own_port, upstream: None, shared })
    }

    fn run(&mut self) -> io::Result<()> {
        // The first head is timed from the connection's start: a client that
        // connects and says nothing, or a byte at a time, is let go.
        let mut deadline = Some(Instant::now() + self.shared.limits.head);
        loop {
            let head = match self.read_head(deadline)? {
                Some(Ok(head)) => head,
                Some(Err(refusal)) => return self.refuse(&refusal, false),
                None => return self.finish(),
            };
            deadline = None;
            let route = (self.shared.router)(&head.host);
            let port = match route.target {
                Target::Port(port) if port == self.own_port => {
                    return self.refuse(&Refusal::Loop(head.host, port), head.head_only);
                }
                Target::Port(port) => port,
                Target::Unknown => return self.refuse(&Refusal::Unknown(head.host, route.help), head.head_only),
                Target::Stopped => return self.refuse(&Refusal::Stopped(head.host, route.help), head.head_only),
            };
            // Decided anew for each request: a service whose port moved, or
            // another Host on the same connection, gets a new upstream.
            if self.upstream.as_ref().is_some_and(|upstream| upstream.port != port) && !self.release() {
                return Ok(());
            }
            if self.upstream.is_none() {
                match self.connect(port) {
                    Ok(upstream) => self.upstream = Some(upstream),
                    Err(_) => return self.refuse(&Refusal::Down(head.host, port, route.help), head.head_only),
                }
            }
            self.forward(head)?;
        }
    }

    /// Reads the next head; None when the client is done. A head has
    /// `limits.head` to arrive from its first byte; the wait for that
    /// first byte is bounded by the connection's idle limit.
    fn read_head(&mut self, mut deadline: Option<Instant>) -> io::Result<Option<Result<Head, Refusal>>> {
        let mut parsed = 0;
        loop {
            let data = self.client.data();
            // httparse starts over at each call: a head sent a byte at a time
            // would take time quadratic in its length. Its first bytes (for
            // a client that speaks no HTTP at all, TLS say) and each line's
            // end are enough to see where it ends, or that it is wrong.
            if data.len() > parsed && (parsed == 0 || data[parsed..].contains(&b'\n')) {
                match forward::parse(data, self.peer) {
                    Ok(Some(head)) => return Ok(Some(Ok(head))),
                    Ok(None) => parsed = data.len(),
                    Err(refusal) => return Ok(Some(Err(refusal))),
                }
            }
            if self.client.is_full() {
                return Ok(Some(Err(Refusal::TooLarge)));
            }
            if !data.is_empty() {
                deadline.get_or_insert_with(|| Instant::now() + self.shared.limits.head);
            }
            let wait = deadline.map_or(Wait::Idle, Wait::Until);
            if self.client.fill(wait)? == 0 {
                return Ok(None);
            }
        }
    }

    /// Forwards the head, then its body as it comes (never waiting for it
    /// first: a client that sent `Expect: 100-continue` waits for the
    /// upstream's answer), then, after an upgrade, raw bytes both ways.
    fn forward(&mut self, head: Head) -> io::Result<()> {
        let upstream = &mut self.upstream.as_mut().expect("connected before forwarding").stream;
        let client = &mut self.client;
        client.consume(head.len);
        // What of the body has come goes with the head, in one write.
        let mut out = head.forward;
        match head.body {
            Body::Empty => upstream.write_all(&out)?,
            Body::Length(mut left) => loop {
                let n = client.data().len().min(usize::try_from(left).unwrap_or(usize::MAX));
                out.extend_from_slice(&client.data()[..n]);
                upstream.write_all(&out)?;
                out.clear();
                client.consume(n);
                left -= n as u64;
                if left == 0 {
                    break;
                }
                if client.fill(Wait::Idle)? == 0 {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
            },
            Body::Chunked => {
                let mut chunks = Chunked::new();
                loop {
                    let mut n = 0;
                    loop {
                        match chunks.advance(&client.data()[n..]) {
                            Ok(0) => break,
                            Ok(more) => n += more,
                            Err(_) => return Err(ErrorKind::InvalidData.into()), // the upstream has part: end both
                        }
                    }
                    out.extend_from_slice(&client.data()[..n]);
                    upstream.write_all(&out)?;
                    out.clear();
                    client.consume(n);
                    if chunks.is_done() {
                        break;
                    }
                    if client.fill(Wait::Idle)? == 0 {
                        return Err(ErrorKind::UnexpectedEof.into());
                    }
                }
            }
        }
        if head.upgrade {
            return self.tunnel();
        }
        Ok(())
    }

    /// After a WebSocket upgrade (or its refusal, which still comes from the
    /// same upstream): raw bytes until the client is done. No idle limit:
    /// a quiet WebSocket is a normal one.
    fn tunnel(&mut self) -> io::Result<()> {
        let upstream = &mut self.upstream.as_mut().expect("connected before tunnelling").stream;
        upstream.write_all(self.client.data())?;
        let all = self.client.data().len();
        self.client.consume(all);
        self.client.stream.set_read_timeout(None)?;
        io::copy(&mut self.client.stream, upstream)?;
        self.finish()
    }

    /// The client is done sending: the upstream answers what it owes, then
    /// the connection ends.
    fn finish(&mut self) -> io::Result<()> {
        if let Some(upstream) = self.upstream.take() {
            upstream.finish(self.shared.limits.drain);
        }
        Ok(())
    }

    /// Ends the current upstream while the client stays. False if its
    /// answers did not all arrive: the client's answers would be out of
    /// order, so the connection must end.
    fn release(&mut self) -> bool {
        let Some(upstream) = self.upstream.take() else { return true };
        upstream.keep_client.store(true, Ordering::SeqCst);
        upstream.finish(self.shared.limits.drain)
    }

    /// Answers with a page, after the answers owed by the current upstream.
    fn refuse(&mut self, refusal: &Refusal, head_only: bool) -> io::Result<()> {
        if !self.release() {
            return Ok(());
        }
        let stream = &mut self.client.stream;
        stream.write_all(&refusal.response(head_only))?;
        stream.shutdown(Shutdown::Write)?;
        let until = Instant::now() + LINGER;
        let mut sink = [0; 8 * 1024];
        while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            stream.set_read_timeout(Some(left))?;
            if stream.read(&mut sink)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Connects to the route's port on loopback, and starts copying back.
    fn connect(&self, port: u16) -> io::Result<Upstream> {
        // 127.0.0.1 first, which the runner's services listen on; ::1 for one that listens only there.
        let addrs = [SocketAddr::from((Ipv4Addr::LOCALHOST, port)), SocketAddr::from((Ipv6Addr::LOCALHOST, port))];
        let mut stream = TcpStream::connect_timeout(&addrs[0], CONNECT_TIMEOUT);
        if stream.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused) {
            stream = TcpStream::connect_timeout(&addrs[1], CONNECT_TIMEOUT);
        }
        let stream = stream?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(self.shared.limits.idle))?; // an upstream that stops reading
        let keep_client = Arc::new(AtomicBool::new(false));
        let (from, to, keep, clock) =
            (stream.try_clone()?, self.client.stream.try_clone()?, keep_client.clone(), self.client.clock.clone());
        let (end, done) = channel();
        self.shared.threads.spawn(move || {
            let _ = end.send(copy_back(from, to, &keep, &clock));
        })?;
        Ok(Upstream { port, stream, done, keep_client })
    }
}

/// The copier: the upstream's bytes to the client as they come (chunked
/// and SSE answers stream through), until the upstream closes. Closes the
/// client then, which also wakes the reader, unless the client is kept.
fn copy_back(mut upstream: TcpStream, mut client: TcpStream, keep_client: &AtomicBool, clock: &Clock) -> bool {
    let mut buf = vec![0; 16 * 1024];
    let clean = loop {
        let n = match upstream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break false, // reset
        };
        if client.write_all(&buf[..n]).is_err() {
            break false;
        }
        clock.touch();
    };
    if !keep_client.load(Ordering::SeqCst) {
        let _ = client.shutdown(Shutdown::Both);
    }
    let _ = upstream.shutdown(Shutdown::Both);
    clean
}
