//! `cargo xtask test`: every test suite of the repository. The Rust tests
//! include the stack's end-to-end test (real postgres, redis, uvicorn,
//! `next dev` and headless Chromium) and the services in containers (a
//! Docker daemon), which plain `cargo test` skips, and, when run as root, the tests that need root (another user's processes, a
//! chosen pid, an immutable file): they live in modules named `needs_root`.

use std::path::Path;

use anyhow::{Context, ensure};
use xshell::{Shell, cmd};

use crate::system::containers::Engine;
use crate::system::paths::Project;
use crate::system::term::say;

/// The module every test that needs root lives in.
const NEEDS_ROOT: &str = "needs_root::";

pub fn run(project: &Project) -> anyhow::Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(&project.root);
    check_browser()?;
    // Asked first, as the browser is: else each container test fails alone.
    let path = std::env::var_os("PATH").unwrap_or_default();
    Engine::find("docker", &path).context("the container tests need a Docker daemon")?;
    install_browser_driver(&sh, project)?;
    let root = crate::system::users::current_uid() == 0;
    let skip: &[&str] = if root { &[] } else { &["--skip", NEEDS_ROOT] };
    say!("==> cargo test, the stack's end-to-end tests included");
    cmd!(sh, "cargo test --workspace --no-fail-fast -- --include-ignored {skip...}").run().context("tests failed")?;
    if !root {
        // Said last, where it is seen: these passed by not running.
        let listed = cmd!(sh, "cargo test --workspace --quiet -- --list --include-ignored").quiet().read()?;
        let left_out = listed.lines().filter(|l| l.contains(NEEDS_ROOT) && l.ends_with(": test")).count();
        say!("{left_out} tests need root and were left out: run `cargo xtask test` as root to include them");
    }
    Ok(())
}

fn check_browser() -> anyhow::Result<()> {
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    ensure!(
        Path::new(&chromium).is_file(),
        "the browser tests need Chromium at {chromium}: install it with `sudo apt-get install chromium` \
         (or point CHROMIUM_PATH at one)"
    );
    Ok(())
}

/// playwright-core, from e2e/package-lock.json, whenever the lock changed.
/// npm runs in the package's folder: with `--prefix` it would read its global
/// settings (registry, proxy, CA) from under that folder, not the system's.
fn install_browser_driver(sh: &Shell, project: &Project) -> anyhow::Result<()> {
    let lock = project.path("e2e/package-lock.json");
    let installed = project.path("e2e/node_modules/.package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&installed).is_none() || modified(&installed) < modified(&lock) {
        say!("==> npm ci in e2e (playwright-core, to drive Chromium)");
        let _e2e = sh.push_dir("e2e");
        cmd!(sh, "npm ci --no-audit --no-fund --silent").run()?;
    }
    Ok(())
}
