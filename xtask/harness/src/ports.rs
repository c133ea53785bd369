//! Ports: blocks of free ports, whether a port is free or answers, and
//! squatters, processes of a test's own that hold a port.

use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::processes::main_thread_ended;
use crate::wait::wait_for;

/// The first of `n` (at most 100) consecutive free ports, in a block of
/// 100 in 20000-29999 that no other caller in this process gets. Blocks are
/// handed out from a random start, so concurrent processes (test binaries,
/// the bench, other checkouts' tests) rarely meet. Panics when no block is
/// free: a machine that busy is no place to test or measure on.
pub fn free_ports(n: u16) -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: OnceLock<u64> = OnceLock::new();
    assert!(n <= 100);
    let start = *START.get_or_init(|| RandomState::new().hash_one(std::process::id()) % 100);
    for _ in 0..100 {
        let block = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 100;
        let base = 20000 + block as u16 * 100;
        if (base..base + n).all(is_free) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports in 20000-29999");
}

/// This machine's ephemeral port range, when it has one with room for a
/// service on either side (a container may have none, and an administrator
/// may have widened it to nearly every port).
pub fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut ports = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    let (lo, hi) = (ports.next()??, ports.next()??);
    (lo > 2000 && hi < 65000).then_some((lo, hi))
}

/// Free on every loopback and wildcard address, as the runner checks (an
/// IPv6 address counts as free on a machine without IPv6).
pub fn is_free(port: u16) -> bool {
    ["127.0.0.1", "0.0.0.0", "::1", "::"].iter().all(|host| {
        TcpListener::bind((*host, port)).is_ok() || (host.contains(':') && TcpListener::bind(("::1", 0)).is_err())
    })
}

/// A connection to the port succeeds, on 127.0.0.1 or ::1: something
/// listens there (only a listener accepts one).
pub fn answers(port: u16) -> bool {
    let addrs: [SocketAddr; 2] = [(Ipv4Addr::LOCALHOST, port).into(), (Ipv6Addr::LOCALHOST, port).into()];
    addrs.iter().any(|addr| TcpStream::connect_timeout(addr, Duration::from_millis(500)).is_ok())
}

/// A process of ours listening on a port until dropped (or killed).
pub struct Squatter {
    pub child: Child,
    pub port: u16,
}

impl Squatter {
    /// `python3 -m http.server PORT` on `host`, as the account `uid` when given (needs root).
    pub fn start(port: u16, host: &str, uid: Option<u32>) -> Squatter {
        let mut command = Command::new(if uid.is_some() { "/usr/bin/python3" } else { "python3" });
        if let Some(uid) = uid {
            command.uid(uid).gid(uid);
        }
        command.args(["-m", "http.server", &port.to_string(), "--bind", host]);
        Squatter::listening(command, port)
    }

    /// A process listening on 127.0.0.1:`port` whose main thread has ended
    /// (`MAIN_THREAD_ENDS_FIRST`).
    pub fn main_thread_ended(port: u16) -> Squatter {
        let mut command = Command::new("python3");
        command.args(["-c", MAIN_THREAD_ENDS_FIRST, &port.to_string()]);
        let squatter = Squatter::listening(command, port);
        assert!(wait_for(Duration::from_secs(10), || main_thread_ended(squatter.pid())), "its main thread still runs");
        squatter
    }

    fn listening(mut command: Command, port: u16) -> Squatter {
        let child = command.current_dir("/").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        assert!(wait_for(Duration::from_secs(10), || answers(port)), "the squatter on {port} did not listen");
        Squatter { child, port }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// Python serving 127.0.0.1:`argv[1]` from a second thread, once its main
/// thread has ended: /proc shows the process as a zombie, with an empty fd
/// folder, while it holds the port (lsof and `ss -p` do not see it).
pub const MAIN_THREAD_ENDS_FIRST: &str = "import ctypes, socket, sys, threading\n\
    server = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n\
    threading.Thread(target=lambda: [c.close() for c, _ in iter(server.accept, None)]).start()\n\
    ctypes.CDLL(None).pthread_exit(None)\n";
