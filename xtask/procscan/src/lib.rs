//! The runner's passes over every process in `/proc`: the list of processes,
//! and which of them hold which sockets. Every port check makes them, and they
//! loop over every descriptor on the machine, so they live in a crate of their
//! own that the workspace builds optimized even in the dev profile, where
//! `cargo xtask` runs (Cargo.toml). Kept small: it is compiled with the
//! optimizer on every cold build.

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{CWD, Mode, OFlags, RawDir};
use rustix::io::Errno;

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

/// The processes that have any of `sockets` (inodes) open, with which ones,
/// by pid. Nothing cheaper says who holds a socket, so every process's
/// descriptors are read, by two threads per core (they wait in the kernel more
/// than they compute; measured faster than one per core). Each takes the next
/// process until none is left, so a thread that starts late holds nothing up.
pub fn holders(sockets: &BTreeSet<u64>) -> Vec<(i32, BTreeSet<u64>)> {
    let pids = pids();
    let next = AtomicUsize::new(0);
    let scan = || {
        let mut found = Vec::new();
        while let Some(&pid) = pids.get(next.fetch_add(1, Ordering::Relaxed)) {
            let held = sockets_of(pid, sockets);
            if !held.is_empty() {
                found.push((pid, held));
            }
        }
        found
    };
    // Capped: a few hundred processes give a big machine little to share out.
    let threads = (2 * std::thread::available_parallelism().map_or(1, |n| n.get())).min(8);
    let mut found = std::thread::scope(|scope| {
        let others: Vec<_> = (1..threads).map(|_| scope.spawn(scan)).collect();
        let mut found = scan();
        for other in others {
            found.extend(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        found
    });
    found.sort(); // by pid, whichever thread found it
    found
}

/// Which of `sockets` process `pid` has open: one readlink per descriptor,
/// relative to its fd folder. Empty for a process that is gone or another
/// user's. The path and the links are read into buffers on the stack: no
/// allocation per process or descriptor.
pub fn sockets_of(pid: i32, sockets: &BTreeSet<u64>) -> BTreeSet<u64> {
    sockets_in(format_args!("/proc/{pid}/fd\0"), sockets)
}

/// The same, through thread `tid` of process `pid`: the way to a process
/// whose main thread has ended, whose own fd folder is empty.
pub fn sockets_of_thread(pid: i32, tid: i32, sockets: &BTreeSet<u64>) -> BTreeSet<u64> {
    sockets_in(format_args!("/proc/{pid}/task/{tid}/fd\0"), sockets)
}

fn sockets_in(folder: std::fmt::Arguments, sockets: &BTreeSet<u64>) -> BTreeSet<u64> {
    use std::io::Write;
    let mut found = BTreeSet::new();
    let mut path = [0; 48];
    let _ = (&mut path[..]).write_fmt(folder);
    let Ok(path) = CStr::from_bytes_until_nul(&path) else { return found };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(dir) = rustix::fs::openat(CWD, path, flags, Mode::empty()) else { return found };
    let mut buffer = [MaybeUninit::uninit(); 8192];
    let mut link = [MaybeUninit::uninit(); 32]; // `socket:[N]` fits; a longer link is no socket
    // Read to the empty batch: a short one does not mean the end, as a
    // pending signal cuts a batch short.
    let mut entries = RawDir::new(&dir, &mut buffer);
    while let Some(Ok(entry)) = entries.next() {
        if entry.file_name().to_bytes().starts_with(b".") {
            continue;
        }
        match rustix::fs::readlinkat_raw(&dir, entry.file_name(), &mut link) {
            Ok((target, _)) => found.extend(socket_inode(target).filter(|i| sockets.contains(i))),
            // Every descriptor of a process we may not look into refuses alike.
            Err(Errno::ACCESS | Errno::PERM) => break,
            Err(_) => {} // closed meanwhile
        }
    }
    found
}

/// `socket:[1234]` -> 1234.
fn socket_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn finds_this_process_and_its_socket() {
        assert!(pids().contains(&(std::process::id() as i32)));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap().ino();
        let me = std::process::id() as i32;
        let wanted = BTreeSet::from([inode]);
        assert_eq!(holders(&wanted).into_iter().find(|(pid, _)| *pid == me), Some((me, wanted.clone())));
        assert_eq!(sockets_of(me, &wanted), wanted);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_inode = std::fs::metadata(format!("/proc/self/fd/{}", closed.as_raw_fd())).unwrap().ino();
        drop(closed);
        assert!(sockets_of(me, &BTreeSet::from([closed_inode])).is_empty());
    }

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

    #[test]
    fn reads_socket_links() {
        assert_eq!(socket_inode(b"socket:[1234]"), Some(1234));
        assert_eq!(socket_inode(b"pipe:[1234]"), None);
        assert_eq!(socket_inode(b"socket:[12x]"), None);
    }
}
