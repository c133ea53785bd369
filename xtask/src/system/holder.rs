//! Who holds a port, and what that is to this checkout (ARCHITECTURE.md,
//! "Conflicts").
//!
//! The kernel's socket tables say which listening socket is on a port and
//! which user opened it; the processes' open files say who holds that socket.
//! `lookup` finds them; `Known::classify` says what each is to this
//! checkout, for the policy table of `model::policy`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::model::policy::Class;
use crate::system::containers;
use crate::system::group::Group;
use crate::system::paths::Project;
use crate::system::process::{self, ProcId, Stat};
use crate::system::records;
use crate::system::registry::Registry;
use crate::system::sockets;
use crate::system::users;

/// A process holding a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// `None` when the socket's process cannot be seen (another user's, without root).
    pub id: Option<ProcId>,
    pub pgid: i32,
    pub uid: u32,
    pub command: String,
    /// The mark of the group a runner started it in (`XTASK_GROUP`), which
    /// what a service forks keeps wherever it goes (`setsid`, a daemon).
    pub mark: Option<u64>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = users::name_of(self.uid);
        match self.id {
            Some(id) => write!(f, "pid {} ({}, user {user})", id.pid, self.command),
            None => write!(f, "a process of user {user} (pid not visible)"),
        }
    }
}

/// The holders of each of `ports` that has a listener (other ports are absent).
pub fn lookup(ports: &BTreeSet<u16>) -> BTreeMap<u16, Vec<Holder>> {
    let sockets = sockets::listening(ports);
    let mut found: BTreeMap<u16, Vec<Holder>> = BTreeMap::new();
    if sockets.is_empty() {
        return found;
    }
    let mut held = procscan::holders(&sockets.keys().copied().collect());
    let me = users::current_uid();
    let unseen: BTreeSet<u64> = sockets
        .iter()
        .filter(|(inode, (_, uid))| (*uid == me || me == 0) && !held.iter().any(|(_, hs)| hs.contains(inode)))
        .map(|(inode, _)| *inode)
        .collect();
    if !unseen.is_empty() {
        held.extend(held_by_threads(&unseen));
    }
    let mut seen_inodes = BTreeSet::new();
    for (pid, inodes) in held {
        let Some(stat) = Stat::of(pid) else { continue };
        // Its pid may have been reused since the scan: what is read now is
        // the holder's only if it still holds them.
        let inodes = match procscan::sockets_of(pid, &inodes) {
            now if now.is_empty() => held_through_threads(pid, &inodes),
            now => now,
        };
        if inodes.is_empty() {
            continue;
        }
        let Ok(uid) = std::fs::metadata(format!("/proc/{pid}")).map(|m| m.uid()) else { continue };
        let words = process::argv(pid);
        let command = if words.is_empty() { stat.comm.clone() } else { words.join(" ") };
        let mark = process::mark_of(pid);
        let ports: BTreeSet<u16> = inodes.iter().map(|i| sockets[i].0).collect();
        for port in ports {
            let id = Some(ProcId { pid, start: stat.start });
            found.entry(port).or_default().push(Holder { id, pgid: stat.pgrp, uid, command: command.clone(), mark });
        }
        seen_inodes.extend(inodes);
    }
    // Sockets whose process we could not see still say whose they are.
    for (inode, (port, uid)) in sockets {
        if !seen_inodes.contains(&inode) {
            found.entry(port).or_default().push(Holder { id: None, pgid: 0, uid, command: String::new(), mark: None });
        }
    }
    found
}

/// The holders of `sockets` among processes whose main thread ended before
/// their other threads: they show as zombies with an empty fd folder (lsof
/// and `ss -p` miss them), while their threads hold the descriptors. Few
/// processes are like this, so they are looked for only when a socket that
/// should be visible was not found.
fn held_by_threads(sockets: &BTreeSet<u64>) -> Vec<(i32, BTreeSet<u64>)> {
    let mut found = Vec::new();
    for pid in process::all_pids() {
        if !Stat::of(pid).is_some_and(|s| s.state == 'Z' && s.threads > 1) {
            continue;
        }
        let held = held_through_threads(pid, sockets);
        if !held.is_empty() {
            found.push((pid, held));
        }
    }
    found
}

