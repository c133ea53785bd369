//! The set-up a checkout does for itself: missing programs are named with
//! how to install them, folders are made, and set-up steps run again only
//! when their inputs change.

use std::process::Stdio;
use std::time::Duration;

use harness::*;

/// The runner under test, as cargo built it for these tests.
const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

#[test]
fn a_missing_program_says_what_to_install() {
    let base = free_ports(10);
    let toml = format!(
        "[programs]\nno-such-db = {{ install = \"apt-get install no-such-db\" }}\n\
         [services.db]\nport = {base}\ncommand = \"no-such-db --port {{port}}\"\n\
         [services.tool]\nport = {}\ncommand = \"no-such-tool-9\"\n\
         [[services.tool.setup]]\ncommand = [\"no-such-step-7\", \"init\"]\n",
        base + 1
    );
    let c = Checkout::new(XTASK, &toml);
    let out = c.fails(&["start"]);
    assert!(out.contains("no-such-db: install it with `apt-get install no-such-db`"), "{out}");
    let place = format!("{}:8:11", c.path("ports.toml").display());
    assert!(out.contains(&format!("no-such-tool-9: install it, or fix the command of tool ({place})")), "{out}");
    let place = format!("{}:10:11", c.path("ports.toml").display());
    assert!(out.contains(&format!("no-such-step-7: install it, or fix set-up step 1 of tool ({place})")), "{out}");
    assert!(!c.path(".pids/db.json").exists());
}

#[test]
fn set_up_steps_run_once_and_again_when_their_inputs_change() {
    let base = free_ports(10);
    let toml = format!(
        "{}dirs = [\".data/a\"]\n[[services.a.setup]]\ninputs = [\"deps.txt\"]\n\
         command = [\"sh\", \"-c\", \"cat deps.txt >> .data/a/installed\"]\n\
         [[services.a.setup]]\ncreates = \".data/a/db\"\ncommand = [\"sh\", \"-c\", \"echo init >> .data/a/db\"]\n",
        http_service("a", base, "")
    );
    let c = Checkout::new(XTASK, &toml);
    std::fs::write(c.path("deps.txt"), "one\n").unwrap();
    let out = c.ok(&["start"]);
    assert!(out.contains("a | setting up (1/2): sh -c cat deps.txt"), "{out}");
    c.ok(&["restart"]);
    c.ok(&["stop"]);
    c.ok(&["start"]);
    assert_eq!(c.read(".data/a/installed").unwrap(), "one\n", "the step ran again with the same inputs");
    assert_eq!(c.read(".data/a/db").unwrap(), "init\n");
    std::fs::write(c.path("deps.txt"), "two\n").unwrap();
    c.ok(&["restart"]);
    assert_eq!(c.read(".data/a/installed").unwrap(), "one\ntwo\n", "a changed input did not run the step again");
    std::fs::remove_file(c.path(".data/a/db")).unwrap();
    c.ok(&["restart"]);
    assert_eq!(c.read(".data/a/db").unwrap(), "init\n", "what the step creates was missing, but it did not run");
}

#[test]
fn a_failing_step_stops_the_start_with_its_output() {
    let base = free_ports(10);
    let toml = format!(
        "{}[[services.a.setup]]\ncommand = [\"sh\", \"-c\", \"echo resolver-error-5 >&2; exit 2\"]\n",
        http_service("a", base, "")
    );
    let c = Checkout::new(XTASK, &toml);
    let out = c.fails(&["start"]);
    assert!(
        out.contains("resolver-error-5")
            && out.contains("set-up step `sh -c echo resolver-error-5 >&2; exit 2` failed"),
        "{out}"
    );
    assert!(is_free(base), "the service started although its set-up failed");
}

/// `dirs` are made (and, as root, given to `user`): one outside the checkout
/// is a ports.toml error, and nothing is made.
#[test]
fn a_path_that_leaves_the_checkout_is_refused() {
    let base = free_ports(10);
    let name = format!("outside-{}-{base}", std::process::id());
    let c = Checkout::new(XTASK, &http_service("a", base, &format!("dirs = [\"../{name}\"]\nuser = \"nobody\"")));
    let outside = c.dir.path().parent().unwrap().join(&name);
    let output = c.run(&["start"]);
    let (out, made) = (text(&output), outside.exists());
    let _ = std::fs::remove_dir(&outside);
    assert!(!output.status.success() && !made, "start made {}:\n{out}", outside.display());
    let place = format!("{}:4:9", c.path("ports.toml").display());
    let want = format!("{place}: \"../{name}\" in `dirs` of a leads out of the checkout: write a path relative to");
    assert!(out.contains(&want) && out.contains("nothing was started or written"), "{out}");
    assert!(is_free(base), "the service started: {}", text(&c.run(&["ports", "who", &base.to_string()])));
}

