//! The cases, each measuring the runner and the baseline side by side (or
//! the runner alone, where the baseline has nothing to compare; or, for the
//! agent interface, against the runner's own command; or, for the named
//! URLs' proxy, against direct access), and the check that the runner reads
//! the bench's stacks as they are meant.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use harness::{Said, answers, free_ports, images, is_free};
use procscan::{ProcId, Stat};
use serde_json::Value;

use crate::load;
use crate::report::{Case, Figure, median};
use crate::stack::{Service, critical_path, needed};
use crate::tools::{Bench, Crowd, Foreground, McpServer, Tool, timed};

/// How much each case does.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub runs: usize,
    /// Case 1: busy ports from the preferred one on; the next one is free.
    busy: u16,
    /// Case 2: processes running besides the machine's own.
    sleepers: usize,
    /// Case 6: how long the idle supervisor is watched.
    idle: Duration,
    /// Case 9: requests timed one after another, and how long 32
    /// connections are counted, in each round.
    requests: usize,
    load: Duration,
}

impl Sizes {
    /// `--runs 1` is a smoke run (about 30 s, for a test): every case once,
    /// the idle supervisor watched for 2 s instead of 10, the proxy loaded
    /// for less.
    pub fn for_runs(runs: usize) -> Sizes {
        let smoke = runs <= 1;
        let idle = Duration::from_secs(if smoke { 2 } else { 10 });
        let (requests, load) = if smoke { (200, Duration::from_millis(500)) } else { (2000, Duration::from_secs(2)) };
        Sizes { runs, busy: 99, sleepers: 300, idle, requests, load }
    }
}

pub type CaseFn = fn(&Bench, &Sizes) -> anyhow::Result<Case>;

/// The cases, in the table's order.
pub const CASES: [CaseFn; 9] = [allocation, holder_lookup, status, start, stop, idle, mcp_status, container, proxy];

/// The runner reads a stack as the bench writes it: every service on its
/// port; started, each service needed comes up (its dependencies with it),
/// running the command the stack gives it. Checked once, before measuring.
pub fn the_runner_reads_the_stacks(bench: &Bench) -> anyhow::Result<()> {
    let stack = Service::stack(true);
    let base = free_ports(stack.len() as u16);
    let checkout = bench.checkout(Tool::Runner, &stack, base)?;
    let (_, out) = checkout.run(&["ports", "--json"])?;
    let listed: BTreeSet<(String, u16)> = serde_json::from_str::<Value>(&out)?["services"]
        .as_array()
        .context("`ports --json` lists no services")?
        .iter()
        .filter_map(|s| Some((s["service"].as_str()?.to_owned(), s["port"].as_u64()? as u16)))
        .collect();
    let written: BTreeSet<(String, u16)> = stack.iter().zip(base..).map(|(s, p)| (s.name.to_owned(), p)).collect();
    ensure!(listed == written, "the runner reads the stack's ports.toml as {listed:?}, not {written:?}");

    let started = ["web", "worker"];
    checkout.run(&[&["start"], &started[..]].concat())?;
    let needed = needed(&stack, &started);
    let (_, out) = checkout.run(&["status", "--json"])?;
    let rows: Vec<Value> = serde_json::from_str(&out).context("parsing `status --json`")?;
    let what = format!("`start {}`", started.join(" "));
    for (service, port) in stack.iter().zip(base..) {
        let name = service.name;
        let row = rows.iter().find(|r| r["service"] == name).with_context(|| format!("`status` misses {name}"))?;
        match (row["pid"].as_i64(), needed.contains(name)) {
            (Some(pid), true) => {
                let argv = procscan::argv(pid as i32);
                ensure!(argv == service.command(port), "the runner ran {name} as {argv:?}");
            }
            (None, false) => {}
            (Some(_), false) => bail!("{what} started {name} too, which none of them needs"),
            (None, true) => bail!("{what} did not start {name}, which they need"),
        }
    }
    Ok(())
}

