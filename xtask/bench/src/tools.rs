//! The two tools measured (the runner and the baseline), their checkouts,
//! the processes the bench starts around them, each stopped when dropped,
//! and a client of the runner's MCP server.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use harness::{answers, is_free, poll, processes_in};
use rustix::process::{Pid, Signal};
use serde_json::{Value, json};

use crate::stack::{Service, ports_toml, services_sh};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Runner,
    Baseline,
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tool::Runner => "runner",
            Tool::Baseline => "baseline",
        })
    }
}

pub struct Bench {
    /// The runner: the `xtask` binary measured.
    pub runner: PathBuf,
    baseline: PathBuf,
    /// Set by Ctrl-C or SIGTERM: every wait gives up and the guards clean up.
    interrupted: Arc<AtomicBool>,
}

impl Bench {
    pub fn new(runner: &Path) -> anyhow::Result<Bench> {
        ensure!(runner.is_file(), "the runner {} is missing: build it with `cargo build -p xtask`", runner.display());
        // The checkouts run it from folders of their own.
        let runner = std::path::absolute(runner).context("finding the runner's folder")?;
        let repository = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("xtask/bench is in it");
        let baseline = repository.join("bench/baseline/init.sh");
        ensure!(baseline.is_file(), "the baseline {} is missing", baseline.display());
        for program in ["bash", "perl", "lsof", "jq", "sleep"] {
            ensure!(on_path(program), "the bench needs {program}: install it with `apt-get install {program}`");
        }
        let interrupted = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, interrupted.clone()).context("installing signal handlers")?;
        }
        Ok(Bench { runner, baseline, interrupted })
    }

    /// A checkout of `stack` for `tool`, its services on ports from `base` up.
    pub fn checkout(&self, tool: Tool, stack: &[Service], base: u16) -> anyhow::Result<Checkout> {
        let (program, file, text) = match tool {
            Tool::Runner => (vec![self.runner.as_os_str()], "ports.toml", ports_toml(stack, base)),
            Tool::Baseline => {
                (vec![OsStr::new("bash"), self.baseline.as_os_str()], "services.sh", services_sh(stack, base)?)
            }
        };
        let checkout = harness::Checkout::create(&program, file, &text, None).context("creating a checkout")?;
        Ok(Checkout { tool, checkout, ports: (base..).take(stack.len()).collect() })
    }

    /// A runner checkout and a baseline checkout of `stack`, on ports of their own.
    pub fn pair(&self, stack: &[Service]) -> anyhow::Result<Pair> {
        let n = stack.len() as u16;
        self.pair_on(stack, harness::free_ports(n), harness::free_ports(n))
    }

    pub fn pair_on(&self, stack: &[Service], runner: u16, baseline: u16) -> anyhow::Result<Pair> {
        let runner = self.checkout(Tool::Runner, stack, runner)?;
        let baseline = self.checkout(Tool::Baseline, stack, baseline)?;
        Ok(Pair { runner, baseline })
    }

    pub fn check(&self) -> anyhow::Result<()> {
        ensure!(!self.interrupted.load(Ordering::SeqCst), "interrupted");
        Ok(())
    }

    /// Polls `done` every millisecond (the wait may be what is measured)
    /// until it holds; an error after `limit` or on Ctrl-C.
    pub fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
        let held = poll(Duration::from_millis(1), limit, || self.check().is_err() || done());
        self.check()?;
        ensure!(held, "gave up after {} s waiting for {what}", limit.as_secs());
        Ok(())
    }

    pub fn sleep(&self, period: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + period;
        while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            self.check()?;
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        Ok(())
    }
}

/// A temporary checkout with a stack of services, for the runner
/// (`ports.toml`) or the baseline (`services.sh`). Dropping it stops its
/// services, kills whatever still runs in it and removes it.
pub struct Checkout {
    tool: Tool,
    checkout: harness::Checkout,
    /// The services' preferred ports, in stack order.
    pub ports: Vec<u16>,
}

impl Checkout {
    pub fn root(&self) -> &Path {
        self.checkout.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.checkout.command(args)
    }

