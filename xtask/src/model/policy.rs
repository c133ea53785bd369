//! The policy table (ARCHITECTURE.md, "Conflicts"): what may be done about a
//! process that holds a port a service needs, by what that process is to
//! this checkout and how the command was asked to resolve conflicts.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// How a busy preferred port is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Ask on the terminal before killing.
    Interactive,
    /// Kill a same-user holder without asking; move when that fails.
    Force,
    /// Never kill; always move.
    NoKill,
}

/// What a holder is to this runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// A service of this checkout: the one that needs the port (an earlier
    /// instance), or another.
    Ours(String),
    /// A service of another checkout, from the registry.
    OtherCheckout(PathBuf),
    /// The runner serving this checkout's dashboard.
    Dashboard,
    /// The user's proxy of the named URLs: every checkout's.
    Proxy,
    /// Started by a runner, for a service no record names: another
    /// checkout's, while the registry has lost it, or one of this checkout
    /// whose record is gone.
    Unrecorded,
    SameUser,
    OtherUser(String),
    Init,
    Ancestor,
    /// In the group of a service (of this or another checkout) whose first
    /// process exited, without the group's mark: its rest, or a stranger.
    Unsure,
    Unknown,
    /// A container no checkout started, which publishes the port: its name
    /// and image. Whose it is the engine does not say (its daemon runs
    /// every container as root): stopped only when the user says yes.
    Container {
        name: String,
        image: String,
    },
    /// The container engine's own process holding a port a container
    /// publishes (`docker-proxy`, `dockerd`): never signalled.
    Engine,
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

/// The policy table, for one holder of a port a
/// service needs. `siblings`, the checkout's other services, keep their
/// ports; an instance of the service itself, or of one `ports.toml` no
/// longer names (renamed, removed), is stopped.
pub fn decide(class: &Class, siblings: &BTreeSet<&str>, mode: Mode) -> Action {
    match (class, mode) {
        (Class::Ours(s), _) if siblings.contains(s.as_str()) => {
            Action::Move(format!("it is this checkout's {s}, which keeps its port"))
        }
        (Class::Ours(_), _) => Action::StopOurs,
        (Class::OtherCheckout(path), _) => Action::Move(format!("it is a service of the checkout {}", path.display())),
        (Class::Dashboard, _) => Action::Move("it is this checkout's dashboard".into()),
        (Class::Proxy, _) => Action::Move("it is the proxy of the named URLs, which every checkout uses".into()),
        (Class::Unrecorded, _) => Action::Move(
            "it carries the mark of a service cargo xtask started (XTASK_GROUP), which no record names: \
             another checkout's, or a leftover whose record is gone (if so, kill it yourself)"
                .into(),
        ),
        (Class::Init, _) => Action::Move("PID 1 is never killed".into()),
        (Class::Ancestor, _) => Action::Move("it is an ancestor of this runner".into()),
        (Class::OtherUser(user), _) => Action::Move(format!("it belongs to user {user}")),
        (Class::Unsure, _) => Action::Move("it may be what is left of a service, and may not".into()),
        (Class::Unknown, _) => Action::Move("a process whose pid cannot be seen is never killed".into()),
        (Class::Engine, _) => {
            Action::Move("it is the container engine's, for a container it could not name; never signalled".into())
        }
        (Class::Container { .. } | Class::SameUser, Mode::Interactive) => Action::Ask,
        (Class::Container { name, .. }, Mode::Force) => {
            Action::Move(format!("a container is stopped only when you say yes (`docker stop {name}` stops it)"))
        }
        (Class::Container { .. }, Mode::NoKill) => Action::Move("--no-kill".into()),
        (Class::SameUser, Mode::Force) => Action::Kill,
        (Class::SameUser, Mode::NoKill) => Action::Move("--no-kill".into()),
    }
}

/// One decision for all holders of a port: the most careful of theirs.
pub fn decide_all(classes: &[Class], siblings: &BTreeSet<&str>, mode: Mode) -> Action {
    let actions: Vec<Action> = classes.iter().map(|c| decide(c, siblings, mode)).collect();
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

    #[test]
    fn the_policy_table() {
        use Action::*;
        use Mode::*;
        let other = Class::OtherCheckout("/src/wt2".into());
        let rows: &[(Class, [Action; 3])] = &[
            (Class::Ours("api".into()), [StopOurs, StopOurs, StopOurs]),
            (
                Class::Ours("web".into()),
                [0, 1, 2].map(|_| Move("it is this checkout's web, which keeps its port".into())),
            ),
            (Class::SameUser, [Ask, Kill, Move("--no-kill".into())]),
            (other.clone(), [0, 1, 2].map(|_| Move("it is a service of the checkout /src/wt2".into()))),
            (Class::OtherUser("bob".into()), [0, 1, 2].map(|_| Move("it belongs to user bob".into()))),
            (Class::Init, [0, 1, 2].map(|_| Move("PID 1 is never killed".into()))),
            (Class::Ancestor, [0, 1, 2].map(|_| Move("it is an ancestor of this runner".into()))),
            (Class::Unsure, [0, 1, 2].map(|_| Move("it may be what is left of a service, and may not".into()))),
            (Class::Unknown, [0, 1, 2].map(|_| Move("a process whose pid cannot be seen is never killed".into()))),
            (Class::Dashboard, [0, 1, 2].map(|_| Move("it is this checkout's dashboard".into()))),
            (
                Class::Proxy,
                [0, 1, 2].map(|_| Move("it is the proxy of the named URLs, which every checkout uses".into())),
            ),
            (
                Class::Container { name: "pg".into(), image: "postgres:16".into() },
                [
                    Ask,
                    Move("a container is stopped only when you say yes (`docker stop pg` stops it)".into()),
                    Move("--no-kill".into()),
                ],
            ),
            (
                Class::Engine,
                [0, 1, 2].map(|_| {
                    Move("it is the container engine's, for a container it could not name; never signalled".into())
                }),
            ),
            (
                Class::Unrecorded,
                [0, 1, 2].map(|_| {
                    Move(
                        "it carries the mark of a service cargo xtask started (XTASK_GROUP), which no record names: \
             another checkout's, or a leftover whose record is gone (if so, kill it yourself)"
                            .into(),
                    )
                }),
            ),
        ];
        for (class, want) in rows {
            for (mode, want) in [Interactive, Force, NoKill].into_iter().zip(want) {
                assert_eq!(&decide(class, &BTreeSet::from(["web"]), mode), want, "{class:?} in {mode:?}");
            }
        }
        // Several holders: the most careful decision wins.
        assert_eq!(
            decide_all(&[Class::SameUser, Class::Init], &BTreeSet::new(), Force),
            Move("PID 1 is never killed".into())
        );
        assert_eq!(decide_all(&[Class::SameUser, Class::SameUser], &BTreeSet::new(), Force), Kill);
        assert_eq!(decide_all(&[Class::Ours("a".into()), Class::SameUser], &BTreeSet::new(), Interactive), Ask);
    }
}