/// Case 1: the preferred port and the `busy - 1` after it are held; the
/// service must get the next one. The runner probes by binding, the baseline
/// runs lsof once per port.
fn allocation(bench: &Bench, sizes: &Sizes) -> anyhow::Result<Case> {
    let base = free_ports(sizes.busy + 1);
    let want = base + sizes.busy;
    // Held by this process: they close when the case ends, however it ends.
    let _held = (base..want)
        .map(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)))
        .collect::<Result<Vec<_>, _>>()
        .context("holding the busy ports")?;
    let pair = bench.pair_on(&[Service::new("app", 0.0, &[])], base, base)?;
    let (runner, baseline) = alternate(bench, sizes.runs, |tool| {
        let checkout = pair.of(tool);
        checkout.forget_ports()?;
        let args: &[&str] = match tool {
            Tool::Runner => &["ports", "allocate"],
            Tool::Baseline => &["allocate"],
        };
        let took = checkout.time(args)?;
        let got = checkout.allocated("app")?;
        ensure!(got == want, "the {tool} gave app port {got}, not {want} (the first free one)");
        Ok(took)
    })?;
    let title = format!("allocation past {} busy ports", sizes.busy);
    let mut case = Case::new(title, runner, baseline, "≥ 100× faster");
    case.met = case.speedup() >= 100.0;
    Ok(case)
}

/// Case 2: who holds a port, with a few hundred more processes to look
/// through: `xtask ports who PORT` against `lsof -t -i :PORT`, and, beside
/// it, `xtask ports`, which looks up every service's port.
fn holder_lookup(bench: &Bench, sizes: &Sizes) -> anyhow::Result<Case> {
    let port = free_ports(1);
    let mut holder = Crowd::default();
    let argv = Service::new("holder", 0.0, &[]).command(port);
    let pid = holder.spawn(Command::new(&argv[0]).args(&argv[1..]))?;
    bench.wait_for("the port's holder to listen", Duration::from_secs(5), || answers(port))?;
    let mut sleepers = Crowd::default();
    for _ in 0..sizes.sleepers {
        sleepers.spawn(Command::new("sleep").arg("3600"))?;
    }
    let runner = bench.checkout(Tool::Runner, &[Service::new("app", 0.0, &[])], port)?;
    let names = |out: &str, holders: &str| {
        let holders = serde_json::from_str::<Value>(out).ok().and_then(|v| v.pointer(holders).cloned());
        holders.and_then(|hs| hs.as_array().map(|hs| hs.iter().any(|h| h["pid"] == pid))).unwrap_or(false)
    };
    let mut every_service = Vec::new();
    let (runner, baseline) = alternate(bench, sizes.runs, |tool| {
        let (took, out) = match tool {
            Tool::Runner => runner.run(&["ports", "who", "--json", &port.to_string()])?,
            Tool::Baseline => timed(Command::new("lsof").args(["-t", "-i", &format!(":{port}")]), "lsof")?,
        };
        let found = match tool {
            Tool::Runner => names(&out, "/ports/0/holders"),
            Tool::Baseline => out.trim() == pid.to_string(),
        };
        ensure!(found, "the {tool} did not name pid {pid} as the holder of port {port}:\n{out}");
        if tool == Tool::Runner {
            let (took, out) = runner.run(&["ports", "--json"])?;
            ensure!(names(&out, "/services/0/holders"), "`ports` did not name pid {pid} as app's holder:\n{out}");
            every_service.push(took);
        }
        Ok(took)
    })?;
    // The scan of every process's descriptors that the runner's lookup makes
    // (as `dev` and `start` make it before deciding about a holder), the same
    // code built the same way, timed in this process: no process to start,
    // so the rest of the command's time shows.
    let sockets = sockets_of(pid as i32);
    ensure!(!sockets.is_empty(), "the holder of port {port} (pid {pid}) holds no socket");
    let mut scan = Vec::new();
    for _ in 0..sizes.runs {
        let started = Instant::now();
        let found = procscan::holders(&sockets);
        scan.push(started.elapsed().as_secs_f64());
        let named = found.iter().any(|(holder, _)| *holder as u32 == pid);
        ensure!(named, "the runner's scan did not find pid {pid} holding port {port}: {found:?}");
    }
    let title = format!("who holds a port (ports who), among {} more processes (baseline: lsof -t -i)", sizes.sleepers);
    let mut case = Case::new(title, runner, baseline, "≥ 5× faster than lsof");
    case.figures = vec![
        ("`ports`, every service's port and holders", Figure::Seconds(median(&every_service).unwrap_or(f64::NAN))),
        ("the lookup's scan alone, timed in-process", Figure::Seconds(median(&scan).unwrap_or(f64::NAN))),
    ];
    case.met = case.speedup() >= 5.0;
    Ok(case)
}

