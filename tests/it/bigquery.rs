//! The BigQuery sink against a real emulator: every event lands exactly once with every column,
//! an outage changes no job's outcome and loses nothing, credentials are used, and a bad
//! configuration is named.

use std::collections::HashSet;

use crate::common;
use crate::common::Env;
use crate::common::bigquery::{self, Emulator, Fault, PROJECT, Proxy};
use serde_json::{Map, Value, json};

/// `lorch` with the test plugins, in a fresh home.
/// A fresh home with the testkit plugin, a dataset of its own in the shared emulator (`None`,
/// after a loud message, when there is no emulator outside CI), and the variables that point
/// lorch at it.
struct Bq {
    emulator: &'static Emulator,
    env: Env,
    _plugins: tempfile::TempDir,
    dataset: String,
    vars: Vec<(&'static str, String)>,
}

impl Bq {
    fn new(name: &str) -> Option<Bq> {
        let emulator = Emulator::shared()?;
        let (plugins, env) = crate::common::testkit_env();
        let dataset = emulator.dataset(name);
        let vars = bigquery::vars(&emulator.url, &dataset);
        Some(Bq {
            emulator,
            env,
            _plugins: plugins,
            dataset,
            vars,
        })
    }
}

/// Checks that the table holds exactly the events of the local store named by `run_ids`, once
/// each, column by column.
fn assert_rows_match(
    emulator: &Emulator,
    dataset: &str,
    table: &str,
    env: &Env,
    run_ids: &[String],
) {
    let rows = emulator.rows(dataset, table);
    let events: Vec<Value> = run_ids.iter().flat_map(|run| env.events(run)).collect();
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "an event_id appears twice in {dataset}.{table}"
    );
    assert_eq!(rows.len(), events.len(), "rows: {rows:#?}");
    for event in &events {
        let id = event["event_id"].as_str().unwrap();
        let row = rows
            .iter()
            .find(|r| r["event_id"] == id)
            .unwrap_or_else(|| panic!("event {id} is not in BigQuery"));
        assert_row_is(row, event);
    }
}

