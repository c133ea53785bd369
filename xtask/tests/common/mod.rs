//! Test harness: temporary checkouts driven through the real `xtask` binary,
//! each with its own registry folder, on ports no other test uses.
#![allow(dead_code)] // each test file uses a part

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// A temporary checkout: a folder with a `ports.toml`.
pub struct Checkout {
    pub dir: TempDir,
    /// `XDG_STATE_HOME`: never the real home folder.
    pub state: PathBuf,
    _own_state: Option<TempDir>,
}

impl Checkout {
    pub fn new(ports_toml: &str) -> Checkout {
        let state = TempDir::new().unwrap();
        let mut checkout = Checkout::sharing(ports_toml, state.path());
        checkout._own_state = Some(state);
        checkout
    }

    /// A checkout whose registry is shared with others (worktrees of one machine).
    pub fn sharing(ports_toml: &str, state: &Path) -> Checkout {
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("ports.toml"), ports_toml).unwrap();
        Checkout { dir, state: state.to_path_buf(), _own_state: None }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(XTASK);
        command.args(args).current_dir(self.dir.path()).stdin(Stdio::null());
        self.settle_env(&mut command);
        command
    }

    /// The runner's environment: the checkout's own registry, and none of
    /// the variables that change what the runner or its services do, which
    /// a developer's shell may hold.
    fn settle_env(&self, command: &mut Command) {
        command.env("XDG_STATE_HOME", &self.state).env("NO_COLOR", "1");
        for name in ["FORCE_MODE", "PYTHONUNBUFFERED", "XTASK_GROUP"] {
            command.env_remove(name);
        }
    }

    /// `command` as nobody, from a copy of the runner nobody may run: the
    /// build's own is under the repository's target/, which may be in a folder
    /// nobody may enter (root's home is 0700 on Debian).
    pub fn command_as_nobody(&self, runner: &RunnerCopy, args: &[&str]) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(runner.path());
        command.args(args).current_dir(self.dir.path()).stdin(Stdio::null());
        self.settle_env(&mut command);
        command.uid(NOBODY).gid(NOBODY);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout and stderr together.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let text = text(&output);
        assert!(output.status.success(), "xtask {args:?} failed:\n{text}");
        text
    }

    /// Runs and expects failure; returns stdout and stderr together.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let text = text(&output);
        assert!(!output.status.success(), "xtask {args:?} succeeded but should fail:\n{text}");
        text
    }

    pub fn read(&self, relative: &str) -> Option<String> {
        std::fs::read_to_string(self.path(relative)).ok()
    }

    pub fn ports(&self) -> BTreeMap<String, u16> {
        serde_json::from_str(&self.read(".ports.json").expect(".ports.json exists")).unwrap()
    }

    /// `status --json`, by service.
    pub fn status(&self) -> BTreeMap<String, serde_json::Value> {
        let rows: Vec<serde_json::Value> = serde_json::from_str(&self.ok(&["status", "--json"])).unwrap();
        rows.into_iter().map(|r| (r["service"].as_str().unwrap().to_owned(), r)).collect()
    }

    pub fn pid_of(&self, service: &str) -> Option<i32> {
        self.status()[service]["pid"].as_i64().map(|p| p as i32)
    }
}

impl Drop for Checkout {
    /// A failed test must not leave services running.
    fn drop(&mut self) {
        let _ = self.command(&["stop"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The first of `n` (at most 100) consecutive free ports, in a block of
/// 100 in 20000-29999 that no other test of this process gets. Blocks are
/// handed out from a random start, so concurrent test processes rarely meet.
pub fn free_ports(n: u16) -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: OnceLock<u64> = OnceLock::new();
    assert!(n <= 100);
    let start = *START.get_or_init(|| RandomState::new().hash_one(std::process::id()) % 100);
    for _ in 0..100 {
        let block = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 100;
        let base = 20000 + block as u16 * 100;
        if (base..base + n).all(is_free) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports in 20000-29999");
}

/// This machine's ephemeral port range, when it has one with room for a
/// service on either side (a container may have none, and an administrator
/// may have widened it to nearly every port).
pub fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut ports = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    let (lo, hi) = (ports.next()??, ports.next()??);
    (lo > 2000 && hi < 65000).then_some((lo, hi))
}

/// Free on every loopback and wildcard address, as the runner checks.
pub fn is_free(port: u16) -> bool {
    ["127.0.0.1", "0.0.0.0", "::1", "::"].iter().all(|host| {
        TcpListener::bind((*host, port)).is_ok() || (host.contains(':') && TcpListener::bind(("::1", 0)).is_err())
    })
}

/// A child's output, read line by line as it comes.
pub struct Said {
    lines: std::sync::mpsc::Receiver<String>,
    /// What was read so far.
    pub text: String,
}

impl Said {
    pub fn of(output: impl std::io::Read + Send + 'static) -> Said {
        let (send, lines) = std::sync::mpsc::channel();
        let output = std::io::BufReader::new(output);
        std::thread::spawn(move || {
            std::io::BufRead::lines(output).map_while(Result::ok).try_for_each(|l| send.send(l))
        });
        Said { lines, text: String::new() }
    }

    /// Reads until a line satisfies `wanted`: whether one did within `limit`.
    pub fn until(&mut self, limit: Duration, wanted: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.text += &format!("{line}\n");
            if wanted(&line) {
                return true;
            }
        }
        false
    }
}

pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Is a process with this pid running? A zombie is not, unless its other
/// threads still run.
pub fn alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| running(&f))
}

