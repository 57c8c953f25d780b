//! The configuration file's mistakes named at their place, crons and pipelines checked.

use super::*;

fn problems(text: &str) -> Vec<String> {
    match Config::parse(Path::new("lorch.toml"), text.to_owned()) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn each_mistake_is_named_at_its_place() {
    let good = r#"
[jobs."ingester/extract_gmail"]
account = "acct1"
timeout = "30m"
params = { limit = 100, label = "x" }

[[schedule]]
job = "ingester/extract_gmail"
cron = "0 6 * * *"
timezone = "Europe/Berlin"
catch_up = "all"
"#;
    assert_eq!(problems(good), Vec::<String>::new());
    let cases = [
        (
            "[[schedule]]\njob = \"a/b\"\ncron = \"61 * * * *\"\n",
            "lorch.toml:3:8: schedule 1: cron: '61 * * * *' is not a cron expression",
        ),
        (
            "[[schedule]]\njob = \"a/b\"\ncron = \"@daily\"\ntimezone = \"Europe/Berln\"\n",
            "lorch.toml:4:12: schedule 1: timezone: 'Europe/Berln' is not an IANA time zone (did you mean `Europe/Berlin`?)",
        ),
        (
            "[jobs.\"a/b\"]\nbogus = 1\n",
            "lorch.toml:2:9: [jobs.\"a/b\"]: unknown key `bogus`; accepted: account, since,",
        ),
        (
            "[jobs.\"a/b\"]\nretries = \"two\"\n",
            "lorch.toml:2:11: [jobs.\"a/b\"]: retries: expected a whole number from 0, found \"two\"",
        ),
        (
            "[jobs.\"a/b\"]\ntimeout = \"0s\"\n",
            "lorch.toml:2:11: [jobs.\"a/b\"]: timeout: '0s' is zero",
        ),
        (
            "[jobs.\"A b\"]\n",
            "lorch.toml:1:7: [jobs.\"A b\"]: 'A b' is not a job",
        ),
        (
            "[[schedule]]\njob = \"a/b\"\ncron = \"@daily\"\ncatch_up = \"some\"\n",
            "lorch.toml:4:12: schedule 1: catch_up: 'some' is not one of skip, latest, all",
        ),
        (
            "[[schedule]]\njob = \"a/b\"\n",
            "lorch.toml:1:1: schedule 1: cron is missing, e.g. cron = \"0 6 * * *\"",
        ),
        (
            "[[schedule]]\njob = \"a/b\"\ncron = \"@daily\"\ncatchup = \"all\"\n",
            "lorch.toml:4:11: schedule 1: unknown key `catchup` (did you mean `catch_up`?)",
        ),
        (
            "[metrics]\ndirr = \"x\"\n",
            "lorch.toml:1:1: [metrics]: dir is missing",
        ),
        (
            "[metrics]\ndirr = \"x\"\n",
            "lorch.toml:2:8: [metrics]: unknown key `dirr`; accepted: dir",
        ),
        (
            "[notify]\nnotify_after = 0\n",
            "lorch.toml:2:16: [notify]: notify_after: expected a whole number from 1, found 0",
        ),
        (
            "[notify]\non_failure = \"https://\"\n",
            "lorch.toml:2:14: [notify]: on_failure: 'https://' is not a URL",
        ),
        (
            "[notify]\non_failure = \"https:///hook\"\n",
            "lorch.toml:2:14: [notify]: on_failure: 'https:///hook' is not a URL with a host",
        ),
        (
            "[notify]\non_recovery = 3\n",
            "lorch.toml:2:15: [notify]: on_recovery: expected a string, found integer",
        ),
        (
            "[notify]\ntimout = \"5s\"\n",
            "lorch.toml:2:10: [notify]: unknown key `timout` (did you mean `timeout`?); accepted: on_failure,",
        ),
        (
            "[shedule]\n",
            "lorch.toml:1:2: unknown field `shedule`, expected one of `jobs`, `schedule`, `pipeline`",
        ),
    ];
    for (text, expected) in cases {
        let found = problems(text);
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{text:?}: {found:?}"
        );
    }
}

#[test]
fn cron_takes_five_fields_or_a_name_and_fires_as_written() {
    let fire = |text: &str, after: &str| {
        let after: chrono::DateTime<chrono::Utc> = after.parse().unwrap();
        parse_cron(text)
            .unwrap()
            .find_next_occurrence(&after, false)
            .unwrap()
            .to_rfc3339()
    };
    let at = "2026-11-25T12:00:00+00:00";
    assert_eq!(fire("30 6 * * 1-5", at), "2026-11-26T06:30:00+00:00");
    assert_eq!(fire(" @Daily ", at), "2026-11-26T00:00:00+00:00");
    assert_eq!(fire("@weekly", at), "2026-11-29T00:00:00+00:00");
    assert_eq!(fire("@yearly", at), "2027-01-01T00:00:00+00:00");
    assert_eq!(fire("0 0 L * *", at), "2026-11-30T00:00:00+00:00");
    for wrong in ["0 6 * * * *", "6 * *", "", "@often", "0 6 * * 8"] {
        let message = parse_cron(wrong).map(|_| ()).unwrap_err();
        assert!(
            message.contains("accepted: 5 fields"),
            "{wrong:?}: {message}"
        );
    }
}

#[test]
fn a_pipelines_steps_are_checked_and_ordered() {
    let text = "[[pipeline.p.steps]]\njob = \"a/load\"\nneeds = [\"extract\"]\n\n[[pipeline.p.steps]]\njob = \"a/extract\"\n";
    let config = Config::parse(Path::new("lorch.toml"), text.to_owned()).unwrap();
    let pipeline = &config.pipelines["p"];
    let names: Vec<&str> = pipeline.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["load", "extract"], "a step is named after its job");
    assert_eq!(
        pipeline.order(),
        Ok(vec![1, 0]),
        "what a step needs comes first"
    );
    assert_eq!(pipeline.defined_at, "lorch.toml:1");
    let cases = [
        ("[pipeline.p]\n", "lorch.toml:1:1: pipeline p: no steps"),
        (
            "[[pipeline.P.steps]]\njob = \"a/b\"\n",
            "lorch.toml:1:12: pipeline P: 'P' is not a name lorch accepts",
        ),
        (
            "[[pipeline.p.steps]]\njob = \"a/b\"\nneeds = \"x\"\n",
            "lorch.toml:3:9: pipeline p: step 1: needs: expected a list of step names",
        ),
        (
            "[[pipeline.p.steps]]\njob = \"a/b\"\ncontinue_on_failure = \"yes\"\n",
            "lorch.toml:3:23: pipeline p: step 1: continue_on_failure: expected true or false",
        ),
        (
            "[[pipeline.p.steps]]\njob = \"a/b\"\nneeds = [\"b\"]\n",
            "lorch.toml:1:12: pipeline p: its steps form a cycle: b → b",
        ),
        (
            "[[pipeline.p.steps]]\njobs = \"a/b\"\n",
            "lorch.toml:2:8: pipeline p: step 1: unknown key `jobs` (did you mean `job`?)",
        ),
    ];
    for (text, expected) in cases {
        let found = problems(text);
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{text:?}: {found:?}"
        );
    }
}
