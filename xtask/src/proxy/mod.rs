//! The proxy of the named URLs as a front end (ARCHITECTURE.md, "Named
//! URLs"): `cargo xtask proxy` shows its state, address and routes, `proxy
//! stop` stops it, and the hidden `proxy serve PORT` is the proxy itself, a
//! long-running process of the user's, started in the background by the
//! first command that needs it (`engine::proxy`).

use std::sync::Arc;

use serde_json::json;

use crate::engine::proxy;
use crate::engine::routes::{self, Routes};
use crate::model::names::Host;
use crate::system::http;
use crate::system::process::ProcId;
use crate::system::registry::Registry;
use crate::system::term::{Style, say};

/// `cargo xtask proxy`: the proxy's state and address, and every route.
pub fn show(as_json: bool) -> anyhow::Result<()> {
    let state = proxy::state()?;
    let checkouts = routes::read_all()?;
    if as_json {
        let (port, process) = state.unzip();
        let process = process.flatten();
        let view = json!({ "port": port, "running": process.is_some(), "pid": process.map(|p| p.pid), "checkouts": checkouts });
        say!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    let style = Style::stdout();
    let Some((port, process)) = state else {
        say!("proxy: none yet: the first `cargo xtask dev` or `start` gives the named URLs a port, and starts it");
        return Ok(());
    };
    match process {
        Some(id) => say!("proxy: {} (pid {}) on 127.0.0.1 and ::1, port {port}", style.green("running"), id.pid),
        None => say!(
            "proxy: {} (port {port} stays yours; the next `cargo xtask dev` or `start` starts it)",
            style.yellow("not running")
        ),
    }
    say!("named URLs: http://<service>.<checkout>.localhost:{port}/");
    for checkout in &checkouts {
        say!("{}  {}", checkout.name, style.dim(&checkout.root.display().to_string()));
        let width = checkout.services.iter().map(|s| s.host.len()).max().unwrap_or(0) + 12;
        let mut other = Vec::new();
        for service in &checkout.services {
            let url = format!("http://{}:{port}", service.host);
            match (service.http, service.port) {
                (false, _) => other.push(service.service.as_str()),
                (true, Some(to)) => say!("  {url:width$} -> {to}"),
                (true, None) => say!("  {url:width$} {}", style.dim("stopped")),
            }
        }
        if !other.is_empty() {
            say!("  {}", style.dim(&format!("no named URL (not HTTP): {}", other.join(", "))));
        }
        if let Some(problem) = &checkout.problem {
            say!("  {}", style.yellow(problem.lines().next().unwrap_or_default()));
        }
    }
    Ok(())
}

/// `cargo xtask proxy stop`.
pub fn stop() -> anyhow::Result<()> {
    match proxy::stop()? {
        Some(id) => say!(
            "proxy: stopped (pid {}); its port stays yours, and the next `cargo xtask dev` or `start` starts it again",
            id.pid
        ),
        None => say!("proxy: not running"),
    }
    Ok(())
}

/// `xtask proxy serve PORT`: the proxy, until it is stopped or the registry
/// no longer names it (it is gone, or names another on another port).
pub fn serve(port: u16) -> anyhow::Result<()> {
    let listeners = http::proxy::bind(port)?;
    let routes = Routes::new()?;
    let router: http::proxy::Router = Arc::new(move |host: &Host| routes.route(host));
    let _proxy = http::proxy::serve(listeners, router, http::proxy::Limits::default())?;
    let me = ProcId::myself();
    let watched = Registry::watch(|entries| {
        let proxy = entries.and_then(|entries| entries.proxy.as_ref());
        proxy.is_some_and(|proxy| proxy.port == port && proxy.process.is_none_or(|id| id == me))
    });
    if let Err(e) = watched {
        // Without a watch (no inotify left, say), it serves until stopped.
        eprintln!("the proxy on port {port} cannot watch the registry ({e:#}): it serves until stopped");
        loop {
            std::thread::park();
        }
    }
    eprintln!("the registry no longer names the proxy on port {port} (pid {}): it ends", me.pid);
    Ok(())
}
