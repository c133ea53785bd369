//! Which processes hold which sockets: a read of every process's descriptors.

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{CWD, Mode, OFlags, RawDir};
use rustix::io::Errno;

use crate::pids;

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
    fn reads_socket_links() {
        assert_eq!(socket_inode(b"socket:[1234]"), Some(1234));
        assert_eq!(socket_inode(b"pipe:[1234]"), None);
        assert_eq!(socket_inode(b"socket:[12x]"), None);
    }
}
