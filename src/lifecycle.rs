//! A run's lifecycle as types: the event types lorch records, the statuses a run goes through,
//! why a run failed or was skipped, and the payload every lifecycle event carries. The runner
//! writes them, the store keeps each run's row in step with them, history closes abandoned
//! runs with them: a new reason or status is one edit here, which the compiler then follows.
//! The wire names (docs/events.md) are pinned by the tests below.

use lorch_plugin_api::abi::Failure;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Exit;

/// The `source_system` of every lifecycle event.
pub const SOURCE: &str = "lorch";

/// The `object_type` of every lifecycle event.
pub const OBJECT_TYPE: &str = "job_run";

/// Event types beginning with one of these are lorch's own; a job may not emit them.
pub const RESERVED_PREFIXES: [&str; 2] = ["job.", "pipeline."];

/// The `object_type` of the events that change a watermark by hand (`lorch state set|reset`).
pub const WATERMARK_OBJECT: &str = "watermark";

/// `--since last-success`: the end of the window of the last completed run (docs/windows.md).
pub const LAST_SUCCESS: &str = "last-success";

/// A change of a job's watermark made by hand, recorded as an event of lorch's own
/// (`source_system` `lorch`, `object_type` `watermark`) that the store applies in the
/// transaction that records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    /// `lorch state set`: the watermark is now the payload's `until`.
    Set,
    /// `lorch state reset`: the job and account have no watermark any more.
    Reset,
}

impl StateChange {
    pub fn as_str(self) -> &'static str {
        match self {
            StateChange::Set => "state.set",
            StateChange::Reset => "state.reset",
        }
    }

    pub fn parse(text: &str) -> Option<StateChange> {
        [StateChange::Set, StateChange::Reset]
            .into_iter()
            .find(|c| c.as_str() == text)
    }
}

/// The payload of a [`StateChange`] event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatermarkPayload {
    pub package: String,
    pub job: String,
    pub account: Option<String>,
    /// The new watermark (UTC, RFC 3339, microseconds); `None` for a reset.
    pub until: Option<String>,
    /// The watermark before the change.
    pub previous: Option<String>,
}

/// The lifecycle event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// An attempt starts (each retry records another).
    Started,
    /// The run's last attempt completed.
    Completed,
    /// An attempt failed, or the run was found abandoned.
    Failed,
    /// The run did not start: another run holds the job's lock.
    Skipped,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::Started,
        EventType::Completed,
        EventType::Failed,
        EventType::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Started => "job.started",
            EventType::Completed => "job.completed",
            EventType::Failed => "job.failed",
            EventType::Skipped => "job.skipped",
        }
    }

    /// The lifecycle event type named `text`, if it is one.
    pub fn parse(text: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// The event's `status` column: `failed` for `job.failed`, `ok` otherwise.
    pub fn event_status(self) -> &'static str {
        match self {
            EventType::Failed => "failed",
            _ => "ok",
        }
    }

    /// The status of the run once this event is recorded.
    pub fn run_status(self) -> RunStatus {
        match self {
            EventType::Started => RunStatus::Running,
            EventType::Completed => RunStatus::Completed,
            EventType::Failed => RunStatus::Failed,
            EventType::Skipped => RunStatus::Skipped,
        }
    }
}

/// Where a run stands (`runs list`, the store's `runs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
        }
    }

    pub const ALL: [RunStatus; 4] = [
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Skipped,
    ];

    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Why a run failed (`job.failed`) or was skipped (`job.skipped`): the payload's `reason`; and
/// why a completed run does not count for its window (the `runs` row's, [`Completion`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The job returned an error.
    Error,
    /// The job panicked.
    Panic,
    /// The job's process died: a signal, an abort, or `exit` without returning.
    Crash,
    /// The attempt ran past `--timeout`.
    Timeout,
    /// lorch was asked to stop (SIGINT, SIGTERM, SIGHUP, SIGQUIT).
    Cancelled,
    /// The lorch process running it ended without recording an outcome (recorded later, by
    /// the next lorch that looked).
    Abandoned,
    /// Skipped: another run of the job and account holds the lock.
    Locked,
    /// Skipped: a step of the pipeline this step needs did not complete (the payload's
    /// `upstream` names it).
    UpstreamFailed,
    /// A pipeline run: a step failed.
    StepFailed,
    /// Skipped: a backfill's window that another run completed meanwhile (docs/windows.md).
    AlreadyCompleted,
    /// Completed, with some of its events or objects not recorded (exit 3).
    EventsNotRecorded,
    /// Completed as `--dry-run`.
    DryRun,
}