    /// Runs a command to its end, which must be a success: its time and its stdout.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<(f64, String)> {
        timed(&mut self.command(args), &format!("the {} ({})", self.tool, args.join(" ")))
    }

    pub fn time(&self, args: &[&str]) -> anyhow::Result<f64> {
        Ok(self.run(args)?.0)
    }

    /// Stops the services: the time until every port is free and none of
    /// the checkout's processes is left.
    pub fn stop_until_clean(&self, bench: &Bench) -> anyhow::Result<f64> {
        ensure!(
            self.ports.iter().all(|p| answers(*p)),
            "not every service of the {} was listening before stop",
            self.tool
        );
        let processes = processes_in(self.root());
        let started = Instant::now();
        self.run(&["stop"])?;
        bench.wait_for("the ports to be free and the services gone", Duration::from_secs(30), || {
            self.ports.iter().all(|p| is_free(*p)) && processes.iter().all(|id| !id.is_alive())
        })?;
        let took = started.elapsed().as_secs_f64();
        let left = processes_in(self.root());
        ensure!(left.is_empty(), "the {}'s stop left processes behind: {left:?}", self.tool);
        Ok(took)
    }

    /// Forgets the allocations, so the next one starts from the preferred ports.
    pub fn forget_ports(&self) -> anyhow::Result<()> {
        for file in [".ports.json", ".env.runtime"] {
            let path = self.root().join(file);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", path.display()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The port `.ports.json` gives a service.
    pub fn allocated(&self, service: &str) -> anyhow::Result<u16> {
        let path = self.root().join(".ports.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let ports: BTreeMap<String, u16> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        ports.get(service).copied().with_context(|| format!("{} has no port for {service}", path.display()))
    }
}

pub struct Pair {
    pub runner: Checkout,
    pub baseline: Checkout,
}

impl Pair {
    pub fn of(&self, tool: Tool) -> &Checkout {
        match tool {
            Tool::Runner => &self.runner,
            Tool::Baseline => &self.baseline,
        }
    }
}

/// Processes the bench starts itself (a port's holder, sleeps), in one
/// process group of their own: killed together on drop.
#[derive(Default)]
pub struct Crowd {
    pgid: Option<i32>,
    children: Vec<Child>,
}

impl Crowd {
    pub fn spawn(&mut self, command: &mut Command) -> anyhow::Result<u32> {
        command.process_group(self.pgid.unwrap_or(0)).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = command.spawn().with_context(|| format!("starting {:?}", command.get_program()))?;
        let pid = child.id();
        self.pgid.get_or_insert(pid as i32);
        self.children.push(child);
        Ok(pid)
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `xtask dev` run by the bench: interrupted as by Ctrl-C on drop.
pub struct Foreground(pub Child);

impl Foreground {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Whether it still runs.
    pub fn runs(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Ctrl-C, then waits until it has stopped its services and left.
    pub fn interrupt(&mut self, limit: Duration) -> anyhow::Result<()> {
        if self.0.try_wait()?.is_none() {
            let pid = Pid::from_raw(self.pid()).context("a child's pid is positive")?;
            rustix::process::kill_process(pid, Signal::INT).context("interrupting xtask dev")?;
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait()? {
                ensure!(status.success(), "xtask dev exited with {status} after Ctrl-C");
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                bail!("xtask dev did not stop within {} s of Ctrl-C", limit.as_secs());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.interrupt(Duration::from_secs(30));
    }
}

/// `xtask mcp` in a checkout, spoken to as an agent's client does:
/// newline-delimited JSON-RPC on its stdin and stdout, past the (legacy)
/// handshake. Its input is closed on drop, which ends it.
pub struct McpServer {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
    id: u64,
}

impl McpServer {
    pub fn start(checkout: &Checkout) -> anyhow::Result<McpServer> {
        let mut command = checkout.command(&["mcp"]);
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = command.spawn().context("starting xtask mcp")?;
        let (input, output) = (child.stdin.take(), BufReader::new(child.stdout.take().context("no stdout")?));
        let mut server = McpServer { child, input, output, id: 0 };
        let hello = json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}});
        server.request("initialize", hello)?;
        server.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        server.request("tools/list", json!({}))?;
        Ok(server)
    }

    fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        let input = self.input.as_mut().context("xtask mcp's input is closed")?;
        writeln!(input, "{message}").context("writing to xtask mcp")
    }

    /// Sends a request and reads until its answer: its result.
    pub fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params}))?;
        loop {
            let mut line = String::new();
            ensure!(self.output.read_line(&mut line)? > 0, "xtask mcp ended before answering {method}");
            let message: Value = serde_json::from_str(&line).with_context(|| format!("xtask mcp wrote {line:?}"))?;
            if message["id"] == self.id {
                ensure!(message.get("error").is_none(), "xtask mcp refused {method}: {message}");
                return Ok(message["result"].clone());
            }
        }
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        drop(self.input.take());
        let ended =
            poll(Duration::from_millis(5), Duration::from_secs(10), || matches!(self.child.try_wait(), Ok(Some(_))));
        if !ended {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs a command to its end, which must be a success: its time and its stdout.
pub fn timed(command: &mut Command, what: &str) -> anyhow::Result<(f64, String)> {
    let started = Instant::now();
    let output = command.output().with_context(|| format!("running {what}"))?;
    let took = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((took, stdout))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
