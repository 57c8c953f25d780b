//! The configuration file (docs/configuration.md): where it is found, job defaults that flags
//! override, and each mistake named at its file:line:column with exit 2.

use serde_json::Value;

use crate::common::{self, Env};

/// The `testkit.args` payload of the newest run.
fn echoed(env: &Env) -> Value {
    env.events("last")[1]["payload"].clone()
}

#[test]
fn job_defaults_apply_and_flags_override_them() {
    let (_plugins, env) = common::testkit_env();
    env.write_config(
        r#"
[jobs."testkit/echo"]
account = "from-config"
since = "-1d"
params = { n = 7, label = "cfg" }
"#,
    );
    env.run(&["run-job", "testkit", "echo"]).code(0);
    let args = echoed(&env);
    assert_eq!(args["account"], "from-config");
    assert_eq!(args["since"]["raw"], "-1d");
    assert_eq!(args["params"]["n"], 7);
    assert_eq!(args["params"]["label"], "cfg");

    let flags = ["--account", "cli", "--param", "label=cli", "--since", "-2h"];
    env.lorch()
        .args(["run-job", "testkit", "echo"])
        .args(flags)
        .run()
        .code(0);
    let args = echoed(&env);
    assert_eq!(
        (
            &args["account"],
            &args["params"]["label"],
            &args["params"]["n"],
            &args["since"]["raw"]
        ),
        (&"cli".into(), &"cli".into(), &7.into(), &"-2h".into())
    );

    // Another file, named by LORCH_CONFIG, then by --config: the first one is not read.
    let other = env.home.path().join("other.toml");
    std::fs::write(&other, "[jobs.\"testkit/echo\"]\naccount = \"other\"\n").unwrap();
    let named = other.to_str().unwrap();
    env.lorch()
        .args(["run-job", "testkit", "echo"])
        .env("LORCH_CONFIG", named)
        .run()
        .code(0);
    assert_eq!(echoed(&env)["account"], "other");
    env.run(&["--config", named, "run-job", "testkit", "echo"])
        .code(0);
    assert_eq!(echoed(&env)["account"], "other");
    env.run(&[
        "--config",
        "/nonexistent/lorch.toml",
        "run-job",
        "testkit",
        "echo",
    ])
    .code(2)
    .stderr_has("/nonexistent/lorch.toml: cannot read the configuration file");
}

#[test]
fn each_mistake_is_named_with_file_line_and_column_and_runs_nothing() {
    let (_plugins, env) = common::testkit_env();
    let cases = [
        (
            "[[schedule]]\njob = \"testkit/echo\"\ncron = \"0 25 * * *\"\n",
            ":3:8: schedule 1: cron: '0 25 * * *' is not a cron expression",
        ),
        (
            "[[schedule]]\njob = \"testkit/echo\"\ncron = \"@daily\"\ntimezone = \"Mars/Olympus\"\n",
            ":4:12: schedule 1: timezone: 'Mars/Olympus' is not an IANA time zone",
        ),
        (
            "[jobs.\"testkit/echoo\"]\nretries = 1\n",
            ":1:7: [jobs.\"testkit/echoo\"]: unknown job `echoo` in package `testkit` (did you mean `echo`?)",
        ),
        (
            "[jobs.\"testkit/echo\"]\nretry = 1\n",
            ":2:9: [jobs.\"testkit/echo\"]: unknown key `retry` (did you mean `retries`?)",
        ),
        (
            "[jobs.\"testkit/echo\"]\nretries = \"2\"\n",
            ":2:11: [jobs.\"testkit/echo\"]: retries: expected a whole number from 0, found \"2\"",
        ),
    ];
    for (text, expected) in cases {
        let path = env.write_config(text);
        let check = env.run(&["config", "check"]);
        check
            .code(2)
            .stderr_has(&format!("error: {}{expected}", path.display()));
        let json = env.run(&["config", "check", "--json"]);
        json.code(2);
        assert_eq!(json.json()["ok"], false);
    }
    // A run reads the file too: a mistake in it is a usage error, before anything runs.
    env.run(&["run-job", "testkit", "echo"])
        .code(2)
        .stderr_has("retries: expected a whole number");
    assert!(env.all_events().is_empty());
}

#[test]
fn check_and_show_a_good_file_and_no_file() {
    let (_plugins, env) = common::testkit_env();
    env.run(&["config", "check"])
        .code(0)
        .stdout_has("no configuration file at ");
    let path = env.write_config("[jobs.\"testkit/echo\"]\ntimeout = \"30m\"\n\n[[schedule]]\njob = \"testkit/echo\"\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\ncatch_up = \"all\"\n",
    );
    env.run(&["config", "check"]).code(0).stdout_is(&format!(
        "{}: ok (1 job default, 1 schedule, 0 pipelines)\n",
        path.display()
    ));
    let show = env.run(&["config", "show", "--json"]);
    show.code(0);
    let shown = show.json();
    assert_eq!(shown["config"]["schedule"][0]["timezone"], "Europe/Berlin");
    assert_eq!(shown["config"]["jobs"]["testkit/echo"]["timeout"], "30m");
    env.run(&["config", "show"])
        .code(0)
        .stdout_has("[jobs.\"testkit/echo\"]\ntimeout = \"30m\"\n");
}
