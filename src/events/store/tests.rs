//! The store kept whole: every column recorded and listed, a run's events among others,
//! an old store upgraded.

use super::*;
use serde_json::json;

#[test]
fn records_and_lists_every_column() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open_in(dir.path()).unwrap();
    let mut first = Event::new("job.started", "lorch", "run-1");
    first.trace_id = Some("trace".into());
    first.object_type = Some("job_run".into());
    first.set_payload(&json!({"package": "p", "n": [1, 2]}));
    let mut second = Event::new("p.thing", "p/j", "run-1");
    second.idem_key = Some("k".into());
    second.status = "failed".into();
    second.error_message = Some("boom".into());
    let other = Event::new("job.started", "lorch", "run-2");
    for event in [&first, &second, &other] {
        store.record(event).unwrap();
    }

    let run1 = store
        .list(&EventFilter {
            run_id: Some("run-1".into()),
            limit: None,
        })
        .unwrap();
    // created_at is stored with microseconds, which is all `Utc::now()` needs on Linux.
    let trunc = |mut e: Event| {
        e.created_at = e
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .parse()
            .unwrap();
        e
    };
    // Compared as JSON: what `events list --json` shows, payload included.
    let json = |events: &[Event]| serde_json::to_value(events).unwrap();
    assert_eq!(json(&run1), json(&[trunc(first), trunc(second)]));

    let newest = store
        .list(&EventFilter {
            run_id: None,
            limit: Some(1),
        })
        .unwrap();
    assert_eq!(json(&newest), json(&[trunc(other)]));
    assert_eq!(store.last_run_id().unwrap().as_deref(), Some("run-2"));
}

fn lifecycle(event_type: &str, run: &str) -> Event {
    let mut event = Event::new(event_type, "lorch", run);
    event.object_type = Some("job_run".into());
    event.set_payload(&json!({"package": "p", "job": "j", "attempt": 1}));
    event
}

fn types(store: &LocalStore, run: &str) -> Vec<String> {
    let filter = EventFilter {
        run_id: Some(run.into()),
        limit: None,
    };
    let events = store.list(&filter).unwrap();
    events.into_iter().map(|e| e.event_type).collect()
}

#[test]
fn a_runs_events_are_listed_among_other_runs_and_across_retries() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open_in(dir.path()).unwrap();
    let sequence = [
        lifecycle("job.started", "a"),
        Event::new("a.1", "p/j", "a"),
        lifecycle("job.started", "b"),
        Event::new("b.1", "p/j", "b"),
        lifecycle("job.failed", "a"),
        Event::new("b.2", "p/j", "b"),
        // a's second attempt
        lifecycle("job.started", "a"),
        Event::new("a.2", "p/j", "a"),
        lifecycle("job.completed", "a"),
        Event::new("b.3", "p/j", "b"),
    ];
    for event in &sequence[..8] {
        store.record(event).unwrap();
    }
    // While the second attempt runs, its events are listed too.
    let a = ["job.started", "a.1", "job.failed", "job.started", "a.2"];
    assert_eq!(types(&store, "a"), a);
    for event in &sequence[8..] {
        store.record(event).unwrap();
    }
    let a = [
        "job.started",
        "a.1",
        "job.failed",
        "job.started",
        "a.2",
        "job.completed",
    ];
    assert_eq!(types(&store, "a"), a);
    // b is still running: everything of it so far.
    assert_eq!(types(&store, "b"), ["job.started", "b.1", "b.2", "b.3"]);
    let newest = EventFilter {
        run_id: Some("a".into()),
        limit: Some(2),
    };
    let newest: Vec<_> = store.list(&newest).unwrap();
    assert_eq!(newest[0].event_type, "a.2");
    assert_eq!(newest.len(), 2);
}

#[test]
fn a_store_made_before_runs_kept_their_seq_range_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    {
        let store = LocalStore::open(&path).unwrap();
        for event in [
            lifecycle("job.started", "old"),
            Event::new("x", "p/j", "old"),
            lifecycle("job.started", "other"),
            lifecycle("job.completed", "old"),
            Event::new("y", "p/j", "other"),
        ] {
            store.record(&event).unwrap();
        }
        // Back to the earlier layout: no seq range, an index per run.
        store
            .conn()
            .execute_batch(
                "ALTER TABLE runs DROP COLUMN first_seq;
                 ALTER TABLE runs DROP COLUMN last_seq;
                 CREATE INDEX events_by_run ON events (correlation_id, seq);
                 PRAGMA user_version = 0;",
            )
            .unwrap();
    }
    let store = LocalStore::open(&path).unwrap();
    assert_eq!(types(&store, "old"), ["job.started", "x", "job.completed"]);
    assert_eq!(types(&store, "other"), ["job.started", "y"]);
    let range = |run: &str| -> (Option<i64>, Option<i64>) {
        store
            .conn()
            .query_row(
                "SELECT first_seq, last_seq FROM runs WHERE run_id = ?1",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    assert_eq!(range("old"), (Some(1), Some(4)));
    assert_eq!(range("other"), (Some(3), None));
    let indexes: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'events_by_run'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0);
}
