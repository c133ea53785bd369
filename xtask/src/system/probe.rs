//! Asking the network about a port: is it free (on every address), and is
//! the service on it ready: a TCP connection to it, or `GET path` answering
//! 2xx, on 127.0.0.1 or ::1 (whichever it listens on); for a container, a
//! connection its server keeps. And the kernel's port ranges, which the
//! allocation keeps out of.

use std::io::ErrorKind;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::model::alloc::{KernelPorts, parse_port_range, parse_reserved_ports};
use crate::model::config::{Ready, Service};

/// The real probe: a port is free only if it can be bound on 127.0.0.1,
/// 0.0.0.0, ::1 and ::. A listener on any one of them makes it busy (binding
/// the wildcard alone can succeed beside a listener on a specific address).
/// Addresses this machine lacks (no IPv6) are skipped.
pub fn is_free(port: u16) -> bool {
    let addrs: [SocketAddr; 4] = [
        (Ipv4Addr::LOCALHOST, port).into(),
        (Ipv4Addr::UNSPECIFIED, port).into(),
        (Ipv6Addr::LOCALHOST, port).into(),
        (Ipv6Addr::UNSPECIFIED, port).into(),
    ];
    const EAFNOSUPPORT: i32 = 97; // IPv6 compiled out of the kernel
    addrs.iter().all(|addr| match TcpListener::bind(addr) {
        Ok(_) => true,
        Err(e) => addr.is_ipv6() && (e.kind() == ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(EAFNOSUPPORT)),
    })
}

/// This machine's kernel ports, read from /proc: a file that is missing or unreadable
/// (a container, another kernel) or does not parse constrains nothing.
pub fn kernel_ports() -> KernelPorts {
    let read = |name: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).ok();
    KernelPorts {
        ephemeral: read("ip_local_port_range").and_then(|text| parse_port_range(&text)),
        reserved: read("ip_local_reserved_ports").and_then(|text| parse_reserved_ports(&text)).unwrap_or_default(),
    }
}

const TIMEOUT: Duration = Duration::from_millis(500);

pub fn check(ready: &Ready, port: u16) -> bool {
    let addrs: [SocketAddr; 2] = [(Ipv4Addr::LOCALHOST, port).into(), (Ipv6Addr::LOCALHOST, port).into()];
    addrs.iter().any(|addr| match ready {
        Ready::Tcp => TcpStream::connect_timeout(addr, TIMEOUT).is_ok(),
        Ready::Http(path) => http_ok(addr, path).unwrap_or(false),
    })
}

/// How long a connection to a container must stay open to show that its
/// server took it: a proxy that has nobody inside to pass it to closes it
/// at once (measured: under a millisecond).
const KEPT: Duration = Duration::from_millis(100);

/// Whether the server behind a published port answers: with Docker's
/// userland proxy, a connection is accepted before anything inside
/// listens, then closed. A TCP check needs the connection kept (or
/// something said on it); an HTTP check needs an answer anyway.
pub fn serves(ready: &Ready, port: u16) -> bool {
    let Ready::Tcp = ready else { return check(ready, port) };
    let addrs: [SocketAddr; 2] = [(Ipv4Addr::LOCALHOST, port).into(), (Ipv6Addr::LOCALHOST, port).into()];
    addrs.iter().any(|addr| {
        let Ok(mut stream) = TcpStream::connect_timeout(addr, TIMEOUT) else { return false };
        let _ = stream.set_read_timeout(Some(KEPT));
        match stream.read(&mut [0u8; 64]) {
            Ok(n) => n > 0, // a greeting; 0 is the end of the connection
            Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    })
}

/// Whether a connection to `port` on one of `addresses` of this machine's
/// (a container's) is accepted. Such an address answers at once; a SYN
/// dropped while its network comes up is sent again at the next check,
/// not after the kernel's second.
pub fn accepts(addresses: &[IpAddr], port: u16) -> bool {
    let local = Duration::from_millis(50);
    addresses.iter().any(|ip| TcpStream::connect_timeout(&SocketAddr::new(*ip, port), local).is_ok())
}

/// Whether a service that runs answers on `port`, as `status` asks.
pub fn healthy(service: &Service, port: u16) -> bool {
    match service.in_container() {
        true => serves(&service.ready, port),
        false => check(&service.ready, port),
    }
}

/// A minimal HTTP/1.0 GET: enough to read the status line.
fn http_ok(addr: &SocketAddr, path: &str) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect_timeout(addr, TIMEOUT)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let host = match addr {
        SocketAddr::V4(_) => format!("127.0.0.1:{}", addr.port()),
        SocketAddr::V6(_) => format!("[::1]:{}", addr.port()),
    };
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    // The status line decides, as soon as it has come: a server may keep
    // the connection open all the same.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.contains(&b'\n') && answer.len() < 32 {
        match stream.read(&mut chunk)? {
            0 => break,
            n => answer.extend_from_slice(&chunk[..n]),
        }
    }
    // The rest, briefly: closing with unread data resets the connection,
    // and some servers log that as an error.
    stream.set_read_timeout(Some(Duration::from_millis(50)))?;
    let _ = stream.take(1 << 20).read_to_end(&mut Vec::new());
    Ok(status_is_success(&answer))
}

