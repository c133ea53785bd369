//! `cargo xtask bench`: builds and runs the bench (`xtask/bench`), which
//! measures this very runner side by side with the seed's bash baseline. The
//! bench is a program of its own: the runner does not carry its code.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use xshell::{Shell, cmd};

use crate::system::paths::Project;

pub fn run(project: &Project, runs: usize, json: Option<&Path>) -> anyhow::Result<()> {
    let runner = std::env::current_exe().context("finding the runner's own binary")?;
    let mut bench = Command::new(build(project, &runner)?);
    bench.arg("--runner").arg(&runner).args(["--runs", &runs.to_string()]);
    if let Some(json) = json {
        bench.arg("--json").arg(json);
    }
    // In this process's place: Ctrl-C reaches the bench alone, which stops
    // what it started before it ends.
    Err(bench.exec()).context("running the bench")
}

/// Builds the bench in the runner's profile, with the runner, so that the
/// dependencies they share are built once, with the same features (built
/// alone, the bench would ask for fewer, and have them built again); returns
/// where it is.
fn build(project: &Project, runner: &Path) -> anyhow::Result<PathBuf> {
    // cargo names the dev profile's folder `debug`.
    let profile = match runner.parent().and_then(Path::file_name).and_then(|f| f.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let sh = Shell::new()?;
    sh.change_dir(&project.root);
    let built = cmd!(sh, "cargo build --quiet --message-format=json-render-diagnostics --profile {profile}")
        .args(["--package", "xtask", "--package", "bench"])
        .quiet()
        .read()
        .context("building the bench")?;
    let messages = built.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok());
    let bench =
        messages.filter(|m| m["target"]["name"] == "bench").find_map(|m| m["executable"].as_str().map(PathBuf::from));
    bench.context("cargo built no bench program")
}
