//! `cargo xtask bench`: the runner measured side by side with the seed's bash
//! baseline (`bench/baseline/init.sh`), on temporary checkouts of tiny
//! services, runner and baseline alternating within each run. Prints the
//! medians, the ratios and whether each target is met; a missed target is
//! reported, never an error.
//!
//! Everything the bench starts (services, listeners, sleeps, `xtask dev`)
//! lives in a guard that stops it when its case ends, on an error, a panic
//! or Ctrl-C alike.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rustix::process::{Pid, Signal};
use serde_json::{Value, json};

use crate::alloc;
use crate::config::Ready;
use crate::files;
use crate::guard;
use crate::holder;
use crate::paths::Project;
use crate::process::{self, ProcId, Stat};
use crate::ready;
use crate::term::say;

/// A service that does nothing but start: it sleeps its start-up delay
/// (second argument), then accepts connections on its port (first argument).
/// Perl with only `Socket` loaded answers about 15 ms after it is spawned
/// (case 4 measures it), so what is measured around it is the tool that
/// starts it. (No braces: ports.toml would read them as references.)
const LISTENER: &str = "select(undef,undef,undef,$ARGV[1]); socket(my $s,PF_INET,SOCK_STREAM,0) or die $!; \
    setsockopt($s,SOL_SOCKET,SO_REUSEADDR,1); bind($s,pack_sockaddr_in($ARGV[0],INADDR_LOOPBACK)) or die $!; \
    listen($s,16) or die $!; close C while accept(C,$s)";

/// Ports for the cases' services are taken from here, in free blocks.
const PORTS: (u16, u16) = (30000, 32000);

/// How much each case does.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    runs: usize,
    /// Case 1: busy ports from the preferred one on; the next one is free.
    busy: u16,
    /// Case 2: processes running besides the machine's own.
    sleepers: usize,
    /// Case 6: how long the idle supervisor is watched.
    idle: Duration,
}

impl Sizes {
    /// `--runs 1` is a smoke run (about 10 s, for a test): every case once,
    /// the idle supervisor watched for 2 s instead of 10.
    fn for_runs(runs: usize) -> Sizes {
        let idle = Duration::from_secs(if runs <= 1 { 2 } else { 10 });
        Sizes { runs, busy: 99, sleepers: 300, idle }
    }
}

pub fn run(project: &Project, runs: usize, json_path: Option<&Path>) -> anyhow::Result<()> {
    ensure!(runs >= 1, "--runs must be at least 1");
    let sizes = Sizes::for_runs(runs);
    let mut bench = Bench::new(project)?;
    let machine = machine();
    say!("benchmarking on {machine}, {} run(s) of each case; runner: {}", sizes.runs, bench.runner.display());
    type CaseFn = fn(&mut Bench, &Sizes) -> anyhow::Result<Case>;
    let steps: [CaseFn; 6] = [allocation, holder_lookup, status, start, stop, idle];
    let mut cases = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let case = step(&mut bench, &sizes)?;
        say!("{}/{} {}: {}", i + 1, steps.len(), case.title, case.summary());
        cases.push(case);
    }
    say!("\n{}", table(&cases));
    say!("machine: {machine}; runner: {} build", build(&bench.runner));
    if let Some(path) = json_path {
        let report = json!({
            "machine": machine,
            "runner_build": build(&bench.runner),
            "runs": sizes.runs,
            "cases": cases.iter().enumerate().map(|(i, c)| c.to_json(i + 1)).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&report)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        say!("wrote {}", path.display());
    }
    Ok(())
}

// ---- the cases ----