/// `HTTP/1.x 2xx` at the start of a response.
fn status_is_success(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&answer[..answer.len().min(32)]);
    let mut words = text.split_whitespace();
    words.next().is_some_and(|v| v.starts_with("HTTP/"))
        && words.next().is_some_and(|code| code.starts_with('2') && code.len() == 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_sees_a_listener_on_any_one_address() {
        for addr in ["127.0.0.1:0", "0.0.0.0:0", "[::1]:0", "[::]:0"] {
            let Ok(listener) = TcpListener::bind(addr) else {
                continue;
            }; // no IPv6 here
            let port = listener.local_addr().unwrap().port();
            assert!(!is_free(port), "a listener on {addr} (port {port}) was reported free");
            drop(listener);
            assert!(is_free(port), "port {port} is still busy after closing the listener on {addr}");
        }
    }

    #[test]
    fn reads_the_status_line() {
        assert!(status_is_success(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_is_success(b"HTTP/1.0 204 No"));
        assert!(!status_is_success(b"HTTP/1.1 503 Service"));
        assert!(!status_is_success(b"HTTP/1.1 301 Moved"));
        assert!(!status_is_success(b"SSH-2.0-OpenSSH"));
        assert!(!status_is_success(b""));
    }

    #[test]
    fn tcp_readiness_follows_a_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(check(&Ready::Tcp, port));
        drop(listener);
        assert!(!check(&Ready::Tcp, port));
    }

    /// A server on a loopback port of its own, answering each connection
    /// with `answer`; a connection it gives back is kept open, never closed.
    fn server(answer: impl Fn(std::net::TcpStream) -> Option<std::net::TcpStream> + Send + 'static) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            // Collected as they come: kept until the test ends.
            let _held: Vec<_> = listener.incoming().filter_map(|stream| answer(stream.unwrap())).collect();
        });
        port
    }

    /// A connection accepted and closed at once, as a proxy with nobody
    /// inside does, is no server; one kept open, or greeted, is.
    #[test]
    fn a_container_serves_only_when_a_connection_is_kept() {
        for (behaviour, serves_it) in [("closes", false), ("keeps", true), ("greets", true)] {
            let port = server(move |mut stream| match behaviour {
                "closes" => None,
                "greets" => Some(stream.write_all(b"+OK\r\n").map(|()| stream).unwrap()),
                _ => Some(stream),
            });
            assert_eq!(serves(&Ready::Tcp, port), serves_it, "a server that {behaviour}");
            assert!(check(&Ready::Tcp, port), "a plain connect succeeds to a server that {behaviour}");
        }
    }

    /// A server that answers, then keeps the connection open: ready all the same.
    #[test]
    fn http_readiness_does_not_wait_for_the_connection_to_close() {
        let port = server(|mut stream| {
            let _ = stream.read(&mut [0u8; 1024]);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            Some(stream) // never closed
        });
        // Waiting for the end of the answer, the check would time out, and fail.
        assert!(check(&Ready::Http("/".into()), port));
    }
}
