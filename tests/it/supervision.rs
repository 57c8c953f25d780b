//! Crash-safe runs: whatever a job does, one `job.started` and one terminal event per attempt,
//! the right reason and exit code, and the events it emitted before the fault.

use std::time::{Duration, Instant};

use crate::common::{Run, gone, run_testkit as run, signal, start, types};
use serde_json::{Value, json};

use crate::common::testkit_env as env;

#[test]
fn crashes_keep_earlier_events_and_name_the_signal_or_exit_code() {
    let (_p, env) = env();
    let cases = [
        (
            "abort",
            "crashed: killed by SIGABRT",
            json!("SIGABRT"),
            json!(null),
        ),
        (
            "segfault",
            "crashed: killed by SIGSEGV",
            json!("SIGSEGV"),
            json!(null),
        ),
        (
            "exit",
            "the job's process exited with code 7 before the job returned",
            json!(null),
            json!(7),
        ),
    ];
    // More events than the worker's ring holds: the job waits for room, and the last ones are
    // still in the ring when the process dies.
    const EMITTED: usize = 10_000;
    for (job, message, signal, exit_code) in cases {
        let (out, events) = run(&env, &[job, "--param", &format!("events={EMITTED}")]);
        assert_eq!(out.code, 1, "{job}: {out:?}");
        assert!(
            out.stderr
                .contains(&format!("✗ testkit/{job} failed: {message} (run ")),
            "{out:?}"
        );
        let types = types(&events);
        assert_eq!(types.len(), EMITTED + 2, "{job}");
        assert_eq!(types[0], "job.started");
        assert!(
            types[1..=EMITTED]
                .iter()
                .all(|t| *t == "testkit.before_fault")
        );
        assert_eq!(types[EMITTED + 1], "job.failed");
        let order: Vec<_> = events[1..=EMITTED]
            .iter()
            .map(|e| e["payload"]["i"].as_u64())
            .collect();
        assert_eq!(
            order,
            (0..EMITTED as u64).map(Some).collect::<Vec<_>>(),
            "{job}"
        );
        let failed = &events[EMITTED + 1];
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["error_message"], message);
        assert_eq!(failed["payload"]["reason"], "crash", "{job}");
        assert_eq!(failed["payload"]["signal"], signal, "{job}");
        assert_eq!(failed["payload"]["exit_code"], exit_code, "{job}");
        assert_eq!(failed["payload"]["attempt"], 1);
    }
}

#[test]
fn a_timeout_stops_a_cooperative_job_through_its_cancellation_check() {
    let (_p, env) = env();
    let (out, events) = run(
        &env,
        &["sleep", "--param", "seconds=60", "--timeout", "300ms"],
    );
    out.code(1);
    assert_eq!(
        types(&events),
        [
            "job.started",
            "testkit.sleeping",
            "testkit.noticed_cancellation",
            "job.failed"
        ]
    );
    assert_eq!(events[3]["payload"]["reason"], "timeout");
    assert_eq!(events[3]["error_message"], "timed out after 300ms");
}

#[test]
fn a_timeout_kills_a_job_that_ignores_it_and_every_process_it_started() {
    let (_p, env) = env();
    let start = Instant::now();
    let (out, events) = run(
        &env,
        &["grandchild", "--timeout", "1s", "--kill-after", "500ms"],
    );
    let took = start.elapsed();
    out.code(1);
    // Timeout plus grace, with room for a loaded machine; the job itself would hang 10 minutes.
    assert!(took < Duration::from_secs(10), "lorch took {took:?}");
    assert_eq!(
        types(&events),
        ["job.started", "testkit.grandchild", "job.failed"]
    );
    assert_eq!(events[2]["payload"]["reason"], "timeout");
    let grandchild = events[1]["payload"]["pid"].as_u64().unwrap();
    assert!(
        gone(grandchild),
        "the job's grandchild {grandchild} survived"
    );
}

#[test]
fn sigint_reaches_the_job_and_exits_130_with_reason_cancelled() {
    let (_p, env) = env();
    let child = start(
        &env,
        &["sleep", "--param", "seconds=60"],
        "testkit.sleeping",
    );
    signal(&child, "INT");
    let out = Run::from(child.wait_with_output().unwrap());
    out.code(130);
    let events = env.events(&out.run_id());
    assert_eq!(
        types(&events),
        [
            "job.started",
            "testkit.sleeping",
            "testkit.noticed_cancellation",
            "job.failed"
        ]
    );
    assert_eq!(events[3]["payload"]["reason"], "cancelled");
    assert_eq!(events[3]["payload"]["signal"], "SIGINT");
}

