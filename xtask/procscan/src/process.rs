//! One process as `/proc` describes it: who it is (pid and start time, which
//! survive pid reuse together), its stat line, and the files that describe it
//! whole (command line, environment).

use std::fmt;
use std::io::{self, Read};
use std::time::Duration;

use serde_core::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_core::ser::{Serialize, SerializeStruct, Serializer};

/// A process named by its pid and its start time (clock ticks after boot):
/// a later process that reuses the pid has another start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

impl ProcId {
    pub fn of(pid: i32) -> Option<ProcId> {
        Stat::of(pid)?.id()
    }

    pub fn myself() -> ProcId {
        ProcId::of(std::process::id() as i32).expect("/proc describes this process")
    }

    /// The same process is still running (not a zombie, not a newcomer with the same pid).
    pub fn is_alive(self) -> bool {
        ProcId::of(self.pid) == Some(self)
    }
}

// Records keep a process as `{"pid": 4242, "start": 123456}`. Written by
// hand, on serde_core: serde's derive would make this crate wait for
// serde_derive (and syn) in every cold build, at the end of which the runner
// waits for it; it compiles alongside them instead.
impl Serialize for ProcId {
    fn serialize<S: Serializer>(&self, to: S) -> Result<S::Ok, S::Error> {
        let mut fields = to.serialize_struct("ProcId", 2)?;
        fields.serialize_field("pid", &self.pid)?;
        fields.serialize_field("start", &self.start)?;
        fields.end()
    }
}

impl<'de> Deserialize<'de> for ProcId {
    fn deserialize<D: Deserializer<'de>>(from: D) -> Result<ProcId, D::Error> {
        from.deserialize_struct("ProcId", &["pid", "start"], ProcIdFields)
    }
}

struct ProcIdFields;

impl<'de> Visitor<'de> for ProcIdFields {
    type Value = ProcId;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a process: { pid, start }")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut fields: M) -> Result<ProcId, M::Error> {
        let (mut pid, mut start) = (None, None);
        while let Some(name) = fields.next_key::<String>()? {
            match name.as_str() {
                "pid" if pid.is_some() => return Err(de::Error::duplicate_field("pid")),
                "start" if start.is_some() => return Err(de::Error::duplicate_field("start")),
                "pid" => pid = Some(fields.next_value()?),
                "start" => start = Some(fields.next_value()?),
                _ => drop(fields.next_value::<IgnoredAny>()?),
            }
        }
        let pid = pid.ok_or_else(|| de::Error::missing_field("pid"))?;
        // To kill(), 0 and -1 name the caller's own group and every process.
        if pid < 1 {
            return Err(de::Error::custom(format!("pid {pid} names no process: a pid is positive")));
        }
        Ok(ProcId { pid, start: start.ok_or_else(|| de::Error::missing_field("start"))? })
    }
}

/// The fields of `/proc/PID/stat` the runner reads (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// The executable's name, at most 15 bytes.
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// CPU time in user and kernel mode, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    pub threads: u64,
    /// Clock ticks after boot.
    pub start: u64,
    /// A kernel thread (PF_KTHREAD): it has no environment, and is no service's.
    pub kernel: bool,
}

impl Stat {
    pub fn of(pid: i32) -> Option<Stat> {
        Stat::parse(&read(&format!("/proc/{pid}/stat")).ok()?)
    }

    /// `PID (COMM) STATE PPID PGRP ...`: the name may hold any bytes,
    /// spaces and parentheses too, so it ends at the last `)`.
    fn parse(bytes: &[u8]) -> Option<Stat> {
        let end = bytes.iter().rposition(|b| *b == b')')?;
        let head = String::from_utf8_lossy(&bytes[..end]);
        let (pid, comm) = head.split_once(" (")?;
        // Up to the start time, the 20th field after the name: the other 30 are not needed.
        let fields: Vec<&str> =
            std::str::from_utf8(&bytes[end + 1..]).ok()?.split_ascii_whitespace().take(20).collect();
        let number = |i: usize| fields.get(i)?.parse().ok();
        Some(Stat {
            pid: pid.parse().ok()?,
            comm: comm.to_owned(),
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            pgrp: fields.get(2)?.parse().ok()?,
            utime: number(11)?,
            stime: number(12)?,
            threads: number(17)?,
            start: number(19)?,
            kernel: number(6)? & 0x0020_0000 != 0,
        })
    }

    /// Who it is, unless it has exited. A zombie whose other threads still
    /// run has not: its main thread ended first (it called `pthread_exit`, or
    /// it was the first to die of a signal) and the others hold its files,
    /// its ports too, until the last of them ends.
    pub fn id(&self) -> Option<ProcId> {
        (self.state != 'Z' || self.threads > 1).then_some(ProcId { pid: self.pid, start: self.start })
    }

