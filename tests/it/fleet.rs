//! Fleet mode (docs/fleet.md): `lorch submit` queues run requests on NATS JetStream, `lorch
//! worker` runs each once as `run-job` would, and `lorch queue` shows what waits and what died.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, Env, nats::Nats};

/// `lorch queue status --json`.
fn queue(env: &Env, nats: &Nats) -> Value {
    let out = env
        .lorch()
        .args(["queue", "status", "--nats", &nats.url, "--json"])
        .run();
    out.code(0);
    out.json()
}

/// Polls `queue status` until `done` says so (a minute at most).
#[track_caller]
fn wait_for(env: &Env, nats: &Nats, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = queue(env, nats);
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "waited a minute for {what}: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `lorch events follow --all --json` until it printed `n` events (a minute at most), then one
/// second more, to see that no more come.
fn follow_all(env: &Env, nats: &Nats, n: usize) -> Vec<Value> {
    use std::io::BufRead as _;
    let mut follow = env
        .cmd(&["events", "follow", "--all", "--json", "--nats", &nats.url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx
                .send(serde_json::from_str::<Value>(&line).unwrap())
                .is_err()
            {
                break;
            }
        }
    });
    let mut events = Vec::new();
    while events.len() < n {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(event) => events.push(event),
            Err(_) => break,
        }
    }
    while let Ok(event) = rx.recv_timeout(Duration::from_secs(1)) {
        events.push(event);
    }
    follow.kill().unwrap();
    follow.wait().unwrap();
    events
}