/// Every column of a row against the event as the local store has it.
fn assert_row_is(row: &Map<String, Value>, event: &Value) {
    for column in [
        "event_id",
        "event_type",
        "source_system",
        "status",
        "correlation_id",
        "trace_id",
        "object_type",
        "idem_key",
        "error_message",
    ] {
        assert_eq!(row[column], event[column], "column {column} of {event}");
    }
    // TIMESTAMP comes back as microseconds since the epoch.
    let created: chrono::DateTime<chrono::Utc> =
        event["created_at"].as_str().unwrap().parse().unwrap();
    let micros: i64 = row["created_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(micros, created.timestamp_micros(), "created_at of {event}");
    let payload: Value = match &row["payload"] {
        Value::String(text) => serde_json::from_str(text).unwrap(),
        other => other.clone(),
    };
    assert_eq!(payload, event["payload"], "payload of {event}");
}

fn assert_nothing_pending(env: &Env, vars: &[(&str, String)]) -> Value {
    let status = bigquery::run(env, vars, &["events", "status", "--json"]);
    status.code(0);
    let status = status.json();
    assert_eq!(status["pending"], 0, "{status}");
    status
}

#[test]
fn a_runs_events_land_in_bigquery_once_with_every_column() {
    let Some(emulator) = Emulator::shared() else {
        return;
    };
    let (_plugins, env) = crate::common::testkit_env();
    let dataset = emulator.dataset("e2e");
    let vars = bigquery::vars(&emulator.url, &dataset);

    let dry = bigquery::run(&env, &vars, &["events", "init", "--dry-run"]);
    dry.code(0);
    assert!(
        dry.stdout
            .contains(&format!("{PROJECT}.{dataset}.event_log")),
        "{dry:?}"
    );
    assert!(
        !emulator.table_exists(&dataset, "event_log"),
        "--dry-run created the table"
    );
    for expected in ["created", "already exists"] {
        let init = bigquery::run(&env, &vars, &["events", "init"]);
        init.code(0);
        assert!(
            init.stdout
                .contains(&format!("table {PROJECT}.{dataset}.event_log: {expected}")),
            "{init:?}"
        );
    }

    // 1,200 events: more than one insertAll request of at most 500 rows.
    let n = 1200;
    let ok = bigquery::run(
        &env,
        &vars,
        &[
            "run-job",
            "testkit",
            "emit_many",
            "--param",
            &format!("count={n}"),
            "--trace-id",
            "trace-e2e",
        ],
    );
    ok.code(0);
    assert!(!ok.stderr.contains("warning"), "{ok:?}");
    let failed = bigquery::run(&env, &vars, &["run-job", "testkit", "fail"]);
    failed.code(1);

    let runs = [ok.run_id(), failed.run_id()];
    assert_rows_match(emulator, &dataset, "event_log", &env, &runs);
    let rows = emulator.rows(&dataset, "event_log");
    let of_run = |run: &str| rows.iter().filter(|r| r["correlation_id"] == run).count();
    assert_eq!(
        of_run(&runs[0]),
        n + 2,
        "N events plus job.started and job.completed"
    );
    let failure = rows
        .iter()
        .find(|r| r["event_type"] == "job.failed")
        .unwrap();
    assert_eq!(failure["status"], "failed");
    assert!(
        failure["error_message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    let status = assert_nothing_pending(&env, &vars);
    assert_eq!(status["delivered"], rows.len(), "{status}");
    assert_eq!(status["dead"], 0, "{status}");
}

#[test]
fn job_started_reaches_bigquery_while_the_job_is_still_running() {
    let Some(Bq {
        emulator,
        env,
        dataset,
        vars,
        _plugins,
    }) = Bq::new("live")
    else {
        return;
    };
    assert_eq!(bigquery::run(&env, &vars, &["events", "init"]).code, 0);

    let child = common::start_with(
        &env,
        &vars,
        &["sleep", "--param", "seconds=6"],
        "testkit.sleeping",
    );
    let run_id = env.all_events()[0]["correlation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let arrived = loop {
        let rows = emulator.rows(&dataset, "event_log");
        if rows
            .iter()
            .any(|r| r["event_type"] == "job.started" && r["correlation_id"] == run_id)
        {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        arrived,
        "job.started was not in BigQuery while the job ran: {out:?}"
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_rows_match(emulator, &dataset, "event_log", &env, &[run_id]);
}

#[test]
fn transient_failures_during_a_run_are_retried_and_nothing_is_sent_twice() {
    let Some(Bq {
        emulator,
        env,
        dataset,
        vars: direct,
        _plugins,
    }) = Bq::new("retry")
    else {
        return;
    };
    assert_eq!(bigquery::run(&env, &direct, &["events", "init"]).code, 0);

    let proxy = emulator.proxy(Fault::Forward);
    proxy.then([
        Fault::Drop,
        Fault::status(500),
        Fault::status(429),
        Fault::status(503),
    ]);
    let mut vars = bigquery::vars(&proxy.url, &dataset);
    // Four failures in a row take a few seconds of back-off (0.5 s, 1 s, 2 s, with jitter).
    vars.push(("LORCH_BQ_FLUSH_TIMEOUT", "20s".to_owned()));
    let run = bigquery::run(
        &env,
        &vars,
        &["run-job", "testkit", "emit_many", "--param", "count=30"],
    );
    run.code(0);
    assert!(
        !run.stderr.contains("warning"),
        "the retries should have delivered everything: {run:?}"
    );
    assert_rows_match(emulator, &dataset, "event_log", &env, &[run.run_id()]);
    assert_nothing_pending(&env, &vars);
}

#[test]
fn an_outage_changes_no_outcome_and_flush_delivers_each_event_once() {
    let Some(Bq {
        emulator,
        env,
        dataset,
        vars: direct,
        _plugins,
    }) = Bq::new("outage")
    else {
        return;
    };
    assert_eq!(bigquery::run(&env, &direct, &["events", "init"]).code, 0);
    // One run delivered before the outage: the flush must not send it again.
    let before = bigquery::run(&env, &direct, &["run-job", "testkit", "echo"]);
    before.code(0);

    let proxy = emulator.proxy(Fault::Drop);
    proxy.then([Fault::status(500), Fault::status(429), Fault::status(503)]);
    let mut vars = bigquery::vars(&proxy.url, &dataset);
    vars.push(("LORCH_BQ_FLUSH_TIMEOUT", "1s".to_owned()));
    let mut runs = vec![before.run_id()];
    for (job, code) in [("emit_many", 0), ("fail", 1), ("echo", 0)] {
        let run = bigquery::run(&env, &vars, &["run-job", "testkit", job]);
        assert_eq!(
            run.code, code,
            "the outage changed the outcome of {job}: {run:?}"
        );
        let warnings: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("warning:"))
            .collect();
        assert_eq!(warnings.len(), 1, "{run:?}");
        assert!(
            warnings[0].contains("not in BigQuery yet")
                && warnings[0].contains("lorch events flush"),
            "{run:?}"
        );
        runs.push(run.run_id());
    }
    let status = bigquery::run(&env, &vars, &["events", "status", "--json"]).json();
    let queued: usize = runs[1..].iter().map(|r| env.events(r).len()).sum();
    assert_eq!(status["pending"], queued, "{status}");
    assert!(
        status["oldest_pending"].is_string() && status["last_error"].is_string(),
        "{status}"
    );

    let failed_flush = bigquery::run(&env, &vars, &["events", "flush", "--timeout", "1s"]);
    failed_flush.code(3);
    assert!(
        failed_flush
            .stderr
            .contains(&format!("{queued} events are still pending")),
        "{failed_flush:?}"
    );

    proxy.always(Fault::Forward);
    let flush = bigquery::run(&env, &vars, &["events", "flush"]);
    flush.code(0);
    assert!(
        flush.stdout.contains(&format!("delivered {queued} events")),
        "{flush:?}"
    );
    assert_rows_match(emulator, &dataset, "event_log", &env, &runs);
    assert_nothing_pending(&env, &vars);
}

#[test]
fn events_recorded_while_the_emulator_is_down_are_delivered_after_it_restarts() {
    let data = tempfile::tempdir().unwrap();
    let Some(emulator) = Emulator::start(Some(data.path())) else {
        return;
    };
    let (_plugins, env) = crate::common::testkit_env();
    let dataset = emulator.dataset("restart");
    let mut vars = bigquery::vars(&emulator.url, &dataset);
    vars.push(("LORCH_BQ_FLUSH_TIMEOUT", "500ms".to_owned()));
    assert_eq!(bigquery::run(&env, &vars, &["events", "init"]).code, 0);

    emulator.stop();
    let runs: Vec<String> = (0..3)
        .map(|_| {
            let run = bigquery::run(
                &env,
                &vars,
                &["run-job", "testkit", "emit_many", "--param", "count=5"],
            );
            run.code(0);
            assert!(
                run.stderr.contains("Connection refused"),
                "the warning names the problem: {run:?}"
            );
            run.run_id()
        })
        .collect();
    emulator.restart();
    // The next run delivers the earlier runs' pending events first.
    let next = bigquery::run(&env, &vars, &["run-job", "testkit", "echo"]);
    next.code(0);
    let flush = bigquery::run(&env, &vars, &["events", "flush"]);
    flush.code(0);
    let mut all = runs.clone();
    all.push(next.run_id());
    assert_rows_match(&emulator, &dataset, "event_log", &env, &all);
    assert_nothing_pending(&env, &vars);
}

#[test]
fn a_service_account_token_is_fetched_from_the_keys_token_uri_and_sent() {
    let Some(emulator) = Emulator::shared() else {
        return;
    };
    let Some(private_key) = rsa_key() else { return };
    let (_plugins, env) = crate::common::testkit_env();
    let dataset = emulator.dataset("auth");
    let token =
        json!({"access_token": "test-token-7f3a", "expires_in": 3600, "token_type": "Bearer"});
    let token_endpoint = Proxy::start(None, Fault::Respond(200, token.to_string()));
    let key = env.home.path().join("key.json");
    std::fs::write(
        &key,
        json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "test",
            "private_key": private_key,
            "client_email": "lorch-test@lorch-test.iam.gserviceaccount.com",
            "client_id": "1",
            "auth_uri": "http://127.0.0.1:1/auth",
            "token_uri": format!("{}/token", token_endpoint.url),
        })
        .to_string(),
    )
    .unwrap();
    let bigquery = emulator.proxy(Fault::Forward);
    // The project comes from the key: no BQ_PROJECT.
    let mut vars: Vec<_> = bigquery::vars(&bigquery.url, &dataset)
        .into_iter()
        .filter(|(name, _)| *name != "BQ_PROJECT")
        .collect();
    vars.push(("GOOGLE_APPLICATION_CREDENTIALS", key.display().to_string()));

    assert_eq!(bigquery::run(&env, &vars, &["events", "init"]).code, 0);
    let run = bigquery::run(&env, &vars, &["run-job", "testkit", "echo"]);
    run.code(0);
    assert!(!run.stderr.contains("warning"), "{run:?}");

    let asked = token_endpoint.received();
    assert!(
        asked.starts_with("POST /token")
            && asked.contains("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"),
        "no JWT grant at the token endpoint: {asked}"
    );
    let sent = bigquery.received().to_lowercase();
    assert!(
        sent.contains("authorization: bearer test-token-7f3a"),
        "no bearer token: {sent}"
    );
    assert_rows_match(emulator, &dataset, "event_log", &env, &[run.run_id()]);
}

/// A fresh RSA key in PEM (PKCS#8), from openssl; `None` after a loud message locally.
fn rsa_key() -> Option<String> {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => Some(String::from_utf8(out.stdout).unwrap()),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("openssl is required in CI"),
        _ => {
            eprintln!("\n!!! SKIPPING the service-account test: no openssl to make a key !!!\n");
            None
        }
    }
}

#[test]
fn bad_configuration_is_named_and_run_job_keeps_the_events() {
    let (_plugins, env) = crate::common::testkit_env();
    let only_dataset = vec![
        ("BQ_EVENTS_DATASET", "lorch".to_owned()),
        ("BQ_PROJECT", "p".to_owned()),
    ];
    let unreadable_key = vec![
        ("BQ_EVENTS_DATASET", "lorch".to_owned()),
        ("BQ_EVENTS_TABLE", "event_log".to_owned()),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/nonexistent/key.json".to_owned(),
        ),
    ];
    let mut pending = 0;
    for (vars, problem) in [
        (&only_dataset, "BQ_EVENTS_TABLE is not set"),
        (
            &unreadable_key,
            "cannot read GOOGLE_APPLICATION_CREDENTIALS /nonexistent/key.json",
        ),
    ] {
        for command in [&["events", "init"][..], &["events", "flush"]] {
            let out = bigquery::run(&env, vars, command);
            assert_eq!(out.code, 3, "{command:?}: {out:?}");
            assert!(out.stderr.contains(problem), "{command:?}: {out:?}");
        }
        let run = bigquery::run(&env, vars, &["run-job", "testkit", "echo"]);
        run.code(0);
        pending += env.events(&run.run_id()).len();
        assert!(
            run.stderr.contains(&format!(
                "warning: {pending} events are not in BigQuery yet"
            )) && run.stderr.contains(problem),
            "{run:?}"
        );
    }
    let status = bigquery::run(&env, &only_dataset, &["events", "status", "--json"]).json();
    assert_eq!(status["pending"], pending, "{status}");
    assert!(
        status["bigquery"]["problem"]
            .as_str()
            .unwrap()
            .contains("BQ_EVENTS_TABLE"),
        "{status}"
    );

    let wrong_table = bigquery::run(
        &env,
        &[],
        &["run-job", "testkit", "echo", "--events-table", "a.b.c.d"],
    );
    wrong_table.code(2);
}

