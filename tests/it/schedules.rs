//! Schedules and `lorch tick` (docs/schedules.md), on an injected clock (`LORCH_NOW`): missed
//! fire times caught up per `catch_up`, windows that tile time through failures and sleep,
//! two ticks at once, DST, a broken entry, `--watch`.

use serde_json::Value;

use crate::common::{self, Env};

fn tick(env: &Env, now: &str) -> common::Run {
    env.lorch()
        .args(["tick", "--quiet"])
        .env("LORCH_NOW", now)
        .run()
}

/// The windows of the runs of `job` with `status`, oldest first: `(since, until)`.
fn windows(env: &Env, job: &str, status: &str) -> Vec<(String, String)> {
    let out = env.run(&["runs", "list", "--job", job, "--limit", "100000", "--json"]);
    out.code(0);
    let runs = out.json()["runs"].as_array().unwrap().clone();
    let mut windows: Vec<(String, String)> = runs
        .iter()
        .filter(|r| r["status"] == status)
        .map(|r| {
            let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
            (text(&r["window_since"]), text(&r["window_until"]))
        })
        .collect();
    windows.sort();
    windows
}

fn daily(catch_up: &str) -> String {
    format!(
        "[[schedule]]\njob = \"testkit/echo\"\ncron = \"0 6 * * *\"\ncatch_up = \"{catch_up}\"\n"
    )
}

#[test]
fn three_missed_days_run_all_latest_or_none() {
    let day = |d: u32| format!("2026-11-0{d}T06:00:00.000000Z");
    for (catch_up, expected) in [
        (
            "all",
            vec![(day(1), day(2)), (day(2), day(3)), (day(3), day(4))],
        ),
        ("latest", vec![(day(1), day(4))]),
        ("skip", vec![]),
    ] {
        let (_plugins, env) = common::testkit_env();
        env.write_config(&daily(catch_up));
        // The first tick runs the day's fire time; its window is the day before.
        tick(&env, "2026-11-01T06:00:30Z").code(0);
        assert_eq!(
            windows(&env, "testkit/echo", "completed"),
            [("2026-10-31T06:00:00.000000Z".to_owned(), day(1))]
        );
        // Three days asleep.
        tick(&env, "2026-11-04T07:00:00Z").code(0);
        let after_first: Vec<_> = windows(&env, "testkit/echo", "completed")
            .into_iter()
            .skip(1)
            .collect();
        assert_eq!(after_first, expected, "catch_up = {catch_up}");
        let list = env
            .lorch()
            .args(["schedule", "list", "--json"])
            .env("LORCH_NOW", "2026-11-04T07:00:00Z")
            .run();
        list.code(0);
        let entry = &list.json()["schedules"][0];
        assert_eq!(entry["next_fire"], "2026-11-05T06:00:00Z", "{catch_up}");
        assert_eq!(
            entry["due"],
            serde_json::json!([]),
            "{catch_up}: nothing due after the tick"
        );
    }
}

#[test]
fn two_ticks_at_once_run_each_window_once() {
    let (_plugins, env) = common::testkit_env();
    env.write_config(&daily("all"));
    tick(&env, "2026-11-01T06:00:30Z").code(0);
    let ticks: Vec<_> = (0..2)
        .map(|_| {
            env.cmd(&["tick", "--quiet"])
                .env("LORCH_NOW", "2026-11-08T07:00:00Z")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in ticks {
        common::Run::from(child.wait_with_output().unwrap()).code(0);
    }
    let done = windows(&env, "testkit/echo", "completed");
    assert_eq!(done.len(), 8, "{done:#?}");
    for pair in done.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "windows tile: {done:#?}");
    }
}

#[test]
fn thirty_days_of_failures_and_sleep_tile_time_without_gap_or_overlap() {
    let (_plugins, env) = common::testkit_env();
    let marker = env.home.path().join("failing");
    env.write_config(&format!(
            "[[schedule]]\njob = \"testkit/fail_if_exists\"\ncron = \"0 6 * * *\"\ncatch_up = \"all\"\nmax_catch_up = \"30d\"\nparams = {{ file = \"{}\" }}\n",
            marker.display()
        ),
    );
    // A fixed-seed walk: each day the machine is asleep at 06:00 (no tick), or the job fails,
    // or all is well; ticks come at odd minutes.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % 100
    };
    let (mut failures, mut asleep) = (0, 0);
    for day in 1..=30u32 {
        let roll = random();
        if roll < 25 {
            asleep += 1;
            continue;
        }
        let fail = roll < 45;
        failures += usize::from(fail);
        if fail {
            std::fs::write(&marker, "").unwrap();
        } else {
            let _ = std::fs::remove_file(&marker);
        }
        let now = chrono::DateTime::parse_from_rfc3339("2026-10-01T06:00:00Z").unwrap()
            + chrono::Duration::days(i64::from(day))
            + chrono::Duration::minutes(random() as i64 % 50);
        let out = tick(&env, &now.to_rfc3339());
        assert!(out.code == 0 || out.code == 1, "{out:?}");
    }
    let _ = std::fs::remove_file(&marker);
    tick(&env, "2026-11-01T06:10:00Z").code(0);
    assert!(
        failures > 0 && asleep > 0,
        "the walk has failures and sleep"
    );

    let done = windows(&env, "testkit/fail_if_exists", "completed");
    assert_eq!(
        done.first().map(|w| w.0.as_str()),
        Some("2026-10-01T06:00:00.000000Z")
    );
    assert_eq!(
        done.last().map(|w| w.1.as_str()),
        Some("2026-11-01T06:00:00.000000Z")
    );
    for pair in done.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "no gap, no overlap: {done:#?}");
    }
    let failed = windows(&env, "testkit/fail_if_exists", "failed");
    assert!(!failed.is_empty());
    let all: Vec<_> = done.iter().chain(&failed).collect();
    let distinct: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "no window ran twice");
}