/// The wire names, as `runs list` and `status` print them.
impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a completed run counts (docs/windows.md, "What counts"): the one place "success" is
/// decided in Rust; the store's `COUNTS` is its SQL form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Everything recorded: it moves the watermark, and is a success.
    Counts,
    /// Some of its events or objects were not recorded.
    EventsNotRecorded,
    /// `--dry-run`: nothing delivered, its window not done.
    DryRun,
}

impl Completion {
    /// How the run whose terminal payload this is completed.
    pub fn of(payload: &Payload) -> Completion {
        match (payload.events_not_recorded > 0, payload.dry_run) {
            (true, _) => Completion::EventsNotRecorded,
            (false, true) => Completion::DryRun,
            (false, false) => Completion::Counts,
        }
    }

    /// From the reason a completed run's row keeps; one lorch never writes for a completion is
    /// taken as not all recorded.
    pub fn from_reason(reason: Option<Reason>) -> Completion {
        match reason {
            None => Completion::Counts,
            Some(Reason::DryRun) => Completion::DryRun,
            Some(_) => Completion::EventsNotRecorded,
        }
    }

    /// The reason the row keeps: none for a run that counts.
    pub fn reason(self) -> Option<Reason> {
        match self {
            Completion::Counts => None,
            Completion::EventsNotRecorded => Some(Reason::EventsNotRecorded),
            Completion::DryRun => Some(Reason::DryRun),
        }
    }

    pub fn counts_for_window(self) -> bool {
        self == Completion::Counts
    }

    /// The exit code of a run that completed so (README, "Exit codes").
    pub fn exit(self) -> Exit {
        match self {
            Completion::Counts | Completion::DryRun => Exit::Success,
            Completion::EventsNotRecorded => Exit::Environment,
        }
    }
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::Error,
        Reason::Panic,
        Reason::Crash,
        Reason::Timeout,
        Reason::Cancelled,
        Reason::Abandoned,
        Reason::Locked,
        Reason::UpstreamFailed,
        Reason::StepFailed,
        Reason::AlreadyCompleted,
        Reason::EventsNotRecorded,
        Reason::DryRun,
    ];

    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Error => "error",
            Reason::Panic => "panic",
            Reason::Crash => "crash",
            Reason::Timeout => "timeout",
            Reason::Cancelled => "cancelled",
            Reason::Abandoned => "abandoned",
            Reason::Locked => "locked",
            Reason::UpstreamFailed => "upstream_failed",
            Reason::StepFailed => "step_failed",
            Reason::AlreadyCompleted => "already_completed",
            Reason::EventsNotRecorded => "events_not_recorded",
            Reason::DryRun => "dry_run",
        }
    }
}

/// The payload of every lifecycle event (docs/events.md, "Lifecycle events"). Read leniently:
/// a field missing from an older or damaged payload takes its default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Payload {
    pub package: String,
    pub job: String,
    pub parameters: Parameters,
    /// The window the run works on (docs/windows.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// From 1.
    pub attempt: u32,
    pub host: String,
    pub pid: u32,
    pub lorch_version: String,
    /// The plugin file, or `built-in`.
    pub plugin: String,
    /// Terminal events: how long the attempt (or, abandoned, the run) took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Terminal events: the job's events lorch could not store.
    #[serde(skip_serializing_if = "is_zero")]
    pub events_not_recorded: usize,
    /// Terminal events: what the attempt's upserts did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// `job.skipped`: the run holding the lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    /// `run-job --dry-run`: its window does not count as done (docs/windows.md).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// The `lorch backfill` this run is a window of (docs/windows.md, "Backfill").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backfill_id: Option<String>,
    /// The pipeline run this run is a step of (docs/pipelines.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<StepOf>,
    /// `job.skipped`, reason `upstream_failed`: the step that did not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// `job.failed` of an attempt: what the job or the system reported.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureDetail>,
    /// Terminal events: the lines the attempt wrote to its log, kept or dropped
    /// (docs/logs.md).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub log_lines: u64,
    /// `job.failed` of an attempt: its last lines (docs/logs.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<Vec<String>>,
}

