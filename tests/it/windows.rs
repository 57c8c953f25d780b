//! Windows and watermarks (docs/windows.md): `--since last-success` starts where the last
//! completed window of the job and account ended, only a completion moves that point, and
//! consecutive windows tile time to the microsecond. Time is `LORCH_NOW`: nothing sleeps.

use serde_json::{Value, json};

use crate::common::{self, Env};

const T0: &str = "2026-11-01T06:00:00Z";

/// `lorch run-job testkit ARGS` at the instant `now`.
fn run_at(env: &Env, now: &str, args: &[&str]) -> common::Run {
    env.lorch()
        .args(["run-job", "testkit"])
        .args(args)
        .env("LORCH_NOW", now)
        .run()
}

/// The recorded window of a run: `(window_since, window_until)`.
fn window(env: &Env, run_id: &str) -> (Value, Value) {
    let out = env.run(&["runs", "show", run_id, "--json"]);
    out.code(0);
    let run = &out.json()["run"];
    (run["window_since"].clone(), run["window_until"].clone())
}

fn watermark(env: &Env, job: &str, account: Option<&str>) -> Value {
    let mut args = vec!["state", "show", job, "--json"];
    args.extend(account.map(|a| ["--account", a]).into_iter().flatten());
    let out = env.run(&args);
    out.code(0);
    let marks = out.json()["watermarks"].as_array().unwrap().clone();
    marks.first().map_or(Value::Null, |m| m["until"].clone())
}

#[test]
fn last_success_resumes_where_the_last_completed_window_ended() {
    let (_plugins, env) = common::testkit_env();
    let first = run_at(&env, T0, &["echo", "--since", "last-success"]);
    first.code(2);
    first.stderr_has("no run of testkit/echo has completed yet");
    first.stderr_has("--initial-since");
    assert!(env.all_events().is_empty(), "a usage error records nothing");

    let first = run_at(
        &env,
        T0,
        &["echo", "--since", "last-success", "--initial-since", "-1d"],
    );
    first.code(0);
    let args = &env.events(&first.run_id())[1]["payload"];
    assert_eq!(args["since"]["utc"], "2026-10-31T06:00:00Z");
    assert_eq!(
        args["until"],
        json!({"raw": "now", "utc": T0}),
        "the job gets the window's end"
    );
    assert_eq!(
        watermark(&env, "testkit/echo", None),
        "2026-11-01T06:00:00.000000Z"
    );

    // A day and some nanoseconds later: the window starts exactly where the last one ended and
    // ends at now, to the microsecond the store keeps.
    let second = run_at(
        &env,
        "2026-11-02T06:00:00.123456789Z",
        &["echo", "--since", "last-success"],
    );
    second.code(0);
    assert_eq!(
        window(&env, &second.run_id()),
        (
            json!("2026-11-01T06:00:00.000000Z"),
            json!("2026-11-02T06:00:00.123456Z")
        )
    );
    let args = &env.events(&second.run_id())[1]["payload"];
    assert_eq!(args["since"], json!({"raw": "last-success", "utc": T0}));

    // The watermark belongs to the account: another one starts from its own.
    let other = run_at(
        &env,
        T0,
        &["echo", "--account", "a2", "--since", "last-success"],
    );
    other.code(2);
    // A window that ends earlier (a backfill) completes without moving it back.
    let older = run_at(
        &env,
        T0,
        &["echo", "--since", "2026-10-01", "--until", "2026-10-02"],
    );
    older.code(0);
    assert_eq!(
        watermark(&env, "testkit/echo", None),
        "2026-11-02T06:00:00.123456Z"
    );
    // Neither does a dry run, a run with no start, or a window after a gap: none of them joins
    // on, so no data between the watermark and them is skipped.
    let later = "2026-11-05T06:00:00Z";
    for args in [
        &["echo", "--since", "last-success", "--dry-run"][..],
        &["echo"][..],
        &["echo", "--since", "2026-11-03", "--until", "2026-11-04"][..],
    ] {
        run_at(&env, later, args).code(0);
        assert_eq!(
            watermark(&env, "testkit/echo", None),
            "2026-11-02T06:00:00.123456Z",
            "{args:?}"
        );
    }
}