/// The sockets (inodes) process `pid` has open.
fn sockets_of(pid: i32) -> BTreeSet<u64> {
    let links = std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten();
    let targets = links.filter_map(|fd| std::fs::read_link(fd.path()).ok());
    let inode = |target: PathBuf| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok();
    targets.filter_map(inode).collect()
}

/// Case 3: `status` with four services running.
fn status(bench: &Bench, sizes: &Sizes) -> anyhow::Result<Case> {
    let stack = Service::four();
    let pair = bench.pair(&stack)?;
    pair.runner.run(&["start"])?;
    pair.baseline.run(&["start"])?;
    let (runner, baseline) = alternate(bench, sizes.runs, |tool| {
        let (took, out) = pair.of(tool).run(&["status"])?;
        ensure!(out.matches("✓ Running").count() == stack.len(), "the {tool}'s status is not all running:\n{out}");
        Ok(took)
    })?;
    let mut case = Case::new("status, 4 services running".into(), runner, baseline, "runner < 20 ms");
    case.met = case.runner_median() < 0.020;
    Ok(case)
}

/// Case 4: from `start` until every service answers, for a stack whose
/// services take known times to start and depend on each other. Nothing can be
/// ready before the critical path (the longest chain of delays); what the
/// runner takes beyond it is its overhead, of which the services' own
/// start-up (perl's, along that chain) is not the runner's doing.
fn start(bench: &Bench, sizes: &Sizes) -> anyhow::Result<Case> {
    let stack = Service::stack(true);
    let pair = bench.pair(&stack)?;
    let (runner, baseline) = alternate(bench, sizes.runs, |tool| {
        let checkout = pair.of(tool);
        let took = checkout.time(&["start"])?;
        ensure!(
            checkout.ports.iter().all(|p| answers(*p)),
            "the {tool}'s start returned before every service answered"
        );
        checkout.run(&["stop"])?;
        Ok(took)
    })?;
    let (critical, chain) = critical_path(&stack);
    let own = chain as f64 * service_startup(bench, sizes.runs)?;
    let sequential: f64 = stack.iter().map(|s| s.delay).sum();
    let title = format!("start to all ready, a dependency chain (critical path {critical:.1} s)");
    let mut case = Case::new(title, runner, baseline, "overhead < 100 ms, ≥ 2× faster");
    let overhead = case.runner_median() - critical;
    case.figures = vec![
        ("critical path", Figure::Seconds(critical)),
        ("runner overhead", Figure::Seconds(overhead)),
        ("of which the services' own start-up", Figure::Seconds(own)),
        ("delays one after another", Figure::Seconds(sequential)),
        ("best possible speed-up", Figure::Times(sequential / critical)),
    ];
    case.met = overhead < 0.100 && case.speedup() >= 2.0;
    Ok(case)
}

/// The time a stack's service takes to answer with no delay: its own
/// start-up, which is in every tool's time.
fn service_startup(bench: &Bench, runs: usize) -> anyhow::Result<f64> {
    let port = free_ports(1);
    let argv = Service::new("probe", 0.0, &[]).command(port);
    let mut samples = Vec::new();
    for _ in 0..runs.max(3) {
        let mut service = Crowd::default();
        let started = Instant::now();
        service.spawn(Command::new(&argv[0]).args(&argv[1..]))?;
        bench.wait_for("a service to answer", Duration::from_secs(5), || answers(port))?;
        samples.push(started.elapsed().as_secs_f64());
    }
    Ok(median(&samples).unwrap_or(0.0))
}

/// Case 5: from `stop` until every port is free and no service process of
/// four is left.
fn stop(bench: &Bench, sizes: &Sizes) -> anyhow::Result<Case> {
    let pair = bench.pair(&Service::four())?;
    let (runner, baseline) = alternate(bench, sizes.runs, |tool| {
        let checkout = pair.of(tool);
        checkout.run(&["start"])?;
        checkout.stop_until_clean(bench)
    })?;
    let mut case = Case::new("stop to all ports free, no process left".into(), runner, baseline, "runner < 1 s");
    case.met = case.runner_median() < 1.0;
    Ok(case)
}

