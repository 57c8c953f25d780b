//! Overlap locks and run history: a second run of a busy job is skipped, and no run shows
//! "running" forever after its lorch process died.

use crate::common::{Run, gone, signal, start, types};
use serde_json::json;

use crate::common::testkit_env as env;

#[test]
fn a_second_run_of_the_same_job_and_account_is_skipped_with_exit_75() {
    let (_p, env) = env();
    let first = start(
        &env,
        &["sleep", "--param", "seconds=2", "--account", "a"],
        "testkit.sleeping",
    );
    let holder = env.all_events()[0].clone();

    // A run of the sleep job that returns at once, with extra flags.
    let quick = |extra: &[&str]| {
        let mut args = vec!["run-job", "testkit", "sleep", "--param", "seconds=0"];
        args.extend_from_slice(extra);
        env.run(&args)
    };
    let second = quick(&["--account", "a"]);
    second.code(75);
    let holder_run = holder["correlation_id"].as_str().unwrap();
    assert!(
        second
            .stderr
            .contains(&format!("- testkit/sleep skipped: run {holder_run} (pid ")),
        "{second:?}"
    );
    let summary = quick(&["--account", "a", "--json"]);
    summary.code(75);
    assert_eq!(
        (&summary.json()["status"], &summary.json()["reason"]),
        (&json!("skipped"), &json!("locked"))
    );
    let skipped = env.events(&second.run_id());
    assert_eq!(types(&skipped), ["job.skipped"]);
    assert_eq!(skipped[0]["status"], "ok");
    assert_eq!(skipped[0]["payload"]["reason"], "locked");
    assert_eq!(
        skipped[0]["payload"]["holder"],
        json!({ "run_id": holder_run, "pid": holder["payload"]["pid"] })
    );

    // Another account is another lock.
    let other = quick(&["--account", "b"]);
    other.code(0);
    // --no-lock overlaps on purpose.
    let overlap = quick(&["--account", "a", "--no-lock"]);
    overlap.code(0);
    // --wait-lock waits for the holder to finish.
    let waited = quick(&["--account", "a", "--wait-lock", "30s"]);
    waited.code(0);
    assert_eq!(Run::from(first.wait_with_output().unwrap()).code, 0);
}