/// A missing input of a set-up step, or a file where `dirs` names a folder,
/// is found before anything is stopped: a restart leaves the service running.
#[test]
fn set_up_inputs_and_dirs_are_checked_before_a_restart_stops_anything() {
    let base = free_ports(10);
    let c = Checkout::new(XTASK, &http_service("a", base, ""));
    c.ok(&["start"]);
    let pid = c.pid_of("a").unwrap();
    let step = "[[services.a.setup]]\ninputs = [\"deps.txt\"]\ncommand = \"true\"\n";
    std::fs::write(c.path("ports.toml"), http_service("a", base, "") + step).unwrap();
    let out = c.fails(&["restart"]);
    let place = format!("{}:7:11", c.path("ports.toml").display());
    let input = c.path("deps.txt");
    let want = format!("{place}: {}, an input of a set-up step of a, is not a file", input.display());
    assert!(out.contains(&want), "{out}");
    assert_eq!(c.pid_of("a"), Some(pid), "a was stopped:\n{out}");
    std::fs::write(c.path("data"), "").unwrap();
    std::fs::write(c.path("ports.toml"), http_service("a", base, "dirs = [\"data\"]")).unwrap();
    let out = c.fails(&["restart"]);
    let place = format!("{}:4:9", c.path("ports.toml").display());
    assert!(out.contains(&format!("{place}: {} in `dirs` of a is not a folder", c.path("data").display())), "{out}");
    assert_eq!(c.pid_of("a"), Some(pid), "a was stopped:\n{out}");
    // A file on the way to a folder to make: found before, not by making it.
    std::fs::write(c.path("ports.toml"), http_service("a", base, "dirs = [\"data/x\"]")).unwrap();
    let out = c.fails(&["restart"]);
    let want = format!(
        "{place}: {} in `dirs` of a is not a folder: {} is in the way",
        c.path("data/x").display(),
        c.path("data").display()
    );
    assert!(out.contains(&want), "{out}");
    assert_eq!(c.pid_of("a"), Some(pid), "a was stopped:\n{out}");
}

/// A program named by its path that is not there, nor made by set-up, is
/// refused before the holder of the service's port is killed for it; so is
/// one that set-up was to make but did not.
#[test]
fn a_program_path_that_is_not_there_is_refused_before_any_kill() {
    let base = free_ports(10);
    let toml = |extra: &str| format!("[services.a]\nport = {base}\ncommand = \"./bin/serve {{port}}\"\n{extra}");
    let c = Checkout::new(XTASK, &toml(""));
    let squatter = Squatter::start(base, "127.0.0.1", None);
    let refused = |extra: &str, says: &str| {
        std::fs::write(c.path("ports.toml"), toml(extra)).unwrap();
        let out = c.fails(&["start"]);
        let want = format!("{}:3:11: {}{says}", c.path("ports.toml").display(), c.path("bin/serve").display());
        assert!(out.contains(&want), "{out}");
        assert!(alive(squatter.pid()), "the holder was killed:\n{out}");
    };
    refused("", " is not a program a may run");
    // `bin` is made by set-up, so `bin/serve` may be too; it is not.
    refused("dirs = [\"bin\"]\n", ", the program of a, is not there after its set-up");
    assert!(c.path("bin").is_dir());
}

/// Programs that set-up may make are not refused before it runs: one a
/// dependency's step makes, one named through `..`, and, when a step does not
/// say what it creates, anything.
#[test]
fn programs_set_up_may_make_are_not_refused_before_it_runs() {
    let base = free_ports(10);
    let make = "mkdir -p tools/bin build\n\
        printf '#!/bin/sh\\nexec python3 -m http.server \"$1\" --bind 127.0.0.1\\n' > tools/bin/srv\n\
        chmod +x tools/bin/srv\ncp tools/bin/srv build/app\n";
    let toml = format!(
        "[services.base]\nport = {base}\ncommand = \"tools/bin/srv {{port}}\"\n\
         [[services.base.setup]]\ncreates = \"tools/bin/srv\"\ncommand = [\"sh\", \"make.sh\"]\n\
         [services.worker]\nport = {}\ncommand = \"tools/bin/srv {{port}}\"\ndepends_on = [\"base\"]\n\
         [services.up]\nport = {}\ncwd = \"app\"\ndirs = [\"app\"]\ncommand = \"../tools/bin/srv {{port}}\"\n\
         depends_on = [\"base\"]\n",
        base + 1,
        base + 2
    );
    let c = Checkout::new(XTASK, &toml);
    std::fs::write(c.path("make.sh"), make).unwrap();
    c.ok(&["start"]);
    c.ok(&["stop"]);
    let toml = format!(
        "[services.app]\nport = {base}\ncommand = \"./build/app {{port}}\"\n\
         [[services.app.setup]]\ninputs = [\"make.sh\"]\ncommand = [\"sh\", \"make.sh\"]\n"
    );
    let c = Checkout::new(XTASK, &toml);
    std::fs::write(c.path("make.sh"), make).unwrap();
    c.ok(&["start"]);
    c.ok(&["stop"]);
}