/// The fields of `/proc/PID/stat` after the name: state, ppid, pgrp, ...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit(')').next()?.split_whitespace().map(str::to_owned).collect())
}

/// A zombie with other threads still running.
pub fn main_thread_ended(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f[0] == "Z" && running(&f))
}

fn running(fields: &[String]) -> bool {
    fields.first().is_some_and(|state| state != "Z") || fields.get(17).is_some_and(|threads| threads != "1")
}

/// Live processes whose command line mentions `needle`.
pub fn processes_with(needle: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && alive(pid) && pid != std::process::id() as i32 {
            found.push((pid, cmdline));
        }
    }
    found
}

/// A process of ours listening on a port until dropped (or killed).
pub struct Squatter {
    pub child: std::process::Child,
    pub port: u16,
}

impl Squatter {
    /// `python3 -m http.server PORT` on `host`, as the account `uid` when given (needs root).
    pub fn start(port: u16, host: &str, uid: Option<u32>) -> Squatter {
        let mut command = Command::new(if uid.is_some() { "/usr/bin/python3" } else { "python3" });
        if let Some(uid) = uid {
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            std::os::unix::process::CommandExt::gid(&mut command, uid);
        }
        command.args(["-m", "http.server", &port.to_string(), "--bind", host]);
        Squatter::listening(command, port, if host.contains(':') { "::1" } else { "127.0.0.1" })
    }

    /// A process listening on 127.0.0.1:`port` whose main thread has ended
    /// (`MAIN_THREAD_ENDS_FIRST`).
    pub fn main_thread_ended(port: u16) -> Squatter {
        let mut command = Command::new("python3");
        command.args(["-c", MAIN_THREAD_ENDS_FIRST, &port.to_string()]);
        let squatter = Squatter::listening(command, port, "127.0.0.1");
        assert!(wait_for(Duration::from_secs(10), || main_thread_ended(squatter.pid())), "its main thread still runs");
        squatter
    }

    fn listening(mut command: Command, port: u16, loopback: &str) -> Squatter {
        let child = command.current_dir("/").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // Listening, not merely bound: only a listener accepts a connection.
        let listening = || std::net::TcpStream::connect((loopback, port)).is_ok();
        assert!(wait_for(Duration::from_secs(10), listening), "the squatter on {port} did not listen");
        Squatter { child, port }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// Python serving 127.0.0.1:`argv[1]` from a second thread, once its main
/// thread has ended: /proc shows the process as a zombie, with an empty fd
/// folder, while it holds the port (lsof and `ss -p` do not see it).
pub const MAIN_THREAD_ENDS_FIRST: &str = "import ctypes, socket, sys, threading\n\
    server = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n\
    threading.Thread(target=lambda: [c.close() for c, _ in iter(server.accept, None)]).start()\n\
    ctypes.CDLL(None).pthread_exit(None)\n";

/// A copy of the runner in a folder any user may enter.
pub struct RunnerCopy(TempDir);

impl RunnerCopy {
    pub fn new() -> RunnerCopy {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new().unwrap();
        std::fs::copy(XTASK, dir.path().join("xtask")).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        RunnerCopy(dir)
    }

    pub fn path(&self) -> PathBuf {
        self.0.path().join("xtask")
    }
}

/// The `nobody` account: another user whose processes the runner must not kill.
pub const NOBODY: u32 = 65534;

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// A `ports.toml` service serving HTTP on its port, with extra lines.
pub fn http_service(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[services.{name}]\nport = {port}\ncommand = \"python3 -m http.server {{port}} --bind 127.0.0.1\"\n{extra}\n"
    )
}

/// Live members of a process group.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Some(fields) = stat_fields(pid) else { continue };
        if running(&fields) && fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) {
            members.push(pid);
        }
    }
    members
}

/// Runs `xtask args` under a pseudo-terminal (util-linux `script`), typing
/// `answer` at it; returns what it printed and whether it succeeded.
pub fn run_in_terminal(c: &Checkout, args: &str, answer: &str, env: &[(&str, &str)]) -> (bool, String) {
    use std::io::Write;
    let mut command = Command::new("script");
    command
        .args(["-qec", &format!("{XTASK} {args}"), "/dev/null"])
        .current_dir(c.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.settle_env(&mut command);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(answer.as_bytes()).unwrap();
    // Closing the terminal's input would hang it up: keep it open until the end.
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    (output.status.success(), text(&output))
}

/// A child process that a failed test does not leave behind: killed, if it
/// still runs, when dropped.
pub struct Running(pub std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `xtask command` (`ui` or `dev`) in the background of the test and
/// returns it with the dashboard address it printed.
pub fn spawn_dashboard(c: &Checkout, command: &str) -> (Running, String) {
    use std::io::BufRead;
    let mut child = c.command(&[command]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find_map(|l| l.strip_prefix("Dashboard: ").map(str::to_owned))
        .expect("no dashboard address printed");
    std::thread::spawn(move || lines.for_each(drop)); // keep the pipe drained
    (Running(child), url)
}
