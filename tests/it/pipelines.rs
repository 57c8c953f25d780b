//! Pipelines (docs/pipelines.md): a diamond where one branch fails and the other runs, resumed
//! once fixed; steps in parallel or not; a cycle and other mistakes refused before anything
//! runs; Ctrl-C and `kill -9` in the middle; `pipelines list|show`, `runs list --pipeline`,
//! `runs show PIPELINE_RUN_ID`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, Env};

/// A step of a pipeline in lorch.toml.
fn step(pipeline: &str, name: &str, job: &str, needs: &[&str], extra: &str) -> String {
    let needs: Vec<String> = needs.iter().map(|n| format!("{n:?}")).collect();
    format!(
        "[[pipeline.{pipeline}.steps]]\nname = \"{name}\"\njob = \"testkit/{job}\"\nneeds = [{}]\n{extra}\n",
        needs.join(", ")
    )
}

/// A → B, A → C, B → D, C → D, and E → F; C fails while `flag` exists.
fn diamond(flag: &std::path::Path) -> String {
    let fails = format!("params = {{ file = {:?} }}\n", flag.display().to_string());
    [
        step("diamond", "a", "echo", &[], ""),
        step("diamond", "b", "echo", &["a"], ""),
        step("diamond", "c", "fail_if_exists", &["a"], &fails),
        step("diamond", "d", "echo", &["b", "c"], ""),
        step("diamond", "e", "echo", &[], ""),
        step("diamond", "f", "echo", &["e"], ""),
    ]
    .concat()
}

/// The events of the lifecycle of every step of the pipeline run `id`, by step:
/// `[event_type, ...]` in order.
fn step_events(env: &Env, id: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_step: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in env.all_events() {
        let payload = &event["payload"];
        if event["object_type"] == "job_run" && payload["pipeline"]["pipeline_run_id"] == id {
            let step = payload["pipeline"]["step"].as_str().unwrap().to_owned();
            by_step
                .entry(step)
                .or_default()
                .push(event["event_type"].as_str().unwrap().to_owned());
        }
    }
    by_step
}

/// The pipeline events of the pipeline run `id`.
fn pipeline_events(env: &Env, id: &str) -> Vec<Value> {
    env.all_events()
        .into_iter()
        .filter(|e| e["object_type"] == "pipeline_run" && e["correlation_id"] == id)
        .collect()
}

/// The pipeline run id a `run-pipeline` printed in its summary line.
pub fn pipeline_run_id(out: &common::Run) -> String {
    let text = format!("{}{}", out.stdout, out.stderr);
    let at = text
        .find("(pipeline run ")
        .unwrap_or_else(|| panic!("no pipeline run id: {out:?}"));
    text[at + 14..at + 50].to_owned()
}

