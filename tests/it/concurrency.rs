//! Several lorch processes writing the same local store at once lose nothing.

use std::process::Stdio;

use crate::common;
use crate::common::{Env, plugin_dir};

#[test]
fn two_runs_emitting_1000_events_each_store_all_2004() {
    let dir = plugin_dir(&["testkit"]);
    let env = Env::new(&[dir.path()]);
    // Two accounts: runs of the same job and account would exclude each other (overlap lock).
    let children: Vec<_> = ["acct1", "acct2"]
        .into_iter()
        .map(|account| {
            env.cmd(&[
                "run-job",
                "testkit",
                "emit_many",
                "--param",
                "count=1000",
                "--account",
                account,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let runs: Vec<common::Run> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().into())
        .collect();
    for run in &runs {
        run.code(0);
    }
    let events = env.all_events();
    assert_eq!(events.len(), 2004);
    for run in &runs {
        let mine = env.events(&run.run_id());
        assert_eq!(mine.len(), 1002);
        assert_eq!(mine[0]["event_type"], "job.started");
        assert_eq!(mine[1001]["event_type"], "job.completed");
        let ticks: Vec<i64> = mine[1..1001]
            .iter()
            .map(|e| e["payload"]["i"].as_i64().unwrap())
            .collect();
        assert_eq!(
            ticks,
            (0..1000).collect::<Vec<_>>(),
            "each run's events are stored in emission order"
        );
    }
}

#[test]
fn a_jobs_threads_emitting_at_once_store_every_event_each_threads_in_order() {
    let dir = plugin_dir(&["testkit"]);
    let env = Env::new(&[dir.path()]);
    // 4 x 5,000 events: several times what the worker's ring holds, so the threads also wait
    // for room together.
    let run = env.run(&[
        "run-job",
        "testkit",
        "emit_threads",
        "--param",
        "threads=4",
        "--param",
        "count=5000",
    ]);
    run.code(0);
    let events = env.events(&run.run_id());
    assert_eq!(events.len(), 20_002);
    let mut seen = vec![Vec::new(); 4];
    for event in &events[1..20_001] {
        let thread = event["payload"]["thread"].as_u64().unwrap() as usize;
        seen[thread].push(event["payload"]["i"].as_i64().unwrap());
    }
    for (thread, seen) in seen.iter().enumerate() {
        assert_eq!(*seen, (0..5000).collect::<Vec<_>>(), "thread {thread}");
    }
}

#[test]
fn lorch_processes_creating_the_store_at_the_same_moment_all_succeed() {
    // Creating the store switches it to WAL, which SQLite refuses at once, without waiting,
    // while another process holds the file: each lorch must retry rather than fail.
    for _ in 0..30 {
        let env = Env::new(&[]);
        let children: Vec<_> = (0..6)
            .map(|_| {
                env.cmd(&["events", "list"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = common::Run::from(child.wait_with_output().unwrap());
            out.code(0);
        }
    }
}
