//! Port allocation (ARCHITECTURE.md, "Ports"): a pure function over a probe
//! that says whether a port is usable (the real one is
//! `system::probe::is_free`), and the kernel's port ranges it keeps out of,
//! as read from their text.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::config::{Config, MIN_PORT};

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

/// What the kernel keeps ports for: the ephemeral range, from which every
/// outgoing connection takes its source port (a server there may find its
/// port taken at its next start), and the ports an administrator reserved.
/// Neither is handed out as an alternative; a port the user chose is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelPorts {
    pub ephemeral: Option<(u16, u16)>,
    pub reserved: BTreeSet<u16>,
}

impl KernelPorts {
    pub fn is_ephemeral(&self, port: u16) -> bool {
        self.ephemeral.is_some_and(|(lo, hi)| (lo..=hi).contains(&port))
    }
}

/// `ip_local_port_range`: the first and last ephemeral port, as in "32768\t60999".
pub fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut numbers = text.split_whitespace().map(str::parse::<u16>);
    match (numbers.next(), numbers.next(), numbers.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

/// `ip_local_reserved_ports`: ports and ranges separated by commas, as in
/// "8080,9000-9005", or nothing.
pub fn parse_reserved_ports(text: &str) -> Option<BTreeSet<u16>> {
    let text = text.trim();
    if text.is_empty() {
        return Some(BTreeSet::new());
    }
    let mut ports = BTreeSet::new();
    for item in text.split(',') {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let (lo, hi): (u16, u16) = (lo.parse().ok()?, hi.parse().ok()?);
        if lo > hi {
            return None;
        }
        ports.extend(lo..=hi);
    }
    Some(ports)
}

/// Why no port could be found for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    pub service: String,
    /// The ports looked at, as ranges; the busy ones among them are `busy`.
    pub tried: Vec<(u16, u16)>,
    pub busy: Vec<u16>,
    /// The kernel's ephemeral range, when it left the walk too few ports.
    pub hemmed: Option<(u16, u16)>,
    /// Ports among them already given to another service here, and to which.
    pub given: Vec<(u16, String)>,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tried: Vec<String> =
            self.tried.iter().map(|&(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") }).collect();
        write!(f, "no free port for {}: ", self.service)?;
        let ephemeral = |(lo, hi)| {
            format!("in the kernel's ephemeral range {lo}-{hi}, where no port is chosen in place of a busy one")
        };
        match (tried.split_last(), self.hemmed) {
            (None, Some(range)) => write!(f, "the range of ports.toml is {}", ephemeral(range))?,
            (None, None) => write!(f, "the range of ports.toml leaves none to try: widen it")?,
            (Some((last, rest)), hemmed) => {
                match rest {
                    [] => write!(f, "tried {last}")?,
                    _ => write!(f, "tried {} and {last}", rest.join(", "))?,
                }
                if let Some(range) = hemmed {
                    write!(f, ", and the rest of the range of ports.toml is {}", ephemeral(range))?;
                }
            }
        }
        Ok(())
    }
}

impl Exhausted {
    /// What to do about it. A wider range helps when the ephemeral range hemmed
    /// the walk in, unless it covers every port that may be handed out.
    pub fn advice(&self) -> String {
        let service = &self.service;
        if self.busy.is_empty() && !self.given.is_empty() {
            // Nothing to free: the ports went to the checkout's own services.
            return format!(
                "give {service} another port with `cargo xtask ports set {service} PORT`, or widen `range` or \
                 `attempts` in ports.toml"
            );
        }
        let widen = self.hemmed.is_some_and(|(lo, hi)| lo > MIN_PORT || hi < u16::MAX);
        let widen = if widen { "widen the range of ports.toml, " } else { "" };
        format!("{widen}free some of these ports, or pick another with `cargo xtask ports set SERVICE PORT`")
    }
}

/// Gives every service a port.
///
/// Services in `fixed` keep theirs unchecked: they run on it (and must not
/// move on paper, whatever else claims it), or it was pinned by hand. Every
/// other service walks from its current port (from `.ports.json`, else its
/// preferred one), as `walk` says, skipping browser-blocked ports, ports
/// already given to another service here, and `reserved` ports (other
/// checkouts'). `is_free(port)` is the probe. Services are served in
/// dependency order, so the result does not depend on map order.
pub fn allocate(
    config: &Config,
    current: &BTreeMap<String, u16>,
    fixed: &BTreeMap<String, u16>,
    reserved: &BTreeSet<u16>,
    kernel: &KernelPorts,
    mut is_free: impl FnMut(u16) -> bool,
) -> Result<BTreeMap<String, u16>, Exhausted> {
    let kept = || fixed.iter().filter(|(name, _)| config.services.contains_key(*name));
    let mut given: BTreeMap<String, u16> = kept().map(|(name, port)| (name.clone(), *port)).collect();
    // Who has each port given so far: kept up as ports are given, not
    // rebuilt for each service (with thousands of them, that took seconds).
    let mut taken: BTreeMap<u16, &str> = kept().map(|(name, port)| (*port, name.as_str())).collect();
    for name in config.order.iter().filter(|name| !fixed.contains_key(*name)) {
        let start = current.get(name).copied().unwrap_or(config.services[name].port);
        let walk = walk(start, config.attempts, config.range, kernel);
        let mut busy = Vec::new();
        let found = walk.ports.iter().copied().find(|&port| {
            let candidate = !is_browser_blocked(port) && !taken.contains_key(&port) && !reserved.contains(&port);
            candidate
                && (is_free(port) || {
                    busy.push(port);
                    false
                })
        });
        let Some(port) = found else {
            let tried = ranges(&walk.ports);
            let given = walk.ports.iter().filter_map(|p| Some((*p, taken.get(p)?.to_string()))).collect();
            return Err(Exhausted { service: name.clone(), tried, busy, hemmed: walk.hemmed, given });
        };
        given.insert(name.clone(), port);
        taken.insert(port, name);
    }
    Ok(given)
}

/// The ports a walk tries, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub ports: Vec<u16>,
    /// The kernel's ephemeral range, when it left fewer than `attempts` ports.
    pub hemmed: Option<(u16, u16)>,
}