#[test]
fn berlin_2_30_runs_once_on_the_spring_forward_and_fall_back_days() {
    let (_plugins, env) = common::testkit_env();
    env.write_config("[[schedule]]\njob = \"testkit/echo\"\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\ncatch_up = \"all\"\n",
    );
    for (day, previous) in [("2026-03-29", "2026-03-28"), ("2026-10-25", "2026-10-24")] {
        // Every half hour from noon the day before (UTC) to noon that day.
        let start: chrono::DateTime<chrono::Utc> = format!("{previous}T12:00:00Z").parse().unwrap();
        for step in 0..=48 {
            let now = start + chrono::Duration::minutes(30 * step);
            tick(&env, &now.to_rfc3339()).code(0);
        }
        let runs: Vec<_> = windows(&env, "testkit/echo", "completed")
            .into_iter()
            .filter(|(_, until)| until.starts_with(day))
            .collect();
        assert_eq!(runs.len(), 1, "{day}: {runs:#?}");
    }
}

#[test]
fn a_broken_entry_is_reported_and_the_others_still_run() {
    let (_plugins, env) = common::testkit_env();
    env.write_config(&format!(
        "{}\n[[schedule]]\njob = \"testkit/echo\"\ncron = \"0 25 * * *\"\n",
        daily("all")
    ));
    let out = tick(&env, "2026-11-01T06:00:30Z");
    out.code(3);
    out.stderr_has(":8:8: schedule 2: cron: '0 25 * * *' is not a cron expression");
    assert_eq!(windows(&env, "testkit/echo", "completed").len(), 1);

    // An entry naming a job no plugin has: run-job refuses it, tick says so and exits 3.
    env.write_config(&format!(
        "{}\n[[schedule]]\njob = \"testkit/nope\"\ncron = \"0 6 * * *\"\n",
        daily("all")
    ));
    let out = tick(&env, "2026-11-02T06:00:30Z");
    out.code(3);
    out.stderr_has("unknown job `nope` in package `testkit`");
    out.stderr_has("the schedule entry of testkit/nope: lorch refused to run it");
    assert_eq!(
        windows(&env, "testkit/echo", "completed").len(),
        2,
        "the good entry ran"
    );
}

#[test]
fn watch_catches_up_on_start_and_stops_on_sigterm() {
    let (_plugins, env) = common::testkit_env();
    env.write_config(&daily("all"));
    let watch = env
        .cmd(&["tick", "--watch", "--quiet"])
        .env("LORCH_NOW", "2026-11-01T06:00:30Z")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while windows(&env, "testkit/echo", "completed").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no run from tick --watch"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    common::signal(&watch, "TERM");
    let out = common::Run::from(watch.wait_with_output().unwrap());
    out.code(143);
    // It says it started, and how to stop it, even with --quiet (an operator starts it by hand).
    out.stderr_has("lorch tick --watch: running the schedules of ")
        .stderr_has("stop it with Ctrl-C or SIGTERM");
}

/// Each caught-up run's line names its window: three days asleep read as three windows, not
/// three identical lines.
#[test]
fn each_caught_up_run_says_which_window_it_covered() {
    let (_plugins, env) = common::testkit_env();
    env.write_config(&daily("all"));
    tick(&env, "2026-11-01T06:00:30Z").code(0);
    let out = env
        .lorch()
        .args(["tick"])
        .env("LORCH_NOW", "2026-11-04T07:00:00Z")
        .run();
    out.code(0);
    for (since, until) in [("01", "02"), ("02", "03"), ("03", "04")] {
        out.stdout_has(&format!(
            "; window 2026-11-{since}T06:00:00Z to 2026-11-{until}T06:00:00Z"
        ));
    }
}
