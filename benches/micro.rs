//! In-process micro-benchmarks of lorch's hot paths. Run with `cargo bench --bench micro`, or
//! the whole suite with `bash benches/run.sh`, which also records the figures in
//! docs/performance.md.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lorch::events::{Event, EventSink, LocalStore};
use lorch::{timearg, worker_protocol};
use lorch_plugin_api::abi::PluginMetadata;
use serde_json::json;

fn time_arguments(c: &mut Criterion) {
    let now = Utc::now();
    let mut group = c.benchmark_group("timearg");
    for value in [
        "-7d",
        "1h30m",
        "today",
        "2024-01-01",
        "2024-01-01T06:00:00+02:00",
    ] {
        group.bench_function(value, |b| {
            b.iter(|| timearg::resolve(black_box(value), now))
        });
    }
    group.finish();
}

/// What a plugin with ten jobs of two parameters each declares.
fn metadata_json() -> String {
    let jobs: Vec<_> = (0..10)
        .map(|j| {
            json!({
                "package": "pkg042", "name": format!("job{j}"),
                "description": format!("Job {j} of package 42.\n\nDoes nothing, quickly."),
                "params": [
                    {"name": "limit", "type": "int", "default": "10", "help": "A limit"},
                    {"name": "label", "type": "string", "help": "A label"},
                ],
            })
        })
        .collect();
    json!({ "jobs": jobs }).to_string()
}

fn metadata_decoding(c: &mut Criterion) {
    let json = metadata_json();
    let mut group = c.benchmark_group("metadata");
    group.throughput(Throughput::Elements(10));
    group.bench_function("decode 10 jobs", |b| {
        b.iter(|| serde_json::from_str::<PluginMetadata>(black_box(&json)).unwrap())
    });
    group.finish();
}

fn small_event(i: usize) -> Event {
    let mut event = Event::new(
        "testkit.tick",
        "testkit/emit_many",
        "01936b7e-9b4e-7c1a-8f0e-2f5d7c1e4a90",
    );
    event.idem_key = Some(format!("tick-{i}"));
    event.set_payload(&json!({ "i": i }));
    event
}

/// An event as the worker sends it to lorch, and back.
fn event_encoding(c: &mut Criterion) {
    let event = small_event(7);
    let mut message = Vec::new();
    worker_protocol::encode_event(&event, &mut message);
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            worker_protocol::encode_event(black_box(&event), &mut out);
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| worker_protocol::decode(black_box(&message)).unwrap())
    });
    group.bench_function("create", |b| b.iter(|| small_event(black_box(7))));
    group.finish();
}

fn store_inserts(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("events.db")).unwrap();
    let mut group = c.benchmark_group("store");
    for batch in [1usize, 100, 1000] {
        let events: Vec<Event> = (0..batch).map(small_event).collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("insert batch of {batch}"), |b| {
            b.iter_batched(
                // Fresh ids each time: event_id is unique in the store.
                || {
                    events
                        .iter()
                        .map(|e| Event {
                            event_id: uuid(),
                            ..e.clone()
                        })
                        .collect::<Vec<_>>()
                },
                |events| store.record_batch(&events).unwrap(),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn uuid() -> String {
    Event::new("x", "x", "x").event_id
}

criterion_group!(
    benches,
    time_arguments,
    metadata_decoding,
    event_encoding,
    store_inserts
);
criterion_main!(benches);
