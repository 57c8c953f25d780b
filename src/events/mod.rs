//! Events and objects: the rows of lorchestra's `event_log` and `raw_objects` (docs/events.md,
//! docs/objects.md), and where they are recorded.

mod store;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

pub use store::{
    DeadLetter, DeliveryStatus, EventFilter, JobRuns, LocalStore, ObjectFilter, Outbox, Pending,
    PendingObject, PipelineRunRow, PrunedEvents, RunFilter, RunRow, Watermark,
};

use crate::lifecycle::ObjectCounts;
use crate::runlog::Level;

/// One event, with exactly the columns of the `event_log` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    pub event_type: String,
    pub source_system: String,
    pub created_at: DateTime<Utc>,
    pub status: String,
    pub correlation_id: String,
    pub trace_id: Option<String>,
    pub object_type: Option<String>,
    pub idem_key: Option<String>,
    pub error_message: Option<String>,
    /// Kept as JSON text from the job to the store: events are copied, never re-encoded.
    pub payload: Option<Box<RawValue>>,
}

impl Event {
    /// A new event with a fresh time-ordered id, created now, status `ok`.
    pub fn new(event_type: &str, source_system: &str, correlation_id: &str) -> Event {
        Event {
            event_id: Uuid::now_v7().to_string(),
            event_type: event_type.to_owned(),
            source_system: source_system.to_owned(),
            created_at: Utc::now(),
            status: "ok".to_owned(),
            correlation_id: correlation_id.to_owned(),
            trace_id: None,
            object_type: None,
            idem_key: None,
            error_message: None,
            payload: None,
        }
    }

    /// Sets the payload from a JSON value.
    pub fn set_payload(&mut self, payload: &Value) {
        self.payload = serde_json::value::to_raw_value(payload).ok();
    }

    /// The payload as a JSON value (`null` when there is none).
    pub fn payload_value(&self) -> Value {
        self.payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or(Value::Null)
    }
}

/// One object, with exactly the columns of the `raw_objects` table. Written with `first_seen`
/// and `last_seen` both the moment the job upserted it; the store keeps the first `first_seen`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Object {
    pub idem_key: String,
    pub source_system: String,
    pub connection_name: Option<String>,
    pub object_type: String,
    pub schema_ref: Option<String>,
    pub external_id: Option<String>,
    /// JSON text, as the job sent it.
    pub payload: Box<RawValue>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The run that last wrote it.
    pub correlation_id: String,
}

/// Where events go. The runner only knows this trait: it records into the local store, and
/// BigQuery delivery reads from the store's outbox (`crate::bigquery`), never from the runner.
///
/// `record` returns once the event is durable; implementations are shared between the runner
/// and the job's threads, hence `Sync`.
pub trait EventSink: Sync {
    fn record(&self, event: &Event) -> anyhow::Result<()> {
        self.record_batch(std::slice::from_ref(event))
    }

    /// Records several events at once, all or none: a sink can make one durable write of them.
    fn record_batch(&self, events: &[Event]) -> anyhow::Result<()> {
        self.store(events, &[]).map(drop)
    }

    /// Records events and upserts objects, all or none, and says what the upserts did (a sink
    /// that only forwards them says nothing: zero counts).
    fn store(&self, events: &[Event], objects: &[Object]) -> anyhow::Result<ObjectCounts>;

    /// A line the job logged through its context: shown as one of lorch's log lines, unless
    /// the sink keeps it in the run's log too (docs/logs.md).
    fn log(&self, level: Level, message: &str) {
        level.show(message);
    }
}
