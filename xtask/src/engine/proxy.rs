//! The user's proxy of the named URLs (ARCHITECTURE.md, "Named URLs"), from
//! the engine's side: a checkout's names, the proxy's port (given once,
//! kept in the registry, and the user's for good), and its process: started
//! in the background by the first command that needs it, stopped on request.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::model::alloc;
use crate::model::config::MIN_PORT;
use crate::model::names::Names;
use crate::system::holder;
use crate::system::logfile;
use crate::system::paths::{self, Project};
use crate::system::probe;
use crate::system::process::{self, ProcId};
use crate::system::registry::{Entry, Proxy, Registry};
use crate::system::term::say;

/// Where the walk for the proxy's port starts.
const PREFERRED_PORT: u16 = 7300;
/// How long a new proxy may take to listen.
const START_TIME: Duration = Duration::from_secs(10);
/// How long a proxy may take to go after TERM, before KILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The checkout's names, as the registry has them now: none before its
/// first allocation.
pub fn names_of(project: &Project) -> Option<Names> {
    let entries = Registry::peek().ok()?;
    let entry = entries.checkouts.get(&project.root).filter(|entry| !entry.name.is_empty())?;
    Some(Names { checkout: entry.name.clone(), proxy: entries.proxy?.port })
}

/// The checkout's names, given now if it has none: its name, and the
/// proxy's port if the user has none yet, or if the proxy is down and
/// another program took its port. For the caller to save with the registry.
/// None only when no port is free for the proxy.
pub fn give_names(registry: &mut Registry, root: &Path) -> Option<Names> {
    let checkout = registry.entries.mine(root).name.clone();
    Some(Names { checkout, proxy: proxy_port(registry)? })
}

/// The proxy's port: the registry's while the proxy runs there or it is
/// free, else the first free one from it (or from 7300), past the ports of
/// every checkout and those browsers refuse, set in `registry`.
fn proxy_port(registry: &mut Registry) -> Option<u16> {
    let entries = &mut registry.entries;
    if let Some(proxy) = &entries.proxy
        && (proxy.running().is_some() || probe::is_free(proxy.port))
    {
        return Some(proxy.port);
    }
    let taken: BTreeSet<u16> = entries.checkouts.values().flat_map(Entry::all_ports).collect();
    let start = entries.proxy.as_ref().map_or(PREFERRED_PORT, |proxy| proxy.port);
    let walk = alloc::walk(start, 100, (MIN_PORT, 65535), &probe::kernel_ports()).ports;
    let usable = |port: &u16| !taken.contains(port) && !alloc::is_browser_blocked(*port) && probe::is_free(*port);
    let Some(port) = walk.into_iter().find(usable) else {
        say!("named URLs: no free port for their proxy from {start}: free one, and run this again");
        return None;
    };
    if let Some(old) = &entries.proxy {
        say!("named URLs: port {} of their proxy is taken by another program: they move to port {port}", old.port);
    }
    entries.proxy = Some(Proxy { port, process: None });
    Some(port)
}

/// The proxy as the registry has it: its port, and its process if it runs.
pub fn state() -> anyhow::Result<Option<(u16, Option<ProcId>)>> {
    Ok(Registry::peek()?.proxy.map(|proxy| (proxy.port, proxy.running())))
}

/// Starts the proxy unless it runs, on its port (given now if the user has
/// none, or another program took it): `xtask proxy serve` in a session of
/// its own (no terminal's signal reaches it), from `/` (it outlives every
/// checkout), its output in the registry's folder; once it listens, the
/// registry names it. Under the registry's lock, so two commands never
/// start two. Returns it when it was started.
pub fn ensure_running() -> anyhow::Result<Option<(u16, ProcId)>> {
    let mut registry = Registry::open()?;
    if let Some(proxy) = registry.entries.proxy.as_mut() {
        if proxy.running().is_some() {
            return Ok(None);
        }
        // One that was killed or crashed is named no more: the new proxy
        // ends when the registry names another process than itself.
        proxy.process = None;
    }
    // A port free when chosen may be taken before the proxy binds it (by
    // another user's proxy, say): the next one is tried then.
    for _ in 0..3 {
        let Some(port) = proxy_port(&mut registry) else { break };
        registry.save()?; // the proxy serves while the registry names its port
        match spawn(port) {
            Ok(id) => {
                registry.entries.proxy = Some(Proxy { port, process: Some(id) });
                registry.save()?;
                return Ok(Some((port, id)));
            }
            Err(_) if !probe::is_free(port) => continue,
            Err(e) => return Err(e),
        }
    }
    bail!("the proxy of the named URLs found no port to listen on")
}

/// Starts `xtask proxy serve PORT`, and waits until it listens.
fn spawn(port: u16) -> anyhow::Result<ProcId> {
    let log_path = paths::state_home()?.join("proxy.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let exe = std::env::current_exe().context("finding this program")?;
    let mut command = Command::new(exe);
    command
        .args(["proxy", "serve", &port.to_string()])
        .current_dir("/")
        .env_remove("XTASK_GROUP") // no service's: a stop of one must not reach it
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: one system call between fork and exec.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(Into::into));
    }
    let mut child = command.spawn().context("starting the proxy of the named URLs")?;
    let id = ProcId::of(child.id() as i32).context("the proxy of the named URLs ended at once")?;
    let deadline = Instant::now() + START_TIME;
    loop {
        // It listens, itself: another's listener, which took the port
        // meanwhile, would answer too, and the new proxy would then end.
        let listens = || TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() && holder::held_by_group(port, id.pid);
        if child.try_wait()?.is_none() && listens() {
            return Ok(id);
        }
        if !id.is_alive() || Instant::now() > deadline {
            let _ = process::kill(id, Duration::ZERO);
            let said = logfile::last_lines(&log_path, 5).join("\n");
            bail!("the proxy of the named URLs did not start on port {port}; {}:\n{said}", log_path.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts the proxy if it does not run, for a command that starts services
/// (the first that needs it); says what went wrong, if anything: the
/// services run without it, only their named URLs do not answer.
pub fn start_if_needed() {
    match ensure_running() {
        Ok(Some((port, id))) => say!("named URLs: their proxy started on port {port} (pid {})", id.pid),
        Ok(None) => {}
        Err(e) => say!("warning: {e:#}\nthe named URLs do not answer until it runs: `cargo xtask proxy` says more"),
    }
}

/// Stops the proxy if it runs; returns it. Its port stays the user's.
pub fn stop() -> anyhow::Result<Option<ProcId>> {
    let mut registry = Registry::open()?;
    let Some(proxy) = registry.entries.proxy.as_mut() else { return Ok(None) };
    let running = proxy.running();
    if let Some(id) = running {
        process::kill(id, STOP_GRACE).with_context(|| format!("stopping the proxy (pid {})", id.pid))?;
    }
    proxy.process = None;
    registry.save()?;
    Ok(running)
}
