//! Who holds a port, and what the runner may do about it (DESIGN.md section 6).
//!
//! The kernel's socket tables say which listening socket is on a port and
//! which user opened it; the processes' open files say who holds that socket.
//! `decide` is the pure policy table; `lookup` is the IO.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use procfs::process::FDTarget;

use crate::cli::Mode;
use crate::paths::Project;
use crate::pids;
use crate::process::{self, Group, ProcId};
use crate::registry::Registry;
use crate::users;

/// A process holding a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// `None` when the socket's process cannot be seen (another user's, without root).
    pub id: Option<ProcId>,
    pub pgid: i32,
    pub uid: u32,
    pub command: String,
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
    // Listening sockets on those ports: inode -> (port, uid).
    let mut sockets: BTreeMap<u64, (u16, u32)> = BTreeMap::new();
    let tables = [procfs::net::tcp(), procfs::net::tcp6()];
    for entry in tables.into_iter().flat_map(Result::unwrap_or_default) {
        let port = entry.local_address.port();
        if entry.state == procfs::net::TcpState::Listen && ports.contains(&port) {
            sockets.insert(entry.inode, (port, entry.uid));
        }
    }
    let mut found: BTreeMap<u16, Vec<Holder>> = BTreeMap::new();
    if sockets.is_empty() {
        return found;
    }
    let mut seen_inodes = BTreeSet::new();
    for process in procfs::process::all_processes().into_iter().flatten().flatten() {
        let Ok(fds) = process.fd() else { continue }; // another user's, or gone
        let inodes: BTreeSet<u64> = fds
            .flatten()
            .filter_map(|fd| match fd.target {
                FDTarget::Socket(inode) if sockets.contains_key(&inode) => Some(inode),
                _ => None,
            })
            .collect();
        if inodes.is_empty() {
            continue;
        }
        let Ok(stat) = process.stat() else { continue };
        let command = process.cmdline().ok().filter(|c| !c.is_empty()).map_or(stat.comm.clone(), |c| c.join(" "));
        let ports: BTreeSet<u16> = inodes.iter().map(|i| sockets[i].0).collect();
        for port in ports {
            found.entry(port).or_default().push(Holder {
                id: Some(ProcId { pid: stat.pid, start: stat.starttime }),
                pgid: stat.pgrp,
                uid: process.uid().unwrap_or(u32::MAX),
                command: command.clone(),
            });
        }
        seen_inodes.extend(inodes);
    }
    // Sockets whose process we could not see still say whose they are.
    for (inode, (port, uid)) in sockets {
        if !seen_inodes.contains(&inode) {
            found.entry(port).or_default().push(Holder { id: None, pgid: 0, uid, command: String::new() });
        }
    }
    found
}

/// What a holder is to this runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// This checkout's own earlier instance of a service.
    Ours(String),
    /// A service of another checkout, from the registry.
    OtherCheckout(PathBuf),
    SameUser,
    OtherUser(String),
    Init,
    Ancestor,
    Unknown,
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
}

impl Known {
    /// Reads what is known now: our records, the other checkouts' records, our ancestry.
    pub fn gather(project: &Project, registry: &Registry) -> Known {
        let ours = pids::load_all(&project.root).into_iter().map(|r| (r.service, r.group)).collect();
        Known {
            uid: users::current_uid(),
            ancestors: process::ancestors(),
            ours,
            others: registry.others_groups(&project.root),
        }
    }

    pub fn classify(&self, holder: &Holder) -> Class {
        let Some(id) = holder.id else {
            return Class::Unknown;
        };
        let in_group = |group: &Group| group.pgid() == holder.pgid && id.start >= group.leader.start;
        if let Some((service, _)) = self.ours.iter().find(|(_, g)| in_group(g)) {
            Class::Ours(service.clone())
        } else if let Some((path, _)) = self.others.iter().find(|(_, g)| in_group(g)) {
            Class::OtherCheckout(path.clone())
        } else if id.pid == 1 {
            Class::Init
        } else if self.ancestors.contains(&id.pid) || id.pid == std::process::id() as i32 {
            Class::Ancestor
        } else if holder.uid != self.uid {
            Class::OtherUser(users::name_of(holder.uid))
        } else {
            Class::SameUser
        }
    }
}

/// The decision for a busy preferred port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Our own earlier instance: stop it and take the port back, no question.
    StopOurs,
    /// Ask on the terminal whether to kill it.
    Ask,
    Kill,
    /// Leave it alone and take the next free port, for this reason.
    Move(String),
}

