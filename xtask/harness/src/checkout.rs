//! Temporary checkouts driven through the real `xtask` binary, each with a
//! registry folder of its own (or one shared by worktrees of one machine).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use crate::processes::{NOBODY, Running, kill_all, processes_in};

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

/// A copy of the runner in a folder any user may enter.
pub struct RunnerCopy(TempDir);

impl RunnerCopy {
    pub fn new(xtask: impl AsRef<Path>) -> RunnerCopy {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new().unwrap();
        std::fs::copy(xtask, dir.path().join("xtask")).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        RunnerCopy(dir)
    }

    pub fn path(&self) -> PathBuf {
        self.0.path().join("xtask")
    }
}
