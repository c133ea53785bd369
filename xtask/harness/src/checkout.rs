//! Temporary checkouts driven through the real `xtask` binary, each with a
//! registry folder of its own (or one shared by worktrees of one machine);
//! the services they run, in the background or under `dev`.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use procscan::group_members;
use tempfile::TempDir;

use crate::ports::is_free;
use crate::processes::{NOBODY, Running, alive, copy_program, kill_all, processes_in};
use crate::wait::{LONG, wait_for};

/// A temporary folder with a configuration (`ports.toml`), and the program
/// that runs its commands. Dropping it stops its services, KILLs whatever
/// still runs in it, and removes it.
pub struct Checkout {
    pub dir: TempDir,
    /// `XDG_STATE_HOME`: never the real home folder.
    pub state: PathBuf,
    _own_state: Option<TempDir>,
    /// What runs a command, before the command's words: `xtask`, or bash
    /// and a script (the bench's baseline).
    program: Vec<OsString>,
}

impl Checkout {
    /// A checkout of `ports_toml` run by `xtask` (a path to the binary), with
    /// a registry of its own.
    pub fn new(xtask: impl AsRef<Path>, ports_toml: &str) -> Checkout {
        Checkout::create(&[xtask.as_ref()], "ports.toml", ports_toml, None).expect("creating a checkout")
    }

    /// A checkout whose registry is shared with others (worktrees of one machine).
    pub fn sharing(xtask: impl AsRef<Path>, ports_toml: &str, state: &Path) -> Checkout {
        Checkout::create(&[xtask.as_ref()], "ports.toml", ports_toml, Some(state)).expect("creating a checkout")
    }