/// Which of `sockets` process `pid` holds, asked through each of its threads.
fn held_through_threads(pid: i32, sockets: &BTreeSet<u64>) -> BTreeSet<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    let tids = tasks.filter_map(|t| t.file_name().to_str()?.parse().ok());
    tids.flat_map(|tid| procscan::sockets_of_thread(pid, tid, sockets)).collect()
}

/// Whether the listener on `port` belongs to the process group `pgid` (or
/// cannot be seen at all). Its leader usually holds it, so it is asked first.
/// A holder that left the group (`setsid`) is the service's when it carries
/// the group's mark, as the leader does.
pub fn held_by_group(port: u16, pgid: i32) -> bool {
    let sockets = sockets::listening(&BTreeSet::from([port]));
    if sockets.is_empty() || !procscan::sockets_of(pgid, &sockets.keys().copied().collect()).is_empty() {
        return !sockets.is_empty();
    }
    let holders = lookup(&BTreeSet::from([port])).remove(&port).unwrap_or_default();
    let mark = process::mark_of(pgid);
    let marked = |h: &Holder| mark.is_some() && h.id.is_some_and(|id| process::mark_of(id.pid) == mark);
    holders.iter().all(|h| h.id.is_none()) || holders.iter().any(|h| h.pgid == pgid || marked(h))
}

/// What the runner knows about the processes around it.
#[derive(Debug, Default)]
pub struct Known {
    pub uid: u32,
    pub ancestors: BTreeSet<i32>,
    /// This checkout's service groups, from `.pids/`.
    pub ours: Vec<(String, Group)>,
    /// Other checkouts' service groups, from the registry.
    pub others: Vec<(PathBuf, Group)>,
    /// The runner serving this checkout's dashboard.
    pub dashboard: Option<ProcId>,
    /// The proxy of the named URLs, from the registry.
    pub proxy: Option<ProcId>,
}

impl Known {
    /// Reads what is known now: our records, the other checkouts' records, our ancestry.
    pub fn gather(project: &Project, registry: &Registry) -> Known {
        let ours = records::load_all(&project.root).into_iter().map(|r| (r.service, r.group)).collect();
        Known {
            uid: users::current_uid(),
            ancestors: process::ancestors(),
            ours,
            others: registry.others_groups(&project.root),
            dashboard: records::dashboard(project).map(|d| d.owner),
            proxy: registry.entries.proxy.as_ref().and_then(|proxy| proxy.running()),
        }
    }

    /// The service of this checkout `holder` belongs to, with its group: in
    /// the group, or gone from it with its mark.
    pub fn ours_of(&self, holder: &Holder) -> Option<&(String, Group)> {
        self.ours.iter().find(|(_, group)| belongs(holder, group))
    }

    pub fn classify(&self, holder: &Holder) -> Class {
        let Some(id) = holder.id else {
            return Class::Unknown;
        };
        let groups = || self.ours.iter().map(|(_, g)| g).chain(self.others.iter().map(|(_, g)| g));
        if id.pid == 1 {
            Class::Init
        } else if containers::is_engine_process(&holder.command) {
            Class::Engine
        } else if self.dashboard == Some(id) {
            Class::Dashboard
        } else if self.proxy == Some(id) {
            Class::Proxy
        } else if self.ancestors.contains(&id.pid) || id.pid == std::process::id() as i32 {
            Class::Ancestor
        } else if let Some((service, _)) = self.ours_of(holder) {
            Class::Ours(service.clone())
        } else if let Some((path, _)) = self.others.iter().find(|(_, g)| belongs(holder, g)) {
            Class::OtherCheckout(path.clone())
        } else if holder.mark.is_some() {
            Class::Unrecorded
        } else if groups().any(|g| g.may_have(id, holder.pgid)) {
            Class::Unsure
        } else if holder.uid != self.uid {
            Class::OtherUser(users::name_of(holder.uid))
        } else {
            Class::SameUser
        }
    }
}