#[test]
fn a_missing_table_is_named_until_events_init_creates_it() {
    let Some(Bq {
        emulator,
        env,
        dataset,
        vars,
        _plugins,
    }) = Bq::new("missing")
    else {
        return;
    };
    let run = bigquery::run(&env, &vars, &["run-job", "testkit", "echo"]);
    run.code(0);
    assert!(
        run.stderr.contains("notFound") && run.stderr.contains("lorch events init"),
        "{run:?}"
    );
    let flush = bigquery::run(&env, &vars, &["events", "flush"]);
    flush.code(3);
    flush.stderr_has("event_log");

    assert_eq!(bigquery::run(&env, &vars, &["events", "init"]).code, 0);
    assert_eq!(bigquery::run(&env, &vars, &["events", "flush"]).code, 0);
    assert_rows_match(emulator, &dataset, "event_log", &env, &[run.run_id()]);
}

#[test]
fn rows_bigquery_refuses_become_dead_letters_and_block_nothing() {
    let Some(Bq {
        emulator,
        env,
        dataset,
        vars,
        _plugins,
    }) = Bq::new("dead")
    else {
        return;
    };
    assert_eq!(bigquery::run(&env, &vars, &["events", "init"]).code, 0);
    // A table whose trace_id is a number: rows with a textual trace id are invalid there.
    emulator.post(
        &format!("/projects/{PROJECT}/datasets/{dataset}/tables"),
        &json!({
            "tableReference": {"projectId": PROJECT, "datasetId": dataset, "tableId": "odd"},
            "schema": {"fields": [
                {"name": "event_id", "type": "STRING"}, {"name": "event_type", "type": "STRING"},
                {"name": "source_system", "type": "STRING"}, {"name": "created_at", "type": "TIMESTAMP"},
                {"name": "status", "type": "STRING"}, {"name": "correlation_id", "type": "STRING"},
                {"name": "trace_id", "type": "INTEGER"}, {"name": "object_type", "type": "STRING"},
                {"name": "idem_key", "type": "STRING"}, {"name": "error_message", "type": "STRING"},
                {"name": "payload", "type": "JSON"}]},
        }),
    );
    let refused = bigquery::run(
        &env,
        &vars,
        &[
            "run-job",
            "testkit",
            "echo",
            "--events-table",
            "odd",
            "--trace-id",
            "not-a-number",
        ],
    );
    assert_eq!(
        refused.code, 0,
        "refused rows must not change the outcome: {refused:?}"
    );
    refused.stderr_has("BigQuery refused 3 events of this run (invalid");
    let fine = bigquery::run(
        &env,
        &vars,
        &["run-job", "testkit", "echo", "--events-table", "odd"],
    );
    fine.code(0);
    assert!(
        !fine.stderr.contains("warning"),
        "dead letters block nothing: {fine:?}"
    );

    let status = bigquery::run(&env, &vars, &["events", "status", "--json"]).json();
    assert_eq!(
        (status["pending"].clone(), status["dead"].clone()),
        (json!(0), json!(3)),
        "{status}"
    );
    let dead = status["dead_letters"].as_array().unwrap();
    assert!(
        dead.iter()
            .all(|d| d["reason"].as_str().unwrap().starts_with("invalid")),
        "{status}"
    );
    let flush = bigquery::run(&env, &vars, &["events", "flush"]);
    assert!(
        flush.stdout.contains("in 0 requests"),
        "dead letters are not retried: {flush:?}"
    );
    assert_rows_match(emulator, &dataset, "odd", &env, &[fine.run_id()]);
    assert!(emulator.rows(&dataset, "event_log").is_empty());
}