/// Case 6: the supervisor (`xtask dev` and its guard, four services) while
/// idle: their peak memory and the CPU they use, over one window. The baseline has no
/// supervisor: init.sh leaves once its services answer.
fn idle(bench: &Bench, sizes: &Sizes) -> anyhow::Result<Case> {
    let stack = Service::four();
    let checkout = bench.checkout(Tool::Runner, &stack, free_ports(stack.len() as u16))?;
    let (output, writer) = std::io::pipe().context("creating a pipe for xtask dev's output")?;
    let mut command = checkout.command(&["dev"]);
    command.stdout(writer.try_clone()?).stderr(writer);
    let mut dev = Foreground(command.spawn().context("starting xtask dev")?);
    drop(command); // its copies of the pipe: the output ends with dev
    let mut said = Said::of(output);
    let ready = said.until(Duration::from_secs(60), |line| line.contains("services ready"));
    bench.check()?;
    ensure!(ready && dev.runs(), "xtask dev did not get every service ready:\n{}", said.text);

    // dev and its guard (the child that stops the services if dev is killed).
    let dev_id = ProcId::of(dev.pid()).context("xtask dev is gone")?;
    let guard = guard_of(dev_id).context("xtask dev started no guard")?;
    let pids = [dev_id.pid, guard];
    let cpu_time = || -> anyhow::Result<Duration> {
        pids.iter().map(|p| Stat::of(*p).map(|s| s.cpu_time()).context("xtask dev or its guard is gone")).sum()
    };
    let (before, started) = (cpu_time()?, Instant::now());
    bench.sleep(sizes.idle)?;
    let (after, watched) = (cpu_time()?, started.elapsed().as_secs_f64());
    let peak_kb: u64 = pids.iter().map(|p| peak_rss_kb(*p)).sum::<anyhow::Result<u64>>()?;
    dev.interrupt(Duration::from_secs(30))?;
    ensure!(checkout.ports.iter().all(|p| is_free(*p)), "a port is still busy after xtask dev stopped");

    let rss = peak_kb as f64 / 1024.0;
    let cpu = (after - before).as_secs_f64() / watched * 100.0;
    let title = format!("supervisor (dev and its guard) idle for {} s, 4 services", sizes.idle.as_secs());
    let mut case = Case::new(title, Vec::new(), Vec::new(), "< 15 MB RSS, < 1 % CPU");
    case.figures = vec![("peak RSS", Figure::Megabytes(rss)), ("of one core", Figure::Percent(cpu))];
    case.met = rss < 15.0 && cpu < 1.0;
    Ok(case)
}

/// Case 7: `status` asked of a running `xtask mcp`, as an agent asks it
/// (the round trip of a `tools/call`, from the request written to the
/// answer read), against `xtask status --json`, a process per question, in
/// the baseline's column; 4 services running.
fn mcp_status(bench: &Bench, sizes: &Sizes) -> anyhow::Result<Case> {
    let stack = Service::four();
    let checkout = bench.checkout(Tool::Runner, &stack, free_ports(stack.len() as u16))?;
    checkout.run(&["start"])?;
    let mut server = McpServer::start(&checkout)?;
    let call = serde_json::json!({"name": "status", "arguments": {}});
    let (mcp, cli) = alternate(bench, sizes.runs, |tool| {
        let started = Instant::now();
        let (rows, by) = match tool {
            Tool::Runner => {
                (server.request("tools/call", call.clone())?["structuredContent"]["services"].clone(), "MCP")
            }
            Tool::Baseline => {
                let out = checkout.run(&["status", "--json"])?.1;
                (serde_json::from_str(&out).context("parsing `status --json`")?, "the command line")
            }
        };
        let took = started.elapsed().as_secs_f64();
        let healthy = rows.as_array().map_or(0, |rows| rows.iter().filter(|r| r["healthy"] == true).count());
        ensure!(healthy == stack.len(), "status over {by} does not show every service healthy: {rows}");
        Ok(took)
    })?;
    let title = "status over MCP, a call to a running `xtask mcp` (baseline: `xtask status --json`), 4 services";
    let mut case = Case::new(title.into(), mcp, cli, "no slower than the command");
    case.met = case.speedup() >= 1.0;
    Ok(case)
}

