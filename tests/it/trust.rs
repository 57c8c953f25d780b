//! The third round of attacks on lorch's newer surfaces (store permissions, resume, backfill,
//! accounts, schedules, values nobody should give): each test is a row of docs/faults.md that
//! failed before its fix.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use crate::common;
use crate::pipelines::pipeline_run_id;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The store holds every payload, object and failed job's last lines: its directory is 0700
/// and its files 0600 whatever the umask, and an existing home others can read is repaired,
/// said once.
#[test]
fn the_store_is_readable_by_its_owner_only_and_an_open_one_is_repaired_once() {
    let (_plugins, env) = common::testkit_env();
    let home = env.home.path().join("lorch");
    let mut cmd = env.cmd(&["run-job", "testkit", "echo", "--quiet"]);
    // SAFETY: umask is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::umask(0);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&home), 0o700);
    for file in ["events.db", "events.db-wal", "events.db-shm"] {
        let path = home.join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }

    // A home made by an earlier lorch, open to everyone: repaired, and said so once.
    chmod(&home, 0o755);
    chmod(&home.join("events.db"), 0o644);
    let first = env.lorch().args(["runs", "list"]).run();
    first
        .code(0)
        .stderr_has("made ")
        .stderr_has("private (mode 0755 -> 0700)");
    first.stderr_has("private (mode 0644 -> 0600)");
    assert_eq!((mode(&home), mode(&home.join("events.db"))), (0o700, 0o600));
    let again = env.lorch().args(["runs", "list"]).run();
    again.code(0);
    assert!(!again.stderr.contains("private"), "{}", again.stderr);
}

/// Two `--resume` of one failed pipeline run started together: one runs the rest, the other
/// exits 2 naming it, every round (docs/pipelines.md).
#[test]
fn two_resumes_of_one_pipeline_run_at_once_run_it_once() {
    let (_plugins, env) = common::testkit_env();
    let flag = env.home.path().join("broken");
    env.write_config(&format!(
        "[[pipeline.p.steps]]\nname = \"a\"\njob = \"testkit/fail_if_exists\"\nparams = {{ file = {:?} }}\n\
         [[pipeline.p.steps]]\nname = \"b\"\njob = \"testkit/sleep\"\nneeds = [\"a\"]\nparams = {{ seconds = 0.3 }}\n",
        flag.display().to_string()
    ));
    for round in 0..5 {
        std::fs::write(&flag, "").unwrap();
        let failed = env.run(&["run-pipeline", "p"]);
        failed.code(1);
        let id = pipeline_run_id(&failed);
        std::fs::remove_file(&flag).unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                env.cmd(&["run-pipeline", "p", "--resume", &id])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<common::Run> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap().into())
            .collect();
        let codes: Vec<i32> = outs.iter().map(|o| o.code).collect();
        let (winner, loser) = match codes.as_slice() {
            [0, 2] => (&outs[0], &outs[1]),
            [2, 0] => (&outs[1], &outs[0]),
            _ => panic!("round {round}: exit codes {codes:?}: {outs:?}"),
        };
        let winner_id = pipeline_run_id(winner);
        assert!(
            loser
                .stderr
                .contains(&format!("being resumed already, by {winner_id}"))
                || loser
                    .stderr
                    .contains(&format!("was resumed already, by {winner_id}")),
            "round {round}: {}",
            loser.stderr
        );
    }
}

/// Completed runs per window of `testkit/sleep`.
fn completed_windows(env: &common::Env) -> std::collections::HashMap<String, usize> {
    let out = env.run(&["runs", "list", "--limit", "1000", "--json"]);
    let mut by_window = std::collections::HashMap::new();
    for run in out.json()["runs"].as_array().unwrap() {
        if run["status"] == "completed" {
            *by_window
                .entry(run["window_since"].to_string())
                .or_default() += 1;
        }
    }
    by_window
}