#[test]
fn dry_run_sends_nothing_and_prints_the_rows() {
    let Some(Bq {
        emulator,
        env,
        dataset,
        vars,
        _plugins,
    }) = Bq::new("dry")
    else {
        return;
    };
    assert_eq!(bigquery::run(&env, &vars, &["events", "init"]).code, 0);
    let run = bigquery::run(
        &env,
        &vars,
        &[
            "run-job",
            "testkit",
            "emit_many",
            "--param",
            "count=2",
            "--dry-run",
        ],
    );
    run.code(0);
    let printed: Vec<Value> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events = env.events(&run.run_id());
    assert_eq!(printed.len(), events.len(), "{run:?}");
    for (row, event) in printed.iter().zip(&events) {
        assert_row_is(&as_query_row(row), event);
    }
    assert!(
        run.stderr
            .contains(&format!("would be sent to {PROJECT}.{dataset}.event_log")),
        "{run:?}"
    );
    assert!(
        emulator.rows(&dataset, "event_log").is_empty(),
        "--dry-run sent rows"
    );
    let status = assert_nothing_pending(&env, &vars);
    assert_eq!(status["delivered"], 0, "{status}");
}

/// A printed insertAll row in the shape `jobs.query` returns (created_at in microseconds).
fn as_query_row(row: &Value) -> Map<String, Value> {
    let mut row = row.as_object().unwrap().clone();
    let created: chrono::DateTime<chrono::Utc> =
        row["created_at"].as_str().unwrap().parse().unwrap();
    row.insert(
        "created_at".into(),
        json!(created.timestamp_micros().to_string()),
    );
    for column in [
        "trace_id",
        "object_type",
        "idem_key",
        "error_message",
        "payload",
    ] {
        row.entry(column).or_insert(Value::Null);
    }
    row
}