/// Case 8: a service in a container, from `start` until it is ready: the
/// runner (its engine asked, the checkout's containers looked for, the
/// allocation, `docker run` in the foreground, readiness past the engine's
/// proxy) against `docker run -d` and a poll of the container's page, what
/// a script would do. The image is built here, never pulled. Skipped, with
/// a line that says so, where no Docker daemon answers.
fn container(bench: &Bench, sizes: &Sizes) -> anyhow::Result<Case> {
    let title = "a service in a container to ready (baseline: docker run -d, then its page)".to_owned();
    let target = "overhead < 300 ms";
    if !images::docker_answers() {
        return Ok(Case::skipped(title, target, "no Docker daemon answers `docker version`"));
    }
    images::build();
    let (port, inside) = (free_ports(2), images::INSIDE_PORT);
    let ports_toml = format!(
        "[services.web]\nport = {port}\nimage = \"{}\"\ncontainer_port = {inside}\nstop_grace = 0\n",
        images::HTTPD
    );
    let runner = harness::Checkout::create(&[&bench.runner], "ports.toml", &ports_toml, None)?;
    let name = format!("xtask-bench-{}", port + 1);
    let publish = format!("127.0.0.1:{}:{inside}", port + 1);
    let (runner, baseline) = alternate(bench, sizes.runs, |tool| {
        let (took, port) = match tool {
            Tool::Runner => {
                let (took, _) = timed(&mut runner.command(&["start"]), "the runner (start)")?;
                (took, port)
            }
            Tool::Baseline => {
                let _removed = Removed(&name);
                let started = Instant::now();
                let run = ["run", "-d", "--rm", "--name", &name, "-p", &publish, images::HTTPD];
                timed(Command::new("docker").args(run), "docker run -d")?;
                bench.wait_for("the container's page", Duration::from_secs(30), || images::page(port + 1).is_some())?;
                return Ok(started.elapsed().as_secs_f64());
            }
        };
        ensure!(images::page(port).is_some(), "the {tool}'s start returned before its container served");
        timed(&mut runner.command(&["stop"]), "the runner (stop)")?;
        Ok(took)
    })?;
    let overhead = median(&runner).unwrap_or(f64::NAN) - median(&baseline).unwrap_or(f64::NAN);
    let mut case = Case::new(title, runner, baseline, target);
    case.figures = vec![("runner overhead", Figure::Seconds(overhead))];
    case.met = overhead < 0.300;
    Ok(case)
}

/// The baseline's container, removed when its run ends, however it ends.
struct Removed<'a>(&'a str);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", self.0]).output();
    }
}

/// The repository's backend stack (uvicorn with FastAPI, as
/// `backend/requirements.txt` pins them) with one small endpoint, of the
/// kind the backend's `/health` is, without its database round trips.
const APP: &str = "from fastapi import FastAPI\n\napp = FastAPI()\n\n\n@app.get(\"/health\")\n\
                   async def health() -> dict[str, str]:\n    return {\"status\": \"ok\"}\n";

/// `APP` as the runner runs it, its virtualenv set up by the runner as the
/// repository's `ports.toml` sets the backend's up.
const APP_PORTS_TOML: &str = r#"[services.api]
port = PORT
command = ".venv/bin/uvicorn app:app --host 127.0.0.1 --port {port} --log-level warning"
ready = { http = "/health" }

[[services.api.setup]]
creates = ".venv/bin/python"
command = ["python3", "-m", "venv", ".venv"]

[[services.api.setup]]
inputs = ["requirements.txt"]
creates = ".venv/bin/uvicorn"
command = [".venv/bin/pip", "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"]
"#;

