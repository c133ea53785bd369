//! What the runner reads of `/proc`: who a process is (its pid and start
//! time, its stat line, its command line), the list of processes, and which
//! of them hold which sockets. Every port check and every stop makes passes
//! over every process, looping over every descriptor on the machine, so they
//! live in a crate of their own that the workspace builds optimized even in
//! the dev profile, where `cargo xtask` runs (Cargo.toml). The tests' and the
//! bench's harness read processes through it too. Kept small: it is compiled
//! with the optimizer on every cold build.

mod process;
mod sockets;

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::mem::MaybeUninit;

use rustix::fs::{CWD, Mode, OFlags, RawDir};

pub use process::{ProcId, Stat, argv, process_file};
pub use sockets::{holders, sockets_of, sockets_of_thread};

/// The pid of every process, from the folders of `/proc`, read into one
/// buffer on the stack: no allocation per entry.
pub fn pids() -> Vec<i32> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(dir) = rustix::fs::open("/proc", flags, Mode::empty()) else { return Vec::new() };
    let mut buffer = [MaybeUninit::uninit(); 16 * 1024];
    let mut entries = RawDir::new(&dir, &mut buffer);
    let mut pids = Vec::with_capacity(512);
    while let Some(Ok(entry)) = entries.next() {
        pids.extend(std::str::from_utf8(entry.file_name().to_bytes()).ok().and_then(|name| name.parse::<i32>().ok()));
    }
    pids
}

/// The live (non-zombie) members of a process group.
pub fn group_members(pgid: i32) -> Vec<ProcId> {
    pids().into_iter().filter_map(Stat::of).filter(|s| s.pgrp == pgid).filter_map(|s| s.id()).collect()
}

/// The process groups in which some process is stopped by a signal
/// (SIGSTOP, Ctrl-Z: state `T`), which answers nothing until it continues.
/// Only the start of each stat line is read: the state and the group come
/// after the name, which ends at the last `)` (a name is at most 64 bytes).
pub fn stopped_groups() -> BTreeSet<i32> {
    use std::io::Write;
    let mut found = BTreeSet::new();
    for pid in pids() {
        let mut path = [0; 32];
        let _ = write!(&mut path[..], "/proc/{pid}/stat\0");
        let Ok(path) = CStr::from_bytes_until_nul(&path) else { continue };
        let Ok(file) = rustix::fs::openat(CWD, path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) else {
            continue; // gone
        };
        let mut line = [0; 256];
        let Ok(n) = rustix::io::read(&file, &mut line) else { continue };
        let Some(end) = line[..n].iter().rposition(|b| *b == b')') else { continue };
        // `STATE PPID PGRP`
        let mut fields = line[end + 1..n].split(|b| *b == b' ').filter(|f| !f.is_empty());
        if fields.next() == Some(b"T") {
            found.extend(fields.nth(1).and_then(|g| std::str::from_utf8(g).ok()?.parse::<i32>().ok()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_group_of_a_stopped_process() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep").arg("300").process_group(0).spawn().unwrap();
        let pgid = child.id() as i32;
        assert!(!stopped_groups().contains(&pgid));
        let stop = std::process::Command::new("kill").args(["-STOP", &pgid.to_string()]).status().unwrap();
        assert!(stop.success());
        let stopped = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            stopped_groups().contains(&pgid)
        });
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(stopped, "the group of stopped process {pgid} was not found");
    }
}
