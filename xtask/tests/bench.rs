//! `cargo xtask bench` keeps working: one tiny run of every case. Timings are
//! measured and reported by the bench itself, never asserted here.

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs perl, lsof and jq and takes a while: run by `cargo xtask test`"]
fn one_tiny_run_of_every_case() {
    let json = tempfile::NamedTempFile::new().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--runs", "1", "--json"])
        .arg(json.path())
        .current_dir(repo)
        .output()
        .unwrap();
    let shown = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "bench failed:\n{shown}");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json.path()).unwrap()).unwrap();
    let cases = results["cases"].as_array().unwrap_or_else(|| panic!("no cases in {results}"));
    assert_eq!(cases.len(), 9, "{results}");
    assert!(shown.contains("| case |"), "no table printed:\n{shown}");
}