/// The policy table of DESIGN.md section 6, for one holder.
pub fn decide(class: &Class, mode: Mode) -> Action {
    match (class, mode) {
        (Class::Ours(_), _) => Action::StopOurs,
        (Class::OtherCheckout(path), _) => Action::Move(format!("it is a service of the checkout {}", path.display())),
        (Class::Init, _) => Action::Move("PID 1 is never killed".into()),
        (Class::Ancestor, _) => Action::Move("it is an ancestor of this runner".into()),
        (Class::OtherUser(user), _) => Action::Move(format!("it belongs to user {user}")),
        (Class::Unknown, _) => Action::Move("its owner cannot be seen".into()),
        (Class::SameUser, Mode::Interactive) => Action::Ask,
        (Class::SameUser, Mode::Force) => Action::Kill,
        (Class::SameUser, Mode::NoKill) => Action::Move("--no-kill".into()),
    }
}

/// One decision for all holders of a port: the most careful of theirs.
pub fn decide_all(classes: &[Class], mode: Mode) -> Action {
    let actions: Vec<Action> = classes.iter().map(|c| decide(c, mode)).collect();
    let rank = |a: &Action| match a {
        Action::Move(_) => 3,
        Action::Ask => 2,
        Action::Kill => 1,
        Action::StopOurs => 0,
    };
    actions.into_iter().max_by_key(rank).unwrap_or(Action::Move("nobody can be seen holding it".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn the_policy_table() {
        use Action::*;
        use Mode::*;
        let other = Class::OtherCheckout("/src/wt2".into());
        let rows: &[(Class, [Action; 3])] = &[
            (Class::Ours("api".into()), [StopOurs, StopOurs, StopOurs]),
            (Class::SameUser, [Ask, Kill, Move("--no-kill".into())]),
            (other.clone(), [0, 1, 2].map(|_| Move("it is a service of the checkout /src/wt2".into()))),
            (Class::OtherUser("bob".into()), [0, 1, 2].map(|_| Move("it belongs to user bob".into()))),
            (Class::Init, [0, 1, 2].map(|_| Move("PID 1 is never killed".into()))),
            (Class::Ancestor, [0, 1, 2].map(|_| Move("it is an ancestor of this runner".into()))),
            (Class::Unknown, [0, 1, 2].map(|_| Move("its owner cannot be seen".into()))),
        ];
        for (class, want) in rows {
            for (mode, want) in [Interactive, Force, NoKill].into_iter().zip(want) {
                assert_eq!(&decide(class, mode), want, "{class:?} in {mode:?}");
            }
        }
        // Several holders: the most careful decision wins.
        assert_eq!(decide_all(&[Class::SameUser, Class::Init], Force), Move("PID 1 is never killed".into()));
        assert_eq!(decide_all(&[Class::SameUser, Class::SameUser], Force), Kill);
        assert_eq!(decide_all(&[Class::Ours("a".into()), Class::SameUser], Interactive), Ask);
    }

    #[test]
    fn classify_by_group_pid_and_user() {
        let me = ProcId::myself();
        let ours = Group { leader: ProcId { pid: 500, start: 10 } };
        let known = Known {
            uid: 1000,
            ancestors: BTreeSet::from([1, 77]),
            ours: vec![("api".into(), ours)],
            others: vec![("/wt2".into(), Group { leader: ProcId { pid: 600, start: 10 } })],
        };
        let holder = |pid, start, pgid, uid| Holder { id: Some(ProcId { pid, start }), pgid, uid, command: "x".into() };
        assert_eq!(known.classify(&holder(501, 12, 500, 1000)), Class::Ours("api".into()));
        // In a group with our group's id but older than our leader: not ours.
        assert_eq!(known.classify(&holder(501, 5, 500, 1000)), Class::SameUser);
        assert_eq!(known.classify(&holder(601, 12, 600, 1000)), Class::OtherCheckout("/wt2".into()));
        assert_eq!(known.classify(&holder(1, 1, 1, 0)), Class::Init);
        assert_eq!(known.classify(&holder(77, 3, 77, 1000)), Class::Ancestor);
        assert_eq!(known.classify(&holder(me.pid, me.start, 9, 1000)), Class::Ancestor);
        assert!(matches!(known.classify(&holder(900, 3, 900, 0)), Class::OtherUser(_)));
        assert_eq!(known.classify(&holder(900, 3, 900, 1000)), Class::SameUser);
        assert_eq!(known.classify(&Holder { id: None, pgid: 0, uid: 0, command: String::new() }), Class::Unknown);
    }

    #[test]
    fn lookup_finds_this_process_on_v4_and_v6() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = TcpListener::bind(addr) else {
                continue;
            };
            let port = listener.local_addr().unwrap().port();
            let found = lookup(&BTreeSet::from([port]));
            let holders = &found[&port];
            assert_eq!(holders.len(), 1, "{holders:?}");
            assert_eq!(holders[0].id, Some(ProcId::myself()));
            assert_eq!(holders[0].uid, users::current_uid());
            assert!(holders[0].command.contains("xtask"), "{}", holders[0].command);
            drop(listener);
            assert!(lookup(&BTreeSet::from([port])).is_empty());
        }
    }
}
