//! `cargo xtask test`: every test suite of the repository. The Rust tests
//! include the stack's end-to-end test (real postgres, redis, uvicorn,
//! `next dev` and headless Chromium), which plain `cargo test` skips.

use std::path::Path;

use anyhow::{Context, ensure};
use xshell::{Shell, cmd};

use crate::paths::Project;
use crate::term::say;

pub fn run(project: &Project) -> anyhow::Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(&project.root);
    check_browser()?;
    install_browser_driver(&sh, project)?;
    say!("==> cargo test, the stack's end-to-end tests included");
    cmd!(sh, "cargo test --workspace -- --include-ignored").run().context("tests failed")?;
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
fn install_browser_driver(sh: &Shell, project: &Project) -> anyhow::Result<()> {
    let lock = project.path("e2e/package-lock.json");
    let installed = project.path("e2e/node_modules/.package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&installed).is_none() || modified(&installed) < modified(&lock) {
        say!("==> npm ci --prefix e2e (playwright-core, to drive Chromium)");
        cmd!(sh, "npm ci --prefix e2e --no-audit --no-fund --silent").run()?;
    }
    Ok(())
}