/// The pipeline run a job's run is a step of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepOf {
    pub pipeline: String,
    pub pipeline_run_id: String,
    pub step: String,
}

/// The `object_type` of pipeline events.
pub const PIPELINE_OBJECT: &str = "pipeline_run";

/// The event types of a pipeline run (docs/pipelines.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineEvent {
    Started,
    Completed,
    Failed,
}

impl PipelineEvent {
    pub const ALL: [PipelineEvent; 3] = [
        PipelineEvent::Started,
        PipelineEvent::Completed,
        PipelineEvent::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PipelineEvent::Started => "pipeline.started",
            PipelineEvent::Completed => "pipeline.completed",
            PipelineEvent::Failed => "pipeline.failed",
        }
    }

    pub fn parse(text: &str) -> Option<PipelineEvent> {
        PipelineEvent::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// The event's `status` column: `failed` for a failure, else `ok` (as [`EventType`]'s).
    pub fn event_status(self) -> &'static str {
        match self {
            PipelineEvent::Failed => EventType::Failed.event_status(),
            _ => EventType::Completed.event_status(),
        }
    }

    /// The status of the pipeline run once this event is recorded.
    pub fn run_status(self) -> RunStatus {
        match self {
            PipelineEvent::Started => RunStatus::Running,
            PipelineEvent::Completed => RunStatus::Completed,
            PipelineEvent::Failed => RunStatus::Failed,
        }
    }
}

/// The payload of the pipeline events. `pipeline.started` says what the run will do; the
/// terminal event adds how it went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelinePayload {
    pub pipeline: String,
    /// The instant the steps' relative times were read from (UTC, microseconds); a resumed run
    /// reads them from its first run's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
    /// The window every step shares: `until` is fixed for all; `since` is `None` when each
    /// step resumes from its own last success (`since_input` `last-success`) or has no start.
    pub window: Window,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_input: Option<String>,
    /// `--initial-since`: where a step resuming from its last success starts when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_since: Option<String>,
    /// `--account`, when it was given for every step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub parallel: usize,
    pub total: usize,
    /// `--resume`: the pipeline run this one finishes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumes: Option<String>,
    /// The steps completed by the runs it resumes, not run again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub carried: Vec<String>,
    pub host: String,
    pub pid: u32,
    pub lorch_version: String,
    /// Terminal events: how it went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<PipelineSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// The counts of a pipeline run's terminal event: `succeeded` includes the carried steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineSummary {
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Steps that never started (the run was cancelled or abandoned first).
    pub not_run: usize,
    pub failed_steps: Vec<String>,
    pub skipped_steps: Vec<String>,
    pub duration_seconds: f64,
}

/// What a run's upserts did to the objects table (docs/objects.md): a key not stored before
/// was inserted; a stored one was updated when any of its columns but `last_seen` and
/// `correlation_id` changed, and was unchanged otherwise (it was seen again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

impl ObjectCounts {
    pub fn total(self) -> u64 {
        self.inserted + self.updated + self.unchanged
    }
}

impl std::ops::AddAssign for ObjectCounts {
    fn add_assign(&mut self, other: ObjectCounts) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The window of a run: `[since, until)`, UTC, RFC 3339 with microseconds. `until` is always
/// set (the run's start instant when not given); `since` is `None` for a run with no start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub since: Option<String>,
    pub until: String,
}

/// The run's arguments, as resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Parameters {
    pub account: Option<String>,
    /// UTC, RFC 3339.
    pub since: Option<String>,
    pub until: Option<String>,
    /// As typed.
    pub since_input: Option<String>,
    pub until_input: Option<String>,
    pub params: Map<String, Value>,
}

