//! The bench: the runner measured side by side with the seed's bash
//! baseline (`bench/baseline/init.sh`), on temporary checkouts of tiny
//! services, runner and baseline alternating within each run. Prints the
//! medians, the ratios and whether each target is met; a missed target is
//! reported, never an error. `cargo xtask bench` builds and runs it on the
//! runner that `cargo xtask` runs:
//!
//! ```text
//! bench --runner PATH --runs N [--json FILE]
//! ```
//!
//! Everything the bench starts (services, listeners, sleeps, `xtask dev`)
//! lives in a guard that stops it when its case ends, on an error, a panic
//! or Ctrl-C alike.

mod cases;
mod load;
mod report;
mod stack;
mod tools;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use serde_json::json;

use crate::cases::{CASES, Sizes};
use crate::tools::Bench;

fn main() {
    if let Err(e) = try_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn try_main() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args_os().skip(1))?;
    ensure!(args.runs >= 1, "--runs must be at least 1");
    let sizes = Sizes::for_runs(args.runs);
    let bench = Bench::new(&args.runner)?;
    let machine = machine();
    println!("benchmarking on {machine}, {} run(s) of each case; runner: {}", sizes.runs, bench.runner.display());
    cases::the_runner_reads_the_stacks(&bench).context("checking the bench's stacks")?;
    let mut cases = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let case = case(&bench, &sizes)?;
        println!("{}/{} {}: {}", i + 1, CASES.len(), case.title, case.summary());
        cases.push(case);
    }
    println!("\n{}", report::table(&cases));
    println!("machine: {machine}; runner: {} build", build(&bench.runner));
    if let Some(path) = &args.json {
        let report = json!({
            "machine": machine,
            "runner_build": build(&bench.runner),
            "runs": sizes.runs,
            "cases": cases.iter().enumerate().map(|(i, c)| c.to_json(i + 1)).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&report)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The command line, as `cargo xtask bench` gives it.
struct Args {
    /// The `xtask` binary measured.
    runner: PathBuf,
    runs: usize,
    json: Option<PathBuf>,
}

impl Args {
    fn parse(mut words: impl Iterator<Item = OsString>) -> anyhow::Result<Args> {
        const USAGE: &str = "usage: bench --runner PATH --runs N [--json FILE], as `cargo xtask bench` runs it";
        let (mut runner, mut runs, mut json) = (None, None, None);
        while let Some(flag) = words.next() {
            let slot = match flag.to_str() {
                Some("--runner") => &mut runner,
                Some("--runs") => &mut runs,
                Some("--json") => &mut json,
                _ => bail!("unknown argument {}; {USAGE}", flag.display()),
            };
            *slot = Some(words.next().with_context(|| format!("{} needs a value; {USAGE}", flag.display()))?);
        }
        let missing = |flag: &str| format!("{flag} is missing; {USAGE}");
        let runs = runs.with_context(|| missing("--runs"))?;
        Ok(Args {
            runner: runner.with_context(|| missing("--runner"))?.into(),
            runs: runs
                .to_str()
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("--runs {}: not a number", runs.display()))?,
            json: json.map(PathBuf::from),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_read_or_refused_with_its_usage() {
        let parse = |words: &[&str]| Args::parse(words.iter().map(OsString::from)).map_err(|e| e.to_string());
        let args = parse(&["--runs", "3", "--runner", "/x/xtask", "--json", "out.json"]).unwrap();
        assert_eq!((args.runner, args.runs, args.json), ("/x/xtask".into(), 3, Some("out.json".into())));
        assert!(parse(&["--runner", "/x/xtask", "--runs", "1"]).unwrap().json.is_none());
        let refused = |words: &[&str], why: &str| {
            let e = parse(words).err().unwrap_or_else(|| panic!("{words:?} accepted"));
            assert!(e.starts_with(why), "{e}");
        };
        refused(&["--runs", "1"], "--runner is missing; usage:");
        refused(&["--runner", "/x/xtask"], "--runs is missing; usage:");
        refused(&["--runner", "/x/xtask", "--runs"], "--runs needs a value; usage:");
        refused(&["--runner", "/x/xtask", "--runs", "many"], "--runs many: not a number");
        refused(&["--runner", "/x/xtask", "--runs", "1", "--fast"], "unknown argument --fast; usage:");
    }
}