#[test]
fn events_table_sends_one_run_to_another_table() {
    let Some(Bq {
        emulator,
        env,
        dataset,
        vars,
        _plugins,
    }) = Bq::new("other")
    else {
        return;
    };
    for table in [None, Some("test_events")] {
        let mut args = vec!["events", "init"];
        args.extend(table.map(|t| ["--events-table", t]).into_iter().flatten());
        let init = bigquery::run(&env, &vars, &args);
        init.code(0);
    }
    let test = bigquery::run(
        &env,
        &vars,
        &[
            "run-job",
            "testkit",
            "echo",
            "--events-table",
            "test_events",
        ],
    );
    test.code(0);
    let normal = bigquery::run(&env, &vars, &["run-job", "testkit", "echo"]);
    normal.code(0);
    assert_rows_match(emulator, &dataset, "test_events", &env, &[test.run_id()]);
    assert_rows_match(emulator, &dataset, "event_log", &env, &[normal.run_id()]);
}

/// Runs `lorch run-job testkit emit_many --param count=N` with `vars`.
fn emit_many(env: &Env, vars: &[(&str, String)], count: usize) -> common::Run {
    let count = format!("count={count}");
    bigquery::run(
        env,
        vars,
        &["run-job", "testkit", "emit_many", "--param", &count],
    )
}