#[test]
fn a_failed_run_leaves_the_watermark_and_the_next_success_covers_its_window() {
    let (_plugins, env) = common::testkit_env();
    let counter = env.home.path().join("counter");
    let counter = format!("counter={}", counter.display());
    let flaky = |now: &str| {
        run_at(
            &env,
            now,
            &[
                "flaky",
                "--param",
                &counter,
                "--param",
                "succeed_on=3",
                "--since",
                "last-success",
                "--initial-since",
                "2026-10-31T06:00:00Z",
            ],
        )
    };
    // Attempt 1 and 2 fail (two days), attempt 3 succeeds: its window covers both.
    flaky(T0).code(1);
    assert_eq!(watermark(&env, "testkit/flaky", None), Value::Null);
    let failed = flaky("2026-11-02T06:00:00Z");
    failed.code(1);
    assert_eq!(
        window(&env, &failed.run_id()),
        (
            json!("2026-10-31T06:00:00.000000Z"),
            json!("2026-11-02T06:00:00.000000Z")
        )
    );
    let ok = flaky("2026-11-03T06:00:00Z");
    ok.code(0);
    assert_eq!(
        window(&env, &ok.run_id()),
        (
            json!("2026-10-31T06:00:00.000000Z"),
            json!("2026-11-03T06:00:00.000000Z")
        )
    );
    assert_eq!(
        watermark(&env, "testkit/flaky", None),
        "2026-11-03T06:00:00.000000Z"
    );
}

#[test]
fn state_set_and_reset_move_the_watermark_and_are_recorded_as_events() {
    let (_plugins, env) = common::testkit_env();
    let set = env
        .lorch()
        .args([
            "state",
            "set",
            "testkit/echo",
            "--account",
            "a1",
            "--to",
            "2026-10-01",
        ])
        .run();
    set.code(0);
    set.stdout_is(
        "watermark of testkit/echo (account a1): 2026-10-01T00:00:00.000000Z (was none)\n",
    );
    let resumed = run_at(
        &env,
        T0,
        &["echo", "--account", "a1", "--since", "last-success"],
    );
    resumed.code(0);
    assert_eq!(
        window(&env, &resumed.run_id()).0,
        "2026-10-01T00:00:00.000000Z"
    );
    env.run(&["state", "reset", "testkit/echo", "--account", "a1"])
        .code(0);
    assert_eq!(watermark(&env, "testkit/echo", Some("a1")), Value::Null);
    // Once more: there is nothing to reset, and no event says otherwise.
    env.run(&["state", "reset", "testkit/echo", "--account", "a1"])
        .code(0)
        .stdout_is("no watermark of testkit/echo (account a1) to reset: nothing changed\n");
    run_at(
        &env,
        T0,
        &["echo", "--account", "a1", "--since", "last-success"],
    )
    .code(2);

    let changes: Vec<Value> = env
        .all_events()
        .into_iter()
        .filter(|e| e["object_type"] == "watermark")
        .collect();
    assert_eq!(common::types(&changes), ["state.set", "state.reset"]);
    assert_eq!(changes[0]["source_system"], "lorch");
    assert_eq!(
        changes[1]["payload"],
        json!({"package": "testkit", "job": "echo", "account": "a1", "until": null,
               "previous": "2026-11-01T06:00:00.000000Z"})
    );

    env.run(&["state", "set", "testkit/nope", "--to", "today"])
        .code(2);
    env.run(&["state", "set", "testkit/echo", "--to", "soon"])
        .code(2)
        .stderr_has("invalid value 'soon' for --to");
}

#[test]
fn window_mistakes_are_usage_errors_that_record_nothing() {
    let (_plugins, env) = common::testkit_env();
    run_at(&env, "yesterday", &["echo"])
        .code(2)
        .stderr_has("invalid LORCH_NOW 'yesterday'");
    run_at(&env, T0, &["echo", "--initial-since", "-1d"])
        .code(2)
        .stderr_has("give --since last-success with it");
    env.run(&["state", "set", "testkit/echo", "--to", "2026-12-01"])
        .code(0);
    run_at(&env, T0, &["echo", "--since", "last-success"])
        .code(2)
        .stderr_has("later than --until 'now'");
    assert!(
        env.all_events()
            .iter()
            .all(|e| e["object_type"] == "watermark")
    );
}

