//! Notifications (docs/notifications.md): `[notify]` hooks are called on the `notify_after`-th
//! failure in a row and once on recovery, by a command or a webhook; a hook that fails or hangs
//! never changes the run's exit code.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::common::{self, Env};

/// `testkit/fail_if_exists` with `file` as its switch: exit 1 while it exists, else 0.
fn run_switched(env: &Env, file: &Path, code: i32) -> common::Run {
    let out = env
        .lorch()
        .args(["run-job", "testkit", "fail_if_exists", "--param"])
        .args([format!("file={}", file.display())])
        .run();
    out.code(code);
    out
}

#[test]
fn a_command_hook_fires_on_the_third_failure_in_a_row_only_and_once_on_recovery() {
    let (_plugins, env) = common::testkit_env();
    let calls = env.home.path().join("calls");
    env.write_config(&format!(
            "[notify]\nnotify_after = 3\n\
             on_failure = \"(echo \\\"$LORCH_EVENT $LORCH_JOB $LORCH_CONSECUTIVE_FAILURES $LORCH_RUN_ID\\\"; cat; echo) >> {0}\"\n\
             on_recovery = \"(echo \\\"$LORCH_EVENT $LORCH_JOB $LORCH_STATUS $LORCH_RUN_ID\\\"; cat; echo) >> {0}\"\n",
            calls.display()
        ),
    );
    let broken = env.home.path().join("broken");
    std::fs::write(&broken, "").unwrap();
    let failures: Vec<String> = (0..4)
        .map(|_| run_switched(&env, &broken, 1).run_id())
        .collect();
    std::fs::remove_file(&broken).unwrap();
    let recovered = run_switched(&env, &broken, 0).run_id();
    run_switched(&env, &broken, 0);

    let text = std::fs::read_to_string(&calls).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(
        lines[0],
        format!("failure testkit/fail_if_exists 3 {}", failures[2])
    );
    let note: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(note["occasion"], "failure");
    assert_eq!(note["consecutive_failures"], 3);
    assert_eq!(note["status"], "failed");
    assert!(
        note["error"].as_str().unwrap().ends_with("broken exists"),
        "{note}"
    );
    assert_eq!(
        lines[2],
        format!("recovery testkit/fail_if_exists completed {recovered}")
    );
    let note: Value = serde_json::from_str(lines[3]).unwrap();
    assert_eq!(note["occasion"], "recovery");
    // The streak it ended.
    assert_eq!(note["consecutive_failures"], 4);
}

/// An HTTP server on a free local port that answers each POST with the next of `answers`
/// (then 200), and keeps the bodies.
fn webhook(answers: &[u16]) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let mut answers: VecDeque<u16> = answers.iter().copied().collect();
    let kept = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            kept.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            let status = answers.pop_front().unwrap_or(200);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, bodies)
}

#[test]
fn a_webhook_is_retried_after_a_server_error_and_gets_the_runs_summary() {
    let (_plugins, env) = common::testkit_env();
    let (url, bodies) = webhook(&[503]);
    env.write_config(&format!(
        "[notify]\non_failure = \"{url}\"\non_recovery = \"{url}\"\n"
    ));
    let run = env
        .lorch()
        .args(["run-job", "testkit", "chatty", "--param", "stdout=3"])
        .args(["--param", "end=fail"])
        .run();
    run.code(1);
    assert!(!run.stderr.contains("hook"), "{run:?}");
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "one 503, then the retry: {bodies:?}");
    assert_eq!(bodies[0], bodies[1]);
    let note = &bodies[1];
    assert_eq!(note["occasion"], "failure");
    assert_eq!(note["run_id"], run.run_id());
    assert_eq!(note["job"], "chatty");
    assert_eq!(note["reason"], "error");
    assert_eq!(
        note["log_tail"],
        serde_json::json!(["out 0", "out 1", "out 2", "ERROR giving up"])
    );
}

#[test]
fn a_hook_that_hangs_or_fails_is_reported_once_and_the_exit_code_stays() {
    let (_plugins, env) = common::testkit_env();
    let pid = env.home.path().join("hook.pid");
    env.write_config(&format!(
        "[notify]\ntimeout = \"1s\"\non_failure = \"echo $$ > {}; exec sleep 600\"\n",
        pid.display()
    ));
    let run = env.lorch().args(["run-job", "testkit", "fail"]).run();
    run.code(1);
    let warnings: Vec<&str> = run.stderr.lines().filter(|l| l.contains("hook")).collect();
    assert_eq!(warnings.len(), 1, "{run:?}");
    assert!(
        warnings[0].contains("still running after 1s, and was killed"),
        "{run:?}"
    );
    let pid: u64 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        common::gone(pid),
        "the hook's process {pid} was left running"
    );

    // A command that fails, and a webhook nobody answers: each reported; the run that
    // recovers still exits 0.
    env.write_config("[notify]\ntimeout = \"1s\"\non_failure = \"exit 3\"\non_recovery = \"http://127.0.0.1:9/nobody\"\n",
    );
    let broken = env.home.path().join("broken");
    std::fs::write(&broken, "").unwrap();
    run_switched(&env, &broken, 1).stderr_has(
        "on_failure hook (command 'exit 3') of testkit/fail_if_exists failed: it exited with code 3",
    );
    std::fs::remove_file(&broken).unwrap();
    run_switched(&env, &broken, 0).stderr_has(
        "on_recovery hook (webhook http://127.0.0.1:9/nobody) of testkit/fail_if_exists failed",
    );
}

/// A 302 is not followed (a client that follows it sends a GET without the summary), and the
/// hook is reported as failed, naming the redirect.
#[test]
fn a_webhook_that_redirects_is_reported_not_followed() {
    let (_plugins, env) = common::testkit_env();
    let (url, bodies) = webhook(&[302]);
    env.write_config(&format!("[notify]\non_failure = \"{url}\"\n"));
    let run = env.lorch().args(["run-job", "testkit", "fail"]).run();
    run.code(1)
        .stderr_has("302 Found (a redirect to nowhere), which lorch does not follow");
    assert_eq!(bodies.lock().unwrap().len(), 1);
}