#[test]
fn no_row_is_stored_twice_without_a_fault_even_when_answers_come_late() {
    let Some(emulator) = Emulator::shared() else {
        return;
    };
    let (_plugins, env) = crate::common::testkit_env();
    let dataset = emulator.dataset("once");
    let mut vars = bigquery::vars(&emulator.url, &dataset);
    vars.push(("LORCH_BQ_FLUSH_TIMEOUT", "5m".to_owned()));
    assert_eq!(bigquery::run(&env, &vars, &["events", "init"]).code, 0);

    // Many requests, each taking the emulator a while: the run's 2 s delivery rounds used to
    // give a request only what was left of its round, and send it again.
    let run = emit_many(&env, &vars, 20_000);
    run.code(0);
    assert_eq!(emulator.counts(&dataset, "event_log"), (20_002, 20_002));

    // Two runs delivering at once.
    let args = [
        "run-job",
        "testkit",
        "emit_many",
        "--param",
        "count=5000",
        "--no-lock",
    ];
    let runs: Vec<_> = (0..2)
        .map(|_| {
            env.cmd(&args)
                .envs(vars.iter().map(|(k, v)| (k, v)))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in runs {
        let out = common::Run::from(child.wait_with_output().unwrap());
        out.code(0);
    }
    assert_eq!(emulator.counts(&dataset, "event_log"), (30_006, 30_006));

    // A server that answers after lorch's round is over: the answer is still waited for.
    let slow = emulator.proxy(Fault::Slow(std::time::Duration::from_secs(3)));
    let mut slow_vars = bigquery::vars(&slow.url, &dataset);
    slow_vars.push(("LORCH_BQ_FLUSH_TIMEOUT", "2m".to_owned()));
    let run = emit_many(&env, &slow_vars, 1500);
    run.code(0);
    assert!(!run.stderr.contains("warning"), "{run:?}");
    assert_eq!(emulator.counts(&dataset, "event_log"), (31_508, 31_508));
    assert_nothing_pending(&env, &vars);
}

#[test]
fn a_killed_runs_job_failed_goes_to_the_table_its_job_started_went_to() {
    let Some(Bq {
        emulator,
        env,
        dataset,
        vars,
        _plugins,
    }) = Bq::new("reaped")
    else {
        return;
    };
    assert_eq!(bigquery::run(&env, &vars, &["events", "init"]).code, 0);
    let side = ["events", "init", "--events-table", "side_table"];
    assert_eq!(bigquery::run(&env, &vars, &side).code, 0);

    for (table, extra) in [("event_log", None), ("side_table", Some("side_table"))] {
        let mut args = vec!["sleep", "--param", "seconds=60"];
        if let Some(extra) = extra {
            args.extend(["--events-table", extra]);
        }
        let mut child = common::start_with(&env, &vars, &args, "testkit.sleeping");
        let run_id = env
            .all_events()
            .into_iter()
            .rev()
            .find(|e| e["event_type"] == "testkit.sleeping")
            .unwrap()["correlation_id"]
            .as_str()
            .unwrap()
            .to_owned();
        // Killed once what it recorded so far is delivered (a kill in the middle of a request
        // may repeat rows, which the emulator, unlike BigQuery, keeps).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while bigquery::run(&env, &vars, &["events", "status", "--json"]).json()["pending"] != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing was delivered"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Another shell, without the BigQuery variables, closes the run...
        let reaped = env.run(&["runs", "list"]);
        reaped.stderr_has("was abandoned");
        // ...and its job.failed still goes where its job.started went.
        let flush = bigquery::run(&env, &vars, &["events", "flush"]);
        flush.code(0);
        let types: Vec<String> = emulator
            .rows(&dataset, table)
            .iter()
            .filter(|r| r["correlation_id"] == run_id.as_str())
            .map(|r| r["event_type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            types,
            ["job.started", "testkit.sleeping", "job.failed"],
            "{table}"
        );
    }
    // Nothing of those runs went to the other table.
    assert_eq!(emulator.counts(&dataset, "event_log").0, 3);
    assert_eq!(emulator.counts(&dataset, "side_table").0, 3);
}

#[test]
fn configuration_mistakes_are_named_at_once_and_never_retried() {
    let Some(emulator) = Emulator::shared() else {
        return;
    };
    let (_plugins, env) = crate::common::testkit_env();
    let dataset = emulator.dataset("mistakes");
    let good = bigquery::vars(&emulator.url, &dataset);
    assert_eq!(bigquery::run(&env, &good, &["events", "init"]).code, 0);
    let with_endpoint = |endpoint: &str| {
        let mut vars = bigquery::vars(endpoint, &dataset);
        vars.push(("LORCH_BQ_FLUSH_TIMEOUT", "1m".to_owned()));
        vars
    };

    // A typo in the endpoint is a configuration error: no request, exit 3 naming the part.
    for (endpoint, says) in [
        ("http://127.0.0.1:4308O", "the port '4308O' is not a number"),
        (
            "http://127.0.0.1:430830",
            "the port '430830' is not a number",
        ),
    ] {
        let vars = with_endpoint(endpoint);
        let flush = bigquery::run(&env, &vars, &["events", "flush", "--timeout", "1m"]);
        flush.code(3);
        flush.stderr_has(says);
        let run = bigquery::run(&env, &vars, &["run-job", "testkit", "echo"]);
        run.code(0);
        run.stderr_has(says);
    }

    // A proxy's HTML error page: the status and the page's start are shown, and one request is
    // all it takes (a 4xx is not an outage).
    let page = "<html><body><h1>403 Forbidden</h1>Request blocked by policy</body></html>";
    let proxy = bigquery::Proxy::start(None, Fault::Page(403, page.to_owned()));
    let vars = with_endpoint(&proxy.url);
    let run = bigquery::run(&env, &vars, &["run-job", "testkit", "echo"]);
    run.code(0);
    assert!(
        run.stderr.contains("403 Forbidden") && run.stderr.contains("<html><body><h1>403"),
        "{run:?}"
    );
    let flush = bigquery::run(&env, &vars, &["events", "flush", "--timeout", "1m"]);
    flush.code(3);
    flush.stderr_has("403 Forbidden");
    assert_eq!(
        proxy.inserts(),
        2,
        "a 403 was retried: {}",
        proxy.received()
    );

    // A path typo: the server's 404 names the table and `lorch events init`, and is not retried.
    let typo = emulator.proxy(Fault::Forward);
    let vars = with_endpoint(&format!("{}/bigquery/v3", typo.url));
    let flush = bigquery::run(&env, &vars, &["events", "flush", "--timeout", "1m"]);
    flush.code(3);
    flush.stderr_has("404");
    assert_eq!(typo.inserts(), 1, "a 404 was retried");

    // Rows the right endpoint receives later, once each.
    let flush = bigquery::run(&env, &good, &["events", "flush"]);
    flush.code(0);
    let (rows, distinct) = emulator.counts(&dataset, "event_log");
    assert_eq!(rows, distinct);
}

#[test]
fn events_init_names_how_an_existing_table_differs() {
    let Some(Bq {
        emulator,
        env,
        dataset,
        vars,
        _plugins,
    }) = Bq::new("schema")
    else {
        return;
    };
    assert_eq!(bigquery::run(&env, &vars, &["events", "init"]).code, 0);
    emulator.post(
        &format!("/projects/{PROJECT}/datasets/{dataset}/tables"),
        &json!({
            "tableReference": {"projectId": PROJECT, "datasetId": dataset, "tableId": "other"},
            "schema": {"fields": [
                {"name": "event_id", "type": "STRING"}, {"name": "event_type", "type": "STRING"},
                {"name": "source_system", "type": "STRING"}, {"name": "created_at", "type": "TIMESTAMP"},
                {"name": "status", "type": "STRING"}, {"name": "correlation_id", "type": "STRING"},
                {"name": "trace_id", "type": "INTEGER"}, {"name": "object_type", "type": "STRING"},
                {"name": "idem_key", "type": "STRING"},
                {"name": "payload", "type": "JSON"}, {"name": "owner", "type": "STRING", "mode": "REQUIRED"}]},
        }),
    );
    let init = bigquery::run(&env, &vars, &["events", "init", "--events-table", "other"]);
    init.code(3);
    for says in [
        "rows lorch sends would not fit it",
        "column trace_id is INTEGER, lorch writes STRING",
        "column error_message (STRING) is missing",
        "column owner is REQUIRED and lorch does not write it",
    ] {
        assert!(init.stderr.contains(says), "{says}: {init:?}");
    }
    let again = bigquery::run(&env, &vars, &["events", "init"]);
    again.stdout_has("already exists");
}

#[test]
fn a_full_disk_stops_delivery_before_rows_it_could_not_mark_delivered_are_sent() {
    let Some(emulator) = Emulator::shared() else {
        return;
    };
    // A small disk of its own for LORCH_HOME: a tmpfs in a private mount namespace.
    let probe = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI runs as root: `unshare -m` and a tmpfs mount must work there");
        }
        eprintln!("\n!!! SKIPPING the full-disk test: it needs root for a private tmpfs !!!\n");
        return;
    }
    let (_plugins, env) = crate::common::testkit_env();
    let dataset = emulator.dataset("full");
    let vars = bigquery::vars(&emulator.url, &dataset);
    assert_eq!(bigquery::run(&env, &vars, &["events", "init"]).code, 0);
    let while_full = emulator.proxy(Fault::Forward);
    let home = env.home.path().join("lorch");
    std::fs::create_dir_all(&home).unwrap();
    // 2,000 events recorded while BigQuery is unreachable; then the disk fills up to 4 MiB
    // short; then it is freed.
    let script = r#"
        mount -t tmpfs -o size=48m tmpfs "$LORCH_HOME" || exit 99
        LORCH_BQ_ENDPOINT=http://127.0.0.1:1 LORCH_BQ_FLUSH_TIMEOUT=1s \
            "$LORCH" "$@" run-job testkit emit_many --param count=2000 >/dev/null 2>&1
        echo "run:$?"
        dd if=/dev/zero of="$LORCH_HOME/fill" bs=1M 2>/dev/null
        truncate -s -4M "$LORCH_HOME/fill"
        LORCH_BQ_ENDPOINT="$WHILE_FULL" "$LORCH" "$@" events flush --timeout 20s
        echo "full:$?"
        rm "$LORCH_HOME/fill"
        "$LORCH" "$@" events flush
        echo "freed:$?"
    "#;
    let mut unshare = std::process::Command::new("unshare");
    unshare.args(["-m", "sh", "-c", script, "sh"]);
    let mut cmd = env.cmd_in(unshare, &[]);
    cmd.env("LORCH", env!("CARGO_BIN_EXE_lorch"))
        .env("WHILE_FULL", &while_full.url)
        .envs(vars.iter().map(|(k, v)| (k, v)));
    let out = common::Run::from(cmd.output().unwrap());
    assert!(
        out.stdout.contains("run:0\n")
            && out.stdout.contains("full:3\n")
            && out.stdout.contains("freed:0\n"),
        "{out:?}"
    );
    out.stderr_has("KiB free");
    assert_eq!(while_full.inserts(), 0, "rows were sent with the disk full");
    assert_eq!(emulator.counts(&dataset, "event_log"), (2002, 2002));
}

/// `SELECT` of every object row of `dataset.table`, by idem key: payload as JSON text, times
/// in microseconds, as `(payload, first_seen, last_seen, correlation_id)`.
fn bq_objects(emulator: &Emulator, dataset: &str, table: &str) -> Vec<(String, [Value; 4])> {
    // A page at a time: one answer holds at most 10,000 rows.
    let mut rows = Vec::new();
    loop {
        let page = emulator.query(&format!(
            "SELECT idem_key, TO_JSON_STRING(payload) AS payload, UNIX_MICROS(first_seen) AS f,
                    UNIX_MICROS(last_seen) AS l, correlation_id AS c
             FROM `{PROJECT}.{dataset}.{table}` ORDER BY idem_key LIMIT 10000 OFFSET {}",
            rows.len()
        ));
        let done = page.len() < 10_000;
        rows.extend(page);
        if done {
            break;
        }
    }
    rows.into_iter()
        .map(|r| {
            let payload: Value = serde_json::from_str(r["payload"].as_str().unwrap()).unwrap();
            let key = r["idem_key"].as_str().unwrap().to_owned();
            (
                key,
                [payload, r["f"].clone(), r["l"].clone(), r["c"].clone()],
            )
        })
        .collect()
}

/// Asserts BigQuery's rows are the local ones, naming the first that differs.
#[track_caller]
fn assert_same_objects(bq: &[(String, [Value; 4])], local: &[(String, [Value; 4])]) {
    assert_eq!(
        bq.len(),
        local.len(),
        "rows in BigQuery and in the local store"
    );
    if let Some((b, l)) = bq.iter().zip(local).find(|(b, l)| b != l) {
        panic!("BigQuery has {b:?}, the local store {l:?}");
    }
}

/// The local store's objects, in the shape of [`bq_objects`].
fn local_objects(env: &Env) -> Vec<(String, [Value; 4])> {
    let out = env.run(&["objects", "list", "--limit", "1000000", "--json"]);
    out.code(0);
    let micros = |v: &Value| {
        let at: chrono::DateTime<chrono::Utc> = v.as_str().unwrap().parse().unwrap();
        json!(at.timestamp_micros().to_string())
    };
    let mut objects: Vec<_> = out.json()["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let key = o["idem_key"].as_str().unwrap().to_owned();
            let fields = [
                o["payload"].clone(),
                micros(&o["first_seen"]),
                micros(&o["last_seen"]),
                o["correlation_id"].clone(),
            ];
            (key, fields)
        })
        .collect();
    objects.sort_by(|a, b| a.0.cmp(&b.0));
    objects
}