/// Case 9: the backend's stack reached by its named URL, through the
/// runner's proxy, against the same reached directly, alternating in each
/// round: the latency the proxy adds to a small answer (median and 99th
/// percentile of requests one after another on a kept-alive connection),
/// and the answers a second from 32 kept-alive connections at once.
fn proxy(bench: &Bench, sizes: &Sizes) -> anyhow::Result<Case> {
    let port = free_ports(1);
    let ports_toml = APP_PORTS_TOML.replace("PORT", &port.to_string());
    let checkout = harness::Checkout::create(&[&bench.runner], "ports.toml", &ports_toml, None)?;
    let requirements = std::fs::read_to_string(bench.repository.join("backend/requirements.txt"))?;
    let pinned: String = requirements
        .lines()
        .filter(|l| l.starts_with("fastapi==") || l.starts_with("uvicorn=="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(checkout.path("requirements.txt"), pinned)?;
    std::fs::write(checkout.path("app.py"), APP)?;
    let started = checkout.command(&["start"]).output().context("starting the service")?;
    ensure!(started.status.success(), "the runner did not start uvicorn:\n{}", harness::text(&started));
    let env = checkout.read(".env.runtime").context("no .env.runtime")?;
    let named = env.lines().find_map(|l| l.strip_prefix("API_PUBLIC_URL=")).context("no API_PUBLIC_URL")?;
    let (host, proxy) = named.strip_prefix("http://").and_then(|n| n.split_once(':')).context("not a named URL")?;
    let routes = [(port, format!("127.0.0.1:{port}")), (proxy.parse()?, format!("{host}:{proxy}"))];
    // Per round: the added median and p99, the answers a second direct and
    // through the proxy, and the median direct.
    let mut rounds: Vec<[f64; 5]> = Vec::new();
    for run in 0..sizes.runs.max(3) {
        bench.check()?;
        // Direct first in one round, the proxy first in the next.
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        let (mut latency, mut rate) = ([Vec::new(), Vec::new()], [0.0; 2]);
        for i in order {
            let (port, host) = &routes[i];
            latency[i] = load::latencies(*port, host, sizes.requests / 4, sizes.requests)?;
            rate[i] = load::throughput(*port, host, 32, sizes.load)?;
        }
        let added = |q| load::quantile(&latency[1], q) - load::quantile(&latency[0], q);
        rounds.push([added(0.5), added(0.99), rate[0], rate[1], load::quantile(&latency[0], 0.5)]);
    }
    checkout.command(&["stop"]).output()?;
    let of = |f: &dyn Fn(&[f64; 5]) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN);
    let (added_median, ratio, direct_median) = (of(&|r| r[0]), of(&|r| r[3] / r[2]), of(&|r| r[4]));
    let title = "a named URL through the proxy against direct, uvicorn with FastAPI";
    let mut case =
        Case::new(title.into(), Vec::new(), Vec::new(), "added median < 0.2 ms, ≥ 60 % of direct throughput");
    case.figures = vec![
        ("added median latency", Figure::Seconds(added_median)),
        ("added p99 latency", Figure::Seconds(of(&|r| r[1]))),
        ("throughput of direct", Figure::Percent(ratio * 100.0)),
        ("direct latency", Figure::Seconds(direct_median)),
        ("direct, 32 connections", Figure::PerSecond(of(&|r| r[2]))),
        ("through the proxy", Figure::PerSecond(of(&|r| r[3]))),
    ];
    case.met = added_median < 0.0002 && ratio >= 0.6;
    Ok(case)
}

/// dev's guard: the child dev gives its own pid and start time
/// (`xtask guard PID START`, behind a shell that waits for dev to end).
fn guard_of(dev: ProcId) -> Option<i32> {
    let named = [dev.pid.to_string(), dev.start.to_string()];
    let children = procscan::pids().into_iter().filter_map(Stat::of).filter(|s| s.ppid == dev.pid);
    children.map(|s| s.pid).find(|child| {
        let argv = procscan::argv(*child);
        argv.join(" ").contains(" guard ") && argv.ends_with(&named)
    })
}

/// The most memory a process has had resident (VmHWM), in kB.
fn peak_rss_kb(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let peak = status.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix(" kB")?.parse().ok());
    peak.with_context(|| format!("no VmHWM in /proc/{pid}/status"))
}

/// Runs `measure` for the runner and the baseline, `runs` times, swapping
/// which goes first each time so neither always finds the caches warm.
fn alternate(
    bench: &Bench,
    runs: usize,
    mut measure: impl FnMut(Tool) -> anyhow::Result<f64>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut runner, mut baseline) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let order = if run % 2 == 0 { [Tool::Runner, Tool::Baseline] } else { [Tool::Baseline, Tool::Runner] };
        for tool in order {
            bench.check()?;
            let took = measure(tool)?;
            match tool {
                Tool::Runner => runner.push(took),
                Tool::Baseline => baseline.push(took),
            }
        }
    }
    Ok((runner, baseline))
}