#[test]
fn two_runs_started_together_one_runs_the_other_is_skipped() {
    let (_p, env) = env();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            env.cmd(&[
                "run-job",
                "testkit",
                "sleep",
                "--param",
                "seconds=1",
                "--account",
                "x",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut codes: Vec<i32> = runs
        .into_iter()
        .map(|c| Run::from(c.wait_with_output().unwrap()).code)
        .collect();
    codes.sort();
    assert_eq!(codes, [0, 75]);
    let skipped: Vec<_> = env
        .all_events()
        .into_iter()
        .filter(|e| e["event_type"] == "job.skipped")
        .collect();
    assert_eq!(skipped.len(), 1);
}

#[test]
fn a_run_whose_lorch_was_killed_is_closed_as_abandoned_by_the_next_run_of_that_job() {
    let (_p, env) = env();
    let lorch = start(
        &env,
        &["sleep", "--param", "seconds=60"],
        "testkit.sleeping",
    );
    let sleeping = env
        .all_events()
        .into_iter()
        .find(|e| e["event_type"] == "testkit.sleeping")
        .unwrap();
    let killed_run = sleeping["correlation_id"].as_str().unwrap().to_owned();
    signal(&lorch, "KILL");
    let _ = lorch.wait_with_output();
    assert!(
        gone(sleeping["payload"]["pid"].as_u64().unwrap()),
        "the worker outlived its lorch"
    );

    let out = env.run(&["runs", "list", "--json"]);
    let runs = out.json()["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "failed", "{out:?}");
    assert_eq!(runs[0]["reason"], "abandoned");
    assert!(
        out.stderr
            .contains(&format!("warning: run {killed_run} of testkit/sleep")),
        "{out:?}"
    );

    let events = env.events(&killed_run);
    assert_eq!(
        types(&events),
        ["job.started", "testkit.sleeping", "job.failed"]
    );
    assert_eq!(events[2]["payload"]["reason"], "abandoned");
    assert_eq!(events[2]["status"], "failed");

    // Nothing left to reap, and the run is not closed twice.
    let out = env.run(&["runs", "reap"]);
    assert_eq!(out.stdout, "no abandoned runs\n");
    let out = env.run(&["run-job", "testkit", "sleep", "--param", "seconds=0"]);
    out.code(0);
    assert_eq!(types(&env.events(&killed_run)).len(), 3);
}

#[test]
fn the_next_run_of_the_job_reaps_before_it_starts() {
    let (_p, env) = env();
    let lorch = start(&env, &["hang"], "testkit.hanging");
    signal(&lorch, "KILL");
    let _ = lorch.wait_with_output();
    let out = env.run(&["run-job", "testkit", "sleep", "--param", "seconds=0"]);
    out.code(0);
    // A different job: its abandoned run is left for `runs` commands or its own next run.
    let out = env.run(&["runs", "list", "--job", "testkit/hang", "--json"]);
    assert_eq!(out.json()["runs"][0]["reason"], "abandoned");

    let lorch = start(
        &env,
        &["sleep", "--param", "seconds=60"],
        "testkit.sleeping",
    );
    signal(&lorch, "KILL");
    let _ = lorch.wait_with_output();
    let out = env.run(&["run-job", "testkit", "sleep", "--param", "seconds=0"]);
    out.code(0);
    assert!(
        out.stderr.contains("was abandoned"),
        "the run-job reaped the earlier run of its job: {out:?}"
    );
}

#[test]
fn runs_list_filters_and_runs_show_prints_the_events_in_order() {
    let (_p, env) = env();
    let ok = env.run(&["run-job", "testkit", "echo"]);
    let failed = env.run(&["run-job", "testkit", "fail"]);

    let out = env.run(&["runs", "list"]);
    out.code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    assert!(lines[0].starts_with("STARTED") && lines[0].contains("ACCOUNT  STATUS"));
    assert!(
        lines[1].contains(&ok.run_id())
            && lines[1].contains("testkit/echo")
            && lines[1].contains("completed")
    );
    assert!(lines[2].contains(&failed.run_id()) && lines[2].contains("failed (error)"));

    let out = env.run(&["runs", "list", "--status", "failed", "--json"]);
    let runs = out.json()["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["run_id"], failed.run_id().as_str());
    assert_eq!(
        runs[0]["error_message"],
        "fetching page 3: connection reset"
    );
    // `last` is the newest run.
    let last = env.run(&["runs", "show", "last"]);
    assert!(
        last.stdout
            .starts_with(&format!("run {}\n", failed.run_id())),
        "{last:?}"
    );
    let out = env.run(&["runs", "list", "--job", "testkit/echo", "--json"]);
    assert_eq!(out.json()["runs"].as_array().unwrap().len(), 1);
    assert_eq!(env.run(&["runs", "list", "--job", "echo"]).code, 2);
    assert_eq!(env.run(&["runs", "list", "--status", "weird"]).code, 2);

    let out = env.run(&["runs", "show", &failed.run_id()]);
    out.code(0);
    assert!(
        out.stdout.starts_with(&format!(
            "run {}\nJob: testkit/fail\nStatus: failed (error)\n",
            failed.run_id()
        )),
        "{out:?}"
    );
    let events: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| *l != "Events:")
        .skip(1)
        .collect();
    assert_eq!(events.len(), 3);
    assert!(
        events[0].contains("job.started")
            && events[1].contains("testkit.before_failure")
            && events[2].contains("job.failed")
    );

    let out = env.run(&["runs", "show", "no-such-run"]);
    out.code(2);
    out.stderr_has("no run no-such-run");
}

#[test]
fn runs_list_filters_by_account_and_start_time() {
    let (_p, env) = env();
    let one = env.run(&["run-job", "testkit", "echo", "--account", "one"]);
    let two = env.run(&["run-job", "testkit", "echo", "--account", "two"]);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["runs", "list", "--json"];
        all.extend_from_slice(args);
        let out = env.run(&all);
        out.code(0);
        out.json()["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&["--account", "one"]), [one.run_id()]);
    assert_eq!(ids(&["--account", "two"]), [two.run_id()]);
    assert!(ids(&["--account", "three"]).is_empty());
    assert_eq!(ids(&["--since", "-1h"]), [one.run_id(), two.run_id()]);
    assert_eq!(
        ids(&["--since", "today", "--account", "two"]),
        [two.run_id()]
    );
    assert!(ids(&["--until", "2000-01-01"]).is_empty());
    assert!(ids(&["--since", "2999-01-01"]).is_empty());

    let none = env.run(&["runs", "list", "--account", "three"]);
    none.stderr_has("no runs match");
    env.run(&["runs", "list", "--since", "today", "--until", "-2d"])
        .code(2)
        .stderr_has("is later than --until");
    let bad = env.run(&["runs", "list", "--since", "24-01-01"]);
    bad.code(2);
    bad.stderr_has("invalid value '24-01-01' for --since");
}

#[test]
fn run_job_json_prints_the_run_as_one_document_whatever_the_outcome() {
    let (_p, env) = env();
    let out = env.run(&["run-job", "testkit", "echo", "--json", "--account", "a"]);
    out.code(0);
    let summary = out.json();
    let run_id = summary["run_id"].as_str().unwrap().to_owned();
    assert_eq!(env.events(&run_id).len(), 3, "the id is the run's");
    assert_eq!(summary["package"], "testkit");
    assert_eq!(summary["job"], "echo");
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["reason"], serde_json::Value::Null);
    assert_eq!(summary["attempts"], 1);
    assert_eq!(summary["exit_code"], 0);
    assert!(summary["duration_ms"].as_u64().is_some(), "{summary}");

    let out = env.run(&[
        "run-job",
        "testkit",
        "fail",
        "--json",
        "--retries",
        "1",
        "--retry-backoff",
        "1ms",
    ]);
    out.code(1);
    let summary = out.json();
    assert_eq!(summary["status"], "failed");
    assert_eq!(summary["reason"], "error");
    assert_eq!(summary["attempts"], 2);
    assert_eq!(summary["exit_code"], 1);
    assert!(
        summary["message"]
            .as_str()
            .unwrap()
            .contains("connection reset"),
        "{summary}"
    );
    out.stderr_has("✗ testkit/fail failed");

    let usage = env.run(&["run-job", "testkit", "echo", "--json", "--dry-run"]);
    usage.code(2);
}

#[test]
fn quiet_prints_nothing_on_success_and_everything_on_failure() {
    let (_p, env) = env();
    env.run(&["run-job", "testkit", "echo", "--quiet"])
        .code(0)
        .stdout_is("")
        .stderr_is("");
    env.run(&["run-job", "testkit", "fail", "--quiet"])
        .code(1)
        .stderr_has("✗ testkit/fail failed");
}