fn run_upsert(env: &Env, vars: &[(&str, String)], params: &[&str]) -> common::Run {
    let mut args = vec!["run-job", "testkit", "upsert"];
    for param in params {
        args.extend(["--param", param]);
    }
    bigquery::run(env, vars, &args)
}

#[test]
fn objects_are_merged_into_raw_objects_one_row_per_key_equal_to_the_local_store() {
    let Some(Bq {
        emulator,
        env,
        dataset,
        mut vars,
        _plugins,
    }) = Bq::new("objects")
    else {
        return;
    };
    vars.push(("LORCH_BQ_FLUSH_TIMEOUT", "5m".to_owned()));
    let init = bigquery::run(&env, &vars, &["events", "init"]);
    init.code(0);
    init.stdout_has(&format!("table {PROJECT}.{dataset}.raw_objects: created"));

    // 100,000 upserts in one run, 10% of them a second upsert of a key: 90,000 keys.
    let first = run_upsert(&env, &vars, &["count=90000", "twice=9"]);
    first.code(0);
    first.stdout_has("; objects: 90000 inserted, 10000 updated, 0 unchanged\n");
    assert!(!first.stderr.contains("warning"), "{first:?}");
    let local = local_objects(&env);
    assert_eq!(local.len(), 90_000);
    assert_same_objects(&bq_objects(emulator, &dataset, "raw_objects"), &local);

    // 50,000 of them again with new payloads: updated, first_seen kept, in both places.
    let second = run_upsert(&env, &vars, &["count=50000", "version=v2"]);
    second.code(0);
    second.stdout_has("; objects: 0 inserted, 50000 updated, 0 unchanged\n");
    let updated = local_objects(&env);
    for ((key, before), (_, after)) in local.iter().zip(&updated).take(50_000) {
        assert_eq!(after[0]["version"], "v2", "{key}");
        assert_eq!(after[1], before[1], "{key}: first_seen moved");
        assert_ne!(after[2], before[2], "{key}: last_seen did not move");
        assert_eq!(after[3].as_str(), Some(second.run_id().as_str()));
    }
    assert_eq!(updated[50_000..], local[50_000..]);
    assert_same_objects(&bq_objects(emulator, &dataset, "raw_objects"), &updated);
    let status = assert_nothing_pending(&env, &vars);
    assert_eq!(status["objects_pending"], 0, "{status}");
}

