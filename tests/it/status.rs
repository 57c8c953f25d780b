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
    let dir = env.home.path().join(".config/lorch");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("lorch.toml"),
        "[[schedule]]\njob = \"testkit/echo\"\naccount = \"daily\"\ncron = \"0 6 * * *\"\n",
    )
    .unwrap();
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
    assert_eq!(failing["why"], "its last 2 runs failed");
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