    /// The CPU time it has used, in user and kernel mode.
    pub fn cpu_time(&self) -> Duration {
        let ticks = u128::from(self.utime + self.stime);
        let nanos = ticks * 1_000_000_000 / u128::from(rustix::param::clock_ticks_per_second());
        Duration::from_nanos(nanos as u64)
    }
}

/// A process's command line, word by word (empty for a kernel thread, or
/// one that is gone).
pub fn argv(pid: i32) -> Vec<String> {
    let bytes = process_file(pid, "cmdline").unwrap_or_default();
    bytes.split(|b| *b == 0).filter(|w| !w.is_empty()).map(|w| String::from_utf8_lossy(w).into_owned()).collect()
}

/// `/proc/PID/NAME` of a file that describes the whole process (its command
/// line, its environment). A process whose main thread has ended refuses to
/// give them there, but gives them through any thread still running.
pub fn process_file(pid: i32, name: &str) -> io::Result<Vec<u8>> {
    read(&format!("/proc/{pid}/{name}")).or_else(|error| {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten();
        let mut through = tasks.map(|task| read(&format!("/proc/{pid}/task/{}/{name}", task.file_name().display())));
        through.find(Result::is_ok).unwrap_or(Err(error))
    })
}

/// A file of `/proc`. They report a size of 0, from which `std::fs::read`
/// would read in small growing steps, each a system call; a stat line, and
/// most command lines, fit in one read of 4 KiB.
fn read(path: &str) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(4096);
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_whose_name_holds_parentheses_or_any_bytes() {
        let line = b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 9 0 0 0 7 3 0 0 20 0 1 0 123456 2269184 129 0";
        let want = Stat {
            pid: 4242,
            comm: "a) b (c)".into(),
            state: 'S',
            ppid: 1,
            pgrp: 4242,
            utime: 7,
            stime: 3,
            threads: 1,
            start: 123456,
            kernel: false,
        };
        assert_eq!(Stat::parse(line).as_ref(), Some(&want));
        let tick = Duration::from_secs(1) / rustix::param::clock_ticks_per_second() as u32;
        assert_eq!(want.cpu_time(), 10 * tick);
        assert_eq!(Stat::parse(b"4242 (cut short) S 1"), None);
        // A name is bytes, cut at 15 of them: maybe in the middle of a character.
        let cut = b"77 (srv-\xc3) S 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0 0";
        assert_eq!(Stat::parse(cut).map(|s| (s.comm, s.start)), Some(("srv-\u{fffd}".into(), 99)));
        let kthreadd = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 12 0";
        assert_eq!(Stat::parse(kthreadd).map(|s| s.kernel), Some(true));
        let me = Stat::of(std::process::id() as i32).unwrap();
        assert_eq!(me.ppid, std::os::unix::process::parent_id() as i32);
    }

    #[test]
    fn a_process_is_kept_as_its_pid_and_start_and_read_back_only_so() {
        let id = ProcId { pid: 4242, start: 123456 };
        let text = serde_json::to_string(&id).unwrap();
        assert_eq!(text, r#"{"pid":4242,"start":123456}"#);
        assert_eq!(serde_json::from_str::<ProcId>(&text).unwrap(), id);
        assert_eq!(
            serde_json::from_str::<ProcId>(r#"{"start":1,"later":[0],"pid":7}"#).unwrap(),
            ProcId { pid: 7, start: 1 }
        );
        let refused = |text: &str| serde_json::from_str::<ProcId>(text).unwrap_err().to_string();
        assert!(refused(r#"{"pid":0,"start":5}"#).starts_with("pid 0 names no process: a pid is positive"));
        assert!(refused(r#"{"pid":-1,"start":5}"#).starts_with("pid -1 names no process"));
        assert!(refused(r#"{"pid":7}"#).starts_with("missing field `start`"));
        assert!(refused(r#"{"pid":7,"pid":8,"start":1}"#).starts_with("duplicate field `pid`"));
        assert!(refused(r#"{"pid":"7","start":1}"#).starts_with("invalid type: string \"7\", expected i32"));
        assert!(refused("[7, 1]").starts_with("invalid type: sequence, expected a process: { pid, start }"));
    }

    #[test]
    fn a_reused_pid_is_not_the_same_process() {
        let me = ProcId::myself();
        assert!(me.is_alive());
        assert!(!ProcId { start: me.start + 1, ..me }.is_alive());
    }
}