#[test]
fn objects_wait_out_an_outage_and_a_repeated_delivery_leaves_one_row_per_key() {
    let Some(Bq {
        emulator,
        env,
        dataset,
        vars,
        _plugins,
    }) = Bq::new("objects_outage")
    else {
        return;
    };
    bigquery::run(&env, &vars, &["events", "init"]).code(0);
    let proxy = emulator.proxy(Fault::Drop);
    let down = bigquery::vars(&proxy.url, &dataset);

    let run = run_upsert(&env, &down, &["count=2000"]);
    run.code(0);
    run.stderr_has("2000 objects are not in BigQuery yet");
    // Acknowledged, then the job's process crashed: kept, and delivered like the others.
    let crashed = run_upsert(&env, &down, &["count=500", "from=2000", "then=segfault"]);
    crashed.code(1);
    let status = bigquery::run(&env, &down, &["events", "status", "--json"]).json();
    assert_eq!(status["objects_pending"], 2500, "{status}");
    bigquery::run(&env, &down, &["events", "flush", "--timeout", "1s"])
        .code(3)
        .stderr_has("and 2500 objects are still pending");

    proxy.always(Fault::Forward);
    let flush = bigquery::run(&env, &down, &["events", "flush"]);
    flush.code(0);
    flush.stdout_has(&format!(
        "merged 2500 objects into {PROJECT}.{dataset}.raw_objects ("
    ));
    flush.stdout_has(" objects/s); 0 pending\n");
    assert_same_objects(
        &bq_objects(emulator, &dataset, "raw_objects"),
        &local_objects(&env),
    );

    // BigQuery took the MERGE but lorch never heard: the outbox still holds every object, and
    // they are sent again.
    let store = rusqlite::Connection::open(env.home.path().join("lorch/events.db")).unwrap();
    store
        .execute(
            "INSERT INTO object_outbox (target, version, idem_key, source_system,
                 connection_name, object_type, schema_ref, external_id, payload, first_seen,
                 last_seen, correlation_id)
             SELECT '', version, idem_key, source_system, connection_name, object_type,
                 schema_ref, external_id, payload, first_seen, last_seen, correlation_id
             FROM objects",
            [],
        )
        .unwrap();
    let again = bigquery::run(&env, &down, &["events", "flush"]);
    again.code(0);
    again.stdout_has("merged 2500 objects");
    assert_same_objects(
        &bq_objects(emulator, &dataset, "raw_objects"),
        &local_objects(&env),
    );
}

#[test]
fn a_test_run_merges_into_test_raw_objects_and_dry_run_prints_object_rows() {
    let Some(Bq {
        emulator,
        env,
        dataset,
        vars,
        _plugins,
    }) = Bq::new("objects_test")
    else {
        return;
    };
    let init = bigquery::run(
        &env,
        &vars,
        &["events", "init", "--events-table", "test_events"],
    );
    init.code(0);
    init.stdout_has(&format!(
        "table {PROJECT}.{dataset}.test_raw_objects: created"
    ));
    bigquery::run(&env, &vars, &["events", "init"]).code(0);

    let test = bigquery::run(
        &env,
        &vars,
        &[
            "run-job",
            "testkit",
            "upsert",
            "--events-table",
            "test_events",
        ],
    );
    test.code(0);
    assert_eq!(bq_objects(emulator, &dataset, "test_raw_objects").len(), 10);
    assert!(bq_objects(emulator, &dataset, "raw_objects").is_empty());

    let dry = bigquery::run(
        &env,
        &vars,
        &[
            "run-job",
            "testkit",
            "upsert",
            "--dry-run",
            "--param",
            "key_prefix=d",
        ],
    );
    dry.code(0);
    dry.stderr_has(&format!(
        "dry run: 2 event rows and 10 object rows would be sent to {PROJECT}.{dataset}.event_log and {PROJECT}.{dataset}.raw_objects; nothing was sent"
    ));
    let printed: Vec<Value> = dry
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|row: &Value| {
            row.get("idem_key")
                .is_some_and(|k| k.as_str().is_some_and(|k| k.starts_with('d')))
        })
        .collect();
    assert_eq!(printed.len(), 10, "{dry:?}");
    assert_eq!(printed[0]["payload"], r#"{"i":0,"version":"v1"}"#);
    assert!(bq_objects(emulator, &dataset, "raw_objects").is_empty());
}
