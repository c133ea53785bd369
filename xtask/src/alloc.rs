//! Port allocation (DESIGN.md section 5): a pure function over a probe that
//! says whether a port is usable, and the real probe, which binds every
//! loopback and wildcard address so that a busy port is never taken for free.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use crate::config::Config;

/// The lowest port handed out: below it binding needs privileges.
pub const MIN_PORT: u16 = 1024;

/// Ports browsers refuse to fetch from (the fetch standard's "bad ports");
/// a dev server there could never be opened in a browser.
const BAD_PORTS: &[u16] = &[
    1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104, 109, 110,
    111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532,
    540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061,
    6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080,
];

pub fn is_browser_blocked(port: u16) -> bool {
    BAD_PORTS.binary_search(&port).is_ok()
}

/// Why no port could be found for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    pub service: String,
    /// The ports looked at, in order; the busy ones among them are `busy`.
    pub tried: (u16, u16),
    pub busy: Vec<u16>,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (lo, hi) = self.tried;
        write!(f, "no free port for {}: tried {lo}-{hi}", self.service)
    }
}

/// Gives every service a port.
///
/// Services in `fixed` keep theirs unchecked: they run on it (and must not
/// move on paper, whatever else claims it), or it was pinned by hand. Every
/// other service starts from its current port (from `.ports.json`, else its
/// preferred one) and walks up `attempts` successive ports inside the
/// configured range, skipping ports below 1024, browser-blocked ports, ports
/// already given to another service here, and `reserved` ports (other
/// checkouts'). `is_free(port)` is the probe. Services are served in
/// dependency order, so the result does not depend on map order.
pub fn allocate(
    config: &Config,
    current: &BTreeMap<String, u16>,
    fixed: &BTreeMap<String, u16>,
    reserved: &BTreeSet<u16>,
    mut is_free: impl FnMut(u16) -> bool,
) -> Result<BTreeMap<String, u16>, Exhausted> {
    let mut given: BTreeMap<String, u16> =
        fixed.iter().filter(|(name, _)| config.services.contains_key(*name)).map(|(n, p)| (n.clone(), *p)).collect();
    let (lo, hi) = config.range;
    for name in config.order.iter().filter(|name| !fixed.contains_key(*name)) {
        let walk = walk(current.get(name).copied().unwrap_or(config.services[name].port), config.attempts, (lo, hi));
        let (start, end) = (*walk.start(), *walk.end());
        let taken: BTreeSet<u16> = given.values().copied().collect();
        let mut busy = Vec::new();
        let found = walk.into_iter().find(|&port| {
            let candidate = !is_browser_blocked(port) && !taken.contains(&port) && !reserved.contains(&port);
            candidate
                && (is_free(port) || {
                    busy.push(port);
                    false
                })
        });
        match found {
            Some(port) => given.insert(name.clone(), port),
            None => {
                return Err(Exhausted { service: name.clone(), tried: (start, end), busy });
            }
        };
    }
    Ok(given)
}

/// The ports tried from `start`: `attempts` in all, inside `range`, never below 1024.
pub fn walk(start: u16, attempts: u16, (lo, hi): (u16, u16)) -> std::ops::RangeInclusive<u16> {
    let start = start.max(lo).max(MIN_PORT);
    start..=start.saturating_add(attempts.max(1) - 1).min(hi)
}