/// A step named by a path from the checkout runs wherever in the checkout
/// the runner was started.
#[test]
fn a_step_named_by_its_path_runs_from_a_subfolder_too() {
    let base = free_ports(10);
    let step = "[[services.a.setup]]\ncommand = [\"tools/prepare\"]";
    let c = Checkout::new(XTASK, &http_service("a", base, step));
    std::fs::create_dir(c.path("tools")).unwrap();
    write_program(&c.path("tools/prepare"), "#!/bin/sh\ntouch prepared\n");
    let output = c.command(&["start"]).current_dir(c.path("tools")).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(c.path("prepared").is_file(), "the step did not run in the checkout's folder:\n{}", text(&output));
    c.ok(&["stop"]);
}

/// A step with a `cwd` runs there (as `npm ci` must, in its package's
/// folder), its program found from there; a `cwd` that is not there is
/// refused at the step before anything starts.
#[test]
fn a_step_runs_in_its_cwd() {
    let base = free_ports(10);
    let step = "[[services.a.setup]]\ncwd = \"web\"\ncommand = [\"./prepare\"]";
    let c = Checkout::new(XTASK, &http_service("a", base, step));
    std::fs::create_dir(c.path("web")).unwrap();
    write_program(&c.path("web/prepare"), "#!/bin/sh\npwd > prepared\n");
    c.ok(&["start"]);
    let seen = c.read("web/prepared").expect("the step did not run in its cwd");
    assert_eq!(std::path::Path::new(seen.trim()), c.path("web").canonicalize().unwrap());
    c.ok(&["stop"]);
    std::fs::remove_dir_all(c.path("web")).unwrap();
    std::fs::remove_dir_all(c.path(".data")).unwrap(); // the step's stamp: it must run again
    let out = c.fails(&["start"]);
    let place = format!("{}:5:7", c.path("ports.toml").display());
    assert!(out.contains(&place) && out.contains("of a set-up step of a does not exist"), "{out}");
    assert!(!c.path(".pids/a.json").exists(), "{out}");
}

