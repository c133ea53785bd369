//! Is a service ready (and later: healthy)? A TCP connection to its port, or
//! `GET path` answering 2xx, on 127.0.0.1 or ::1 (whichever it listens on).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::model::config::Ready;

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

    /// A server that answers, then keeps the connection open: ready all the same.
    #[test]
    fn http_readiness_does_not_wait_for_the_connection_to_close() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let _ = stream.read(&mut [0u8; 1024]);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                held.push(stream); // never closed
            }
        });
        // Waiting for the end of the answer, the check would time out, and fail.
        assert!(check(&Ready::Http("/".into()), port));
    }
}