#[test]
fn a_failed_branch_skips_what_needs_it_the_other_runs_and_resume_finishes_it() {
    let (_plugins, env) = common::testkit_env();
    let flag = env.home.path().join("c-is-broken");
    std::fs::write(&flag, "").unwrap();
    env.write_config(&diamond(&flag));

    let out = env.run(&["run-pipeline", "diamond"]);
    out.code(1);
    out.stderr_has("✗ c (testkit/fail_if_exists) failed:");
    out.stderr_has("- d (testkit/echo) skipped: the step c it needs did not complete");
    out.stderr_has("✗ pipeline diamond failed: 4 succeeded, 1 failed (c), 1 skipped (d)");
    let id = pipeline_run_id(&out);

    // Exactly one started and one terminal event per attempted step; d only skipped.
    let events = step_events(&env, &id);
    let completed = ["job.started", "job.completed"];
    for name in ["a", "b", "e", "f"] {
        assert_eq!(events[name], completed, "step {name}");
    }
    assert_eq!(events["c"], ["job.started", "job.failed"]);
    assert_eq!(events["d"], ["job.skipped"]);
    let skipped = env
        .all_events()
        .into_iter()
        .find(|e| e["event_type"] == "job.skipped")
        .unwrap();
    assert_eq!(skipped["payload"]["reason"], "upstream_failed");
    assert_eq!(skipped["payload"]["upstream"], "c");
    assert_eq!(
        skipped["trace_id"],
        id.as_str(),
        "steps carry the pipeline run id"
    );

    let pipeline = pipeline_events(&env, &id);
    let types: Vec<&str> = common::types(&pipeline);
    assert_eq!(types, ["pipeline.started", "pipeline.failed"]);
    let summary = &pipeline[1]["payload"]["summary"];
    assert_eq!(
        (
            &summary["total"],
            &summary["succeeded"],
            &summary["failed"],
            &summary["skipped"]
        ),
        (&6.into(), &4.into(), &1.into(), &1.into())
    );
    assert_eq!(summary["failed_steps"], serde_json::json!(["c"]));
    assert_eq!(pipeline[1]["payload"]["reason"], "step_failed");

    // Fixed: --resume runs c and d only, in the first run's window, and the pipeline completes.
    std::fs::remove_file(&flag).unwrap();
    let resumed = env.run(&["run-pipeline", "diamond", "--resume", &id]);
    resumed.code(0);
    resumed.stdout_has("✓ pipeline diamond completed: 6 succeeded");
    let again = pipeline_run_id(&resumed);
    let events = step_events(&env, &again);
    assert_eq!(events.keys().collect::<Vec<_>>(), ["c", "d"]);
    let first_until = &pipeline[0]["payload"]["window"]["until"];
    let second = pipeline_events(&env, &again);
    assert_eq!(&second[0]["payload"]["window"]["until"], first_until);
    assert_eq!(second[0]["payload"]["resumes"], id.as_str());
    assert_eq!(second[1]["event_type"], "pipeline.completed");
    // Resumed already, or nothing left: refused, naming what to do.
    env.run(&["run-pipeline", "diamond", "--resume", &id])
        .code(2)
        .stderr_has(&format!("was resumed already, by {again} (completed)"));
    env.run(&["run-pipeline", "diamond", "--resume", &again])
        .code(2)
        .stderr_has("nothing is left to run");

    // runs show of the pipeline run: each step's status and reason.
    let show = env.run(&["runs", "show", &id]);
    show.code(0);
    show.stdout_has("Status: failed (step_failed)");
    show.stdout_has("skipped (upstream_failed)");
    let listed = env.run(&["runs", "list", "--pipeline", "diamond", "--json"]);
    listed.code(0);
    let runs = listed.json()["pipeline_runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["status"], "completed");
}

/// `(started, ended)` of each sleeping step of the pipeline run `id`, from its events.
fn spans(env: &Env, id: &str) -> Vec<(String, String)> {
    let mut spans: BTreeMap<String, (String, String)> = BTreeMap::new();
    for event in env.all_events() {
        if event["payload"]["pipeline"]["pipeline_run_id"] != id {
            continue;
        }
        let at = event["created_at"].as_str().unwrap().to_owned();
        let span = spans
            .entry(event["correlation_id"].to_string())
            .or_default();
        match event["event_type"].as_str().unwrap() {
            "job.started" => span.0 = at,
            "job.completed" => span.1 = at,
            _ => {}
        }
    }
    spans.into_values().collect()
}

#[test]
fn independent_steps_overlap_with_parallel_2_and_not_with_parallel_1() {
    let (_plugins, env) = common::testkit_env();
    let sleep = "params = { seconds = 0.3 }\n";
    env.write_config(
        &[
            step("two", "one", "sleep", &[], sleep),
            step("two", "other", "sleep", &[], sleep),
        ]
        .concat(),
    );
    for (parallel, overlap) in [("2", true), ("1", false)] {
        let out = env.run(&["run-pipeline", "two", "--parallel", parallel]);
        out.code(0);
        let spans = spans(&env, &pipeline_run_id(&out));
        assert_eq!(spans.len(), 2);
        let (first, second) = (&spans[0], &spans[1]);
        let overlaps = first.0 < second.1 && second.0 < first.1;
        assert_eq!(overlaps, overlap, "--parallel {parallel}: {spans:?}");
    }
}

/// Two steps with a mistake each: every one is named at once.
fn both_mistakes() -> String {
    [
        step("loop", "a", "nope", &[], ""),
        step(
            "loop",
            "b",
            "sleep",
            &[],
            "params = { seconds = \"long\" }\n",
        ),
    ]
    .concat()
}

#[test]
fn mistakes_in_a_pipeline_are_refused_before_anything_runs() {
    let (_plugins, env) = common::testkit_env();
    let cases = [
        (
            [
                step("loop", "a", "echo", &["c"], ""),
                step("loop", "b", "echo", &["a"], ""),
                step("loop", "c", "echo", &["b"], ""),
            ]
            .concat(),
            "pipeline loop: its steps form a cycle: a → c → b → a",
        ),
        (
            [
                step("loop", "a", "echo", &[], ""),
                step("loop", "a", "echo", &[], ""),
            ]
            .concat(),
            "the name 'a' is taken by step 1",
        ),
        (
            step("loop", "a", "echo", &["extrac"], ""),
            "needs 'extrac', which is not a step of this pipeline",
        ),
        (
            both_mistakes(),
            "lorch.toml:3:7: pipeline step 'a': unknown job `nope` in package `testkit`",
        ),
        (
            both_mistakes(),
            "lorch.toml:8:7: pipeline step 'b': invalid value 'long' for --param seconds",
        ),
    ];
    for (text, expected) in cases {
        env.write_config(&text);
        let out = env.run(&["run-pipeline", "loop"]);
        out.code(2);
        out.stderr_has(expected);
        assert!(env.all_events().is_empty(), "{expected}: nothing ran");
    }
    // config check names the place too.
    env.write_config(
        &[
            step("loop", "a", "echo", &["b"], ""),
            step("loop", "b", "echo", &["a"], ""),
        ]
        .concat(),
    );
    let out = env.run(&["config", "check"]);
    out.code(2);
    out.stderr_has("lorch.toml:1:");
    out.stderr_has("cycle: a → b → a");
    env.run(&["run-pipeline", "nothing"])
        .code(2)
        .stderr_has("no pipeline 'nothing'");
}

/// Starts `lorch ARGS` and waits until the store holds `count` events of `ready_event`.
fn start(env: &Env, args: &[&str], ready_event: &str, count: usize) -> std::process::Child {
    let child = env
        .cmd(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while env
        .all_events()
        .iter()
        .filter(|e| e["event_type"] == ready_event)
        .count()
        < count
    {
        assert!(Instant::now() < deadline, "{ready_event} never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn sleepy(env: &Env) {
    let sleep = "params = { seconds = 30 }\n";
    env.write_config(
        &[
            step("sleepy", "one", "sleep", &[], sleep),
            step("sleepy", "other", "sleep", &[], sleep),
            step("sleepy", "after", "echo", &["one", "other"], ""),
        ]
        .concat(),
    );
}

#[test]
fn ctrl_c_cancels_every_running_step_and_the_pipeline() {
    let (_plugins, env) = common::testkit_env();
    sleepy(&env);
    let child = start(
        &env,
        &["run-pipeline", "sleepy", "--parallel", "2"],
        "testkit.sleeping",
        2,
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = common::Run::from(child.wait_with_output().unwrap());
    out.code(130);
    out.stderr_has("✗ pipeline sleepy cancelled by SIGINT: 0 succeeded, 2 failed (");
    let id = pipeline_run_id(&out);
    let events = step_events(&env, &id);
    assert_eq!(events.len(), 2, "after never starts: {events:?}");
    for types in events.values() {
        assert_eq!(types, &["job.started", "job.failed"]);
    }
    for event in env.all_events() {
        if event["event_type"] == "job.failed" {
            assert_eq!(event["payload"]["reason"], "cancelled");
        }
    }
    let last = pipeline_events(&env, &id).pop().unwrap();
    assert_eq!(last["event_type"], "pipeline.failed");
    assert_eq!(last["payload"]["reason"], "cancelled");
    assert_eq!(last["payload"]["summary"]["not_run"], 1);
}

#[test]
fn kill_9_in_the_middle_leaves_nothing_running() {
    let (_plugins, env) = common::testkit_env();
    sleepy(&env);
    let mut child = start(
        &env,
        &["run-pipeline", "sleepy", "--parallel", "2"],
        "testkit.sleeping",
        2,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The workers notice their lorch is gone and exit; the next command closes the runs.
    let reaped = env.run(&["runs", "reap"]);
    reaped.code(0);
    reaped.stdout_has("closed abandoned pipeline run");
    let out = env.run(&["runs", "list", "--json"]);
    out.code(0);
    let runs = out.json()["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        assert_eq!(
            (&run["status"], &run["reason"]),
            (&"failed".into(), &"abandoned".into())
        );
    }
    let pipelines = env.run(&["runs", "list", "--pipeline", "sleepy", "--json"]);
    let pipelines = pipelines.json()["pipeline_runs"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(pipelines.len(), 1);
    assert_eq!(pipelines[0]["status"], "failed");
    assert_eq!(pipelines[0]["reason"], "abandoned");
    assert_eq!(pipelines[0]["summary"]["failed"], 2);
}

#[test]
fn pipelines_list_and_show_read_at_a_glance() {
    let (_plugins, env) = common::testkit_env();
    let flag = env.home.path().join("absent");
    env.write_config(&diamond(&flag));
    let out = env.run(&["pipelines", "list"]);
    out.code(0);
    out.stdout_has("diamond   6      -");
    let show = env.run(&["pipelines", "show", "diamond"]);
    show.code(0);
    show.stdout_has("4.  d     testkit/echo            b, c");
    let dot = env.run(&["pipelines", "show", "diamond", "--dot"]);
    dot.code(0);
    dot.stdout_has("digraph \"diamond\" {");
    dot.stdout_has("  \"b\" -> \"d\";\n  \"c\" -> \"d\";");
    let json = env.run(&["pipelines", "show", "diamond", "--json"]);
    let steps = json.json()["steps"].as_array().unwrap().clone();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c", "d", "e", "f"]);
    env.run(&["run-pipeline", "diamond", "--quiet"])
        .code(0)
        .stdout_is("");
    let listed = env.run(&["pipelines", "list", "--json"]);
    assert_eq!(
        listed.json()["pipelines"][0]["last_run"]["status"],
        "completed"
    );
}

#[test]
fn a_schedule_runs_a_pipeline_and_catches_it_up() {
    let (_plugins, env) = common::testkit_env();
    let config = [
        step("daily", "extract", "echo", &[], ""),
        step(
            "daily",
            "build",
            "echo",
            &["extract"],
            "account = \"views\"\n",
        ),
        "[[schedule]]\npipeline = \"daily\"\ncron = \"0 6 * * *\"\ncatch_up = \"all\"\n".to_owned(),
    ]
    .concat();
    env.write_config(&config);
    let tick = |now: &str| {
        env.lorch()
            .args(["tick", "--quiet"])
            .env("LORCH_NOW", now)
            .run()
    };
    tick("2026-11-01T06:00:30Z").code(0);
    // Two mornings asleep: each is run, in order, and each step's windows tile the days.
    tick("2026-11-03T07:00:00Z").code(0);
    let out = env.run(&["runs", "list", "--pipeline", "daily", "--json"]);
    let runs = out.json()["pipeline_runs"].as_array().unwrap().clone();
    let untils: Vec<&str> = runs
        .iter()
        .map(|r| r["started"]["window"]["until"].as_str().unwrap())
        .collect();
    assert_eq!(
        untils,
        [
            "2026-11-01T06:00:00.000000Z",
            "2026-11-02T06:00:00.000000Z",
            "2026-11-03T06:00:00.000000Z"
        ]
    );
    let out = env.run(&[
        "runs",
        "list",
        "--job",
        "testkit/echo",
        "--account",
        "views",
        "--json",
    ]);
    let windows: Vec<(String, String)> = out.json()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let text = |v: &Value| v.as_str().unwrap().get(..10).unwrap().to_owned();
            (text(&r["window_since"]), text(&r["window_until"]))
        })
        .collect();
    assert_eq!(
        windows,
        [
            ("2026-10-31".into(), "2026-11-01".into()),
            ("2026-11-01".into(), "2026-11-02".into()),
            ("2026-11-02".into(), "2026-11-03".into())
        ]
    );
    let listed = env
        .lorch()
        .args(["schedule", "list"])
        .env("LORCH_NOW", "2026-11-03T07:00:00Z")
        .run();
    listed.code(0);
    listed.stdout_has("pipeline daily");

    // An entry naming a pipeline that is not there, or both a job and a pipeline, or a run
    // option the steps own, is named at its place.
    env.write_config("[[schedule]]\npipeline = \"dialy\"\ncron = \"@daily\"\n\n[[schedule]]\njob = \"testkit/echo\"\npipeline = \"daily\"\ncron = \"@daily\"\n\n[[schedule]]\npipeline = \"daily\"\ncron = \"@daily\"\nretries = 2\n\n[pipeline.daily]\n[[pipeline.daily.steps]]\njob = \"testkit/echo\"\n",
    );
    let out = env.run(&["config", "check"]);
    out.code(2);
    out.stderr_has("lorch.toml:2:12: schedule 1: pipeline: no [pipeline.dialy] in this file (did you mean `daily`?)");
    out.stderr_has("lorch.toml:7:12: schedule 2: pipeline: an entry runs a job or a pipeline");
    out.stderr_has("schedule 3: retries: a pipeline's steps take it from their own entries");
}

#[test]
fn steps_of_one_job_share_the_window_their_job_had_when_the_pipeline_started() {
    let (_plugins, env) = common::testkit_env();
    let since = "since = \"last-success\"\ninitial_since = \"2026-11-01\"\n";
    env.write_config(
        &[
            step("twice", "first", "echo", &[], since),
            step("twice", "second", "echo", &["first"], since),
        ]
        .concat(),
    );
    env.lorch()
        .args(["run-pipeline", "twice"])
        .env("LORCH_NOW", "2026-11-02T00:00:00Z")
        .run()
        .code(0);
    let windows = || -> Vec<(Value, Value)> {
        let out = env.run(&["runs", "list", "--json"]);
        let runs = out.json()["runs"].as_array().unwrap().clone();
        runs.iter()
            .map(|r| (r["window_since"].clone(), r["window_until"].clone()))
            .collect()
    };
    let day = |d: &str| Value::from(format!("2026-11-{d}T00:00:00.000000Z"));
    assert_eq!(windows(), [(day("01"), day("02")), (day("01"), day("02"))]);
    // A watermark already past --until (the job caught up elsewhere): an empty window, not an
    // error.
    env.lorch()
        .args(["run-pipeline", "twice", "--until", "2026-11-01T12:00:00Z"])
        .env("LORCH_NOW", "2026-11-03T00:00:00Z")
        .run()
        .code(0);
    let noon = Value::from("2026-11-01T12:00:00.000000Z");
    assert_eq!(
        windows()[2..],
        [(noon.clone(), noon.clone()), (noon.clone(), noon)]
    );
}