/// A set-up step does not run on after a runner killed while it runs.
#[test]
fn a_step_ends_with_a_runner_killed_meanwhile() {
    let base = free_ports(10);
    let toml = format!(
        "{}[[services.a.setup]]\ncommand = [\"sh\", \"-c\", \"echo $$ > step.pid; exec sleep 300\"]\n",
        http_service("a", base, "")
    );
    let c = Checkout::new(XTASK, &toml);
    let mut start = c.command(&["start"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let step = || c.read("step.pid").and_then(|p| p.trim().parse::<i32>().ok());
    assert!(wait_for(Duration::from_secs(30), || step().is_some_and(alive)), "the step did not start");
    start.kill().unwrap();
    start.wait().unwrap();
    let step = step().unwrap();
    assert!(wait_for(Duration::from_secs(10), || !alive(step)), "the set-up step (pid {step}) outlived the runner");
}

/// A step may write to the terminal, even one set to `stty tostop`: it runs
/// in the terminal's foreground group (in a background one, its first write
/// would stop it, and the start with it), where it can also prompt.
#[test]
fn a_step_may_write_to_a_terminal_set_to_tostop() {
    let base = free_ports(10);
    let step = "[[services.a.setup]]\ncommand = [\"sh\", \"-c\", \"echo from-the-step >&2\"]";
    let c = Checkout::new(XTASK, &http_service("a", base, step));
    let line = format!("stty tostop; {XTASK} start");
    let mut start = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(c.dir.path())
        .env("XDG_STATE_HOME", &c.state)
        .stdin(Stdio::piped()) // kept open: closing the terminal's input hangs it up
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ended = wait_for(Duration::from_secs(30), || start.try_wait().unwrap().is_some());
    let _ = start.kill();
    let out = text(&start.wait_with_output().unwrap());
    assert!(ended, "the start hangs:\n{out}");
    assert!(out.contains("from-the-step") && out.contains("set up (1/1) in"), "{out}");
}

/// A shell loop that waits (30 s at most) for `file`, then fails unless it came.
fn until(file: &str) -> String {
    format!("i=0; until [ -f {file} ] || [ $i -ge 600 ]; do sleep 0.05; i=$((i+1)); done; [ -f {file} ]")
}

/// The steps of different services run at once, each with its output
/// prefixed: here a step of `bad` fails while one of `slow` runs (with a
/// child of its shell). `slow`'s step is stopped with all it started, the
/// start fails naming `bad`'s step, and only the step that completed has
/// its stamp.
#[test]
fn a_failing_step_stops_the_steps_of_other_services() {
    let base = free_ports(10);
    let slow = "sleep 300 & echo $! > sleep.pid; echo $$ > shell.pid; echo slow-started; wait";
    let bad = format!("{}; echo bad-error >&2; exit 3", until("shell.pid"));
    let toml = format!(
        "{}[[services.slow.setup]]\ncommand = [\"sh\", \"-c\", \"echo quick-done\"]\n\
         [[services.slow.setup]]\ncommand = [\"sh\", \"-c\", \"{slow}\"]\n\
         {}[[services.bad.setup]]\ncommand = [\"sh\", \"-c\", \"{bad}\"]\n",
        http_service("slow", base, ""),
        http_service("bad", base + 1, ""),
    );
    let c = Checkout::new(XTASK, &toml);
    let out = c.fails(&["start"]);
    let pid = |file: &str| c.read(file).and_then(|p| p.trim().parse::<i32>().ok());
    let (sleep, shell) = (pid("sleep.pid").expect(&out), pid("shell.pid").expect(&out));
    assert!(!alive(sleep) && !alive(shell), "slow's step runs on (sleep {sleep}, sh {shell}):\n{out}");
    for line in [
        "slow | quick-done",
        "slow | set up (1/2) in",
        "slow | setting up (2/2): sh -c sleep 300 &",
        "slow | slow-started",
        "slow | stopped (2/2), as the set-up of bad failed",
        "bad  | bad-error",
        "bad  | failed (1/1): exit status: 3",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    assert!(out.contains(&format!("error: bad: set-up step `sh -c {bad}` failed (exit status: 3)")), "{out}");
    assert!(!out.contains("✓ set up"), "{out}");
    assert!(c.path(".data/setup/slow.0").is_file(), "the step that completed has no stamp");
    for stamp in ["slow.1", "bad.0"] {
        assert!(!c.path(&format!(".data/setup/{stamp}")).exists(), "{stamp}: a step cut short has a stamp");
    }
    assert!(is_free(base) && is_free(base + 1) && !c.path(".pids/slow.json").exists(), "a service started:\n{out}");
}

/// `depends_on` orders the services' start, not their set-up: `late`
/// depends on `first` but its step runs beside `first`'s (each waits for the
/// other's); `user` runs a program `first`'s set-up makes, so its step
/// waits until that set-up is done.
#[test]
fn set_up_waits_for_a_dependency_only_for_what_it_makes() {
    let base = free_ports(10);
    let first = format!(
        "touch first.started; {} && sleep 0.3 && mkdir -p .data/first/bin && \
         printf '#!/bin/sh\\\\necho made >> used.out\\\\n' > .data/first/bin/tool && chmod +x .data/first/bin/tool",
        until("late.started")
    );
    let toml = format!(
        "{}[[services.first.setup]]\ncreates = \".data/first/bin/tool\"\ncommand = [\"sh\", \"-c\", \"{first}\"]\n\
         {}[[services.late.setup]]\ncommand = [\"sh\", \"-c\", \"touch late.started; {}\"]\n\
         {}[[services.user.setup]]\ncommand = [\".data/first/bin/tool\"]\n",
        http_service("first", base, ""),
        http_service("late", base + 1, "depends_on = [\"first\"]"),
        until("first.started"),
        http_service("user", base + 2, "depends_on = [\"first\"]"),
    );
    let c = Checkout::new(XTASK, &toml);
    let out = c.ok(&["start"]);
    assert_eq!(c.read("used.out").as_deref(), Some("made\n"), "{out}");
    assert!(out.contains("✓ set up 3 services in"), "{out}");
    c.ok(&["stop"]);
}
