//! `lorch status` (docs/status.md): a verdict per job and account, exit 1 until all are ok.
//! Ages are read against `LORCH_NOW`, so "a day later" needs no sleep.

use serde_json::Value;

use crate::common::{self, Env};

fn status(env: &Env, now: Option<&str>) -> common::Run {
    let mut lorch = env.lorch().args(["status", "--json"]);
    if let Some(now) = now {
        lorch = lorch.env("LORCH_NOW", now);
    }
    lorch.run()
}

/// `{job/account: verdict}` of a `status --json`.
fn verdicts(out: &common::Run) -> Vec<(String, String)> {
    let jobs = out.json()["jobs"].as_array().unwrap().clone();
    jobs.iter()
        .map(|j| {
            let account = j["account"].as_str().unwrap_or("-");
            let name = format!(
                "{}/{} {account}",
                j["package"].as_str().unwrap(),
                j["job"].as_str().unwrap()
            );
            (name, j["verdict"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn three_verdicts_exit_1_until_each_is_fixed() {
    let (_plugins, env) = common::testkit_env();
    env.write_config(
        "[[schedule]]\njob = \"testkit/echo\"\naccount = \"daily\"\ncron = \"0 6 * * *\"\n",
    );
    let broken = env.home.path().join("broken");
    std::fs::write(&broken, "").unwrap();
    let flag = format!("file={}", broken.display());
    let run = |args: &[&str]| env.lorch().args(["run-job", "testkit"]).args(args).run();
    run(&["echo", "--account", "daily"]).code(0);
    run(&["echo"]).code(0);
    run(&["fail_if_exists", "--param", &flag]).code(1);
    run(&["fail_if_exists", "--param", &flag]).code(1);

    // Three days on, the daily job's last success is too old.
    let later = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let out = status(&env, Some(&later));
    out.code(1);
    assert_eq!(
        verdicts(&out),
        [
            ("testkit/echo -".to_owned(), "ok".to_owned()),
            ("testkit/echo daily".to_owned(), "stale".to_owned()),
            ("testkit/fail_if_exists -".to_owned(), "failing".to_owned()),
        ]
    );
    let jobs = out.json()["jobs"].as_array().unwrap().clone();
    let failing: &Value = &jobs[2];
    assert_eq!(failing["consecutive_failures"], 2);
    // Why, in the same line: the last run's error.
    assert_eq!(
        failing["why"],
        format!("its last 2 runs failed: {} exists", broken.display())
    );
    assert!(
        jobs[1]["next_due"]
            .as_str()
            .unwrap()
            .ends_with("T06:00:00Z")
    );
    // The table says the same, one row each.
    let table = env.lorch().args(["status"]).env("LORCH_NOW", &later).run();
    table.code(1);
    table.stdout_has("stale    testkit/echo            daily");
    table.stdout_has("failing  testkit/fail_if_exists  -");

    // Fixed: the job succeeds again and the daily one ran today.
    std::fs::remove_file(&broken).unwrap();
    run(&["fail_if_exists", "--param", &flag]).code(0);
    run(&["echo", "--account", "daily"]).code(0);
    let out = status(&env, None);
    out.code(0);
    assert!(verdicts(&out).iter().all(|(_, v)| v == "ok"), "{out:?}");
    assert_eq!(out.json()["ok"], true);
    // --max-age: every job must have succeeded that recently.
    let out = env
        .lorch()
        .args(["status", "--max-age", "1d"])
        .env("LORCH_NOW", &later)
        .run();
    out.code(1);
}

#[test]
fn a_run_past_three_times_its_usual_duration_is_running_long() {
    let (_plugins, env) = common::testkit_env();
    for _ in 0..3 {
        env.run(&["run-job", "testkit", "sleep", "--param", "seconds=0.05"])
            .code(0);
    }
    let mut child = common::start(
        &env,
        &["sleep", "--param", "seconds=30"],
        "testkit.sleeping",
    );
    let out = status(&env, None);
    out.code(0);
    assert!(out.json()["jobs"][0]["running_since"].is_string());
    let later = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let out = status(&env, Some(&later));
    out.code(1);
    assert_eq!(out.json()["jobs"][0]["verdict"], "running_long");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
}

/// A Python program that parses the metrics file with the Prometheus client's parser, over and
/// over until `stop` exists, and prints how many times it did; it fails on any file it cannot
/// parse or that lacks a family (a half-written one).
const READER: &str = r#"
import os, sys
from prometheus_client.parser import text_string_to_metric_families
path, stop = sys.argv[1], sys.argv[2]
reads = 0
while not os.path.exists(stop):
    try:
        text = open(path).read()
    except FileNotFoundError:
        continue
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "lorch_events_pending" in families, text
    reads += 1
print(reads)
"#;

#[test]
fn the_metrics_file_parses_after_every_run_and_is_never_seen_half_written() {
    let Some(python) = common::bigquery::python() else {
        return;
    };
    let (_plugins, env) = common::testkit_env();
    let dir = env.home.path().join("metrics");
    let file = dir.join("lorch.prom");
    let stop = env.home.path().join("stop");
    let reader = std::process::Command::new(python)
        .args(["-c", READER])
        .arg(&file)
        .arg(&stop)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let dir_text = dir.to_str().unwrap();
    for i in 0..200 {
        let (job, account) = match i % 4 {
            0 => ("fail", "a"),
            1 => ("echo", "b\"quoted\""),
            _ => ("echo", "a"),
        };
        env.lorch()
            .args(["run-job", "testkit", job, "--account", account, "--quiet"])
            .env("LORCH_METRICS_DIR", dir_text)
            .run();
    }
    std::fs::write(&stop, "").unwrap();
    let out = reader.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reader saw a file it could not parse:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reads: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(reads > 0, "the reader never read the file");

    let text = std::fs::read_to_string(&file).unwrap();
    let check = std::process::Command::new(python)
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\nfor f in p(sys.stdin.read()):\n    for s in f.samples: print(s.name, sorted(s.labels.items()), float(s.value))",
        ])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(check.status.success(), "{text}");
    let samples = String::from_utf8(check.stdout).unwrap();
    for line in [
        "lorch_job_runs_total [('account', 'a'), ('job', 'echo'), ('package', 'testkit'), ('status', 'completed')] 100.0",
        "lorch_job_runs_total [('account', 'a'), ('job', 'fail'), ('package', 'testkit'), ('status', 'failed')] 50.0",
        "lorch_job_last_exit_code [('account', 'a'), ('job', 'fail'), ('package', 'testkit')] 1.0",
        "lorch_job_last_exit_code [('account', 'b\"quoted\"'), ('job', 'echo'), ('package', 'testkit')] 0.0",
        "lorch_events_pending [] 0.0",
    ] {
        assert!(
            samples.lines().any(|l| l == line),
            "{line} not in\n{samples}"
        );
    }
    // `lorch metrics` prints the same.
    let printed = env.run(&["metrics"]);
    printed.code(0);
    assert_eq!(printed.stdout, text);
}

#[test]
fn a_retried_run_is_one_run_for_failures_and_each_attempt_counts_in_the_metrics() {
    let (_plugins, env) = common::testkit_env();
    let attempts = env.home.path().join("attempts");
    let counter = format!("counter={}", attempts.display());
    // A run of testkit/flaky with one retry, completing at attempt `succeed_on`.
    let flaky = |succeed_on: &str| {
        let _ = std::fs::remove_file(&attempts);
        env.run(&[
            "run-job",
            "testkit",
            "flaky",
            "--param",
            &counter,
            "--param",
            succeed_on,
            "--retries",
            "1",
            "--retry-backoff",
            "0s",
        ])
    };
    // Fails its first attempt, completes its second.
    flaky("succeed_on=2").code(0);
    let out = status(&env, None);
    out.code(0);
    assert_eq!(out.json()["jobs"][0]["consecutive_failures"], 0);
    let metrics = env.run(&["metrics"]);
    let labels = "package=\"testkit\",job=\"flaky\",account=\"\"";
    for status in ["completed", "failed"] {
        metrics.stdout_has(&format!(
            "lorch_job_runs_total{{{labels},status=\"{status}\"}} 1\n"
        ));
    }
    // Two runs that fail all their attempts are two failures, not four.
    flaky("succeed_on=9").code(1);
    flaky("succeed_on=9").code(1);
    let out = status(&env, None);
    out.code(1);
    assert_eq!(out.json()["jobs"][0]["consecutive_failures"], 2);
}

/// The most common first-week mistake: a schedule whose `tick` line was never installed. On a
/// fresh store, once its fire time has passed, `status` says so and exits 1 (before: `ok`).
#[test]
fn a_scheduled_job_that_never_ran_is_stale_once_its_fire_time_passed() {
    let (_plugins, env) = common::testkit_env();
    env.write_config("[[schedule]]\njob = \"testkit/echo\"\ncron = \"0 6 * * *\"\n");
    status(&env, Some("2026-11-26T06:02:00Z")).code(0);
    let out = status(&env, Some("2026-11-26T09:00:00Z"));
    out.code(1);
    assert_eq!(
        verdicts(&out),
        [("testkit/echo -".to_owned(), "stale".to_owned())]
    );
    let why = out.json()["jobs"][0]["why"].as_str().unwrap().to_owned();
    assert!(
        why.contains("never succeeded") && why.contains("lorch tick"),
        "{why}"
    );
}
