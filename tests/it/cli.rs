//! The README's command line, line by line, against the example and test plugins.

use crate::common;
use crate::common::{Env, plugin_dir};
use serde_json::{Value, json};

fn env() -> (tempfile::TempDir, Env) {
    let plugins = plugin_dir(&["ingester", "canonizer", "testkit"]);
    let env = Env::new(&[plugins.path()]);
    (plugins, env)
}

#[test]
fn version() {
    let (_p, env) = env();
    let out = env.run(&["--version"]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, format!("lorch {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn jobs_list_is_lorchestras_format_sorted() {
    let plugins = plugin_dir(&["ingester", "canonizer"]);
    let env = Env::new(&[plugins.path()]);
    let out = env.run(&["jobs", "list"]);
    out.code(0);
    assert_eq!(
        out.stdout,
        "canonizer:\n  canonicalize_email\ningester:\n  extract_gmail\n  extract_slack\n"
    );
    assert_eq!(out.stderr, "");

    let out = env.run(&["jobs", "list", "ingester"]);
    out.code(0);
    assert_eq!(
        out.stdout,
        "Jobs in ingester:\n  extract_gmail\n  extract_slack\n"
    );
}

#[test]
fn jobs_list_json_is_one_document() {
    let (p, env) = env();
    let out = env.run(&["jobs", "list", "ingester", "--json"]);
    out.code(0);
    let location = p.path().join("libingester.so").display().to_string();
    assert_eq!(
        out.json(),
        json!({"jobs": [
            {"id": "ingester/extract_gmail", "package": "ingester", "job": "extract_gmail",
             "summary": "Extracts the Gmail messages of an account inside the requested time window.",
             "location": location},
            {"id": "ingester/extract_slack", "package": "ingester", "job": "extract_slack",
             "summary": "Extracts the Slack messages of an account inside the requested time window.",
             "location": location},
        ]})
    );
}

#[test]
fn unknown_names_are_usage_errors_with_a_hint() {
    let (_p, env) = env();
    let out = env.run(&["jobs", "list", "ingestr"]);
    out.code(2);
    out.stderr_has("unknown package `ingestr` (did you mean `ingester`?)");
    assert_eq!(out.stdout, "");

    let out = env.run(&["jobs", "show", "ingester", "extract_gmial"]);
    out.code(2);
    assert!(out.stderr.contains(
        "unknown job `extract_gmial` in package `ingester` (did you mean `extract_gmail`?)"
    ));

    let out = env.run(&["run-job", "nope", "x"]);
    out.code(2);
    out.stderr_has("known packages: canonizer, ingester, testkit");
    assert!(!out.stderr.contains("panicked"), "{out:?}");

    let out = env.run(&["jobs", "frobnicate"]);
    out.code(2);
}

#[test]
fn jobs_show_prints_location_parameters_and_description() {
    let (p, env) = env();
    let out = env.run(&["jobs", "show", "testkit", "echo"]);
    out.code(0);
    let expected = format!(
        "testkit/echo\nLocation: {}\nParameters (--param KEY=VALUE, besides --account, --since and --until):\n\
         \x20 n=<int>         An integer\n\
         \x20 ratio=<float>   A float\n\
         \x20 flag=<bool>     A boolean with a default (default: true)\n\
         \x20 label=<string>  Some text\n\
         Description:\n  Emits `testkit.args` with every argument it received.\n",
        p.path().join("libtestkit.so").display()
    );
    assert_eq!(out.stdout, expected);

    let out = env.run(&["jobs", "show", "testkit", "needs_param", "--json"]);
    out.code(0);
    let doc = out.json();
    assert_eq!(doc["id"], "testkit/needs_param");
    assert_eq!(doc["description"], "Requires `--param n=INT`.");
    assert_eq!(
        doc["params"],
        json!([{"name": "n", "type": "int", "required": true, "default": null, "help": "Required integer"}])
    );

    let out = env.run(&["jobs", "show", "testkit", "echo", "--json"]);
    assert_eq!(out.json()["params"][2]["default"], json!(true));
}

#[test]
fn run_job_records_started_job_events_and_completed_under_one_run_id() {
    let (p, env) = env();
    let out = env.run(&["run-job", "ingester", "extract_gmail", "--since", "-7d"]);
    out.code(0);
    assert!(
        out.stdout
            .starts_with("✓ ingester/extract_gmail completed in "),
        "{out:?}"
    );
    let run_id = out.run_id();
    assert_eq!(uuid_version(&run_id), '7');

    let events = env.events(&run_id);
    assert_eq!(
        common::types(&events),
        [
            "job.started",
            "ingester.messages_extracted",
            "job.completed"
        ]
    );
    for event in &events {
        assert_eq!(event["correlation_id"], run_id.as_str());
        assert_eq!(event["status"], "ok");
        assert_eq!(event["error_message"], Value::Null);
    }
    let (started, extracted, completed) = (&events[0], &events[1], &events[2]);
    // Each extracted message is stored as an object (docs/objects.md).
    let count = &extracted["payload"]["count"];
    assert!(
        out.stdout.ends_with(&format!(
            "(run {run_id}); objects: {count} inserted, 0 updated, 0 unchanged\n"
        )),
        "{out:?}"
    );
    assert_eq!(started["source_system"], "lorch");
    assert_eq!(started["object_type"], "job_run");
    let payload = &started["payload"];
    assert_eq!(payload["package"], "ingester");
    assert_eq!(payload["job"], "extract_gmail");
    assert_eq!(payload["attempt"], 1);
    assert_eq!(payload["parameters"]["since_input"], "-7d");
    assert!(
        payload["parameters"]["since"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(payload["parameters"]["params"], json!({}));
    assert_eq!(payload["lorch_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        payload["plugin"],
        p.path().join("libingester.so").display().to_string()
    );
    assert!(payload["pid"].as_u64().unwrap() > 0);
    assert!(!payload["host"].as_str().unwrap().is_empty());
    assert!(completed["payload"]["duration_seconds"].as_f64().unwrap() >= 0.0);

    // The bundled sample always has mail in the last 7 days: 7 of its 11 messages.
    assert_eq!(extracted["source_system"], "ingester/extract_gmail");
    assert_eq!(extracted["object_type"], Value::Null);
    assert_eq!(extracted["payload"]["count"], 7);
}

fn uuid_version(id: &str) -> char {
    id.chars().nth(14).unwrap()
}

#[test]
fn account_and_window_filter_the_sample() {
    let (_p, env) = env();
    let count = |args: &[&str]| {
        let mut full = vec!["run-job", "ingester", "extract_gmail"];
        full.extend_from_slice(args);
        let out = env.run(&full);
        out.code(0);
        let events = env.events(&out.run_id());
        events[1]["payload"]["count"].as_u64().unwrap()
    };
    assert_eq!(count(&[]), 11);
    assert_eq!(count(&["--since", "-7d"]), 7);
    assert_eq!(count(&["--account", "acct1-personal", "--since", "-7d"]), 4);
    assert_eq!(count(&["--account", "acct2-work", "--since", "7d"]), 3);
    assert_eq!(count(&["--since", "-7d", "--until", "-2d"]), 5);
    assert_eq!(count(&["--account", "nobody"]), 0);
    assert_eq!(count(&["--since", "-7d", "--param", "limit=2"]), 2);
}

#[test]
fn arguments_reach_the_job_resolved_and_typed() {
    let (_p, env) = env();
    let out = env.run(&[
        "run-job",
        "testkit",
        "echo",
        "--account",
        "acct1",
        "--since",
        "2024-01-01",
        "--until",
        "2024-01-02T06:30:00+02:00",
        "--param",
        "n=-5",
        "--param",
        "ratio=0.5",
        "--param",
        "label=a b=c",
        "--trace-id",
        "trace-123",
    ]);
    out.code(0);
    let events = env.events(&out.run_id());
    let args = &events[1]["payload"];
    assert_eq!(args["account"], "acct1");
    assert_eq!(
        args["since"],
        json!({"raw": "2024-01-01", "utc": "2024-01-01T00:00:00Z"})
    );
    assert_eq!(
        args["until"],
        json!({"raw": "2024-01-02T06:30:00+02:00", "utc": "2024-01-02T04:30:00Z"})
    );
    assert_eq!(
        args["params"],
        json!({"n": -5, "ratio": 0.5, "flag": true, "label": "a b=c"})
    );
    assert_eq!(args["run_id"], out.run_id());
    for event in &events {
        assert_eq!(event["trace_id"], "trace-123");
    }
    let parameters = &events[0]["payload"]["parameters"];
    assert_eq!(parameters["since"], "2024-01-01T00:00:00Z");
    assert_eq!(parameters["until"], "2024-01-02T04:30:00Z");
    assert_eq!(parameters["account"], "acct1");
}

#[test]
fn relative_since_is_accepted_exactly_as_written() {
    let (_p, env) = env();
    for value in [
        "-7d",
        "7d",
        "-36h",
        "2w",
        "1h30m",
        "90min",
        "now",
        "today",
        "yesterday",
    ] {
        let out = env.run(&["run-job", "testkit", "echo", "--since", value]);
        assert_eq!(out.code, 0, "--since {value}: {out:?}");
        let since = &env.events(&out.run_id())[1]["payload"]["since"];
        assert_eq!(since["raw"], value);
    }
    let out = env.run(&[
        "run-job",
        "testkit",
        "echo",
        "--since=-7d",
        "--until",
        "-1d",
    ]);
    out.code(0);
}

#[test]
fn usage_errors_exit_2_run_nothing_and_record_nothing() {
    let (_p, env) = env();
    let cases: &[(&[&str], &str)] = &[
        (&["--since", "-7x"], "invalid value '-7x' for --since"),
        (
            &["--until", "tomorrow"],
            "invalid value 'tomorrow' for --until",
        ),
        (
            &["--since", "2024-13-01"],
            "invalid value '2024-13-01' for --since",
        ),
        (&["--since", "today", "--until", "-3d"], "--since 'today'"),
        (
            &["--param", "nope=1"],
            "testkit/echo has no parameter 'nope'",
        ),
        (&["--param", "n=1.5"], "invalid value '1.5' for --param n"),
        (&["--param", "flag=maybe"], "expected true or false"),
        (&["--param", "n"], "expected KEY=VALUE"),
    ];
    for (args, message) in cases {
        let mut full = vec!["run-job", "testkit", "echo"];
        full.extend_from_slice(args);
        let out = env.run(&full);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(message), "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{args:?}: {out:?}");
        assert_eq!(out.stdout, "");
    }
    let time_error = env.run(&["run-job", "testkit", "echo", "--since", "soon"]);
    time_error.stderr_has("accepted: a duration in the past such as -7d");

    let out = env.run(&["run-job", "testkit", "needs_param"]);
    out.code(2);
    out.stderr_has("testkit/needs_param requires --param n=<int>");

    assert_eq!(env.all_events(), Vec::<Value>::new());
}

#[test]
fn a_failing_job_exits_1_and_records_job_failed_with_its_chain() {
    let (_p, env) = env();
    let out = env.run(&["run-job", "testkit", "fail"]);
    out.code(1);
    assert_eq!(out.stdout, "");
    let run_id = out.run_id();
    assert!(out.stderr.contains(&format!(
        "✗ testkit/fail failed: fetching page 3: connection reset (run {run_id})"
    )));

    let events = env.events(&run_id);
    assert_eq!(
        common::types(&events),
        ["job.started", "testkit.before_failure", "job.failed"]
    );
    let failed = &events[2];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error_message"], "fetching page 3: connection reset");
    assert_eq!(failed["payload"]["reason"], "error");
    assert_eq!(
        failed["payload"]["error"]["chain"],
        json!(["connection reset"])
    );
}

#[test]
fn a_panicking_job_exits_1_with_reason_panic_and_no_rust_panic_output() {
    let (_p, env) = env();
    let out = env.run(&["run-job", "testkit", "panic"]);
    out.code(1);
    out.stderr_has("✗ testkit/panic failed: panicked at tests/plugins/testkit/src/lib.rs:");
    out.stderr_has(": boom (run ");
    assert!(
        !out.stderr.contains("thread '"),
        "the default panic message leaked: {out:?}"
    );

    let events = env.events(&out.run_id());
    assert_eq!(
        common::types(&events),
        ["job.started", "testkit.before_panic", "job.failed"]
    );
    assert_eq!(events[2]["payload"]["reason"], "panic");
    assert_eq!(events[2]["payload"]["error"]["message"], "boom");
}

#[test]
fn jobs_cannot_emit_lifecycle_events() {
    let (_p, env) = env();
    let out = env.run(&["run-job", "testkit", "emit_reserved"]);
    out.code(1);
    assert_eq!(
        common::types(&env.events(&out.run_id())),
        ["job.started", "job.failed"]
    );
}

#[test]
fn run_takes_package_slash_job_or_a_unique_job_name() {
    let (_p, env) = env();
    let out = env.run(&["run", "canonizer/canonicalize_email"]);
    out.code(0);
    assert!(
        out.stdout
            .starts_with("✓ canonizer/canonicalize_email completed"),
        "{out:?}"
    );

    let out = env.run(&[
        "run",
        "extract_slack",
        "--since",
        "-7d",
        "--param",
        "channel=#deploys",
    ]);
    out.code(0);
    let events = env.events(&out.run_id());
    assert_eq!(events[1]["payload"]["count"], 2);

    let out = env.run(&["run", "extract_gmial"]);
    out.code(2);
    out.stderr_has("(did you mean `extract_gmail`?)");
}

#[test]
fn run_refuses_an_ambiguous_job_name() {
    let Some(cc) = common::c_compiler() else {
        return;
    };
    let testkit = plugin_dir(&["testkit"]);
    // A second package with a job also named `echo`.
    let other = tempfile::TempDir::new().unwrap();
    common::compile_c(
        &cc,
        &common::c_plugin("other", "echo", 1),
        &other.path().join("libother.so"),
        &[],
    );
    let env = Env::new(&[testkit.path(), other.path()]);
    let out = env.run(&["run", "echo"]);
    out.code(2);
    out.stderr_has("job name `echo` is ambiguous: other/echo, testkit/echo; use PACKAGE/JOB");
    let out = env.run(&["run", "other/echo"]);
    out.code(0);
}

#[test]
fn events_list_shows_the_last_run() {
    let (_p, env) = env();
    let first = env.run(&["run-job", "testkit", "echo"]);
    let second = env.run(&["run-job", "testkit", "fail"]);
    let out = env.run(&["events", "list"]);
    out.code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{out:?}");
    assert!(lines[0].contains(&first.run_id()) && lines[0].contains("job.started"));
    assert!(lines[5].contains(&second.run_id()) && lines[5].contains("job.failed"));
    assert!(lines[5].contains("failed") && lines[5].ends_with("fetching page 3: connection reset"));

    let out = env.run(&["events", "list", "--run", "last", "--json"]);
    let events = out.json()["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|e| e["correlation_id"] == second.run_id().as_str())
    );
    let out = env.run(&["events", "list", "--limit", "2"]);
    assert_eq!(out.stdout.lines().count(), 2);
}

#[test]
fn closed_stdout_is_not_an_error() {
    let (_p, env) = env();
    let mut child = env
        .cmd(&["jobs", "list"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_usage_error_does_not_even_create_the_event_store() {
    let (_p, env) = env();
    let out = env.run(&["run-job", "testkit", "echo", "--since", "-7x"]);
    out.code(2);
    assert!(!env.home.path().join("lorch/events.db").exists());
}

#[test]
fn first_day_edges_get_a_clear_answer() {
    let (_p, env) = env();
    // A two-digit year is not the year 24; a day that does not exist is an invalid date.
    for (value, says) in [
        ("24-01-01", "a date needs a four-digit year"),
        ("2024-02-30", "not a valid date"),
        ("2024-13-01", "not a valid date"),
    ] {
        let out = env.run(&["run-job", "testkit", "echo", "--since", value]);
        assert_eq!(out.code, 2, "{value}: {out:?}");
        assert!(out.stderr.contains(says), "{value}: {out:?}");
    }
    // A number too large for an integer parameter says so.
    let out = env.run(&[
        "run-job",
        "testkit",
        "echo",
        "--param",
        "n=99999999999999999999",
    ]);
    out.code(2);
    out.stderr_has("out of range for an integer");
    // An invalid LORCH_LOG is reported, and the run goes on.
    env.lorch()
        .args(["run-job", "testkit", "echo"])
        .env("LORCH_LOG", "verbose")
        .run()
        .code(0)
        .stderr_has("invalid LORCH_LOG 'verbose'");
    // No HOME (a bare cron environment): the missing plugin directory is the problem, exit 3.
    let home = tempfile::tempdir().unwrap();
    let out = common::Run::from(
        std::process::Command::new(env!("CARGO_BIN_EXE_lorch"))
            .args(["run-job", "ingester", "extract_gmail"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LORCH_HOME", home.path())
            .output()
            .unwrap(),
    );
    out.code(3);
    out.stderr_has("lorch had no plugin directory to look in");
    // Empty results do not claim the store is empty.
    let out = env.run(&["events", "list", "--limit", "0"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "", "")
    );
    let out = env.run(&["runs", "list", "--status", "running"]);
    out.stderr_has("no runs match");
    let out = env.run(&["runs", "list", "--job", "testkit/ecko"]);
    assert!(
        out.stderr.contains("no runs of testkit/ecko in ")
            && out.stderr.contains("(did you mean `testkit/echo`?)"),
        "{out:?}"
    );
}

/// Completing `lorch run ing<TAB>` in bash, as `source <(lorch completions bash)` sets it up
/// (docs/completions.md): the job names come from the plugins lorch finds.
#[test]
fn bash_completes_commands_and_job_names() {
    let (plugins, env) = env();
    let lorch_dir = std::path::Path::new(env!("CARGO_BIN_EXE_lorch"))
        .parent()
        .unwrap();
    let script = r#"
source <(lorch completions bash)
complete_at() {
    COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()
    _lorch_with_jobs lorch "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
    echo "${COMPREPLY[*]}"
}
complete_at lorch run ing
complete_at lorch run-job ingester ex
complete_at lorch jobs show can
complete_at lorch run-pip
"#;
    let home = env.home.path();
    let out = std::process::Command::new("bash")
        .args(["--norc", "-c", script])
        .env("HOME", home)
        .env("LORCH_HOME", home.join("lorch"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env(
            "PATH",
            format!("{}:{}", lorch_dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("LORCH_PLUGIN_PATH", plugins.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "ingester/extract_gmail ingester/extract_slack\nextract_gmail extract_slack\ncanonizer\nrun-pipeline\n"
    );
    for shell in ["zsh", "fish"] {
        let script = env.run(&["completions", shell]);
        script.code(0);
        script.stdout_has("run-pipeline");
    }
    let page = env.run(&["man"]);
    page.code(0);
    page.stdout_has(".TH lorch 1");
}

/// `--log-format json`: each log line is one JSON object; a job's carry its run's fields.
#[test]
fn json_log_lines_carry_the_run() {
    let (_plugins, env) = env();
    let out = env.run(&[
        "--log-format",
        "json",
        "run-job",
        "ingester",
        "extract_gmail",
        "--account",
        "acct1",
    ]);
    out.code(0);
    let run_id = out.run_id();
    let lines: Vec<Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let line = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("extracted "))
        })
        .unwrap_or_else(|| panic!("no job log line: {lines:?}"));
    assert_eq!(line["level"], "INFO");
    assert_eq!(
        line["span"],
        json!({"name": "job", "run_id": run_id, "package": "ingester", "job": "extract_gmail", "account": "acct1"})
    );
    // The worker learns it from the environment too.
    let out = env
        .lorch()
        .args(["run-job", "ingester", "extract_gmail"])
        .env("LORCH_LOG_FORMAT", "json")
        .run();
    out.code(0);
    assert!(out.stderr.lines().all(|l| l.starts_with('{')), "{out:?}");
}

/// A bad `LORCH_LOG` is said once, not again by the job's worker process.
#[test]
fn an_invalid_log_level_is_reported_once_per_run() {
    let (_plugins, env) = common::testkit_env();
    let out = env
        .lorch()
        .args(["run-job", "testkit", "echo"])
        .env("LORCH_LOG", "bogus")
        .run();
    out.code(0);
    assert_eq!(
        out.stderr.matches("invalid LORCH_LOG 'bogus'").count(),
        1,
        "{}",
        out.stderr
    );
}
