//! What lorch guarantees when the machine, other users or absurd input work against it: each
//! test here is a row of the fault table in docs/faults.md.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{
    Env, Run, gone, lib_name, plugin_dir, run_testkit as run, signal, start, types,
};

use crate::common::testkit_env as env;

fn store(env: &Env) -> PathBuf {
    env.home.path().join("lorch/events.db")
}

/// The events in the store, counted as another process would, without lorch.
fn stored_events(env: &Env) -> i64 {
    if !store(env).exists() {
        return 0;
    }
    let conn = rusqlite::Connection::open(store(env)).unwrap();
    conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// Other users' code ---------------------------------------------------------------------------

#[test]
fn a_plugin_reached_through_a_directory_another_user_can_write_is_refused() {
    let built = plugin_dir(&["testkit"]);
    // A root-owned (or your own) plugin file in a directory anyone can write: anyone can swap it.
    let open = tempfile::tempdir().unwrap();
    chmod(open.path(), 0o777);
    let target = open.path().join(lib_name("testkit"));
    std::fs::copy(built.path().join(lib_name("testkit")), &target).unwrap();
    chmod(&target, 0o644);
    let mine = tempfile::tempdir().unwrap();
    symlink(&target, mine.path().join(lib_name("testkit"))).unwrap();
    let env = Env::new(&[mine.path()]);
    let out = env.run(&["run-job", "testkit", "echo"]);
    out.code(3);
    let open_dir = open.path().canonicalize().unwrap();
    assert!(
        out.stderr.contains(&format!(
            "the plugin directory {} is group- and world-writable",
            open_dir.display()
        )),
        "{out:?}"
    );
    assert_eq!(stored_events(&env), 0);

    // A plugin directory whose parent anyone can write: they can rename it and put theirs.
    let parent = tempfile::tempdir().unwrap();
    chmod(parent.path(), 0o777);
    let dir = parent.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(
        built.path().join(lib_name("testkit")),
        dir.join(lib_name("testkit")),
    )
    .unwrap();
    let env = Env::new(&[&dir]);
    let out = env.run(&["run-job", "testkit", "echo"]);
    out.code(3);
    assert!(
        out.stderr.contains(&format!(
            "the directory {} is group- and world-writable",
            parent.path().canonicalize().unwrap().display()
        )),
        "{out:?}"
    );
    // Like /tmp, a sticky directory lets nobody rename what is not theirs.
    chmod(parent.path(), 0o1777);
    assert_eq!(env.run(&["run-job", "testkit", "echo"]).code, 0);
}

#[test]
fn the_worker_runs_the_file_lorch_checked_never_the_path_again() {
    let Some(strace) = common::strace() else {
        return;
    };
    let (plugins, env) = env();
    let plugin = plugins.path().join(lib_name("testkit"));
    let trace = env.home.path().join("trace.txt");
    let mut traced = Command::new(strace);
    traced
        .args(["-f", "-e", "trace=openat,execve", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_lorch"));
    let out = Run::from(
        env.cmd_in(traced, &["run-job", "testkit", "echo"])
            .output()
            .unwrap(),
    );
    out.code(0);
    let calls = std::fs::read_to_string(&trace).unwrap();
    let pid = |line: &str| line.split_whitespace().next().unwrap_or("").to_owned();
    let lorch = pid(calls.lines().next().unwrap());
    let worker = calls
        .lines()
        .find(|l| l.contains("execve(") && l.contains("__worker"))
        .map(pid)
        .expect("no worker started");
    let by_path: Vec<&str> = calls
        .lines()
        .filter(|l| l.contains(&plugin.display().to_string()) && l.contains("openat("))
        .collect();
    assert!(
        !by_path.is_empty(),
        "lorch never opened the plugin: {calls}"
    );
    assert!(
        by_path.iter().all(|l| pid(l) == lorch),
        "a process other than lorch opened the plugin by its path: {by_path:#?}"
    );
    assert!(
        calls
            .lines()
            .any(|l| pid(l) == worker && l.contains("\"/proc/self/fd/")),
        "the worker did not load the descriptor it was handed: {calls}"
    );
}

// Another process in LORCH_HOME --------------------------------------------------------------

#[test]
fn a_lock_file_replaced_by_a_link_is_refused_and_its_target_untouched() {
    let (_p, env) = env();
    let locks = env.home.path().join("lorch/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let victim = env.home.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    symlink(&victim, locks.join("testkit.echo.%.lock")).unwrap();
    let out = env.run(&["run-job", "testkit", "echo"]);
    out.code(3);
    out.stderr_has("symbolic link");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(stored_events(&env), 0, "nothing ran");
}

#[test]
fn a_run_id_from_the_store_never_becomes_a_path_outside_runs() {
    let (_p, env) = env();
    assert_eq!(env.run(&["run-job", "testkit", "echo"]).code, 0);
    let conn = rusqlite::Connection::open(store(&env)).unwrap();
    conn.execute(
        "INSERT INTO runs (run_id, package, job, status, attempt, started_at)
         VALUES ('../../outside', 'testkit', 'echo', 'running', 1, '2026-01-01T00:00:00Z')",
        [],
    )
    .unwrap();
    for args in [&["runs", "list"][..], &["runs", "reap"]] {
        let out = env.run(args);
        out.code(0);
        assert!(
            out.stderr.contains("is not one lorch made"),
            "{args:?}: {out:?}"
        );
    }
    assert!(!env.home.path().join("outside.lock").exists());
}

#[test]
fn lock_files_of_runs_killed_before_they_started_are_cleaned_up() {
    let (_p, env) = env();
    assert_eq!(env.run(&["run-job", "testkit", "echo"]).code, 0);
    let runs = env.home.path().join("lorch/runs");
    let stale = runs.join("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.lock");
    let live = runs.join("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c.lock");
    std::fs::write(&stale, "").unwrap();
    let held = std::fs::File::create(&live).unwrap();
    held.lock().unwrap();
    let out = env.run(&["runs", "list"]);
    out.code(0);
    assert!(!stale.exists(), "a dead run's lock file stayed");
    assert!(live.exists(), "a live process's lock file was removed");
}

// Terminal injection --------------------------------------------------------------------------

#[test]
fn escape_codes_from_plugins_and_jobs_are_printed_escaped() {
    let (_p, env) = env();
    let (out, events) = run(&env, &["ansi"]);
    out.code(1);
    let run_id = out.run_id();
    let escaped = "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}";
    let mut shown = vec![("run-job", out)];
    for args in [
        &["events", "list"][..],
        &["events", "list", "--json"],
        &["runs", "show", &run_id],
        &["runs", "list"],
        &["jobs", "show", "testkit", "ansi"],
    ] {
        shown.push((args[0], env.run(args)));
    }
    for (what, out) in &shown {
        assert!(
            !out.stdout.contains('\u{1b}') && !out.stderr.contains('\u{1b}'),
            "{what} printed a raw escape: {out:?}"
        );
    }
    assert!(shown[0].1.stderr.contains(escaped), "{:?}", shown[0].1);
    // JSON stays JSON: the same characters as JSON escapes.
    for out in [&shown[2].1, &env.run(&["runs", "show", &run_id, "--json"])] {
        out.json();
        out.stdout_has("testkit.\\u001b[31mred\\u007f\\u202e");
    }
    assert!(
        shown[1]
            .1
            .stdout
            .contains("testkit.\\u{1b}[31mred\\u{7f}\\u{202e}")
    );
    assert!(shown[5].1.stdout.contains(escaped), "{:?}", shown[5].1);
    // What was stored is what the job said.
    assert_eq!(
        events[1]["event_type"],
        "testkit.\u{1b}[31mred\u{7f}\u{202e}"
    );
}

// Nothing lost behind an exit 0 ---------------------------------------------------------------

#[test]
fn a_run_waits_for_a_store_another_process_holds_longer_than_the_busy_timeout() {
    let (_p, env) = env();
    let go = env.home.path().join("go");
    let go_param = format!("go={}", go.display());
    let busy = [("LORCH_STORE_BUSY_TIMEOUT", "200ms".to_owned())];
    let child = common::start_with(
        &env,
        &busy,
        &["emit_when", "--param", &go_param, "--param", "count=3000"],
        "testkit.waiting",
    );
    // Another process takes the store; the job then emits everything and returns, while lorch
    // holds its events (and, once the worker is gone, still waits to store them) for several
    // busy time-outs: with the time-out alone, the run would give up and drop them.
    let conn = rusqlite::Connection::open(store(&env)).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::fs::write(&go, "").unwrap();
    while !common::with_suffix(&go, ".refused").exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(2500));
    conn.execute_batch("COMMIT").unwrap();
    let out = Run::from(child.wait_with_output().unwrap());
    out.code(0);
    out.stderr_has("is busy");
    let refused = std::fs::read_to_string(common::with_suffix(&go, ".refused")).unwrap();
    assert_eq!(
        refused, "0",
        "the job's emit failed while the store was only busy"
    );
    let events = env.events(&out.run_id());
    let types = types(&events);
    assert_eq!(types.len(), 3003, "{types:?}");
    assert_eq!(types[3002], "job.completed");
}

#[test]
fn a_job_that_closes_every_inherited_descriptor_still_has_its_events_and_result_kept() {
    let (_p, env) = env();
    let (out, events) = run(&env, &["close_fds", "--param", "count=3000"]);
    out.code(0);
    let types = types(&events);
    assert_eq!(types.len(), 3003, "{out:?}");
    assert_eq!(types[3001], "testkit.scratch");
    assert_eq!(types[3002], "job.completed");
    assert_eq!(
        events[3001]["payload"]["bytes_written_by_others"], 0,
        "lorch wrote into a file the job opened"
    );
}

#[test]
fn events_lorch_cannot_store_fail_the_job_emit_and_the_run() {
    let (_p, env) = env();
    let go = env.home.path().join("go");
    let go_param = format!("go={}", go.display());
    let child = start(
        &env,
        &["emit_when", "--param", &go_param, "--param", "count=100000"],
        "testkit.waiting",
    );
    // Another program removes the store's shared memory: writing on would damage the store.
    std::fs::remove_file(common::with_suffix(&store(&env), "-shm")).unwrap();
    std::fs::write(&go, "").unwrap();
    let out = Run::from(child.wait_with_output().unwrap());
    out.code(3);
    out.stderr_has("was removed or replaced");
    out.stderr_has("of its events and objects were not recorded");
    let refused: usize = std::fs::read_to_string(format!("{}.refused", go.display()))
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused > 0, "the job's emit never failed");
    // The store still reads, and the run is not left "running": it is visibly abandoned.
    let runs = env.run(&["runs", "list", "--json"]);
    runs.code(0);
    let run = &runs.json()["runs"][0];
    assert_eq!(run["status"], "failed", "{runs:?}");
    assert_eq!(run["reason"], "abandoned", "{runs:?}");
}

#[test]
fn a_store_lorch_cannot_use_is_refused_with_the_way_out_never_replaced() {
    let (_p, env) = env();
    let path = store(&env);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let foreign = |setup: &dyn Fn(&Path)| {
        let _ = std::fs::remove_file(&path);
        setup(&path);
        let before = std::fs::read(&path).unwrap();
        let out = env.run(&["run-job", "testkit", "echo"]);
        out.code(3);
        assert!(
            out.stderr.contains(&format!(
                "Move it aside (mv {0} {0}.broken)",
                path.display()
            )),
            "{out:?}"
        );
        assert!(
            std::fs::read(&path).unwrap() == before,
            "the file was changed: {out:?}"
        );
        out
    };
    let out = foreign(&|p| std::fs::write(p, "").unwrap());
    out.stderr_has("is empty (0 bytes)");
    let out = foreign(&|p| std::fs::write(p, "not a database, just text\n".repeat(100)).unwrap());
    out.stderr_has("is not a SQLite database");
    let out = foreign(&|p| {
        let conn = rusqlite::Connection::open(p).unwrap();
        conn.execute_batch("CREATE TABLE contacts (name TEXT)")
            .unwrap();
    });
    out.stderr_has("another program");

    std::fs::remove_file(&path).unwrap();
    std::fs::remove_dir(path.parent().unwrap()).unwrap();
    std::fs::write(path.parent().unwrap(), "").unwrap();
    let out = env.run(&["run-job", "testkit", "echo"]);
    out.code(3);
    out.stderr_has("is not a directory");
}

// Absurd values and closed outputs ------------------------------------------------------------

#[test]
fn absurd_durations_are_usage_errors_before_anything_runs() {
    let (_p, env) = env();
    for (flag, value, says) in [
        ("--timeout", "300000000000y", "100 years"),
        ("--wait-lock", "300000000000y", "100 years"),
        ("--kill-after", "300000000000y", "100 years"),
        ("--retry-backoff", "300000000000y", "100 years"),
        ("--timeout", "0s", "longer than zero"),
        ("--timeout", "soon", "expected a duration such as 30s"),
    ] {
        let out = env.run(&["run-job", "testkit", "echo", flag, value]);
        assert_eq!(out.code, 2, "{flag} {value}: {out:?}");
        assert!(
            out.stderr.contains(flag) && out.stderr.contains(says),
            "{flag} {value}: {out:?}"
        );
    }
    let out = env.run(&["events", "flush", "--timeout", "300000000000y"]);
    out.code(2);
    env.lorch()
        .args(["run-job", "testkit", "echo"])
        .env("BQ_EVENTS_DATASET", "d")
        .env("BQ_EVENTS_TABLE", "t")
        .env("LORCH_BQ_FLUSH_TIMEOUT", "300000000000y")
        .run()
        .code(2)
        .stderr_has("LORCH_BQ_FLUSH_TIMEOUT");
    assert_eq!(stored_events(&env), 0, "a usage error recorded something");
}

#[test]
fn a_closed_or_full_output_never_changes_the_exit_code() {
    let (_p, env) = env();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let out = env
        .cmd(&["run-job", "testkit", "fail"])
        .stderr(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr full");
    let out = env
        .cmd(&["run-job", "testkit", "echo"])
        .stdout(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stdout full");
    // stderr closed altogether (`2>&-`).
    let mut closed = Command::new("sh");
    closed.args(["-c", "exec \"$0\" \"$@\" 2>&-", env!("CARGO_BIN_EXE_lorch")]);
    let out = env
        .cmd_in(closed, &["run-job", "testkit", "fail"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr closed");
}

#[test]
fn a_million_event_listing_streams_in_constant_memory_and_stops_at_a_closed_pipe() {
    let (_p, env) = env();
    let (out, _) = run(&env, &["emit_many", "--param", "count=100000"]);
    out.code(0);
    let mut child = env
        .cmd(&["events", "list", "--limit", "1000000", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads yet: lorch fills the pipe and waits in write(2) on stdout. Its peak memory
    // then is what it needed to start printing (holding all 100,000 events first took ~270 MB).
    let proc_file = |name: &str| std::fs::read_to_string(format!("/proc/{}/{name}", child.id()));
    let field = |text: &str, name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let write_to_stdout = if cfg!(target_arch = "aarch64") {
        "64 0x1 "
    } else {
        "1 0x1 "
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !proc_file("syscall").is_ok_and(|s| s.starts_with(write_to_stdout)) {
        assert!(Instant::now() < deadline, "lorch never filled the pipe");
        std::thread::sleep(Duration::from_millis(20));
    }
    let peak_kib = field(&proc_file("status").unwrap(), "VmHWM:");
    // The reader goes away (`| head -1`): lorch stops, without an error.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "{");
    let out = Run::from(child.wait_with_output().unwrap());
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{out:?}");
    assert!(peak_kib < 60 * 1024, "events list needed {peak_kib} KiB");

    // And the whole listing is one JSON document.
    let all = env.run(&["events", "list", "--limit", "1000000", "--json"]);
    assert_eq!(all.json()["events"].as_array().unwrap().len(), 100_002);
}

// Signals and kill -9 -------------------------------------------------------------------------

#[test]
fn sighup_and_sigquit_cancel_the_run_like_sigterm() {
    let (_p, env) = env();
    for (name, code) in [("HUP", 129), ("QUIT", 131)] {
        let child = start(
            &env,
            &["sleep", "--param", "seconds=60"],
            "testkit.sleeping",
        );
        signal(&child, name);
        let out = Run::from(child.wait_with_output().unwrap());
        assert_eq!(out.code, code, "{name}: {out:?}");
        let events = env.events(&out.run_id());
        let failed = events.last().unwrap();
        assert_eq!(failed["event_type"], "job.failed");
        assert_eq!(failed["payload"]["reason"], "cancelled");
        assert_eq!(failed["payload"]["signal"], format!("SIG{name}"));
    }
}

#[test]
fn kill_9_of_lorch_takes_the_job_and_every_process_it_started_with_it() {
    let (_p, env) = env();
    let mut child = start(&env, &["grandchild"], "testkit.grandchild");
    let event = env
        .all_events()
        .into_iter()
        .find(|e| e["event_type"] == "testkit.grandchild")
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let sleep = event["payload"]["pid"].as_u64().unwrap();
    let worker = event["payload"]["worker"].as_u64().unwrap();
    assert!(gone(worker), "the worker outlived lorch");
    assert!(gone(sleep), "a process the job started outlived lorch");
    // The run is visibly abandoned, and the next run of the job is not blocked.
    let out = env.run(&["run-job", "testkit", "sleep", "--param", "seconds=0"]);
    out.code(0);
}

#[test]
fn kill_9_of_lorch_at_any_moment_leaves_no_worker_behind() {
    let (_p, env) = env();
    let home = env.home.path().display().to_string();
    let mut rng = fastrand::Rng::with_seed(9);
    let ours = format!("{home}/lorch");
    for attempt in 0..60 {
        let mut child = env
            .cmd(&["run-job", "testkit", "hang"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if attempt % 2 == 0 {
            // The moment the worker exists: before it could arm anything itself.
            let lorch = child.id();
            let give_up = Instant::now() + Duration::from_secs(10);
            while !common::processes_with_env("LORCH_HOME", &ours)
                .iter()
                .any(|pid| *pid != lorch)
                && Instant::now() < give_up
            {}
        } else {
            std::thread::sleep(Duration::from_micros(rng.u64(0..40_000)));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = common::processes_with_env("LORCH_HOME", &ours);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "workers outlived lorch: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// Fuzzed command lines ------------------------------------------------------------------------

/// Values that have broken command-line tools: empty, signs, huge numbers, units out of range,
/// escapes, other scripts, paths, very long text.
const NASTY: &[&str] = &[
    "",
    "-",
    "--",
    "0",
    "-1",
    "1",
    "99999999999999999999",
    "-99999999999999999999",
    "18446744073709551616",
    "1e309",
    "NaN",
    "0s",
    "300000000000y",
    "1ns",
    "-7d",
    "7d",
    "2024-02-30",
    "24-01-01",
    "9999-12-31T23:59:59Z",
    "now",
    "last",
    "=",
    "a=b=c",
    "n=1",
    "n=99999999999999999999",
    "flag=maybe",
    "日本語",
    "\u{1b}[2J",
    "\u{202e}gnp.exe",
    "../../etc/passwd",
    "%s%s%n",
    "testkit/echo",
    "a.b.c.d",
    "running",
];

fn fuzz_value(rng: &mut fastrand::Rng) -> String {
    match rng.u8(0..10) {
        0 => "x".repeat(rng.usize(200..5000)),
        1 => rng.u64(..).to_string(),
        2 => format!(
            "{}{}",
            rng.u32(..),
            ["s", "m", "h", "d", "w", "y", "M"][rng.usize(0..7)]
        ),
        _ => NASTY[rng.usize(0..NASTY.len())].to_owned(),
    }
}

fn fuzz_command(rng: &mut fastrand::Rng) -> Vec<String> {
    let v = |rng: &mut fastrand::Rng| fuzz_value(rng);
    let run_flags = [
        "--account",
        "--since",
        "--until",
        "--param",
        "--trace-id",
        "--timeout",
        "--kill-after",
        "--retries",
        "--retry-backoff",
        "--wait-lock",
        "--events-table",
    ];
    // Each command with its flags; `V` is replaced by a fuzzed value.
    const OTHERS: &[&[&str]] = &[
        &["run", "V", "--since", "V", "--until", "V"],
        &["events", "list", "--run", "V", "--limit", "V"],
        &["events", "status"],
        &["events", "flush", "--timeout", "V", "--retry-dead"],
        &["events", "init", "--dry-run", "--events-table", "V"],
        &[
            "runs", "list", "--job", "V", "--status", "V", "--limit", "V",
        ],
        &["runs", "show", "V"],
        &["runs", "reap"],
        &["jobs", "list", "V"],
        &["jobs", "show", "V", "V"],
        &["plugins", "list"],
    ];
    let mut args: Vec<String> = if rng.bool() {
        let mut args = vec!["run-job".into(), "testkit".into(), "echo".into()];
        for _ in 0..rng.usize(1..4) {
            args.push(run_flags[rng.usize(0..run_flags.len())].into());
            args.push(v(rng));
        }
        args
    } else {
        let command = OTHERS[rng.usize(0..OTHERS.len())];
        // Flags are left out now and then, values never: a flag without its value is only
        // clap's error.
        let mut args = Vec::new();
        for (i, word) in command.iter().enumerate() {
            match *word {
                "V" if command[i - 1].starts_with("--") => {}
                "V" => args.push(v(rng)),
                flag if flag.starts_with("--") && command.get(i + 1) == Some(&"V") => {
                    if rng.u8(0..4) > 0 {
                        args.push(flag.into());
                        args.push(v(rng));
                    }
                }
                word => args.push(word.into()),
            }
        }
        args
    };
    if rng.u8(0..10) == 0 {
        args.insert(rng.usize(0..=args.len()), "--json".into());
    }
    args
}

#[test]
fn fuzzed_flags_never_panic_and_usage_errors_record_nothing() {
    let (_p, env) = env();
    // A store with one run in it, so that reading commands have something to read.
    assert_eq!(env.run(&["run-job", "testkit", "echo"]).code, 0);
    let mut rng = fastrand::Rng::with_seed(0x10_2026);
    let mut usage_errors = 0;
    let cases = 2000;
    for _ in 0..cases {
        let args = fuzz_command(&mut rng);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let before = stored_events(&env);
        let out = env.run(&refs);
        assert!(
            (0..=3).contains(&out.code),
            "{args:?} exited {}: {out:?}",
            out.code
        );
        assert!(
            !out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"),
            "{args:?}: {out:?}"
        );
        if out.code == 2 {
            usage_errors += 1;
            assert_eq!(
                stored_events(&env),
                before,
                "{args:?} recorded something: {out:?}"
            );
        }
    }
    // Most cases are meant to be refused; the generator must reach them.
    assert!(usage_errors > cases / 2, "only {usage_errors} usage errors");
}
