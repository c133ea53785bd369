//! Is a service ready (and later: healthy)? A TCP connection to its port, or
//! `GET path` answering 2xx, on 127.0.0.1 or ::1 (whichever it listens on).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Ready;

const TIMEOUT: Duration = Duration::from_millis(500);

pub fn check(ready: &Ready, port: u16) -> bool {
    let addrs: [SocketAddr; 2] = [(Ipv4Addr::LOCALHOST, port).into(), (Ipv6Addr::LOCALHOST, port).into()];
    addrs.iter().any(|addr| match ready {
        Ready::Tcp => TcpStream::connect_timeout(addr, TIMEOUT).is_ok(),
        Ready::Http(path) => http_ok(addr, path).unwrap_or(false),
    })
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
    // Read the whole (small) answer: closing with unread data resets the
    // connection, and some servers log that as an error.
    let mut answer = Vec::new();
    stream.take(1 << 20).read_to_end(&mut answer)?;
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
}