/// Whether `port` is inside `range` and not below 1024: a walk from it tries it first.
pub fn in_range(port: u16, (lo, hi): (u16, u16)) -> bool {
    (lo.max(MIN_PORT)..=hi).contains(&port)
}

/// The ports tried from `start`: `attempts` in all, inside `range`, never
/// below 1024. `start` comes first, wherever it is; the others are never
/// ports the kernel keeps, and skipping those costs no attempt. The walk
/// goes up, past the ephemeral range; when `range` ends inside it, the walk
/// goes on down instead, from the nearest port below both `start` and it.
pub fn walk(start: u16, attempts: u16, range: (u16, u16), kernel: &KernelPorts) -> Walk {
    let (lo, hi) = (range.0.max(MIN_PORT), u32::from(range.1));
    let attempts = usize::from(attempts.max(1));
    let mut ports = Vec::new();
    let honoured = in_range(start, range);
    if honoured {
        ports.push(start);
    }
    // u32: the walk may step past 65535.
    let mut next = u32::from(start.max(lo)) + u32::from(honoured);
    let mut blocked = None;
    while ports.len() < attempts && next <= hi {
        let port = next as u16;
        match kernel.ephemeral {
            Some((first, last)) if kernel.is_ephemeral(port) => {
                next = u32::from(last) + 1;
                blocked = (next > hi).then_some((first, last));
            }
            _ => {
                if !kernel.reserved.contains(&port) {
                    ports.push(port);
                }
                next += 1;
            }
        }
    }
    if let Some((first, _)) = blocked {
        let below = (lo..start.min(first)).rev().filter(|port| !kernel.reserved.contains(port));
        ports.extend(below.take(attempts - ports.len()));
    }
    let hemmed = blocked.filter(|_| ports.len() < attempts);
    Walk { ports, hemmed }
}

/// The kernel's ephemeral range, when the walk from `start` reaches `port`
/// only by going around it: past its end, or down below `start`.
pub fn went_around(
    start: u16,
    port: u16,
    attempts: u16,
    range: (u16, u16),
    kernel: &KernelPorts,
) -> Option<(u16, u16)> {
    let (first, last) = kernel.ephemeral?;
    let around = port < start || (start <= last && port > last);
    (around && walk(start, attempts, range, kernel).ports.contains(&port)).then_some((first, last))
}

