//! Run logs (docs/logs.md): what a job writes to stdout and stderr and logs is kept with its
//! run, per attempt, capped; `runs logs` shows it, `job.failed` carries its tail, `runs prune`
//! deletes it.

use serde_json::Value;

use crate::common::{self, Env};

/// `runs logs ARGS --json`: one object a line.
fn logged(env: &Env, args: &[&str]) -> Vec<Value> {
    let out = env
        .lorch()
        .args(["runs", "logs"])
        .args(args)
        .args(["--json"])
        .run();
    out.code(0);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn texts(lines: &[Value]) -> Vec<&str> {
    lines.iter().filter_map(|l| l["text"].as_str()).collect()
}

#[test]
fn a_failed_run_keeps_its_newest_lines_with_a_drop_marker_and_job_failed_has_the_tail() {
    let (_plugins, env) = common::testkit_env();
    let run = env
        .lorch()
        .args(["run-job", "testkit", "chatty", "--param", "stdout=100000"])
        .args(["--param", "logs=1000", "--param", "end=fail"])
        .run();
    run.code(1);
    // Still shown live, on stderr: stdout is lorch's.
    assert!(run.stderr.contains("out 99999\n"), "not shown live");
    assert!(!run.stdout.contains("out 1"), "{}", &run.stdout[..200]);

    // 101,001 lines: the newest block of 5,000 and the 1,001 after it are kept.
    let logs = env.lorch().args(["runs", "logs", "last"]).run();
    logs.code(0);
    // First, why: the run's status and error, on stderr.
    logs.stderr_has(&format!(
        "run {} of testkit/chatty: failed (error): chatty failed as asked",
        run.run_id()
    ));
    let lines: Vec<&str> = logs.stdout.lines().collect();
    assert!(
        lines[0].starts_with("… 95000 earlier lines dropped"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 1 + 6001);
    assert!(lines[1].ends_with("  stdout  out 95000"), "{}", lines[1]);
    assert!(lines[5001].ends_with("  INFO    log 0"), "{}", lines[5001]);
    assert!(
        lines[6001].ends_with("  ERROR   giving up"),
        "{}",
        lines[6001]
    );

    let events = env.events(&run.run_id());
    let failed = &events.last().unwrap()["payload"];
    assert_eq!(failed["log_lines"], 101_001);
    let tail: Vec<&str> = failed["log_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(tail.len(), 20);
    assert_eq!(tail[18], "INFO log 999");
    assert_eq!(tail[19], "ERROR giving up");

    env.lorch()
        .args(["runs", "show", "last"])
        .run()
        .code(0)
        .stdout_has(&format!(
            "Logs: 6001 lines (95000 older lines dropped): lorch runs logs {}",
            run.run_id()
        ));
}

#[test]
fn a_job_that_crashes_mid_line_keeps_what_it_wrote_in_order() {
    let (_plugins, env) = common::testkit_env();
    let run = env
        .lorch()
        .args(["run-job", "testkit", "chatty", "--param", "stdout=2"])
        .args(["--param", "logs=1", "--param", "partial=half a li"])
        .args(["--param", "end=segfault"])
        .run();
    run.code(1).stderr_has("killed by SIGSEGV");
    let lines = logged(&env, &[&run.run_id()]);
    assert_eq!(texts(&lines), ["out 0", "out 1", "log 0", "half a li"]);
    let streams: Vec<&str> = lines
        .iter()
        .map(|l| l["stream"].as_str().unwrap())
        .collect();
    assert_eq!(streams, ["stdout", "stdout", "log", "stdout"]);
    assert_eq!(lines[2]["level"], "info");
    let failed = env.events(&run.run_id()).pop().unwrap();
    assert_eq!(
        failed["payload"]["log_tail"],
        serde_json::json!(["out 0", "out 1", "INFO log 0", "half a li"])
    );
}

/// Lines at and around the 16 KiB cut, unended, and 20 MB of 20,000-byte lines under a
/// timeout: each run ends with its own outcome, its lines kept in pieces (docs/faults.md).
#[test]
fn long_lines_at_the_cut_end_with_the_runs_own_outcome() {
    let (_plugins, env) = common::testkit_env();
    for len in [16_383, 16_384, 16_385, 70_000] {
        let partial = format!("partial={}", "x".repeat(len));
        let run = env
            .lorch()
            .args([
                "run-job", "testkit", "chatty", "--quiet", "--param", &partial,
            ])
            .run();
        run.code(0);
        let lines = logged(&env, &["last"]);
        let kept: usize = texts(&lines).iter().map(|t| t.len()).sum();
        assert_eq!((kept, lines.len()), (len, len.div_ceil(16 << 10)), "{len}");
    }
    let run = env
        .lorch()
        .args(["run-job", "testkit", "chatty", "--quiet", "--timeout", "2m"])
        .args(["--param", "stdout=1000", "--param", "width=20000"])
        .args(["--param", "end=fail"])
        .run();
    run.code(1).stderr_has("chatty failed as asked");
    let lines = logged(&env, &["last"]);
    let (last, pieces) = texts(&lines)
        .split_last()
        .map(|(l, p)| (*l, p.to_vec()))
        .unwrap();
    assert_eq!(last, "giving up");
    // Each line in two pieces (16,384 + 3,616 bytes); the newest 4 to 8 MiB of them kept.
    let sizes: Vec<usize> = pieces.iter().map(|t| t.len()).collect();
    assert!(sizes.len() > 200, "{}", sizes.len());
    assert!(
        sizes
            .iter()
            .all(|&n| n == 16 << 10 || n == 20_000 - (16 << 10))
    );
    assert!(pieces.last().unwrap().starts_with('x'));
}

#[test]
fn each_attempt_keeps_its_own_lines_and_follow_reads_to_the_end_of_the_run() {
    let (_plugins, env) = common::testkit_env();
    let mut job = env.cmd(&[
        "run-job",
        "testkit",
        "chatty",
        "--param",
        "stdout=3",
        "--param",
        "every=0.2",
        "--param",
        "end=fail",
        "--retries",
        "1",
        "--retry-backoff",
        "300ms",
    ]);
    let mut job = job.stderr(std::process::Stdio::null()).spawn().unwrap();
    // Follow as soon as the first line is there, while the run goes on (so the first attempt
    // has no heading yet: the run had one attempt when following began).
    while !env
        .lorch()
        .args(["runs", "logs", "last"])
        .run()
        .stdout
        .contains("out 0")
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let followed = env.lorch().args(["runs", "logs", "last", "--follow"]).run();
    followed.code(0);
    assert!(job.wait().unwrap().code() == Some(1));
    let body: Vec<&str> = followed
        .stdout
        .lines()
        .map(|l| l.rsplit("  ").next().unwrap())
        .collect();
    assert_eq!(
        body,
        [
            "out 0",
            "out 1",
            "out 2",
            "giving up",
            "── attempt 2 ──",
            "out 0",
            "out 1",
            "out 2",
            "giving up"
        ],
        "{followed:?}"
    );
    let second = logged(&env, &["last", "--attempt", "2"]);
    assert_eq!(texts(&second), ["out 0", "out 1", "out 2", "giving up"]);
    assert!(second.iter().all(|l| l["attempt"] == 2));
}

#[test]
fn mistakes_name_the_run_and_what_is_accepted() {
    let (_plugins, env) = common::testkit_env();
    env.lorch()
        .args(["runs", "logs", "last"])
        .run()
        .code(2)
        .stderr_has("no runs recorded");
    let run = env.lorch().args(["run-job", "testkit", "echo"]).run();
    run.code(0);
    env.lorch()
        .args(["runs", "logs", &run.run_id(), "--attempt", "2"])
        .run()
        .code(2)
        .stderr_has(&format!("--attempt 2: run {} has 1 attempt", run.run_id()));
    env.lorch()
        .args(["runs", "logs", "0192f0c2-0000-7000-8000-000000000000"])
        .run()
        .code(2)
        .stderr_has("no run 0192f0c2-0000-7000-8000-000000000000");
    env.lorch()
        .args(["runs", "logs", "last"])
        .run()
        .code(0)
        .stdout_is("")
        .stderr_has("kept no output");
}

#[test]
fn prune_deletes_old_logs_and_events_but_not_what_bigquery_still_waits_for() {
    let (_plugins, env) = common::testkit_env();
    let chatty = ["run-job", "testkit", "chatty", "--param", "stdout=2"];
    let old = env.lorch().args(chatty).run();
    old.code(0);
    // Queued for a BigQuery that cannot be reached: pending.
    let pending = env
        .lorch()
        .args(chatty)
        .env("BQ_EVENTS_DATASET", "ds")
        .env("BQ_EVENTS_TABLE", "events")
        .env("BQ_PROJECT", "p")
        .env("LORCH_BQ_ENDPOINT", "http://127.0.0.1:9")
        .env("LORCH_BQ_FLUSH_TIMEOUT", "1s")
        .run();
    pending.code(0).stderr_has("not in BigQuery yet");

    // Nothing is 30 days old yet.
    env.lorch()
        .args(["runs", "prune", "--older-than", "30d", "--events"])
        .run()
        .code(0)
        .stdout_has("deleted the logs of 0 runs")
        .stdout_has("deleted 0 events");

    let later = (chrono::Utc::now() + chrono::Duration::days(31)).to_rfc3339();
    let pruned = env
        .lorch()
        .args(["runs", "prune", "--older-than", "30d", "--events"])
        .env("LORCH_NOW", &later)
        .run();
    pruned.code(0).stdout_has("deleted the logs of 2 runs");
    assert!(logged(&env, &[&old.run_id()]).is_empty());
    // The first run's events went; the second run's wait for BigQuery.
    assert!(env.events(&old.run_id()).is_empty());
    assert_eq!(env.events(&pending.run_id()).len(), 2);
    pruned.stdout_has("kept 2 of them still pending for BigQuery");
}