/// The real probe: a port is free only if it can be bound on 127.0.0.1,
/// 0.0.0.0, ::1 and ::. A listener on any one of them makes it busy (binding
/// the wildcard alone can succeed beside a listener on a specific address).
/// Addresses this machine lacks (no IPv6) are skipped.
pub fn is_free(port: u16) -> bool {
    let addrs: [SocketAddr; 4] = [
        (Ipv4Addr::LOCALHOST, port).into(),
        (Ipv4Addr::UNSPECIFIED, port).into(),
        (Ipv6Addr::LOCALHOST, port).into(),
        (Ipv6Addr::UNSPECIFIED, port).into(),
    ];
    const EAFNOSUPPORT: i32 = 97; // IPv6 compiled out of the kernel
    addrs.iter().all(|addr| match TcpListener::bind(addr) {
        Ok(_) => true,
        Err(e) => addr.is_ipv6() && (e.kind() == ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(EAFNOSUPPORT)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn config(attempts: u16, services: &[(&str, u16, &[&str])]) -> Config {
        let mut text = format!("[ports]\nattempts = {attempts}\n");
        for (name, port, deps) in services {
            text += &format!("[services.{name}]\nport = {port}\ncommand = 'x'\ndepends_on = {deps:?}\n");
        }
        config::parse(&text).unwrap()
    }

    fn map(pairs: &[(&str, u16)]) -> BTreeMap<String, u16> {
        pairs.iter().map(|(n, p)| (n.to_string(), *p)).collect()
    }

    #[test]
    fn preferred_ports_when_free() {
        let c = config(100, &[("a", 8000, &[]), ("b", 3000, &[])]);
        let got = allocate(&c, &BTreeMap::new(), &BTreeMap::new(), &BTreeSet::new(), |_| true).unwrap();
        assert_eq!(got, map(&[("a", 8000), ("b", 3000)]));
    }

    #[test]
    fn busy_ports_move_to_the_next_free_one() {
        let c = config(100, &[("a", 8000, &[])]);
        let got = allocate(&c, &BTreeMap::new(), &BTreeMap::new(), &BTreeSet::new(), |p| p > 8002).unwrap();
        assert_eq!(got["a"], 8003);
    }

    #[test]
    fn current_ports_are_honoured() {
        let c = config(100, &[("a", 8000, &[])]);
        let got = allocate(&c, &map(&[("a", 9100)]), &BTreeMap::new(), &BTreeSet::new(), |_| true).unwrap();
        assert_eq!(got["a"], 9100);
    }

    #[test]
    fn never_gives_one_port_twice() {
        // b wants the port a already has (a hand edit of .ports.json).
        let c = config(100, &[("a", 8000, &[]), ("b", 8001, &["a"])]);
        let got = allocate(&c, &map(&[("b", 8000)]), &BTreeMap::new(), &BTreeSet::new(), |_| true).unwrap();
        assert_eq!(got, map(&[("a", 8000), ("b", 8001)]));
    }

    #[test]
    fn skips_reserved_blocked_and_privileged_ports() {
        let c = config(100, &[("x11", 6000, &[]), ("irc", 6665, &[]), ("low", 80, &[]), ("r", 7000, &[])]);
        let reserved = BTreeSet::from([7000, 7001]);
        let got = allocate(&c, &BTreeMap::new(), &BTreeMap::new(), &reserved, |_| true).unwrap();
        assert_eq!(got, map(&[("x11", 6001), ("irc", 6670), ("low", 1024), ("r", 7002)]));
    }

    #[test]
    fn fixed_ports_are_kept_whatever_holds_them_and_given_to_no_one_else() {
        // a runs on 8000, which another checkout reserves and the probe finds busy; b is pinned;
        // c, from a's port (a hand edit), walks past both. `gone` runs but left ports.toml.
        let c = config(100, &[("a", 8000, &[]), ("b", 8001, &["a"]), ("c", 7000, &[])]);
        let fixed = map(&[("a", 8000), ("b", 8001), ("gone", 9000)]);
        let got = allocate(&c, &map(&[("c", 8000)]), &fixed, &BTreeSet::from([8000]), |p| p != 8000).unwrap();
        assert_eq!(got, map(&[("a", 8000), ("b", 8001), ("c", 8002)]));
    }

    #[test]
    fn fails_after_attempts_naming_the_service_and_range() {
        let c = config(5, &[("a", 8000, &[])]);
        let err = allocate(&c, &BTreeMap::new(), &BTreeMap::new(), &BTreeSet::new(), |_| false).unwrap_err();
        assert_eq!(
            err,
            Exhausted { service: "a".into(), tried: (8000, 8004), busy: vec![8000, 8001, 8002, 8003, 8004] }
        );
        assert_eq!(err.to_string(), "no free port for a: tried 8000-8004");
    }

    #[test]
    fn stays_inside_the_range() {
        let text = "[ports]\nrange = [2000, 2002]\n[services.a]\nport = 1500\ncommand = 'x'\n";
        let c = config::parse(text).unwrap();
        let got = allocate(&c, &BTreeMap::new(), &BTreeMap::new(), &BTreeSet::new(), |p| p == 2002).unwrap();
        assert_eq!(got["a"], 2002);
        let err = allocate(&c, &map(&[("a", 2001)]), &BTreeMap::new(), &BTreeSet::new(), |_| false).unwrap_err();
        assert_eq!(err.tried, (2001, 2002));
    }

    #[test]
    fn the_probe_sees_a_listener_on_any_one_address() {
        for addr in ["127.0.0.1:0", "0.0.0.0:0", "[::1]:0", "[::]:0"] {
            let Ok(listener) = TcpListener::bind(addr) else {
                continue;
            }; // no IPv6 here
            let port = listener.local_addr().unwrap().port();
            assert!(!is_free(port), "a listener on {addr} (port {port}) was reported free");
            drop(listener);
            assert!(is_free(port), "port {port} is still busy after closing the listener on {addr}");
        }
    }

    #[test]
    fn browser_blocked_list_is_sorted() {
        assert!(BAD_PORTS.windows(2).all(|w| w[0] < w[1]));
    }
}