#[test]
fn sigterm_to_lorch_kills_a_job_that_ignores_it_after_the_grace_period_and_exits_143() {
    let (_p, env) = env();
    let child = start(&env, &["hang", "--kill-after", "300ms"], "testkit.hanging");
    let hanging = env
        .all_events()
        .into_iter()
        .find(|e| e["event_type"] == "testkit.hanging")
        .unwrap();
    signal(&child, "TERM");
    let out = Run::from(child.wait_with_output().unwrap());
    out.code(143);
    let events = env.events(&out.run_id());
    assert_eq!(
        types(&events),
        ["job.started", "testkit.hanging", "job.failed"]
    );
    assert_eq!(events[2]["payload"]["reason"], "cancelled");
    assert_eq!(events[2]["error_message"], "cancelled by SIGTERM");
    assert!(gone(hanging["payload"]["pid"].as_u64().unwrap()));
}

#[test]
fn retries_record_every_attempt_and_exit_with_the_last_ones_code() {
    let (_p, env) = env();
    let counter = env.home.path().join("counter");
    let counter_param = format!("counter={}", counter.display());
    let (out, events) = run(
        &env,
        &[
            "flaky",
            "--param",
            &counter_param,
            "--retries",
            "3",
            "--retry-backoff",
            "10ms",
        ],
    );
    out.code(0);
    out.stdout_has(", attempt 3)");
    assert_eq!(
        types(&events),
        [
            "job.started",
            "testkit.attempt",
            "job.failed",
            "job.started",
            "testkit.attempt",
            "job.failed",
            "job.started",
            "testkit.attempt",
            "job.completed",
        ]
    );
    let attempts: Vec<&Value> = events
        .iter()
        .filter(|e| e["source_system"] == "lorch")
        .map(|e| &e["payload"]["attempt"])
        .collect();
    assert_eq!(
        attempts,
        [
            &json!(1),
            &json!(1),
            &json!(2),
            &json!(2),
            &json!(3),
            &json!(3)
        ]
    );
    assert_eq!(
        events[4]["payload"]["attempt"], 2,
        "the job sees its attempt number"
    );

    std::fs::remove_file(&counter).unwrap();
    let (out, events) = run(
        &env,
        &[
            "flaky",
            "--param",
            &counter_param,
            "--retries",
            "1",
            "--retry-backoff",
            "10ms",
        ],
    );
    out.code(1);
    assert_eq!(
        types(&events)
            .iter()
            .filter(|t| **t == "job.failed")
            .count(),
        2
    );
}

#[test]
fn permanent_errors_and_usage_errors_are_not_retried() {
    let (_p, env) = env();
    let (out, events) = run(
        &env,
        &[
            "fail_permanently",
            "--retries",
            "3",
            "--retry-backoff",
            "10ms",
        ],
    );
    out.code(1)
        .stderr_has("; not retried: the job said the error is permanent");
    assert_eq!(types(&events), ["job.started", "job.failed"]);
    assert_eq!(events[1]["payload"]["error"]["permanent"], true);

    let out = env.run(&["run-job", "testkit", "needs_param", "--retries", "3"]);
    out.code(2);
    assert!(
        env.all_events().len() == 2,
        "the usage error recorded nothing"
    );
}

#[test]
fn in_process_mode_runs_the_job_in_lorch_itself() {
    let (_p, env) = env();
    // `sleep` reports the pid it runs in; lifecycle events carry lorch's.
    let (out, events) = run(&env, &["sleep", "--param", "seconds=0", "--in-process"]);
    out.code(0);
    assert_eq!(
        types(&events),
        ["job.started", "testkit.sleeping", "job.completed"]
    );
    assert_eq!(events[1]["payload"]["pid"], events[0]["payload"]["pid"]);
    let (_, events) = run(&env, &["sleep", "--param", "seconds=0"]);
    assert_ne!(
        events[1]["payload"]["pid"], events[0]["payload"]["pid"],
        "supervised jobs run in a worker"
    );

    let (out, events) = run(&env, &["panic", "--in-process"]);
    out.code(1);
    assert_eq!(events[2]["payload"]["reason"], "panic");

    let out = env.run(&[
        "run-job",
        "testkit",
        "sleep",
        "--in-process",
        "--timeout",
        "1s",
    ]);
    out.code(2);
    out.stderr_has("--timeout");
}