#[test]
fn a_backfill_resumes_with_the_failed_window_only() {
    let (_plugins, env) = common::testkit_env();
    let marker = env.home.path().join("failing");
    std::fs::write(&marker, "").unwrap();
    let file = format!("file={}", marker.display());
    let backfill = |extra: &[&str]| {
        env.lorch()
            .args([
                "backfill",
                "testkit/fail_on_window",
                "--since",
                "2026-01-01",
            ])
            .args(["--until", "2026-03-02", "--step", "1d"])
            .args([
                "--param",
                "fail_since=2026-01-15T00:00:00Z",
                "--param",
                &file,
            ])
            .args(extra)
            .env("LORCH_NOW", "2026-06-01T00:00:00Z")
            .run()
    };
    // Without --keep-going it stops at the failed window.
    let stopped = backfill(&[]);
    stopped.code(1);
    stopped.stderr_has("window 15/60: 2026-01-15 to 2026-01-16: not completed (exit 1)");
    stopped.stderr_has("✗ 14 completed, 1 failed, 0 skipped (already done), 45 not run");
    let first = backfill(&["--keep-going"]);
    first.code(1);
    first.stderr_has("✗ 45 completed, 1 failed, 14 skipped (already done)");

    std::fs::remove_file(&marker).unwrap();
    let again = backfill(&["--keep-going"]);
    again.code(0);
    again.stdout_has("✓ 1 completed, 0 failed, 59 skipped (already done)");
    let out = env.run(&["runs", "list", "--limit", "1000", "--json"]);
    let runs = out.json()["runs"].as_array().unwrap().clone();
    let completed: Vec<_> = runs.iter().filter(|r| r["status"] == "completed").collect();
    assert_eq!(completed.len(), 60);
    let windows: std::collections::HashSet<_> = completed
        .iter()
        .map(|r| (r["window_since"].clone(), r["window_until"].clone()))
        .collect();
    assert_eq!(windows.len(), 60, "no window completed twice");
    let started = env.events(completed[0]["run_id"].as_str().unwrap());
    assert!(started[0]["payload"]["backfill_id"].is_string());
    // The watermark is the end of the newest window; an older backfill leaves it there.
    assert_eq!(
        watermark(&env, "testkit/fail_on_window", None),
        "2026-03-02T00:00:00.000000Z"
    );
    env.lorch()
        .args([
            "backfill",
            "testkit/fail_on_window",
            "--since",
            "2025-12-01",
            "--until",
            "2025-12-03",
        ])
        .args([
            "--step",
            "1d",
            "--param",
            "fail_since=2020-01-01T00:00:00Z",
            "--param",
            &file,
        ])
        .run()
        .code(0);
    assert_eq!(
        watermark(&env, "testkit/fail_on_window", None),
        "2026-03-02T00:00:00.000000Z"
    );

    env.run(&["backfill", "testkit/echo", "--since", "-1y", "--step", "1s"])
        .code(2)
        .stderr_has("more than 100000 windows");
    env.run(&[
        "backfill",
        "testkit/echo",
        "--since",
        "now",
        "--until",
        "-1d",
        "--step",
        "1h",
    ])
    .code(2)
    .stderr_has("is later than --until");
}

#[test]
fn a_run_that_waited_for_the_lock_starts_where_the_run_it_waited_for_ended() {
    let (_plugins, env) = common::testkit_env();
    env.run(&[
        "state",
        "set",
        "testkit/sleep",
        "--to",
        "2026-10-31T06:00:00Z",
    ])
    .code(0);
    let now = [("LORCH_NOW", T0.to_owned())];
    let args = ["sleep", "--param", "seconds=1", "--since", "last-success"];
    let first = common::start_with(&env, &now, &args, "testkit.sleeping");
    // Read its start (the same watermark) before the lock, then waits for the first run.
    let second = env
        .lorch()
        .args(["run-job", "testkit"])
        .args(args)
        .args(["--wait-lock", "1m"])
        .env("LORCH_NOW", T0)
        .run();
    second.code(0);
    common::Run::from(first.wait_with_output().unwrap()).code(0);
    let out = env.run(&["runs", "list", "--json"]);
    let runs = out.json()["runs"].as_array().unwrap().clone();
    let windows: Vec<(Value, Value)> = runs
        .iter()
        .map(|r| (r["window_since"].clone(), r["window_until"].clone()))
        .collect();
    let end = json!("2026-11-01T06:00:00.000000Z");
    assert_eq!(
        windows,
        [
            (json!("2026-10-31T06:00:00.000000Z"), end.clone()),
            (end.clone(), end),
        ],
        "the second window is what the first left: nothing"
    );
}

/// Ctrl-C during a backfill: the window running is interrupted, not failed, and the summary
/// says what is left to run.
#[test]
fn an_interrupted_backfill_fails_no_window() {
    let (_plugins, env) = common::testkit_env();
    let (backfill, _) = common::backfill_sleeping(&env);
    common::signal(&backfill, "INT");
    let out = common::Run::from(backfill.wait_with_output().unwrap());
    out.code(130)
        .stderr_has("window 1/2: 2026-01-01 to 2026-01-02: interrupted; it stays to run")
        .stderr_has("✗ 0 completed, 0 failed, 0 skipped (already done), 2 not run");
}