/// Case 1: the preferred port and the `busy - 1` after it are held; the
/// service must get the next one. The runner probes by binding, the baseline
/// runs lsof once per port.
fn allocation(bench: &mut Bench, sizes: &Sizes) -> anyhow::Result<Case> {
    let base = bench.ports(sizes.busy + 1)?;
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
fn holder_lookup(bench: &mut Bench, sizes: &Sizes) -> anyhow::Result<Case> {
    let port = bench.ports(1)?;
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
    // The same lookup as `dev` and `start` make it before deciding about a
    // holder: no process to start, so the rest of the command's time shows.
    let mut inside = Vec::new();
    for _ in 0..sizes.runs {
        let started = Instant::now();
        let found = holder::lookup(&BTreeSet::from([port]));
        inside.push(started.elapsed().as_secs_f64());
        let named = found.get(&port).is_some_and(|hs| hs.iter().any(|h| h.id.is_some_and(|id| id.pid as u32 == pid)));
        ensure!(named, "the runner's lookup did not name pid {pid} as the holder of port {port}: {found:?}");
    }
    let title = format!("who holds a port (ports who), among {} more processes (baseline: lsof -t -i)", sizes.sleepers);
    let mut case = Case::new(title, runner, baseline, "≥ 5× faster than lsof");
    case.figures = vec![
        ("`ports`, every service's port and holders", Figure::Seconds(median(&every_service).unwrap_or(f64::NAN))),
        ("the lookup alone, inside the runner", Figure::Seconds(median(&inside).unwrap_or(f64::NAN))),
    ];
    case.met = case.speedup() >= 5.0;
    Ok(case)
}

/// Case 3: `status` with four services running.
fn status(bench: &mut Bench, sizes: &Sizes) -> anyhow::Result<Case> {
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
fn start(bench: &mut Bench, sizes: &Sizes) -> anyhow::Result<Case> {
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
fn service_startup(bench: &mut Bench, runs: usize) -> anyhow::Result<f64> {
    let port = bench.ports(1)?;
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
fn stop(bench: &mut Bench, sizes: &Sizes) -> anyhow::Result<Case> {
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
fn idle(bench: &mut Bench, sizes: &Sizes) -> anyhow::Result<Case> {
    let stack = Service::four();
    let base = bench.ports(stack.len() as u16)?;
    let checkout = bench.checkout(Tool::Runner, &stack, base)?;
    let out = checkout.root.join("dev.out");
    let file = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut command = checkout.command(&["dev"]);
    command.stdout(file.try_clone()?).stderr(file);
    let mut dev = Foreground(command.spawn().context("starting xtask dev")?);
    let text = || std::fs::read_to_string(&out).unwrap_or_default();
    bench.wait_for("xtask dev to have every service ready", Duration::from_secs(60), || {
        text().contains("services ready") || !matches!(dev.0.try_wait(), Ok(None))
    })?;
    ensure!(matches!(dev.0.try_wait(), Ok(None)), "xtask dev exited:\n{}", text());

    // dev and its guard (the child that stops the services if dev is killed).
    let dev_pid = dev.pid();
    let is_guard = |pid: i32| {
        let argv = process::argv(pid);
        argv.get(2).map(String::as_str) == Some(guard::WAITER) && argv.get(4) == Some(&dev_pid.to_string())
    };
    let guard = process::all_pids().into_iter().find(|p| is_guard(*p));
    ensure!(guard.is_some(), "xtask dev started no guard");
    let pids = [dev_pid].into_iter().chain(guard).collect::<Vec<_>>();
    let cpu_ticks = || -> anyhow::Result<u64> {
        let stats = pids.iter().map(|p| Stat::of(*p).context("xtask dev or its guard is gone"));
        stats.map(|s| s.map(|s| s.utime + s.stime)).sum()
    };
    let (before, started) = (cpu_ticks()?, Instant::now());
    bench.sleep(sizes.idle)?;
    let (after, watched) = (cpu_ticks()?, started.elapsed().as_secs_f64());
    let peak_kb: u64 = pids.iter().map(|p| peak_rss_kb(*p)).sum::<anyhow::Result<u64>>()?;
    dev.interrupt(Duration::from_secs(30))?;
    ensure!(checkout.ports.iter().all(|p| alloc::is_free(*p)), "a port is still busy after xtask dev stopped");

    let rss = peak_kb as f64 / 1024.0;
    let cpu = (after - before) as f64 / rustix::param::clock_ticks_per_second() as f64 / watched * 100.0;
    let title = format!("supervisor (dev and its guard) idle for {} s, 4 services", sizes.idle.as_secs());
    let mut case = Case::new(title, Vec::new(), Vec::new(), "< 15 MB RSS, < 1 % CPU");
    case.figures = vec![("peak RSS", Figure::Megabytes(rss)), ("of one core", Figure::Percent(cpu))];
    case.met = rss < 15.0 && cpu < 1.0;
    Ok(case)
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

// ---- stacks of tiny services ----

/// A service of a bench stack: `LISTENER` with a start-up delay.
#[derive(Debug, Clone, Copy)]
struct Service {
    name: &'static str,
    /// Seconds from start until it listens.
    delay: f64,
    after: &'static [&'static str],
}

impl Service {
    fn new(name: &'static str, delay: f64, after: &'static [&'static str]) -> Service {
        Service { name, delay, after }
    }

    /// A stack shaped like a real one: db, cache, queue and search start at
    /// once; api needs db and cache, worker needs queue and db, web needs
    /// api. The critical path db-api-web is 1.0 s; one after another they
    /// take 2.6 s. Without delays, the same stack ready at once.
    fn stack(delays: bool) -> Vec<Service> {
        let delay = |seconds: f64| if delays { seconds } else { 0.0 };
        vec![
            Service::new("db", delay(0.4), &[]),
            Service::new("cache", delay(0.3), &[]),
            Service::new("queue", delay(0.4), &[]),
            Service::new("search", delay(0.5), &[]),
            Service::new("api", delay(0.3), &["db", "cache"]),
            Service::new("worker", delay(0.4), &["queue", "db"]),
            Service::new("web", delay(0.3), &["api"]),
        ]
    }

    /// Four services without delays, for the cases about a running stack.
    fn four() -> Vec<Service> {
        Service::stack(false).into_iter().take(4).collect()
    }

    /// Its command line; `port` is a number, or a template's `{port}`.
    fn command(&self, port: impl fmt::Display) -> Vec<String> {
        ["perl", "-MSocket", "-e", LISTENER]
            .map(String::from)
            .into_iter()
            .chain([port.to_string(), self.delay.to_string()])
            .collect()
    }
}

/// The longest chain of start-up delays, and how many services are on it:
/// no tool can have the stack ready sooner.
fn critical_path(stack: &[Service]) -> (f64, usize) {
    fn ready_at(stack: &[Service], name: &str) -> (f64, usize) {
        let service = stack.iter().find(|s| s.name == name).expect("a dependency is in the stack");
        let (before, chain) = service.after.iter().map(|d| ready_at(stack, d)).fold((0.0, 0), longer);
        (before + service.delay, chain + 1)
    }
    fn longer(a: (f64, usize), b: (f64, usize)) -> (f64, usize) {
        if b > a { b } else { a }
    }
    stack.iter().map(|s| ready_at(stack, s.name)).fold((0.0, 0), longer)
}

/// The stack as the runner's `ports.toml`, on ports from `base` up.
fn ports_toml(stack: &[Service], base: u16) -> String {
    let mut text = String::new();
    for (port, service) in (base..).zip(stack) {
        let command = toml_strings(service.command("{port}").iter().map(String::as_str));
        let after = toml_strings(service.after.iter().copied());
        text +=
            &format!("[services.{}]\nport = {port}\ncommand = [{command}]\ndepends_on = [{after}]\n\n", service.name);
    }
    text
}

/// Words as the items of a TOML array: a JSON string is also a TOML basic string.
fn toml_strings<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words.into_iter().map(|w| Value::from(w).to_string()).collect::<Vec<_>>().join(", ")
}

/// The stack as the baseline's `services.sh`, in start order.
fn services_sh(stack: &[Service], base: u16) -> anyhow::Result<String> {
    let mut text = String::from("# service NAME PORT COMMAND...; {port} is the service's port\n");
    for (port, service) in (base..).zip(stack) {
        let words = service.command("{port}");
        let quoted = words.iter().map(|w| shlex::try_quote(w)).collect::<Result<Vec<_>, _>>()?;
        text += &format!("service {} {port} {}\n", service.name, quoted.join(" "));
    }
    Ok(text)
}

// ---- the bench, its checkouts and the processes it starts ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
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

struct Bench {
    /// The runner: this very binary.
    runner: PathBuf,
    baseline: PathBuf,
    /// The temporary checkouts live here; removed when the bench ends.
    scratch: PathBuf,
    next_port: u16,
    checkouts: usize,
    /// Set by Ctrl-C or SIGTERM: every wait gives up and the guards clean up.
    interrupted: Arc<AtomicBool>,
}

impl Bench {
    fn new(project: &Project) -> anyhow::Result<Bench> {
        let runner = std::env::current_exe().context("finding the runner's own binary")?;
        let baseline = project.path("bench/baseline/init.sh");
        ensure!(baseline.is_file(), "the baseline {} is missing", baseline.display());
        for program in ["bash", "perl", "lsof", "jq", "sleep"] {
            ensure!(on_path(program), "the bench needs {program}: install it with `apt-get install {program}`");
        }
        let interrupted = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, interrupted.clone()).context("installing signal handlers")?;
        }
        let scratch = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        Ok(Bench { runner, baseline, scratch, next_port: PORTS.0, checkouts: 0, interrupted })
    }

    /// The first of `n` consecutive ports free on every address.
    fn ports(&mut self, n: u16) -> anyhow::Result<u16> {
        while self.next_port + n <= PORTS.1 {
            let base = self.next_port;
            match (base..base + n).find(|p| !alloc::is_free(*p)) {
                None => {
                    self.next_port = base + n;
                    return Ok(base);
                }
                Some(busy) => self.next_port = busy + 1,
            }
        }
        bail!("no {n} consecutive free ports left in {}-{}", PORTS.0, PORTS.1)
    }

    /// A checkout of `stack` for `tool`, its services on ports from `base` up.
    fn checkout(&mut self, tool: Tool, stack: &[Service], base: u16) -> anyhow::Result<Checkout> {
        self.checkouts += 1;
        let name = format!("{tool}-{}", self.checkouts);
        let program = match tool {
            Tool::Runner => self.runner.clone(),
            Tool::Baseline => self.baseline.clone(),
        };
        let checkout = Checkout {
            tool,
            program,
            root: self.scratch.join(&name),
            state: self.scratch.join(format!("{name}-state")),
            ports: (base..).take(stack.len()).collect(),
        };
        std::fs::create_dir_all(&checkout.root)?;
        std::fs::create_dir_all(&checkout.state)?;
        let (file, text) = match tool {
            Tool::Runner => ("ports.toml", ports_toml(stack, base)),
            Tool::Baseline => ("services.sh", services_sh(stack, base)?),
        };
        std::fs::write(checkout.root.join(file), text)?;
        Ok(checkout)
    }

    /// A runner checkout and a baseline checkout of `stack`, on ports of their own.
    fn pair(&mut self, stack: &[Service]) -> anyhow::Result<Pair> {
        let n = stack.len() as u16;
        let (runner, baseline) = (self.ports(n)?, self.ports(n)?);
        self.pair_on(stack, runner, baseline)
    }

    fn pair_on(&mut self, stack: &[Service], runner: u16, baseline: u16) -> anyhow::Result<Pair> {
        let runner = self.checkout(Tool::Runner, stack, runner)?;
        let baseline = self.checkout(Tool::Baseline, stack, baseline)?;
        Ok(Pair { runner, baseline })
    }

    fn check(&self) -> anyhow::Result<()> {
        ensure!(!self.interrupted.load(Ordering::SeqCst), "interrupted");
        Ok(())
    }

    /// Polls `done` every millisecond until it holds; an error after `limit`
    /// or on Ctrl-C.
    fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while !done() {
            self.check()?;
            ensure!(Instant::now() < deadline, "gave up after {} s waiting for {what}", limit.as_secs());
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn sleep(&self, period: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + period;
        while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            self.check()?;
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        Ok(())
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A temporary checkout with a stack of services, for the runner
/// (`ports.toml`) or the baseline (`services.sh`). Dropping it stops its
/// services, kills whatever still runs in it and removes it.
struct Checkout {
    tool: Tool,
    program: PathBuf,
    root: PathBuf,
    /// `XDG_STATE_HOME`: the runner's registry, never the real home's.
    state: PathBuf,
    /// The services' preferred ports, in stack order.
    ports: Vec<u16>,
}

impl Checkout {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = match self.tool {
            Tool::Runner => Command::new(&self.program),
            Tool::Baseline => {
                let mut bash = Command::new("bash");
                bash.arg(&self.program);
                bash
            }
        };
        command
            .args(args)
            .current_dir(&self.root)
            .env("XDG_STATE_HOME", &self.state)
            .env("NO_COLOR", "1")
            .env_remove("FORCE_MODE")
            .stdin(Stdio::null());
        command
    }

    /// Runs a command to its end, which must be a success: its time and its stdout.
    fn run(&self, args: &[&str]) -> anyhow::Result<(f64, String)> {
        timed(&mut self.command(args), &format!("the {} ({})", self.tool, args.join(" ")))
    }

    fn time(&self, args: &[&str]) -> anyhow::Result<f64> {
        Ok(self.run(args)?.0)
    }

    /// Stops the services: the time until every port is free and none of the
    /// processes that held them is left.
    fn stop_until_clean(&self, bench: &Bench) -> anyhow::Result<f64> {
        let ports: BTreeSet<u16> = self.ports.iter().copied().collect();
        let holders: Vec<ProcId> = holder::lookup(&ports).into_values().flatten().filter_map(|h| h.id).collect();
        ensure!(holders.len() >= ports.len(), "not every service of the {} was listening before stop", self.tool);
        let started = Instant::now();
        self.run(&["stop"])?;
        bench.wait_for("the ports to be free and the services gone", Duration::from_secs(30), || {
            ports.iter().all(|p| alloc::is_free(*p)) && holders.iter().all(|id| !id.is_alive())
        })?;
        let took = started.elapsed().as_secs_f64();
        let left = processes_in(&self.root);
        ensure!(left.is_empty(), "the {}'s stop left processes behind: {left:?}", self.tool);
        Ok(took)
    }

    /// Forgets the allocations, so the next one starts from the preferred ports.
    fn forget_ports(&self) -> anyhow::Result<()> {
        files::remove_optional(&self.root.join(".ports.json"))?;
        files::remove_optional(&self.root.join(".env.runtime"))
    }

    /// The port `.ports.json` gives a service.
    fn allocated(&self, service: &str) -> anyhow::Result<u16> {
        let path = self.root.join(".ports.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let ports: BTreeMap<String, u16> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        ports.get(service).copied().with_context(|| format!("{} has no port for {service}", path.display()))
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let _ = self.command(&["stop"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let left = processes_in(&self.root);
        for id in &left {
            if let Some(pid) = Pid::from_raw(id.pid).filter(|_| id.is_alive()) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
        crate::process::wait_until(Duration::from_secs(5), || left.iter().all(|id| !id.is_alive()));
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

struct Pair {
    runner: Checkout,
    baseline: Checkout,
}

impl Pair {
    fn of(&self, tool: Tool) -> &Checkout {
        match tool {
            Tool::Runner => &self.runner,
            Tool::Baseline => &self.baseline,
        }
    }
}

/// Processes the bench starts itself (a port's holder, sleeps), in one
/// process group of their own: killed together on drop.
#[derive(Default)]
struct Crowd {
    pgid: Option<i32>,
    children: Vec<Child>,
}

impl Crowd {
    fn spawn(&mut self, command: &mut Command) -> anyhow::Result<u32> {
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
struct Foreground(Child);

impl Foreground {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Ctrl-C, then waits until it has stopped its services and left.
    fn interrupt(&mut self, limit: Duration) -> anyhow::Result<()> {
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

/// Runs a command to its end, which must be a success: its time and its stdout.
fn timed(command: &mut Command, what: &str) -> anyhow::Result<(f64, String)> {
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

/// A connection to the port succeeds.
fn answers(port: u16) -> bool {
    ready::check(&Ready::Tcp, port)
}

/// Processes (but this one) whose working directory is in `dir`: what a
/// checkout's services would leave behind.
fn processes_in(dir: &Path) -> Vec<ProcId> {
    let me = std::process::id() as i32;
    let cwd = |pid: i32| std::fs::read_link(format!("/proc/{pid}/cwd"));
    process::all_pids()
        .into_iter()
        .filter(|pid| *pid != me && cwd(*pid).is_ok_and(|cwd| cwd.starts_with(dir)))
        .filter_map(ProcId::of)
        .collect()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// CPUs, their model and the kernel, for the table's caption.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown CPU");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} × {model}, Linux {}", kernel.trim())
}

/// The cargo profile's folder the runner was built into: `debug` for `cargo xtask`.
fn build(runner: &Path) -> String {
    let folder = runner.parent().and_then(Path::file_name);
    folder.map_or_else(|| "unknown".into(), |f| f.to_string_lossy().into_owned())
}

// ---- results ----

/// What one case measured: seconds per run for each tool (empty when the
/// case has none), and figures derived from them.
struct Case {
    title: String,
    runner: Vec<f64>,
    baseline: Vec<f64>,
    figures: Vec<(&'static str, Figure)>,
    target: &'static str,
    met: bool,
}

impl Case {
    fn new(title: String, runner: Vec<f64>, baseline: Vec<f64>, target: &'static str) -> Case {
        Case { title, runner, baseline, figures: Vec::new(), target, met: false }
    }

    fn runner_median(&self) -> f64 {
        median(&self.runner).unwrap_or(f64::NAN)
    }

    /// How many times faster the runner is than the baseline (medians).
    fn speedup(&self) -> f64 {
        median(&self.baseline).unwrap_or(f64::NAN) / self.runner_median()
    }

    /// The runner's cell: its median time, or its figures when it has no times.
    fn runner_cell(&self) -> String {
        match median(&self.runner) {
            Some(t) => Figure::Seconds(t).to_string(),
            None => self.figures.iter().map(|(name, f)| format!("{f} {name}")).collect::<Vec<_>>().join(", "),
        }
    }

    fn summary(&self) -> String {
        let mut text = format!("runner {}", self.runner_cell());
        if let Some(b) = median(&self.baseline) {
            text += &format!(", baseline {}, {} faster", Figure::Seconds(b), Figure::Times(self.speedup()));
        }
        text + if self.met { " ✓" } else { " ✗ target missed" }
    }

    fn to_json(&self, id: usize) -> Value {
        let figures: BTreeMap<&str, Value> =
            self.figures.iter().map(|(name, f)| (*name, json!({ "value": f.value(), "unit": f.unit() }))).collect();
        json!({
            "id": id,
            "case": self.title,
            "runner_median_s": median(&self.runner),
            "baseline_median_s": median(&self.baseline),
            "speedup": median(&self.baseline).map(|_| self.speedup()),
            "runner_s": self.runner,
            "baseline_s": self.baseline,
            "figures": figures,
            "target": self.target,
            "met": self.met,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Figure {
    Seconds(f64),
    Megabytes(f64),
    Percent(f64),
    Times(f64),
}

impl Figure {
    fn value(self) -> f64 {
        match self {
            Figure::Seconds(v) | Figure::Megabytes(v) | Figure::Percent(v) | Figure::Times(v) => v,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Figure::Seconds(_) => "s",
            Figure::Megabytes(_) => "MiB",
            Figure::Percent(_) => "%",
            Figure::Times(_) => "x",
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Figure::Seconds(s) if s.abs() < 1.0 => write!(f, "{:.1} ms", s * 1000.0),
            Figure::Seconds(s) => write!(f, "{s:.2} s"),
            Figure::Megabytes(m) => write!(f, "{m:.1} MB"),
            Figure::Percent(p) => write!(f, "{p:.2} %"),
            Figure::Times(x) if x >= 10.0 => write!(f, "{x:.0}×"),
            Figure::Times(x) => write!(f, "{x:.2}×"),
        }
    }
}

fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The results as a Markdown table (for the README), with each case's
/// further figures below it.
fn table(cases: &[Case]) -> String {
    let mut text =
        String::from("| | case | runner | baseline | speed-up | target | met |\n|--:|---|--:|--:|--:|---|:-:|\n");
    for (i, case) in cases.iter().enumerate() {
        let baseline = median(&case.baseline).map_or("—".into(), |b| Figure::Seconds(b).to_string());
        let speedup = median(&case.baseline).map_or("—".into(), |_| Figure::Times(case.speedup()).to_string());
        text += &format!(
            "| {} | {} | {} | {baseline} | {speedup} | {} | {} |\n",
            i + 1,
            case.title,
            case.runner_cell(),
            case.target,
            if case.met { "✓" } else { "✗" }
        );
    }
    for (i, case) in cases.iter().enumerate().filter(|(_, c)| !c.runner.is_empty() && !c.figures.is_empty()) {
        let figures: Vec<String> = case.figures.iter().map(|(name, f)| format!("{name} {f}")).collect();
        text += &format!("\n{}: {}.", i + 1, figures.join(", "));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn the_critical_path_is_the_longest_chain() {
        let (seconds, chain) = critical_path(&Service::stack(true));
        assert!((seconds - 1.0).abs() < 1e-9, "{seconds}");
        assert_eq!(chain, 3); // db, api, web
        assert_eq!(critical_path(&[Service::new("x", 0.5, &[])]), (0.5, 1));
    }

    #[test]
    fn the_stack_is_a_valid_ports_toml() {
        let config = crate::config::parse(&ports_toml(&Service::stack(true), 30000)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.order, ["db", "cache", "api", "queue", "search", "web", "worker"]);
        assert_eq!(config.services["worker"].depends_on, ["queue", "db"]);
        let argv: Vec<String> = config.services["queue"]
            .command
            .iter()
            .map(|t| t.render(Some("queue"), &config.preferred_ports()))
            .collect();
        assert_eq!(argv, Service::stack(true)[2].command(30002));
    }
}