/// Two identical backfills a moment apart: every window completes once; a window the other
/// completed while this one waited is counted as done, not run again (docs/windows.md).
#[test]
fn two_backfills_at_once_complete_each_window_once() {
    let (_plugins, env) = common::testkit_env();
    let backfill = || {
        env.cmd(&["backfill", "testkit/sleep", "--since", "2026-01-01"])
            .args(["--until", "2026-01-07", "--step", "1d", "--keep-going"])
            .args(["--param", "seconds=0.3"])
            .env("LORCH_NOW", "2026-06-01T00:00:00Z")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = backfill();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let second = backfill();
    let outs: Vec<common::Run> = [first, second]
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().into())
        .collect();
    let windows = completed_windows(&env);
    assert_eq!(windows.len(), 6, "{outs:?}");
    assert!(windows.values().all(|&n| n == 1), "{windows:?}: {outs:?}");
    // Run again: every window is done.
    let again = env
        .lorch()
        .args(["backfill", "testkit/sleep", "--since", "2026-01-01"])
        .args([
            "--until",
            "2026-01-07",
            "--step",
            "1d",
            "--param",
            "seconds=0.3",
        ])
        .env("LORCH_NOW", "2026-06-01T00:00:00Z")
        .run();
    again
        .code(0)
        .stdout_has("✓ 0 completed, 0 failed, 6 skipped (already done)");
}

