//! A service's process group, and stopping it: TERM, a grace period, then
//! KILL, to the whole group and to what left it with its mark.
//!
//! Signalling the group reaches what the service forked (`next dev`'s server,
//! `uvicorn --reload`'s worker, a shell's background job): killing only the
//! direct child would leave them holding the port. What left the group
//! (`setsid`, a daemon's double fork) still carries the group's mark in its
//! environment, and is signalled with it.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};

use super::process::{Hurry, ProcId, Stat, all_pids, ancestors, group_members, mark_of, pidfd, wait_until};

/// A group this runner started, named by its leader: the group's id is the
/// leader's pid. While the leader lives, the id cannot be reused. After it
/// exits, what it forked may run on in the group, but a stranger may also get
/// the id (a daemon's first fork makes a group and exits): the group's mark,
/// in the environment of all that the service forked, tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub leader: ProcId,
    /// `XTASK_GROUP`'s value in its processes; 0 in records from before marks.
    #[serde(default)]
    pub mark: u64,
}

impl Group {
    pub fn pgid(self) -> i32 {
        self.leader.pid
    }

    /// Whether process `id`, in process group `pgid`, is one of this group's.
    pub fn has(self, id: ProcId, pgid: i32) -> bool {
        self.may_have(id, pgid) && (self.leader.is_alive() || self.marks(id.pid))
    }

    /// Whether process `id` could be one of this group's: it is in a group
    /// with this id, and not older than the leader. Without the mark, after
    /// the leader exited, it may as well be a stranger's.
    pub fn may_have(self, id: ProcId, pgid: i32) -> bool {
        pgid == self.pgid() && id.start >= self.leader.start
    }

    /// Members still running, or `None` if the id now belongs to someone
    /// else, or the group holds this runner or one of its ancestors (never
    /// signalled).
    pub fn members(self) -> Option<Vec<ProcId>> {
        let members = group_members(self.pgid());
        let leader_alive = self.leader.is_alive(); // after listing: the id was not reused meanwhile
        let impostor = members.iter().any(|m| m.start < self.leader.start)
            || members.iter().any(|m| m.pid == self.leader.pid && *m != self.leader)
            || (!leader_alive && !members.is_empty() && !members.iter().any(|m| self.marks(m.pid)));
        // After the leader, one member with the mark is enough: Linux frees
        // a group id only with its last member, so while that one runs the
        // id is still ours. The others may be in the middle of an exec, or
        // have cleared their environment. A group where none shows the mark
        // is left running, rather than risk a stranger's.
        let ancestry = || {
            let ancestors = ancestors();
            members.iter().any(|m| m.pid == std::process::id() as i32 || ancestors.contains(&m.pid))
        };
        (!impostor && !ancestry()).then_some(members)
    }

    /// Whether process `pid` carries this group's mark. A record from before
    /// marks (0) tells nobody apart: once its leader has gone, no process
    /// shows that the group is still ours, and none is signalled.
    fn marks(self, pid: i32) -> bool {
        self.mark != 0 && mark_of(pid) == Some(self.mark)
    }

