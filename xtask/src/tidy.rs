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

/// The example of services in containers stays a valid ports.toml, with a
/// service of each kind.
#[test]
fn the_containers_example_is_valid() {
    use crate::model::config::Run;
    let path = root().join("examples/containers/ports.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = crate::model::config::parse(&text).unwrap_or_else(|e| panic!("{}", e.with_path(&path)));
    let runs: Vec<&Run> = config.services.values().map(|s| &s.run).collect();
    assert!(runs.iter().any(|r| matches!(r, Run::Image(_))), "{} has no image service", path.display());
    assert!(runs.iter().any(|r| matches!(r, Run::Compose(_))), "{} has no compose service", path.display());
    let compose = std::fs::read_to_string(root().join("examples/containers/compose.yaml")).unwrap();
    assert!(compose.contains("${POSTGRES_PORT"), "its compose.yaml must publish postgres on ${{POSTGRES_PORT}}");
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

/// ARCHITECTURE.md's code map names every module: a new one is placed there.
#[test]
fn the_code_map_names_every_module() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    let mut folders = vec![root().join("xtask/src")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap().flatten() {
            let path = entry.path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                folders.push(path.clone());
            }
            let module = path.is_dir() || (path.extension().is_some_and(|e| e == "rs") && name != "mod");
            let skipped = ["main", "tests", "tidy"].contains(&name.as_str());
            if module && !skipped && !map.contains(&format!("`{name}")) {
                missing.push(name);
            }
        }
    }
    assert!(missing.is_empty(), "ARCHITECTURE.md's code map does not name {missing:?}: say what each owns there");
}

/// The README's section on `ports.toml` names every key the file may hold.
#[test]
fn the_readme_explains_every_key_of_ports_toml() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme.split("## `ports.toml`").nth(1).expect("README.md has a section on ports.toml");
    let section = section.split("\n## ").next().unwrap_or_default();
    let words: std::collections::BTreeSet<&str> =
        section.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).collect();
    let raw = include_str!("model/config/raw.rs");
    let keys: Vec<&str> =
        raw.lines().filter_map(|l| l.trim().strip_prefix("pub ")?.split_once(':')).map(|(key, _)| key).collect();
    assert!(keys.len() > 10, "no keys found in raw.rs: {keys:?}");
    let missing: Vec<&&str> = keys.iter().filter(|key| !words.contains(**key)).collect();
    assert!(missing.is_empty(), "README.md's section on ports.toml does not explain {missing:?}");
}