/// Sorted ports as ranges of consecutive ones.
fn ranges(ports: &[u16]) -> Vec<(u16, u16)> {
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for port in sorted {
        match ranges.last_mut() {
            Some((_, hi)) if u32::from(*hi) + 1 == u32::from(port) => *hi = port,
            _ => ranges.push((port, port)),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config;

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
        let got = allocate(&c, &BTreeMap::new(), &BTreeMap::new(), &BTreeSet::new(), &KernelPorts::default(), |_| true)
            .unwrap();
        assert_eq!(got, map(&[("a", 8000), ("b", 3000)]));
    }

    #[test]
    fn busy_ports_move_to_the_next_free_one() {
        let c = config(100, &[("a", 8000, &[])]);
        let got =
            allocate(&c, &BTreeMap::new(), &BTreeMap::new(), &BTreeSet::new(), &KernelPorts::default(), |p| p > 8002)
                .unwrap();
        assert_eq!(got["a"], 8003);
    }

    #[test]
    fn current_ports_are_honoured() {
        let c = config(100, &[("a", 8000, &[])]);
        let got =
            allocate(&c, &map(&[("a", 9100)]), &BTreeMap::new(), &BTreeSet::new(), &KernelPorts::default(), |_| true)
                .unwrap();
        assert_eq!(got["a"], 9100);
    }

    #[test]
    fn never_gives_one_port_twice() {
        // b wants the port a already has (a hand edit of .ports.json).
        let c = config(100, &[("a", 8000, &[]), ("b", 8001, &["a"])]);
        let got =
            allocate(&c, &map(&[("b", 8000)]), &BTreeMap::new(), &BTreeSet::new(), &KernelPorts::default(), |_| true)
                .unwrap();
        assert_eq!(got, map(&[("a", 8000), ("b", 8001)]));
    }

    #[test]
    fn skips_reserved_blocked_and_privileged_ports() {
        let c = config(100, &[("x11", 6000, &[]), ("irc", 6665, &[]), ("low", 80, &[]), ("r", 7000, &[])]);
        let reserved = BTreeSet::from([7000, 7001]);
        let got =
            allocate(&c, &BTreeMap::new(), &BTreeMap::new(), &reserved, &KernelPorts::default(), |_| true).unwrap();
        assert_eq!(got, map(&[("x11", 6001), ("irc", 6670), ("low", 1024), ("r", 7002)]));
    }

    #[test]
    fn fixed_ports_are_kept_whatever_holds_them_and_given_to_no_one_else() {
        // a runs on 8000, which another checkout reserves and the probe finds busy; b is pinned;
        // c, from a's port (a hand edit), walks past both. `gone` runs but left ports.toml.
        let c = config(100, &[("a", 8000, &[]), ("b", 8001, &["a"]), ("c", 7000, &[])]);
        let fixed = map(&[("a", 8000), ("b", 8001), ("gone", 9000)]);
        let got =
            allocate(&c, &map(&[("c", 8000)]), &fixed, &BTreeSet::from([8000]), &KernelPorts::default(), |p| p != 8000)
                .unwrap();
        assert_eq!(got, map(&[("a", 8000), ("b", 8001), ("c", 8002)]));
    }

    #[test]
    fn fails_after_attempts_naming_the_service_and_range() {
        let c = config(5, &[("a", 8000, &[])]);
        let err =
            allocate(&c, &BTreeMap::new(), &BTreeMap::new(), &BTreeSet::new(), &KernelPorts::default(), |_| false)
                .unwrap_err();
        assert_eq!(
            err,
            Exhausted {
                service: "a".into(),
                tried: vec![(8000, 8004)],
                busy: vec![8000, 8001, 8002, 8003, 8004],
                hemmed: None,
                given: vec![]
            }
        );
        assert_eq!(err.to_string(), "no free port for a: tried 8000-8004");
        assert!(err.advice().starts_with("free some of these ports"), "{}", err.advice());
    }

    #[test]
    fn exhaustion_names_the_services_the_ports_were_given_to() {
        let none = KernelPorts::default();
        // b's only port is a's (a hand edit); c's two are b's (pinned) and busy.
        let c = config(1, &[("a", 8000, &[]), ("b", 8001, &["a"]), ("c", 9000, &["b"])]);
        let err = allocate(&c, &map(&[("b", 8000)]), &BTreeMap::new(), &BTreeSet::new(), &none, |_| true).unwrap_err();
        assert_eq!((err.service.as_str(), &err.busy, &err.given), ("b", &vec![], &vec![(8000, "a".into())]));
        assert!(
            err.advice().starts_with("give b another port with `cargo xtask ports set b PORT`"),
            "{}",
            err.advice()
        );
        let c = config(2, &[("a", 8000, &[]), ("b", 8001, &["a"]), ("c", 9000, &["b"])]);
        let err =
            allocate(&c, &BTreeMap::new(), &map(&[("b", 9000)]), &BTreeSet::new(), &none, |p| p != 9001).unwrap_err();
        assert_eq!((err.service.as_str(), &err.busy, &err.given), ("c", &vec![9001], &vec![(9000, "b".into())]));
        assert!(err.advice().starts_with("free some of these ports"), "{}", err.advice());
    }

    #[test]
    fn stays_inside_the_range() {
        let text = "[ports]\nrange = [2000, 2002]\n[services.a]\nport = 1500\ncommand = 'x'\n";
        let c = config::parse(text).unwrap();
        let got =
            allocate(&c, &BTreeMap::new(), &BTreeMap::new(), &BTreeSet::new(), &KernelPorts::default(), |p| p == 2002)
                .unwrap();
        assert_eq!(got["a"], 2002);
        let err =
            allocate(&c, &map(&[("a", 2001)]), &BTreeMap::new(), &BTreeSet::new(), &KernelPorts::default(), |_| false)
                .unwrap_err();
        assert_eq!(err.tried, [(2001, 2002)]);
    }

    /// The kernel's default ephemeral range, and `reserved`.
    fn kernel(reserved: &[u16]) -> KernelPorts {
        KernelPorts { ephemeral: Some((32768, 60999)), reserved: reserved.iter().copied().collect() }
    }

    #[test]
    fn walks_around_the_ephemeral_range_and_past_reserved_ports() {
        let full = (1024, 65535);
        type Case<'a> = (&'a str, u16, u16, (u16, u16), &'a [u16], &'a [u16], bool);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // what, start, attempts, range, kernel-reserved, the walk, hemmed
            ("short of the range", 8000, 3, full, &[], &[8000, 8001, 8002], false),
            ("crossing into it", 32766, 4, full, &[], &[32766, 32767, 61000, 61001], false),
            ("its first port preferred", 32768, 3, full, &[], &[32768, 61000, 61001], false),
            ("a preferred port inside", 40000, 3, full, &[], &[40000, 61000, 61001], false),
            ("above it", 61000, 2, full, &[], &[61000, 61001], false),
            ("range ending inside: below", 32766, 4, (30000, 40000), &[], &[32766, 32767, 32765, 32764], false),
            ("range ending at its end", 32766, 4, (30000, 60999), &[], &[32766, 32767, 32765, 32764], false),
            ("inside, range ending inside", 40000, 3, (30000, 50000), &[], &[40000, 32767, 32766], false),
            ("no room below either", 32766, 5, (32765, 40000), &[], &[32766, 32767, 32765], true),
            ("range inside it", 1500, 5, (40000, 50000), &[], &[], true),
            ("preferred, range inside it", 45000, 5, (40000, 50000), &[], &[45000], true),
            ("reserved ports cost no attempt", 8000, 3, full, &[8001, 8003, 8004], &[8000, 8002, 8005], false),
            ("a reserved preferred port", 8001, 2, full, &[8001], &[8001, 8002], false),
            ("reserved, crossing", 32766, 3, full, &[32767, 61000], &[32766, 61001, 61002], false),
            ("reserved, below", 32766, 3, (30000, 40000), &[32765], &[32766, 32767, 32764], false),
            ("the top port", 65535, 3, full, &[], &[65535], false),
        ];
        for &(what, start, attempts, range, reserved, want, hemmed) in cases {
            let got = walk(start, attempts, range, &kernel(reserved));
            assert_eq!(got.ports, want, "{what}");
            assert_eq!(got.hemmed, hemmed.then_some((32768, 60999)), "{what}");
        }
        // Jumping the range costs no attempt.
        let long = walk(32767, 4000, full, &kernel(&[]));
        assert_eq!((long.ports.len(), &long.ports[..3], long.ports[3999]), (4000, &[32767, 61000, 61001][..], 64998));
        assert_eq!(walk(32767, 5, full, &KernelPorts::default()).ports, [32767, 32768, 32769, 32770, 32771]);
    }

    #[test]
    fn a_busy_port_moves_out_of_the_ephemeral_range_but_a_preferred_one_stays() {
        let c = config(100, &[("a", 32767, &[]), ("b", 40000, &[]), ("c", 50000, &[])]);
        let kernel = kernel(&[61000]);
        let got =
            allocate(&c, &BTreeMap::new(), &BTreeMap::new(), &BTreeSet::new(), &kernel, |p| p != 32767 && p != 50000);
        assert_eq!(got.unwrap(), map(&[("a", 61001), ("b", 40000), ("c", 61002)]));
    }

    #[test]
    fn a_range_that_leaves_no_other_port_says_so() {
        let c = config::parse("[ports]\nrange = [32760, 40000]\n[services.a]\nport = 32765\ncommand = 'x'\n").unwrap();
        let err = allocate(&c, &BTreeMap::new(), &BTreeMap::new(), &BTreeSet::new(), &kernel(&[32762]), |_| false);
        let err = err.unwrap_err();
        assert_eq!((&err.tried[..], err.hemmed), (&[(32760, 32761), (32763, 32767)][..], Some((32768, 60999))));
        let want = "no free port for a: tried 32760-32761 and 32763-32767, and the rest of the range of ports.toml \
                    is in the kernel's ephemeral range 32768-60999, where no port is chosen in place of a busy one";
        assert_eq!(err.to_string(), want);
        assert!(err.advice().starts_with("widen the range of ports.toml, free some"));
        let inside =
            Exhausted { service: "a".into(), tried: vec![], busy: vec![], hemmed: Some((32768, 60999)), given: vec![] };
        assert_eq!(
            inside.to_string(),
            "no free port for a: the range of ports.toml is in the kernel's ephemeral range 32768-60999, \
             where no port is chosen in place of a busy one"
        );
        // Where it covers every port that may be handed out, a wider range would not help.
        let everywhere = Exhausted { hemmed: Some((1024, 65535)), ..inside };
        assert!(everywhere.advice().starts_with("free some"), "{}", everywhere.advice());
    }

    #[test]
    fn knows_a_port_reached_around_the_ephemeral_range() {
        let (full, e) = ((1024, 65535), Some((32768, 60999)));
        let k = kernel(&[]);
        #[rustfmt::skip]
        let cases = [
            (32767, 61000, full, e), // past it
            (40000, 61000, full, e), // out of it, up
            (40000, 32767, (30000, 50000), e), // out of it, down
            (32767, 32766, (30000, 50000), e), // down from below it
            (8000, 8001, full, None), // next door
            (8000, 61000, full, None), // too far: a hand edit
            (61000, 61001, full, None), // above it
            (32767, 61000 + 100, full, None), // past it, but beyond the attempts
        ];
        for (start, port, range, want) in cases {
            assert_eq!(went_around(start, port, 100, range, &k), want, "{start} -> {port}");
        }
        assert_eq!(went_around(32767, 61000, 100, full, &KernelPorts::default()), None);
    }

    #[test]
    fn reads_the_ephemeral_range_as_the_kernel_writes_it() {
        let cases = [
            ("32768\t60999\n", Some((32768, 60999))),
            ("1024 65535", Some((1024, 65535))),
            ("40000\t40000\n", Some((40000, 40000))),
            ("", None),
            ("32768\n", None),
            ("60999\t32768\n", None),
            ("32768\t65536\n", None),
            ("32768\t60999\t1\n", None),
            ("-1\t60999\n", None),
            ("low\thigh\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_port_range(text), want, "{text:?}");
        }
    }

    #[test]
    fn reads_reserved_ports_in_every_form_the_kernel_takes() {
        let cases: &[(&str, Option<&[u16]>)] = &[
            ("\n", Some(&[])),
            ("", Some(&[])),
            ("8080\n", Some(&[8080])),
            ("8080,9148\n", Some(&[8080, 9148])),
            ("9000-9003\n", Some(&[9000, 9001, 9002, 9003])),
            ("1,2-4,10-10", Some(&[1, 2, 3, 4, 10])), // the kernel's own example
            ("65534-65535,0\n", Some(&[0, 65534, 65535])),
            ("8080,\n", None),
            (",8080", None),
            ("8080,,9148", None),
            ("9003-9000", None),
            ("9000-", None),
            ("-9000", None),
            ("1-2-3", None),
            ("65536", None),
            ("8080 9148", None),
            ("http", None),
        ];
        for &(text, want) in cases {
            let want = want.map(|ports| ports.iter().copied().collect::<BTreeSet<u16>>());
            assert_eq!(parse_reserved_ports(text), want, "{text:?}");
        }
    }

    #[test]
    fn browser_blocked_list_is_sorted() {
        assert!(BAD_PORTS.windows(2).all(|w| w[0] < w[1]));
    }
}
