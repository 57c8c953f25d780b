//! Objects in the local store (docs/objects.md): one row per idem key, `first_seen` kept,
//! counts in the run's summary and `job.completed`, acknowledged objects kept through a crash,
//! bad objects refused with a message saying why. BigQuery delivery is in `bigquery.rs`.

use serde_json::{Value, json};

use crate::common::{self, Env};

/// `lorch run-job testkit upsert --param ...`.
fn upsert(env: &Env, params: &[&str]) -> common::Run {
    let mut args = vec!["run-job", "testkit", "upsert"];
    for param in params {
        args.extend(["--param", param]);
    }
    env.run(&args)
}

fn object(env: &Env, key: &str) -> Value {
    let out = env.run(&["objects", "show", key, "--json"]);
    out.code(0);
    out.json()
}

#[test]
fn one_row_per_key_first_seen_kept_and_counts_in_the_summary_and_job_completed() {
    let (_plugins, env) = common::testkit_env();
    // 1,000 keys, every 10th upserted twice in the run with another payload.
    let first = upsert(&env, &["count=1000", "twice=10"]);
    first.code(0);
    first.stdout_has("; objects: 1000 inserted, 100 updated, 0 unchanged\n");
    let before = object(&env, "k000010");
    assert_eq!(
        before["payload"],
        json!({"i": 10, "version": "v1", "again": true})
    );

    let count = env.run(&["objects", "count", "--json"]);
    count.code(0);
    assert_eq!(
        count.json(),
        json!({"total": 1000, "by_type": [{"object_type": "testkit_item", "count": 1000}]})
    );

    // Again: half with new payloads, all of them in one run's --json summary.
    let second = env
        .lorch()
        .args(["run-job", "testkit", "upsert", "--json"])
        .args(["--param", "count=500", "--param", "version=v2"])
        .run();
    second.code(0);
    let summary = second.json();
    assert_eq!(
        summary["objects"],
        json!({"inserted": 0, "updated": 500, "unchanged": 0})
    );
    let run = summary["run_id"].as_str().unwrap();
    let completed = env.events(run).pop().unwrap();
    assert_eq!(completed["event_type"], "job.completed");
    assert_eq!(completed["payload"]["objects"], summary["objects"]);

    let after = object(&env, "k000010");
    assert_eq!(after["payload"], json!({"i": 10, "version": "v2"}));
    assert_eq!(after["first_seen"], before["first_seen"]);
    assert_ne!(after["last_seen"], before["last_seen"]);
    assert_eq!(after["correlation_id"], run);
    assert_eq!(after["connection_name"], Value::Null, "no --account");
    assert_eq!(after["source_system"], "testkit", "the job's package");

    // In lorch's own process the counts come from the same store.
    let in_process = env
        .lorch()
        .args(["run-job", "testkit", "upsert", "--in-process"])
        .args(["--param", "count=3", "--param", "key_prefix=p"])
        .run();
    in_process.stdout_has("; objects: 3 inserted, 0 updated, 0 unchanged\n");

    // The same objects again: unchanged, but seen again.
    let third = upsert(&env, &["count=500", "version=v2"]);
    third.stdout_has("; objects: 0 inserted, 0 updated, 500 unchanged\n");
    let seen = object(&env, "k000010");
    assert_ne!(seen["last_seen"], after["last_seen"]);
    assert_eq!(seen["first_seen"], before["first_seen"]);
}

