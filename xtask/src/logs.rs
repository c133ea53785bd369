//! `cargo xtask logs`: what services wrote to `.logs/`, optionally followed.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::ensure;

use crate::paths::Project;
use crate::term::say;

pub fn run(project: &Project, service: Option<&str>, follow: bool, lines: usize) -> anyhow::Result<()> {
    let config = crate::config::load(&project.ports_toml())?;
    let names: Vec<String> = match service {
        Some(name) => {
            ensure!(
                config.services.contains_key(name),
                "unknown service {name:?}: ports.toml has {}",
                config.names().join(", ")
            );
            vec![name.to_owned()]
        }
        None => config.order.clone(),
    };
    for name in &names {
        let path = project.log_file(name);
        if path.exists() {
            say!("==> {name} ({}) <==\n{}", path.display(), indented(&last_lines(&path, lines)));
        }
    }
    if follow {
        follow_files(project, &names)?;
    }
    Ok(())
}

/// The last `n` lines of a log (none if it does not exist).
pub fn last_lines(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect()
}

pub fn indented(lines: &[String]) -> String {
    if lines.is_empty() {
        return "  (no output)".into();
    }
    lines.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

/// Prints what is appended to the logs, prefixed, until interrupted. Logs are
/// files written by services that outlive us, so this polls their length.
fn follow_files(project: &Project, names: &[String]) -> anyhow::Result<()> {
    let mut offsets: Vec<u64> =
        names.iter().map(|n| std::fs::metadata(project.log_file(n)).map_or(0, |m| m.len())).collect();
    let width = names.iter().map(String::len).max().unwrap_or(0);
    loop {
        for (name, offset) in names.iter().zip(offsets.iter_mut()) {
            let Ok(mut file) = std::fs::File::open(project.log_file(name)) else {
                continue;
            };
            let len = file.metadata()?.len();
            if len < *offset {
                *offset = 0; // restarted: the log was truncated
            }
            if len == *offset {
                continue;
            }
            file.seek(SeekFrom::Start(*offset))?;
            let mut new = String::new();
            file.read_to_string(&mut new)?;
            let complete = new.rfind('\n').map_or(0, |i| i + 1);
            let mut out = std::io::stdout().lock();
            for line in new[..complete].lines() {
                writeln!(out, "{name:width$} | {line}")?;
            }
            *offset += complete as u64;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