/// In `group`, or gone from it with its mark (unique to the group, and kept
/// by all that its processes fork).
fn belongs(holder: &Holder, group: &Group) -> bool {
    let marked = group.mark != 0 && holder.mark == Some(group.mark);
    marked || holder.id.is_some_and(|id| group.has(id, holder.pgid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn classify_by_group_pid_and_user() {
        // Live leaders: this process for our group, its parent for another checkout's.
        let me = ProcId::myself();
        let parent = ProcId::of(std::os::unix::process::parent_id() as i32).unwrap();
        let gone = ProcId { pid: 500, start: 10 }; // a leader that exited: its id may be anyone's now
        let known = Known {
            uid: 1000,
            ancestors: BTreeSet::from([1, 77]),
            ours: vec![("api".into(), Group { leader: me, mark: 0 }), ("web".into(), Group { leader: gone, mark: 7 })],
            others: vec![("/wt2".into(), Group { leader: parent, mark: 9 })],
            dashboard: Some(ProcId { pid: 700, start: 5 }),
            proxy: Some(ProcId { pid: 800, start: 6 }),
        };
        let holder = |pid, start, pgid, uid| Holder {
            id: Some(ProcId { pid, start }),
            pgid,
            uid,
            command: "x".into(),
            mark: None,
        };
        let marked = |mark| Holder { mark: Some(mark), ..holder(902, 3, 902, 1000) };
        assert_eq!(known.classify(&holder(501, me.start + 2, me.pid, 1000)), Class::Ours("api".into()));
        // In a group with our group's id but older than our leader: not ours.
        assert_eq!(known.classify(&holder(501, me.start.saturating_sub(1), me.pid, 1000)), Class::SameUser);
        // In the group of a leader that exited, without the group's mark: maybe not ours.
        assert_eq!(known.classify(&holder(501, 12, 500, 1000)), Class::Unsure);
        let other = holder(601, parent.start + 2, parent.pid, 1000);
        assert_eq!(known.classify(&other), Class::OtherCheckout("/wt2".into()));
        assert_eq!(known.classify(&holder(1, 1, 1, 0)), Class::Init);
        assert_eq!(known.classify(&holder(77, 3, 77, 1000)), Class::Ancestor);
        assert_eq!(known.classify(&holder(me.pid, me.start, 9, 1000)), Class::Ancestor);
        assert!(matches!(known.classify(&holder(900, 3, 900, 0)), Class::OtherUser(_)));
        assert_eq!(known.classify(&holder(900, 3, 900, 1000)), Class::SameUser);
        let unseen = Holder { id: None, pgid: 0, uid: 0, command: String::new(), mark: None };
        assert_eq!(known.classify(&unseen), Class::Unknown);
        assert_eq!(known.classify(&holder(700, 5, 700, 1000)), Class::Dashboard);
        assert_eq!(known.classify(&holder(800, 6, 800, 1000)), Class::Proxy);
        assert_eq!(known.classify(&holder(800, 7, 800, 1000)), Class::SameUser, "not the proxy: its pid, reused");
        let proxy = Holder { command: "/usr/sbin/docker-proxy -proto tcp".into(), ..holder(800, 3, 800, 1000) };
        assert_eq!(known.classify(&proxy), Class::Engine);
        // Gone from its group (setsid, a daemon) with the group's mark.
        assert_eq!(known.classify(&marked(7)), Class::Ours("web".into()));
        assert_eq!(known.ours_of(&marked(7)).map(|(s, _)| s.as_str()), Some("web"));
        assert_eq!(known.classify(&marked(9)), Class::OtherCheckout("/wt2".into()));
        assert_eq!(known.classify(&marked(8)), Class::Unrecorded);
        assert_eq!(known.classify(&marked(0)), Class::Unrecorded, "0 marks no group");
    }

    #[test]
    fn lookup_finds_this_process_on_v4_and_v6() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = TcpListener::bind(addr) else {
                continue;
            };
            let port = listener.local_addr().unwrap().port();
            let found = lookup(&BTreeSet::from([port]));
            let me = found[&port].iter().find(|h| h.id == Some(ProcId::myself())).expect("this process holds it");
            assert_eq!(me.uid, users::current_uid());
            assert!(me.command.contains("xtask"), "{}", me.command);
            drop(listener);
            // A child another test forks may hold a copy until its exec closes it.
            assert!(
                process::wait_until(std::time::Duration::from_secs(2), || lookup(&BTreeSet::from([port])).is_empty())
            );
        }
    }
}