    /// The processes outside the group that carry its mark: what the service
    /// started in a session of its own (`setsid`, a daemon's double fork),
    /// which a signal to the group misses. Each comes with a pidfd, through
    /// which no newcomer that reuses its pid can be signalled. This reads
    /// every process's environment: only `stop` asks, never `status`.
    /// Looked at again, a moment later, while a look that finds none saw a
    /// process end before it could be read: it may have forked what that
    /// look missed, as a daemon's first child forks the second and exits.
    fn escaped(self) -> Vec<Escaped> {
        let mut ended = BTreeSet::new();
        for _ in 0..10 {
            match self.look_for_escaped(&mut ended) {
                (found, whole) if whole || !found.is_empty() => return found,
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        self.look_for_escaped(&mut ended).0
    }

    /// One look for `escaped`, and whether it is whole: whether every
    /// process that may be ours was read while it ran, or had ended before
    /// the look began (a zombie in `ended`, seen by an earlier look; a parent
    /// may reap it late).
    fn look_for_escaped(self, ended: &mut BTreeSet<ProcId>) -> (Vec<Escaped>, bool) {
        if self.mark == 0 {
            return (Vec::new(), true); // before marks, nothing told them from strangers
        }
        let (me, ancestors, uid) = (std::process::id() as i32, ancestors(), crate::system::users::current_uid());
        let may_signal = |pid: i32| uid == 0 || std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid);
        let (mut found, mut whole) = (Vec::new(), true);
        for pid in all_pids() {
            let Some(stat) = Stat::of(pid) else {
                whole = false; // ended since the list was made
                continue;
            };
            let others = stat.pgrp == self.pgid() || stat.kernel || pid == 1 || pid == me || ancestors.contains(&pid);
            if others || stat.start < self.leader.start {
                continue;
            }
            // A zombie may have forked as this look began, unless an earlier
            // look saw it ended already.
            let Some(id) = stat.id() else {
                whole &= !ended.insert(ProcId { pid, start: stat.start });
                continue;
            };
            if !may_signal(pid) {
                continue;
            }
            if !self.marks(pid) {
                whole &= id.is_alive(); // it may have ended, having forked, as it was read
                continue;
            }
            // Without a pidfd (the system refuses them) one is waited for but
            // not signalled: it then survives the stop, which says so.
            match pidfd(id) {
                Ok(None) => whole = false, // gone
                Ok(Some(fd)) => found.push((id, Some(fd))),
                Err(_) => found.push((id, None)),
            }
        }
        (found, whole)
    }

    /// While the leader lives the group is ours (its id cannot be reused);
    /// after, some member must still run.
    pub fn is_running(self) -> bool {
        self.leader.is_alive() || self.members().is_some_and(|m| !m.is_empty())
    }

    /// TERM to the whole group and to what left it, up to `grace` for them
    /// to go (cut short when `hurry` is on), then KILL. Returns what was
    /// done, for the one-line report.
    /// Gone means that nothing carries the mark: a record may then go.
    pub fn stop(self, grace: Duration, hurry: &Hurry) -> Stopped {
        let Some(pgid) = Pid::from_raw(self.pgid()) else { return Stopped::NotOurs };
        // `None`: the group is not ours (its id is someone else's now, or it
        // holds this runner), and is never signalled. What carries the mark
        // outside it is ours all the same: a daemon's first child, listed in
        // the group, may have left it and ended before its mark was read.
        let listed = self.members();
        // Also when the group is empty: a daemon's parent exits at once.
        let mut escaped = self.escaped();
        match &listed {
            None if escaped.is_empty() => return Stopped::NotOurs,
            Some(members) if members.is_empty() && escaped.is_empty() => return Stopped::AlreadyGone,
            _ => {}
        }
        // Waited for and signalled from here on: the group while one of the
        // members listed now, or one that shows the mark, is in it. Once the
        // leader has gone, a member without the mark no longer shows that the
        // group is ours, but it was listed while it did; while one of them is
        // in the group, its id is no one else's. Without them, the id may be
        // anyone's by now: asked again before each signal, as a grace is long
        // enough for a stranger's group to get it.
        let ours_left = || {
            let Some(listed) = &listed else { return false };
            group_members(self.pgid()).iter().any(|m| listed.contains(m) || self.marks(m.pid))
        };
        let left = |escaped: &[Escaped]| escaped.iter().any(|(id, _)| id.is_alive()) || ours_left();
        let send = |signal, escaped: &[Escaped]| {
            // A stopped process (SIGSTOP, Ctrl-Z) takes a TERM only once it continues.
            let signals = if signal == Signal::TERM { &[Signal::TERM, Signal::CONT][..] } else { &[signal] };
            if ours_left() {
                for signal in signals {
                    let _ = rustix::process::kill_process_group(pgid, *signal);
                }
            }
            for fd in escaped.iter().filter_map(|(_, fd)| fd.as_ref()) {
                for signal in signals {
                    let _ = rustix::process::pidfd_send_signal(fd, *signal);
                }
            }
        };
        let phases =
            [(Signal::TERM, grace, Stopped::Terminated), (Signal::KILL, Duration::from_secs(5), Stopped::Killed)];
        for (signal, limit, done) in phases {
            let deadline = Instant::now() + limit;
            let hurried = || signal == Signal::TERM && hurry.is_on();
            send(signal, &escaped);
            loop {
                wait_until(deadline.saturating_duration_since(Instant::now()), || !left(&escaped) || hurried());
                if left(&escaped) {
                    break;
                }
                // What left the group after it was looked for (a daemon's
                // second fork as the stop began, a child it forks as it
                // stops) shows only to a new look: gone is when a look taken
                // after all that was found had gone finds nothing.
                escaped = self.escaped();
                if escaped.is_empty() && !ours_left() {
                    return done;
                }
                send(signal, &escaped);
            }
        }
        Stopped::Survived
    }
}

/// A process that left its group with the mark, and a pidfd to signal it by.
type Escaped = (ProcId, Option<OwnedFd>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Terminated,
    Killed,
    AlreadyGone,
    NotOurs,
    /// Still running after KILL: not ours to signal after all (another
    /// user's, if we are not root), or stuck in the kernel.
    Survived,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use std::os::unix::process::CommandExt;

    use super::*;
    use crate::system::process::{self, kill};
    use crate::system::spawn::{Spec, spawn};

    #[test]
    fn stopping_a_group_reaches_its_grandchildren() {
        let argv = ["sh", "-c", "sleep 300 & sleep 300 & wait"].map(String::from);
        let spec = Spec { argv: &argv, cwd: Path::new("."), env: &[], account: None };
        let (handle, group) = spawn(&spec, std::fs::File::create("/dev/null").unwrap(), |_| Ok(())).unwrap();
        assert!(wait_until(Duration::from_secs(5), || group.members().is_some_and(|m| m.len() == 3)));
        assert_eq!(group.stop(Duration::from_secs(5), &Hurry::default()), Stopped::Terminated);
        handle.wait().unwrap();
        assert_eq!(group.members(), Some(vec![]));
    }

    #[test]
    fn stopping_a_group_reaches_what_left_it_with_its_mark_only() {
        // A daemon's way: a child in a session of its own, and the parent exits.
        let script =
            "setsid sleep 300 >/dev/null 2>&1 & echo $!; env -u XTASK_GROUP setsid sleep 300 >/dev/null 2>&1 & echo $!";
        let argv = ["sh", "-c", script].map(String::from);
        let spec = Spec { argv: &argv, cwd: Path::new("."), env: &[], account: None };
        let (reader, writer) = std::io::pipe().unwrap();
        let (handle, group) = spawn(&spec, writer, |_| Ok(())).unwrap();
        handle.wait().unwrap();
        let pids = std::io::read_to_string(reader).unwrap();
        let [marked, unmarked] = [0, 1].map(|i| ProcId::of(pids.lines().nth(i).unwrap().parse().unwrap()).unwrap());
        // Until `sleep` runs, `env` still shows the mark it drops.
        assert!(wait_until(Duration::from_secs(5), || process::argv(unmarked.pid) == ["sleep", "300"]));
        assert_eq!(group.members(), Some(vec![]));
        assert_eq!(group.stop(Duration::from_secs(5), &Hurry::default()), Stopped::Terminated);
        assert!(!marked.is_alive(), "what left the group with its mark runs on");
        assert!(unmarked.is_alive(), "a process without the mark was stopped");
        kill(unmarked, Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn a_group_whose_id_was_reused_is_not_ours() {
        let argv = ["sleep", "300"].map(String::from);
        let spec = Spec { argv: &argv, cwd: Path::new("."), env: &[], account: None };
        let (handle, real) = spawn(&spec, std::fs::File::create("/dev/null").unwrap(), |_| Ok(())).unwrap();
        // A record of an older process that had the same pid.
        let stale = Group { leader: ProcId { start: real.leader.start + 1, ..real.leader }, ..real };
        assert_eq!(stale.members(), None);
        assert_eq!(stale.stop(Duration::from_millis(10), &Hurry::default()), Stopped::NotOurs);
        assert!(real.leader.is_alive(), "a stale record stopped a newer process");
        assert_eq!(real.stop(Duration::from_secs(5), &Hurry::default()), Stopped::Terminated);
        handle.wait().unwrap();
    }

    #[test]
    fn after_its_leader_exits_a_group_is_ours_only_with_its_mark() {
        // What a service forked runs on after its leader exits: still ours.
        let argv = ["sh", "-c", "sleep 300 & exit"].map(String::from);
        let spec = Spec { argv: &argv, cwd: Path::new("."), env: &[], account: None };
        let (handle, ours) = spawn(&spec, std::fs::File::create("/dev/null").unwrap(), |_| Ok(())).unwrap();
        handle.wait().unwrap();
        assert!(wait_until(Duration::from_secs(5), || group_members(ours.pgid()).len() == 1));
        assert_eq!(ours.members().map(|m| m.len()), Some(1));
        // A record from before marks cannot tell it from a stranger's.
        assert_eq!(Group { mark: 0, ..ours }.members(), None);
        assert!(!Group { mark: 0, ..ours }.has(group_members(ours.pgid())[0], ours.pgid()));
        assert_eq!(ours.stop(Duration::from_secs(5), &Hurry::default()), Stopped::Terminated);
        assert_eq!(ours.members(), Some(vec![]));

        // A stranger whose group got the id of a leader of ours that exited
        // (here: an older start time in the record), the way a daemon's first
        // fork makes a group and exits. Not ours, whatever its mark (a record
        // from before marks, 0, cannot tell it from ours).
        let mut stranger = std::process::Command::new("sh");
        stranger.args(["-c", "sleep 300 & read _"]).process_group(0).stdin(std::process::Stdio::piped());
        let mut stranger = stranger.spawn().unwrap();
        let leader = ProcId::of(stranger.id() as i32).unwrap();
        drop(stranger.stdin.take()); // the leader exits; its sleep stays in the group
        stranger.wait().unwrap();
        let pgid = leader.pid;
        assert!(wait_until(Duration::from_secs(5), || group_members(pgid).len() == 1));
        let sleeper = group_members(pgid)[0];
        for mark in [ours.mark, 12345] {
            let stale = Group { leader: ProcId { pid: pgid, start: leader.start - 1 }, mark };
            assert_eq!(stale.members(), None, "mark {mark}");
            assert!(!stale.has(sleeper, pgid), "mark {mark}");
            assert_eq!(stale.stop(Duration::from_millis(10), &Hurry::default()), Stopped::NotOurs);
        }
        assert!(sleeper.is_alive(), "a stale record stopped a stranger");
        let _ = rustix::process::kill_process_group(Pid::from_raw(pgid).unwrap(), Signal::KILL);
    }

    #[test]
    fn what_carries_the_mark_is_stopped_when_the_group_is_no_longer_ours() {
        // A stranger's group, whose leader has exited; its sleep runs on.
        let mut stranger = std::process::Command::new("sh");
        stranger.args(["-c", "sleep 300 & read _"]).process_group(0).stdin(std::process::Stdio::piped());
        let mut stranger = stranger.spawn().unwrap();
        let leader = ProcId::of(stranger.id() as i32).unwrap();
        drop(stranger.stdin.take());
        stranger.wait().unwrap();
        assert!(wait_until(Duration::from_secs(5), || group_members(leader.pid).len() == 1));
        let sleeper = group_members(leader.pid)[0];
        // A daemon of ours, in a session of its own.
        let argv = ["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"].map(String::from);
        let spec = Spec { argv: &argv, cwd: Path::new("."), env: &[], account: None };
        let (reader, writer) = std::io::pipe().unwrap();
        let (handle, ours) = spawn(&spec, writer, |_| Ok(())).unwrap();
        handle.wait().unwrap();
        let daemon = ProcId::of(std::io::read_to_string(reader).unwrap().trim().parse().unwrap()).unwrap();
        assert!(wait_until(Duration::from_secs(5), || process::argv(daemon.pid) == ["sleep", "300"]));
        // Its record, as if its group's id had since gone to the stranger.
        let record = Group { leader: ProcId { pid: leader.pid, start: leader.start - 1 }, mark: ours.mark };
        assert_eq!(record.members(), None);
        assert_eq!(record.stop(Duration::from_secs(5), &Hurry::default()), Stopped::Terminated);
        assert!(!daemon.is_alive(), "what carries the mark runs on");
        assert!(sleeper.is_alive(), "the stranger's group was signalled");
        let _ = rustix::process::kill_process_group(Pid::from_raw(leader.pid).unwrap(), Signal::KILL);
    }

    #[test]
    fn a_group_holding_this_runner_is_never_ours() {
        let me = ProcId::myself();
        let pgid = rustix::process::getpgrp().as_raw_nonzero().get();
        let leader = ProcId::of(pgid).unwrap_or(ProcId { pid: pgid, start: 0 });
        assert_eq!(Group { leader, mark: 0 }.members(), None, "the group of {me:?}");
    }

    /// What only root may do: choose the next pid.
    mod needs_root {
        use super::*;

        /// Processes a failing test must not leave behind: KILLed when
        /// dropped, if they still run (through pidfds: no newcomer is hit).
        struct Reaped(Vec<ProcId>);

        impl Drop for Reaped {
            fn drop(&mut self) {
                for id in &self.0 {
                    let _ = kill(*id, Duration::ZERO);
                }
            }
        }

        #[test]
        #[ignore = "needs root: `cargo xtask test` runs it as root"]
        fn a_group_id_reused_during_the_grace_is_not_signalled() {
            assert!(crate::system::users::current_uid() == 0, "this test needs root, to choose the next pid");
            // Another process may take the id for good (a test beside this one):
            // the whole scene again then.
            assert!((0..5).any(|_| reused_during_the_grace()), "the stranger never got the group's id");
        }

        /// One try of the test above: false when another process took the
        /// group's id before the stranger could.
        fn reused_during_the_grace() -> bool {
            const NEXT_PID: &str = "/proc/sys/kernel/ns_last_pid";
            // The leader ends at TERM; what left the group with the mark ignores
            // it, so the stop waits out its grace.
            let script = "setsid sh -c \"trap '' TERM; exec sleep 300\" >/dev/null 2>&1 & echo $!; exec sleep 300";
            let argv = ["sh", "-c", script].map(String::from);
            let spec = Spec { argv: &argv, cwd: Path::new("."), env: &[], account: None };
            let (reader, writer) = std::io::pipe().unwrap();
            let (handle, group) = spawn(&spec, writer, |_| Ok(())).unwrap();
            let mut reaped = Reaped(vec![group.leader]);
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(reader), &mut line).unwrap();
            let escaped = ProcId::of(line.trim().parse().unwrap()).unwrap();
            reaped.0.push(escaped);
            assert!(wait_until(Duration::from_secs(5), || process::argv(escaped.pid) == ["sleep", "300"]));
            let stopping = std::thread::spawn(move || group.stop(Duration::from_secs(3), &Hurry::default()));
            handle.wait().unwrap(); // the leader, reaped: its pid, the group's id, is free
            // Start times count clock ticks (10 ms): a newcomer in the leader's
            // tick would be the leader to anyone. Only a chosen pid comes so soon.
            std::thread::sleep(Duration::from_millis(50));
            // While the stop waits, a stranger leading a group of its own gets the
            // id (other tests may take the pid first: tried again).
            let mut stranger = None;
            for _ in 0..50 {
                std::fs::write(NEXT_PID, (group.pgid() - 1).to_string()).unwrap();
                let mut sleep = std::process::Command::new("sleep");
                let mut child = sleep.arg("300").env_remove("XTASK_GROUP").process_group(0).spawn().unwrap();
                reaped.0.extend(ProcId::of(child.id() as i32));
                if child.id() as i32 == group.pgid() {
                    stranger = Some(child);
                    break;
                }
                child.kill().unwrap();
                child.wait().unwrap();
                if Path::new(&format!("/proc/{}", group.pgid())).exists() {
                    break; // taken, and kept
                }
            }
            let Some(mut stranger) = stranger else {
                stopping.join().unwrap();
                return false;
            };
            assert_eq!(stopping.join().unwrap(), Stopped::Killed);
            assert!(!escaped.is_alive(), "what left the group with its mark runs on");
            assert_eq!(stranger.try_wait().unwrap(), None, "the stranger that got the group's id was signalled");
            stranger.kill().unwrap();
            stranger.wait().unwrap();
            true
        }
    }
}