    /// A checkout holding `text` in `file`, whose commands `program` runs
    /// (its words first, then the command's); its registry is `state`, or a
    /// temporary folder of its own.
    pub fn create(
        program: &[impl AsRef<OsStr>],
        file: &str,
        text: &str,
        state: Option<&Path>,
    ) -> std::io::Result<Checkout> {
        let dir = TempDir::new()?;
        std::fs::write(dir.path().join(file), text)?;
        let (state, own_state) = match state {
            Some(state) => (state.to_path_buf(), None),
            None => {
                let own = TempDir::new()?;
                (own.path().to_path_buf(), Some(own))
            }
        };
        let program = program.iter().map(|w| w.as_ref().to_owned()).collect();
        Ok(Checkout { dir, state, _own_state: own_state, program })
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program[0]);
        command.args(&self.program[1..]).args(args).current_dir(self.dir.path()).stdin(Stdio::null());
        self.settle_env(&mut command);
        command
    }

    /// Another program, run as the runner's commands are: in the checkout,
    /// with its environment (an MCP client that starts the runner itself).
    pub fn other_command(&self, program: impl AsRef<OsStr>, args: &[&OsStr]) -> Command {
        let mut command = Command::new(program);
        command.args(args).current_dir(self.dir.path()).stdin(Stdio::null());
        self.settle_env(&mut command);
        command
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

    /// The runner's environment: the checkout's own registry, and none of
    /// the variables that change what the runner or its services do, which
    /// a developer's shell may hold.
    fn settle_env(&self, command: &mut Command) {
        command.env("XDG_STATE_HOME", &self.state).env("NO_COLOR", "1");
        for name in ["FORCE_MODE", "PYTHONUNBUFFERED", "XTASK_GROUP"] {
            command.env_remove(name);
        }
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
    /// A failed test must not leave services running; nor may a stop that
    /// leaves some.
    fn drop(&mut self) {
        let _ = self.command(&["stop"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        kill_all(&processes_in(self.dir.path()));
    }
}

pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A `ports.toml` service serving HTTP on its port, with extra lines.
pub fn http_service(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[services.{name}]\nport = {port}\ncommand = \"python3 -m http.server {{port}} --bind 127.0.0.1\"\n{extra}\n"
    )
}

/// A `ports.toml` of three services on `base`, `base + 10` and `base + 20`
/// (ask `free_ports(30)`). a: plain; b: its listener is a grandchild; c:
/// depends on both, ready on HTTP.
pub fn stack(base: u16) -> String {
    format!(
        "{}[services.b]\nport = {}\ncommand = [\"sh\", \"-c\", \"python3 -m http.server {{port}} --bind 127.0.0.1 & wait\"]\n\n{}",
        http_service("a", base, ""),
        base + 10,
        http_service("c", base + 20, "depends_on = [\"a\", \"b\"]\nready = { http = \"/\" }"),
    )
}

/// Every process of every running service of `c`, by process group.
pub fn service_processes(c: &Checkout) -> Vec<i32> {
    let groups = c.status().into_values().filter_map(|s| s["pid"].as_i64());
    groups.flat_map(|pgid| group_members(pgid as i32)).map(|m| m.pid).collect()
}

/// Nothing of `c`'s services is left: none of `processes` runs, every one
/// of `ports` is free (within 2 s), status says each service stopped, and
/// `.pids` holds no record.
pub fn assert_all_gone(c: &Checkout, processes: &[i32], ports: &[u16]) {
    let left: Vec<_> = processes.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    for port in ports {
        assert!(wait_for(Duration::from_secs(2), || is_free(*port)), "port {port} is still busy");
    }
    assert!(c.status().values().all(|s| s["running"] == false));
    let records: Vec<_> = std::fs::read_dir(c.path(".pids"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert!(records.is_empty(), "records left in .pids: {records:?}");
}

/// Runs a command of `c` (`args`, one string) under a pseudo-terminal
/// (util-linux `script`), typing `answer` at it; returns what it printed and
/// whether it succeeded.
pub fn run_in_terminal(c: &Checkout, args: &str, answer: &str, env: &[(&str, &str)]) -> (bool, String) {
    let program: Vec<_> = c.program.iter().map(|w| w.to_string_lossy()).collect();
    let mut command = Command::new("script");
    command
        .args(["-qec", &format!("{} {args}", program.join(" ")), "/dev/null"])
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

/// Runs `xtask command` (`ui` or `dev`) in the background of the test and
/// returns it with the dashboard address it printed.
pub fn spawn_dashboard(c: &Checkout, command: &str) -> (Running, String) {
    let mut child = c.command(&[command]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find_map(|l| l.strip_prefix("Dashboard: ").map(str::to_owned))
        .expect("no dashboard address printed");
    std::thread::spawn(move || lines.for_each(drop)); // keep the pipe drained
    (Running(child), url)
}

/// `xtask dev args` in the background of the test, its output (stdout and
/// stderr) in the checkout's `dev.out`, whose path comes with it. Should the
/// test fail, dropping the checkout stops it.
pub fn spawn_dev(c: &Checkout, args: &[&str]) -> (Child, PathBuf) {
    let log = c.path("dev.out");
    let file = std::fs::File::create(&log).unwrap();
    let child = c.command(&[&["dev"], args].concat()).stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
    (child, log)
}

/// Until the dev of `spawn_dev` says its `n` services are ready (a signal
/// before that interrupts the start, which is an error), and `n` are healthy.
pub fn wait_running(c: &Checkout, n: usize) {
    let said = format!("✓ {n} service{} ready", if n == 1 { "" } else { "s" });
    let ok = wait_for(LONG, || c.read("dev.out").is_some_and(|out| out.contains(&said)));
    assert!(ok, "services did not come up:\n{}", c.read("dev.out").unwrap_or_default());
    assert_eq!(c.status().values().filter(|s| s["healthy"] == true).count(), n);
}

/// A copy of the runner in a folder any user may enter.
pub struct RunnerCopy(TempDir);

impl RunnerCopy {
    pub fn new(xtask: impl AsRef<Path>) -> RunnerCopy {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new().unwrap();
        copy_program(xtask.as_ref(), &dir.path().join("xtask"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        RunnerCopy(dir)
    }

    pub fn path(&self) -> PathBuf {
        self.0.path().join("xtask")
    }
}