/// `lorch worker --nats URL ARGS` in `env`, its output discarded.
fn start_worker(env: &Env, nats: &Nats, args: &[&str]) -> std::process::Child {
    env.cmd(&["worker", "--nats", &nats.url])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// SIGTERM; the worker lets its runs end and exits 0.
#[track_caller]
fn stop(worker: std::process::Child) {
    common::signal(&worker, "TERM");
    assert_eq!(worker.wait_with_output().unwrap().status.code(), Some(0));
}

/// Nothing queued, nothing in progress.
fn drained(s: &Value) -> bool {
    s["in_progress"] == 0
        && s["queued"]
            .as_object()
            .is_some_and(|q| q.values().all(|n| n == 0))
}

/// The events stream holds exactly `recorded` (the workers' stores), each once.
#[track_caller]
fn assert_streamed(env: &Env, nats: &Nats, recorded: &[Value]) {
    let ids = |events: &[Value]| {
        let mut ids: Vec<String> = events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let streamed = follow_all(env, nats, recorded.len());
    let (streamed, recorded) = (ids(&streamed), ids(recorded));
    assert_eq!(streamed.len(), recorded.len());
    assert!(
        streamed == recorded,
        "the events stream and the stores differ"
    );
}

fn submit(env: &Env, nats: &Nats, args: &[&str]) -> common::Run {
    env.lorch()
        .args(["submit", "--nats", &nats.url])
        .args(args)
        .run()
}

#[test]
fn each_request_runs_once_and_one_that_keeps_failing_ends_in_the_dead_letters() {
    let Some(nats) = Nats::start() else { return };
    let (_plugins, env) = common::testkit_env();
    let mut ids = Vec::new();
    for n in 0..3 {
        let out = submit(&env, &nats, &["testkit/echo", "--param", &format!("n={n}")]);
        out.code(0);
        ids.push(out.stdout.trim().to_owned());
    }
    // The same request id twice: stored once.
    submit(&env, &nats, &["testkit/echo", "--request-id", "twice"]).code(0);
    submit(&env, &nats, &["testkit/echo", "--request-id", "twice"])
        .code(0)
        .stderr_has("request twice was already submitted: stored once");
    let failing = submit(&env, &nats, &["testkit/fail", "--request-id", "doomed"]);
    failing.code(0).stdout_is("doomed\n");
    let waiting = queue(&env, &nats);
    assert_eq!(waiting["queued"]["testkit/echo"], 4, "{waiting}");

    let worker = env
        .cmd(&[
            "worker",
            "--nats",
            &nats.url,
            "--concurrency",
            "2",
            "--max-deliver",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(&env, &nats, "the queue to empty", |s| {
        s["queued"]
            .as_object()
            .is_some_and(|w| w.values().all(|n| n == 0))
            && s["in_progress"] == 0
            && s["dead"].as_array().is_some_and(|d| d.len() == 1)
    });
    common::signal(&worker, "TERM");
    let out = worker.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let dead = &status["dead"][0];
    assert_eq!(dead["request_id"], "doomed");
    assert_eq!(dead["job"], "testkit/fail");
    assert_eq!(dead["deliveries"], "2");
    assert!(
        dead["reason"]
            .as_str()
            .unwrap()
            .starts_with("failed 2 times: "),
        "{dead}"
    );
    // Every request ran once (its id is the run's trace id), the failing one twice.
    let events = env.all_events();
    let runs_of = |trace: &str| {
        events
            .iter()
            .filter(|e| e["event_type"] == "job.started" && e["trace_id"] == trace)
            .count()
    };
    for id in ids.iter().map(String::as_str).chain(["twice"]) {
        assert_eq!(runs_of(id), 1, "request {id}");
    }
    assert_eq!(runs_of("doomed"), 2);

    // The events stream has every event the worker recorded, each once.
    assert_streamed(&env, &nats, &events);

    // Queued again from the dead letters, then gone from them.
    env.lorch()
        .args(["queue", "dead", "--nats", &nats.url, "--retry", "doomed"])
        .run()
        .code(0)
        .stdout_is("doomed (testkit/fail): queued again\n");
    let again = queue(&env, &nats);
    assert_eq!(again["queued"]["testkit/fail"], 1, "{again}");
    assert_eq!(again["dead"], serde_json::json!([]));
    env.lorch()
        .args(["queue", "dead", "--nats", &nats.url, "--drop", "doomed"])
        .run()
        .code(2)
        .stderr_has("no dead letter doomed");
}

#[test]
fn an_unreachable_server_is_an_environment_error_and_run_job_is_unaffected() {
    let (_plugins, env) = common::testkit_env();
    let port = common::bigquery::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    env.lorch()
        .args(["submit", "testkit/echo", "--nats", &url])
        .run()
        .code(3)
        .stderr_has(&format!("cannot connect to NATS at {url}"))
        .stderr_has("is the server running? Start one with `nats-server -js");
    env.lorch()
        .args(["queue", "status"])
        .env("LORCH_NATS_URL", &url)
        .run()
        .code(3)
        .stderr_has("Connection refused");
    env.lorch()
        .args([
            "submit",
            "testkit/echo",
            "--since",
            "yesterday-ish",
            "--nats",
            &url,
        ])
        .run()
        .code(2)
        .stderr_has("yesterday-ish");
    env.lorch()
        .args([
            "queue",
            "status",
            "--nats",
            "nats://user:secret@127.0.0.1:1",
        ])
        .run()
        .code(3)
        .stderr_has("nats://user:***@127.0.0.1:1");
    env.lorch()
        .args(["submit", "testkit/echo", "--nats", "not a url"])
        .run()
        .code(3)
        .stderr_has("cannot connect to NATS at not a url");
    env.lorch()
        .args(["run-job", "testkit", "echo"])
        .run()
        .code(0);
}

#[test]
fn workers_with_jobs_take_only_those_and_overlapping_groups_are_refused() {
    let Some(nats) = Nats::start() else { return };
    let (_plugins, env) = common::testkit_env();
    submit(&env, &nats, &["testkit/echo", "--request-id", "e"]).code(0);
    submit(&env, &nats, &["testkit/fail", "--request-id", "f"]).code(0);
    let echoes = start_worker(&env, &nats, &["--jobs", "testkit/echo"]);
    // A job with nothing queued is not listed.
    let status = wait_for(&env, &nats, "the echo request", |s| {
        s["queued"]["testkit/echo"].is_null() && s["workers"][0]["completed"] == 1
    });
    assert_eq!(status["queued"]["testkit/fail"], 1, "{status}");
    // Every job would overlap the echo workers' group.
    env.lorch()
        .args(["worker", "--nats", &nats.url])
        .run()
        .code(3)
        .stderr_has("take jobs that overlap *");
    env.lorch()
        .args(["worker", "--nats", &nats.url, "--jobs", "testkit"])
        .run()
        .code(2)
        .stderr_has("'testkit' is not a job pattern; accepted: PACKAGE/JOB, PACKAGE/* or *");
    stop(echoes);
}

#[test]
fn a_request_whose_worker_is_killed_runs_again_on_another_and_the_first_run_is_abandoned() {
    let Some(nats) = Nats::start() else { return };
    let (_plugins, env) = common::testkit_env();
    let out = submit(&env, &nats, &["testkit/sleep", "--param", "seconds=2"]);
    out.code(0);
    let id = out.stdout.trim().to_owned();
    let mut first = start_worker(&env, &nats, &["--ack-wait", "2s"]);
    // Killed once its run has started (the request id is the run's trace id).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env
        .all_events()
        .iter()
        .any(|e| e["event_type"] == "testkit.sleeping" && e["trace_id"] == id.as_str())
    {
        assert!(
            Instant::now() < deadline,
            "the first worker never started the run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // queue status names the worker and what it runs.
    let status = queue(&env, &nats);
    let running: Vec<String> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["running"].as_object().unwrap().keys().cloned())
        .collect();
    assert_eq!(running, std::slice::from_ref(&id), "{status}");
    first.kill().unwrap();
    first.wait().unwrap();
    let second = start_worker(&env, &nats, &["--ack-wait", "2s"]);
    wait_for(&env, &nats, "the request to be done", drained);
    stop(second);
    let events = env.all_events();
    let ends: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["trace_id"] == id.as_str())
        .filter(|e| e["event_type"] == "job.completed" || e["event_type"] == "job.failed")
        .map(|e| {
            let reason = e["payload"]["reason"].as_str().unwrap_or("-").to_owned();
            (e["event_type"].as_str().unwrap().to_owned(), reason)
        })
        .collect();
    assert_eq!(
        ends,
        [
            ("job.failed".to_owned(), "abandoned".to_owned()),
            ("job.completed".to_owned(), "-".to_owned())
        ],
        "{events:#?}"
    );
}

/// `[start, end]` of each completed run in `env`'s store.
fn completed_spans(env: &Env) -> Vec<(String, String)> {
    let events = env.all_events();
    let started: std::collections::HashMap<&str, &str> = events
        .iter()
        .filter(|e| e["event_type"] == "job.started")
        .map(|e| {
            (
                e["correlation_id"].as_str().unwrap(),
                e["created_at"].as_str().unwrap(),
            )
        })
        .collect();
    events
        .iter()
        .filter(|e| e["event_type"] == "job.completed")
        .map(|e| {
            let run = e["correlation_id"].as_str().unwrap();
            (
                started[run].to_owned(),
                e["created_at"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn runs_of_one_job_and_account_on_two_machines_never_overlap() {
    let Some(nats) = Nats::start() else { return };
    // Two machines: two homes, so no lock on disk is shared; only the fleet's.
    let (plugins, first) = common::testkit_env();
    let second = Env::new(&[plugins.path()]);
    for _ in 0..2 {
        let args = [
            "testkit/sleep",
            "--param",
            "seconds=1",
            "--account",
            "shared",
        ];
        submit(&first, &nats, &args).code(0);
    }
    let workers = [
        start_worker(&first, &nats, &[]),
        start_worker(&second, &nats, &[]),
    ];
    wait_for(&first, &nats, "both requests to be done", drained);
    for worker in workers {
        stop(worker);
    }
    let mut spans = completed_spans(&first);
    spans.extend(completed_spans(&second));
    spans.sort();
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert!(spans[0].1 <= spans[1].0, "the runs overlap: {spans:?}");
}

#[test]
fn every_request_completes_once_through_a_server_restart() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let (_plugins, env) = common::testkit_env();
    let ids: Vec<String> = (0..6)
        .map(|n| {
            let account = format!("acct{n}");
            let args = [
                "testkit/sleep",
                "--param",
                "seconds=1",
                "--account",
                &account,
            ];
            let out = submit(&env, &nats, &args);
            out.code(0);
            out.stdout.trim().to_owned()
        })
        .collect();
    let worker = start_worker(&env, &nats, &["--concurrency", "2"]);
    // Down while runs are in progress: they end with no server to tell.
    wait_for(&env, &nats, "runs in progress", |s| s["in_progress"] == 2);
    nats.restart_after(Duration::from_secs(10));
    wait_for(&env, &nats, "every request to be done", drained);
    stop(worker);
    let events = env.all_events();
    for id in &ids {
        let completed = events
            .iter()
            .filter(|e| e["event_type"] == "job.completed" && e["trace_id"] == id.as_str())
            .count();
        assert_eq!(completed, 1, "request {id}");
    }
}

#[test]
fn tick_submit_queues_each_fire_time_once_for_the_workers() {
    let Some(nats) = Nats::start() else { return };
    let (_plugins, env) = common::testkit_env();
    env.write_config(
        "[[schedule]]\njob = \"testkit/echo\"\ncron = \"0 6 * * *\"\ncatch_up = \"all\"\n",
    );
    let tick = |now: &str, url: &str| {
        env.lorch()
            .args(["tick", "--quiet", "--submit", "--nats", url])
            .env("LORCH_NOW", now)
            .run()
    };
    // The server cannot be reached: the fire time stays owed, and tick says so.
    let nowhere = format!("nats://127.0.0.1:{}", common::bigquery::free_port());
    tick("2026-11-01T06:00:30Z", &nowhere)
        .code(3)
        .stderr_has("cannot connect to NATS");
    tick("2026-11-01T06:00:30Z", &nats.url).code(0);
    tick("2026-11-01T06:00:40Z", &nats.url).code(0);
    tick("2026-11-03T07:00:00Z", &nats.url).code(0);
    let queued = queue(&env, &nats);
    assert_eq!(queued["queued"]["testkit/echo"], 3, "{queued}");

    let worker = start_worker(&env, &nats, &[]);
    wait_for(&env, &nats, "the runs", drained);
    stop(worker);
    // Each window once, tiling time from the first fire time's day before.
    let out = env.run(&["runs", "list", "--json"]);
    let mut windows: Vec<(String, String)> = out.json()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "completed")
        .map(|r| {
            let at = |k: &str| r[k].as_str().unwrap_or("-")[..10].to_owned();
            (at("window_since"), at("window_until"))
        })
        .collect();
    windows.sort();
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        windows,
        [
            pair("2026-10-31", "2026-11-01"),
            pair("2026-11-01", "2026-11-02"),
            pair("2026-11-02", "2026-11-03")
        ]
    );
}

#[test]
fn three_workers_run_300_mixed_requests_each_to_its_one_end() {
    let Some(nats) = Nats::start() else { return };
    let (plugins, first) = common::testkit_env();
    let machines = [
        first,
        Env::new(&[plugins.path()]),
        Env::new(&[plugins.path()]),
    ];
    let counters = tempfile::TempDir::new().unwrap();
    // (request id, job, what it ends as)
    let mut requests = Vec::new();
    for n in 0..300 {
        let account = format!("a{n}");
        let counter = format!("counter={}", counters.path().join(n.to_string()).display());
        let (job, extra, end): (&str, Vec<&str>, &str) = match n % 6 {
            0..=2 => ("testkit/echo", vec![], "completed"),
            3 => (
                "testkit/flaky",
                vec!["--param", &counter, "--param", "succeed_on=2"],
                "completed",
            ),
            4 => ("testkit/fail_permanently", vec![], "failed"),
            _ => ("testkit/sleep", vec!["--param", "seconds=0.2"], "completed"),
        };
        let mut args = vec![job, "--account", &account, "--quiet"];
        args.extend(extra);
        let id = format!("r{n}");
        args.extend(["--request-id", &id]);
        submit(&machines[0], &nats, &args).code(0);
        requests.push((id, job, end));
    }
    let workers: Vec<_> = machines
        .iter()
        .map(|env| start_worker(env, &nats, &["--concurrency", "2"]))
        .collect();
    let status = wait_for(&machines[0], &nats, "300 requests to be done", drained);
    assert_eq!(status["dead"], serde_json::json!([]), "{status}");
    for worker in workers {
        stop(worker);
    }

    let events: Vec<Value> = machines.iter().flat_map(|env| env.all_events()).collect();
    let of = |id: &str, kind: &str| {
        events
            .iter()
            .filter(|e| e["trace_id"] == id && e["event_type"] == kind)
            .count()
    };
    for (id, job, end) in &requests {
        let (completed, failed) = (of(id, "job.completed"), of(id, "job.failed"));
        let expected = match (*job, *end) {
            ("testkit/flaky", _) => (1, 1),
            (_, "completed") => (1, 0),
            _ => (0, 1),
        };
        assert_eq!((completed, failed), expected, "request {id} ({job})");
        assert_eq!(of(id, "job.started"), completed + failed, "request {id}");
    }
    // The workers' stores and the events stream agree.
    assert_streamed(&machines[0], &nats, &events);
}

#[test]
fn a_stream_of_lorchs_name_with_other_settings_is_refused_not_used() {
    let Some(nats) = Nats::start() else { return };
    let (_plugins, env) = common::testkit_env();
    nats.create_stream(
        r#"{"name":"LORCH_JOBS","subjects":["lorch.jobs.>"],"retention":"limits","storage":"file"}"#,
    );
    submit(&env, &nats, &["testkit/echo"])
        .code(3)
        .stderr_has("the stream LORCH_JOBS on")
        .stderr_has(
            "has other settings than lorch's (subjects [\"lorch.jobs.>\"], retention Limits",
        );
    env.lorch()
        .args(["worker", "--nats", &nats.url])
        .run()
        .code(3)
        .stderr_has("remove it (nats stream rm LORCH_JOBS) or use another server");
}

#[test]
fn a_server_with_users_takes_the_user_and_password_from_the_url_and_lorch_never_prints_it() {
    let Some(nats) = Nats::start_with(&["--user", "alice", "--pass", "s3cr+t/pw"]) else {
        return;
    };
    let (_plugins, env) = common::testkit_env();
    let port = nats.url.rsplit(':').next().unwrap();
    let with = |password: &str| format!("nats://alice:{password}@127.0.0.1:{port}");
    let out = env
        .lorch()
        .args(["queue", "status"])
        .env("LORCH_NATS_URL", with("s3cr+t%2Fpw"))
        .run();
    out.code(0).stdout_has("nats://alice:***@127.0.0.1:");
    let wrong = env
        .lorch()
        .args(["submit", "testkit/echo", "--nats", &with("guess")])
        .run();
    wrong.code(3).stderr_has("authorization violation");
    assert!(!wrong.stderr.contains("guess"), "{wrong:?}");
}

/// Workers whose server went away, running nothing: SIGTERM ends them within their grace
/// (they waited on the server 10 s and more before), with exit 0.
#[test]
fn workers_whose_server_is_gone_stop_on_sigterm() {
    let (_plugins, env) = common::testkit_env();
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let grace = ["--grace", "3s"];
    let workers: Vec<_> = (0..2).map(|_| start_worker(&env, &nats, &grace)).collect();
    let status = wait_for(&env, &nats, "two workers", |s| {
        s["workers"].as_array().is_some_and(|w| w.len() == 2)
    });
    // Debian's server (2.9) cannot sync each write: queue status says what that risks.
    let version = std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .unwrap();
    if String::from_utf8_lossy(&version.stdout).contains("v2.9.") {
        assert!(
            status["warnings"][0]
                .as_str()
                .unwrap()
                .contains("cannot sync each write to disk"),
            "{status}"
        );
    }
    nats.shut_down();
    std::thread::sleep(Duration::from_secs(5));
    for worker in &workers {
        common::signal(worker, "TERM");
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    for mut worker in workers {
        let status = loop {
            if let Some(status) = worker.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = worker.kill();
                panic!("a worker ignored SIGTERM with its server gone");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0));
    }
}
