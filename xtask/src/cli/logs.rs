//! `cargo xtask logs`: what services wrote to `.logs/`, optionally followed.

use std::fs::File;
use std::io::Write;
use std::time::Duration;

use anyhow::ensure;

use crate::system::logfile::{Cursor, indented, last_lines_before};
use crate::system::paths::Project;
use crate::system::term::say;

pub fn run(project: &Project, service: Option<&str>, follow: bool, lines: usize) -> anyhow::Result<()> {
    let config = crate::engine::load_config(project)?;
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
    // Each tail ends where following starts, fixed first: a line written
    // while the tails are shown is shown once, not lost between them.
    let mut cursors = Vec::new();
    for name in &names {
        let path = project.log_file(name);
        let cursor = Cursor::at_end(&path);
        // Followed, an unfinished last line is shown once it ends, not here too.
        let until = if follow { cursor.finished() } else { cursor.offset };
        let shown = match File::open(&path) {
            Ok(mut file) => indented(&last_lines_before(&mut file, lines, until)),
            Err(_) => "  (no log yet)".into(),
        };
        say!("==> {name} ({}) <==\n{shown}", path.display());
        cursors.push(cursor);
    }
    if follow {
        follow_files(project, &names, cursors)?;
    }
    Ok(())
}

/// Prints what is appended to the logs, prefixed, until interrupted. Logs are
/// files written by services that outlive us, so this polls them.
fn follow_files(project: &Project, names: &[String], mut cursors: Vec<Cursor>) -> anyhow::Result<()> {
    let width = names.iter().map(String::len).max().unwrap_or(0);
    loop {
        let mut idle = true;
        for (name, cursor) in names.iter().zip(cursors.iter_mut()) {
            let Ok(mut file) = File::open(project.log_file(name)) else {
                continue;
            };
            let lines = cursor.read_new(&mut file)?;
            idle &= lines.is_empty();
            let mut out = std::io::stdout().lock();
            for line in lines {
                writeln!(out, "{name:width$} | {line}")?;
            }
        }
        // A burst may have been read only in part: go on at once.
        if idle {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
