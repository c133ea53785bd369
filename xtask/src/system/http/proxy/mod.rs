//! The core of the named URLs' proxy: an HTTP/1.1 reverse proxy on
//! loopback that sends each request where a router says its Host leads.
//!
//! A thread per client connection reads and checks each request head,
//! asks the router where its Host leads, and forwards it with its body; a
//! second thread copies the upstream's answers back, unparsed. The design,
//! and why: ARCHITECTURE.md, "Named URLs".

mod conn;
mod forward;
mod page;
#[cfg(test)]
mod tests;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::model::names::Host;

/// Where a named URL leads, as the router decides for one request.
pub struct Route {
    pub target: Target,
    /// What the error page says to do if the target cannot answer: what
    /// exists, and the command that starts the service. Plain text.
    pub help: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The service's current port on loopback.
    Port(u16),
    /// No such checkout, or no such service in it: 404.
    Unknown,
    /// A service of the checkout that is not running: 503.
    Stopped,
}

/// Maps each request's named Host to its route. Called for every request,
/// so it must answer from memory.
pub type Router = Arc<dyn Fn(&Host) -> Route + Send + Sync>;

/// Time limits on what clients and upstreams may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most a request head may take to arrive, from its first byte (the
    /// first head: from the connection's start). Longer than Chromium's 10 s
    /// for a preconnected socket it has not used yet.
    pub head: Duration,
    /// A connection silent both ways this long is closed (between one and
    /// two of these, in fact). WebSockets, once upgraded, have no such limit.
    pub idle: Duration,
    /// The most an upstream may take to finish its answers once the client
    /// is done or moves to another route.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { head: Duration::from_secs(30), idle: Duration::from_secs(300), drain: Duration::from_secs(30) }
    }
}

/// A running proxy: it serves until the process ends.
pub struct Proxy {
    #[cfg(test)]
    threads: Threads,
}

#[cfg(test)]
impl Proxy {
    /// How many connection threads run (readers and copiers).
    pub fn threads(&self) -> usize {
        self.threads.live()
    }
}

/// Listens on 127.0.0.1 and ::1 at `port`. Browsers try ::1 first for a
/// `.localhost` name, so a ::1 held by another program is an error; a
/// machine without IPv6 is not.
pub fn bind(port: u16) -> anyhow::Result<Vec<TcpListener>> {
    let v4 =
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let port = v4.local_addr()?.port(); // the same on both when `port` was 0
    const EAFNOSUPPORT: i32 = 97; // IPv6 compiled out of the kernel
    match TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
        Ok(v6) => Ok(vec![v4, v6]),
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(EAFNOSUPPORT) => Ok(vec![v4]),
        Err(e) => Err(e).with_context(|| format!("cannot listen on [::1]:{port}")),
    }
}

/// Serves every connection the listeners accept, in background threads.
pub fn serve(listeners: Vec<TcpListener>, router: Router, limits: Limits) -> anyhow::Result<Proxy> {
    let threads = Threads::default();
    let shared = Arc::new(conn::Shared { router, limits, threads: threads.clone() });
    for listener in listeners {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || accept(listener, &shared))
            .context("cannot start the proxy's thread")?;
    }
    Ok(Proxy {
        #[cfg(test)]
        threads,
    })
}

fn accept(listener: TcpListener, shared: &Arc<conn::Shared>) {
    for client in listener.incoming() {
        match client {
            Ok(client) => {
                let shared = shared.clone();
                // If no thread can start, the client is closed with the closure.
                let _ = shared.threads.clone().spawn(move || conn::serve(client, &shared));
            }
            // Out of descriptors, say: others will close.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Starts and counts the connection threads.
#[derive(Clone, Default)]
struct Threads(Arc<AtomicUsize>);

impl Threads {
    /// A connection thread's stack: its buffers are on the heap. 2 MiB each
    /// for 1000 idle connections was 4 GB of address space.
    const STACK: usize = 256 * 1024;

    fn spawn(&self, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        /// Counts the thread out however it ends, panic included.
        struct Out(Arc<AtomicUsize>);
        impl Drop for Out {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.0.fetch_add(1, Ordering::SeqCst);
        let out = Out(self.0.clone());
        let thread = std::thread::Builder::new().name("proxy-conn".into()).stack_size(Threads::STACK);
        thread.spawn(move || {
            let _out = out;
            f()
        })?;
        Ok(())
    }

    #[cfg(test)]
    fn live(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}