/// The run that held the lock a skipped run wanted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Holder {
    pub run_id: Option<String>,
    pub pid: Option<u32>,
}

/// What a failed attempt reported; every field is written, `null` when unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailureDetail {
    /// The job's error: message, cause chain, whether retrying can help, a panic's location.
    pub error: Option<Failure>,
    /// The signal that ended the job's process, or that cancelled the run.
    pub signal: Option<String>,
    /// The exit code of a job process that exited without returning.
    pub exit_code: Option<i32>,
}

impl Payload {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// A payload as recorded; `None` when it is not a JSON object at all. A field lorch does
    /// not know the value of (a reason from a newer lorch) is left out, not the whole payload.
    pub fn read(value: &Value) -> Option<Payload> {
        let object = value.as_object()?;
        Some({
            let mut payload = Payload::deserialize(value).unwrap_or_else(|_| {
                let mut known = object.clone();
                for field in ["reason", "holder", "error", "signal", "exit_code"] {
                    known.remove(field);
                }
                Payload::deserialize(Value::Object(known)).unwrap_or_default()
            });
            // A flattened optional struct always deserializes; it is there only when written.
            if !object.contains_key("exit_code") {
                payload.failure = None;
            }
            payload
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_names_are_pinned() {
        let types: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            types,
            ["job.started", "job.completed", "job.failed", "job.skipped"]
        );
        assert!(types.iter().all(|t| t.starts_with(RESERVED_PREFIXES[0])));
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("job.other"), None);
        for (status, name) in [
            (RunStatus::Running, "running"),
            (RunStatus::Completed, "completed"),
            (RunStatus::Failed, "failed"),
            (RunStatus::Skipped, "skipped"),
        ] {
            assert_eq!(status.as_str(), name);
            assert_eq!(json!(status), json!(name));
            assert_eq!(RunStatus::parse(name), Some(status));
        }
        for t in PipelineEvent::ALL {
            assert_eq!(PipelineEvent::parse(t.as_str()), Some(t));
            assert!(t.as_str().starts_with(RESERVED_PREFIXES[1]));
        }
        let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "error",
                "panic",
                "crash",
                "timeout",
                "cancelled",
                "abandoned",
                "locked",
                "upstream_failed",
                "step_failed",
                "already_completed",
                "events_not_recorded",
                "dry_run"
            ]
        );
        for reason in Reason::ALL {
            assert_eq!(json!(reason), json!(reason.as_str()));
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
    }

    #[test]
    fn payload_fields_keep_their_names_and_shape() {
        let payload = Payload {
            package: "p".into(),
            job: "j".into(),
            attempt: 2,
            duration_seconds: Some(1.5),
            reason: Some(Reason::Crash),
            failure: Some(FailureDetail {
                signal: Some("SIGSEGV".into()),
                ..FailureDetail::default()
            }),
            ..Payload::default()
        };
        let value = payload.to_value();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "attempt",
                "duration_seconds",
                "error",
                "exit_code",
                "host",
                "job",
                "lorch_version",
                "package",
                "parameters",
                "pid",
                "plugin",
                "reason",
                "signal"
            ]
        );
        assert_eq!(value["reason"], "crash");
        assert_eq!(value["error"], Value::Null);
        assert_eq!(
            value["parameters"],
            json!({"account": null, "since": null, "until": null,
                   "since_input": null, "until_input": null, "params": {}})
        );
        assert_eq!(Payload::read(&value), Some(payload));

        let started = Payload::read(&json!({"package": "p", "job": "j", "attempt": 1})).unwrap();
        assert_eq!(started.failure, None);
        assert!(
            !started
                .to_value()
                .as_object()
                .unwrap()
                .contains_key("signal")
        );
        assert_eq!(Payload::read(&json!("not an object")), None);
        let newer = Payload::read(&json!({"package": "p", "job": "j", "reason": "eclipse"}));
        assert_eq!(
            newer.map(|p| (p.package, p.reason)),
            Some(("p".into(), None))
        );
    }
}