/// `kill -9` of a backfill while a window runs: the run is cancelled and recorded as such,
/// not left going on unsupervised.
#[test]
fn a_killed_backfill_takes_its_running_window_with_it() {
    let (_plugins, env) = common::testkit_env();
    let (mut backfill, sleeping) = common::backfill_sleeping(&env);
    backfill.kill().unwrap();
    backfill.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !common::gone(sleeping) {
        assert!(
            std::time::Instant::now() < deadline,
            "the job outlived its backfill"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let failed = loop {
        let events = env.all_events();
        if let Some(e) = events.into_iter().find(|e| e["event_type"] == "job.failed") {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run was not recorded"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(failed["payload"]["reason"], "cancelled");
}

/// An empty account would be a second "no account" (another lock, the same watermark): refused
/// on the command line and in lorch.toml, as are control characters.
#[test]
fn an_empty_account_or_one_with_control_characters_is_refused() {
    let (_plugins, env) = common::testkit_env();
    for account in ["", "a\tb", "new\nline"] {
        env.run(&["run-job", "testkit", "echo", "--account", account])
            .code(2)
            .stderr_has("invalid value");
    }
    env.run(&["run-job", "testkit", "echo", "--account", ""])
        .stderr_has("an account cannot be empty");
    assert!(env.all_events().is_empty(), "nothing was recorded");
    env.write_config("[jobs.\"testkit/echo\"]\naccount = \"\"\n");
    env.run(&["config", "check"]).code(2).stderr_has(
        "lorch.toml:2:11: [jobs.\"testkit/echo\"]: account: an account cannot be empty",
    );
}

/// A tick that died after its pipeline ran, before recording the fire time: the next tick does
/// not run the pipeline's steps again (docs/schedules.md, "Never twice").
#[test]
fn a_scheduled_pipeline_is_not_run_again_for_a_fire_time_it_covered() {
    let (_plugins, env) = common::testkit_env();
    env.write_config(
        "[[schedule]]\npipeline = \"daily\"\ncron = \"0 6 * * *\"\n\n\
         [[pipeline.daily.steps]]\nname = \"a\"\njob = \"testkit/echo\"\n",
    );
    let tick = || {
        env.lorch()
            .args(["tick", "--quiet"])
            .env("LORCH_NOW", "2026-11-01T06:00:30Z")
            .run()
    };
    tick().code(0);
    let pipeline_runs = || {
        env.all_events()
            .iter()
            .filter(|e| e["event_type"] == "pipeline.started")
            .count()
    };
    assert_eq!(pipeline_runs(), 1);
    // As if that tick had died before recording the fire time.
    let db = rusqlite::Connection::open(env.home.path().join("lorch/events.db")).unwrap();
    db.execute("DELETE FROM schedules", []).unwrap();
    tick().code(0);
    assert_eq!(pipeline_runs(), 1, "the fire time ran twice");
}

/// The NATS URL (it may hold a password) reaches neither a job nor a hook, and a hook that
/// leaves a child in the background does not keep lorch's stderr, so cron, waiting.
#[test]
fn secrets_stay_in_lorch_and_a_hooks_background_child_does_not_hold_its_output() {
    let (_plugins, env) = common::testkit_env();
    let seen = env.home.path().join("hook-env");
    env.write_config(&format!(
        "[notify]\non_failure = \"echo hooked; env > {}; sleep 60 &\"\n",
        seen.display()
    ));
    let url = "nats://lorch:s3cret@127.0.0.1:1";
    let job = env
        .lorch()
        .args([
            "run-job",
            "testkit",
            "env",
            "--param",
            "name=LORCH_NATS_URL",
        ])
        .env("LORCH_NATS_URL", url)
        .run();
    job.code(0);
    let emitted = env
        .all_events()
        .into_iter()
        .find(|e| e["event_type"] == "testkit.env")
        .unwrap();
    assert_eq!(emitted["payload"]["value"], serde_json::Value::Null);

    let started = std::time::Instant::now();
    let failed = env
        .cmd(&["run-job", "testkit", "fail"])
        .env("LORCH_NATS_URL", url)
        .output()
        .unwrap();
    let failed = common::Run::from(failed);
    failed.code(1).stderr_has("hooked");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "lorch's stderr was held by the hook's background child"
    );
    let hook_env = std::fs::read_to_string(&seen).unwrap();
    assert!(hook_env.contains("LORCH_EVENT=failure"), "{hook_env}");
    assert!(!hook_env.contains("s3cret"), "{hook_env}");
}

/// Values that were accepted and then did nothing, or the wrong thing: refused, each at its
/// place in lorch.toml, and on the command line.
#[test]
fn values_that_would_silently_do_nothing_are_refused() {
    let (_plugins, env) = common::testkit_env();
    env.write_config(
        "[jobs.\"testkit/echo\"]\nsince = \"3026-01-01\"\n\
         [[schedule]]\njob = \"testkit/echo\"\ncron = \"@daily\"\nmax_catch_up = \"0s\"\n\
         [metrics]\ndir = \"\"\n",
    );
    env.run(&["config", "check"])
        .code(2)
        .stderr_has(":2:9: [jobs.\"testkit/echo\"]: since: '3026-01-01' is in the future")
        .stderr_has(":6:16: schedule 1: max_catch_up: '0s' is shorter than a minute")
        .stderr_has(":8:7: [metrics]: dir is empty");
    std::fs::remove_file(env.home.path().join(".config/lorch/lorch.toml")).unwrap();
    env.run(&["run-job", "testkit", "echo", "--since", "3026-01-01"])
        .code(2)
        .stderr_has("--since '3026-01-01' (3026-01-01T00:00:00Z) is in the future");
}

/// The line `schedule install --cron` prints works as cron runs it: from another directory
/// (every path absolute, `LORCH_HOME` too), with a space, `%` and `;` in its paths (quoted,
/// `%` escaped).
#[test]
fn the_printed_cron_line_runs_from_another_directory_with_awkward_paths() {
    let (plugins, env) = common::testkit_env();
    let odd = env.home.path().join("my dir;50%");
    std::fs::create_dir_all(odd.join("plugins")).unwrap();
    for entry in std::fs::read_dir(plugins.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), odd.join("plugins").join(entry.file_name())).unwrap();
    }
    std::fs::write(
        odd.join("lorch.toml"),
        "[[schedule]]\njob = \"testkit/echo\"\ncron = \"* * * * *\"\n",
    )
    .unwrap();
    let printed = common::Run::from(
        std::process::Command::new(env!("CARGO_BIN_EXE_lorch"))
            .current_dir(env.home.path())
            // Relative, with a space: made absolute, and an assignment the shell still reads.
            .env("LORCH_HOME", "state dir")
            .env_remove("LORCH_PLUGIN_PATH")
            .env_remove("LORCH_CONFIG")
            .args([
                "--config",
                "my dir;50%/lorch.toml",
                "--plugin-path",
                "my dir;50%/plugins",
            ])
            .args(["schedule", "install", "--cron"])
            .output()
            .unwrap(),
    );
    printed.code(0);
    let line = printed
        .stdout
        .lines()
        .find(|l| l.starts_with("* * * * * "))
        .unwrap()
        .trim_start_matches("* * * * * ")
        .to_owned();
    assert!(line.contains(r"50\%"), "{line}");
    // As cron does: `\%` becomes `%`, and /bin/sh runs the rest, here from `/`.
    let command = line.replace(r"\%", "%");
    let ran = common::Run::from(
        std::process::Command::new("/bin/sh")
            .args(["-c", &command])
            .current_dir("/")
            .env("LORCH_NOW", "2026-11-01T06:00:30Z")
            .output()
            .unwrap(),
    );
    ran.code(0);
    let runs = env
        .lorch()
        .args(["runs", "list", "--json"])
        .env(
            "LORCH_HOME",
            env.home.path().join("state dir").to_str().unwrap(),
        )
        .run();
    assert_eq!(runs.json()["runs"][0]["job"], "echo", "{line}");
}