#[test]
fn objects_list_filters_by_type_account_and_time() {
    let (_plugins, env) = common::testkit_env();
    env.run(&[
        "run-job",
        "testkit",
        "upsert",
        "--account",
        "a1",
        "--param",
        "count=3",
    ])
    .code(0);
    let list = |args: &[&str]| {
        let out = env
            .lorch()
            .args(["objects", "list", "--json"])
            .args(args)
            .run();
        out.code(0);
        let objects = out.json()["objects"].as_array().unwrap().clone();
        objects
            .iter()
            .map(|o| o["idem_key"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(&[]), ["k000000", "k000001", "k000002"]);
    assert_eq!(
        list(&["--account", "a1", "--type", "testkit_item"]).len(),
        3
    );
    assert!(list(&["--account", "a2"]).is_empty());
    assert!(list(&["--type", "other"]).is_empty());
    assert_eq!(
        list(&["--since", "-1h", "--limit", "2"]),
        ["k000001", "k000002"]
    );

    let text = env.run(&["objects", "list"]);
    text.code(0);
    text.stdout_has("LAST_SEEN");
    text.stdout_has("testkit_item  k000002   a1");

    env.run(&["objects", "list", "--since", "last tuesday"])
        .code(2)
        .stderr_has("invalid value 'last tuesday' for --since");
    env.run(&["objects", "show", "nope"])
        .code(2)
        .stderr_has("no object \"nope\" in ");
}

#[test]
fn bad_objects_are_refused_and_the_failure_says_which() {
    let (_plugins, env) = common::testkit_env();
    let cases = [
        (
            "bad=empty_key",
            "lorch refused the upsert: the idem key of a testkit_item object is empty",
        ),
        (
            "bad=type_space",
            "lorch refused the upsert: object type \"testkit item\" contains ' ': use letters, digits, `_`, `.`, `:` and `-`",
        ),
        (
            "bad=not_json",
            "the payload of object \"k\" is not JSON: key must be a string",
        ),
    ];
    for (param, message) in cases {
        let out = upsert(&env, &[param, "count=0"]);
        out.code(1);
        out.stderr_has(&format!("✗ testkit/upsert failed: {message}"));
    }
    let count = env.run(&["objects", "count", "--json"]);
    assert_eq!(count.json()["total"], 0, "nothing stored");
}

/// JSON a C plugin can write that BigQuery's JSON columns refuse: refused at `upsert`, naming
/// why, instead of stored and refused at delivery (docs/objects.md).
#[test]
fn payloads_bigquery_would_refuse_are_refused_at_upsert() {
    let Some(cc) = common::c_compiler() else {
        return;
    };
    let cases = [
        ("huge", r#"{\"n\": 1e999}"#, "number out of range"),
        (
            "twice",
            r#"{\"a\": 1, \"a\": 2}"#,
            "the key \"a\" is there twice",
        ),
        (
            "surrogate",
            r#"{\"s\": \"\\ud800\"}"#,
            "a \\u escape that is no character (a lone UTF-16 surrogate)",
        ),
    ];
    let dir = tempfile::TempDir::new().unwrap();
    for (job, payload, _) in cases {
        let source = format!(
            r#"#include "lorch_plugin.h"
static const char METADATA[] = "{{\"jobs\": [{{\"package\": \"bad_{job}\", \"name\": \"put\"}}]}}";
static const char OBJECTS[] = "{{\"objects\": [{{\"object_type\": \"t\", \"idem_key\": \"k\", \"payload\": {payload}}}]}}";
static LorchStr metadata(void) {{ LorchStr s = {{(const uint8_t *)METADATA, sizeof METADATA - 1}}; return s; }}
static int32_t run(const LorchHost *host, LorchStr job, LorchStr request) {{
    (void)job; (void)request;
    LorchStr s = {{(const uint8_t *)OBJECTS, sizeof OBJECTS - 1}};
    return host->upsert(host->ctx, s) == LORCH_UPSERT_OK ? LORCH_RUN_OK : LORCH_RUN_FAILED;
}}
static const LorchPluginHeader HEADER = {{ 1u, sizeof(LorchPluginHeader), metadata, run }};
const LorchPluginHeader *lorch_plugin_entry(void) {{ return &HEADER; }}
"#
        );
        common::compile_c(
            &cc,
            &source,
            &dir.path().join(format!("libbad_{job}.so")),
            &[],
        );
    }
    let env = Env::new(&[dir.path()]);
    for (job, _, why) in cases {
        let out = env.run(&["run-job", &format!("bad_{job}"), "put"]);
        out.code(1).stderr_has(&format!(
            "upserted objects lorch refuses: the payload of object \"k\" is JSON BigQuery refuses: {why}"
        ));
    }
    let count = env.run(&["objects", "count", "--json"]);
    assert_eq!(count.json()["total"], 0, "nothing stored");
}

#[test]
fn objects_acknowledged_before_a_segfault_are_kept() {
    let (_plugins, env) = common::testkit_env();
    let out = upsert(&env, &["count=2500", "batch=100", "then=segfault"]);
    out.code(1);
    out.stderr_has("crashed: killed by SIGSEGV");
    let count = env.run(&["objects", "count", "--json"]);
    assert_eq!(count.json()["total"], 2500, "{out:?}");
    let failed = env.events(&out.run_id()).pop().unwrap();
    assert_eq!(failed["event_type"], "job.failed");
    assert_eq!(failed["payload"]["objects"]["inserted"], 2500);
}
