//! Self-checks of the repository, as ordinary tests: each failure says
//! exactly what to fix.

use std::path::{Path, PathBuf};

use xshell::{Shell, cmd};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the repository").to_path_buf()
}

#[test]
fn formatting() {
    let sh = Shell::new().unwrap();
    sh.change_dir(root());
    let checked = cmd!(sh, "cargo fmt --all -- --check").quiet().ignore_stdout().run();
    assert!(checked.is_ok(), "the Rust code is not formatted: run `cargo fmt --all`");
}

#[test]
fn the_repository_ports_toml_is_valid() {
    let path = root().join("ports.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = crate::model::config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    for name in ["postgres", "redis", "backend", "frontend"] {
        assert!(config.services.contains_key(name), "ports.toml has no service {name}");
    }
    let preferred = config.preferred_ports();
    assert_eq!(
        [preferred["postgres"], preferred["redis"], preferred["backend"], preferred["frontend"]],
        [5432, 6379, 8000, 3000],
        "the stack's preferred ports are part of the contract (README.md)"
    );
}

#[test]
fn readme_starts_with_the_two_commands() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let top: String = readme.lines().take(10).collect::<Vec<_>>().join("\n");
    for command in ["cargo xtask dev", "cargo xtask test"] {
        assert!(top.contains(command), "README.md must show `{command}` in its first lines");
    }
}

#[test]
fn generated_files_are_ignored() {
    let gitignore = std::fs::read_to_string(root().join(".gitignore")).unwrap();
    for generated in ["/.ports.json", "/.env.runtime", "/.pids/", "/.logs/", "/.data/", "/target/"] {
        assert!(gitignore.lines().any(|l| l == generated), ".gitignore must list {generated}");
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    // Run last, maybe in a cleaned environment (`env -i ... cargo xtask test`).
    let last = ci.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(
        last.trim_end().ends_with(" cargo xtask test") || last.trim() == "cargo xtask test",
        ".ci/run must end by running `cargo xtask test`"
    );
}
