//! One run of a job: its run id, its lifecycle events around the job, its outcome.
//!
//! The runner knows jobs only through [`Job::call`](crate::plugins::Job) and events only through
//! [`EventSink`], so where the job runs and where events go can change without touching it.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::SecondsFormat;
use lorch_plugin_api::TimeArg;
use lorch_plugin_api::abi::{Failure, RunRequest};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::events::{Event, EventSink};
use crate::host::{CallResult, JobCall};
use crate::plugins::Job;

/// Everything a run needs, already validated.
pub struct RunPlan<'a> {
    pub job: &'a Job,
    pub account: Option<String>,
    pub since: Option<TimeArg>,
    pub until: Option<TimeArg>,
    pub params: Map<String, Value>,
    pub trace_id: Option<String>,
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    Completed,
    Failed {
        /// `error` or `panic` (SPEC §5).
        reason: &'static str,
        /// The whole message, causes included.
        message: String,
        failure: Failure,
    },
}

pub struct RunReport {
    pub run_id: String,
    pub duration: Duration,
    pub outcome: Outcome,
    /// Set when the terminal event could not be stored; the outcome above still stands.
    pub record_error: Option<anyhow::Error>,
}

/// Runs the job between its `job.started` and its one terminal event.
///
/// An error means `job.started` could not be recorded, and the job was not run: lorch never
/// runs a job whose run it cannot record.
pub fn run(plan: &RunPlan, sink: &dyn EventSink) -> anyhow::Result<RunReport> {
    let run_id = Uuid::now_v7().to_string();
    let job_id = plan.job.id();
    let base = lifecycle_payload(plan);

    let started = lifecycle_event("job.started", &run_id, plan, base.clone());
    sink.record(&started)
        .with_context(|| format!("cannot record job.started of {job_id}; the job was not run"))?;

    let request = RunRequest {
        run_id: run_id.clone(),
        package: plan.job.meta.package.clone(),
        job: plan.job.meta.name.clone(),
        attempt: 1,
        account: plan.account.clone(),
        since: plan.since.clone(),
        until: plan.until.clone(),
        params: plan.params.clone(),
    };
    let cancelled = AtomicBool::new(false);
    let call = JobCall::new(
        plan.job,
        sink,
        &run_id,
        plan.trace_id.as_deref(),
        &cancelled,
    );
    let start = Instant::now();
    let result = tracing::info_span!("job", id = %job_id).in_scope(|| call.run(plan.job, &request));
    let duration = start.elapsed();

    let outcome = match result {
        CallResult::Completed => Outcome::Completed,
        CallResult::Failed(failure) | CallResult::Refused(failure) => Outcome::Failed {
            reason: "error",
            message: full_message(&failure),
            failure,
        },
        CallResult::Panicked(failure) => {
            let message = match &failure.location {
                Some(location) => format!("panicked at {location}: {}", failure.message),
                None => format!("panicked: {}", failure.message),
            };
            Outcome::Failed {
                reason: "panic",
                message,
                failure,
            }
        }
    };

    let mut payload = base;
    payload["duration_seconds"] = json!(duration.as_secs_f64());
    if call.unrecorded() > 0 {
        payload["events_not_recorded"] = json!(call.unrecorded());
    }
    let terminal = match &outcome {
        Outcome::Completed => lifecycle_event("job.completed", &run_id, plan, payload),
        Outcome::Failed {
            reason,
            message,
            failure,
        } => {
            payload["reason"] = json!(reason);
            payload["error"] = json!({
                "message": failure.message,
                "chain": failure.chain,
                "permanent": failure.permanent,
                "location": failure.location,
            });
            let mut event = lifecycle_event("job.failed", &run_id, plan, payload);
            event.status = "failed".to_owned();
            event.error_message = Some(message.clone());
            event
        }
    };
    let record_error = sink
        .record(&terminal)
        .with_context(|| format!("cannot record {} of run {run_id}", terminal.event_type))
        .err();
    Ok(RunReport {
        run_id,
        duration,
        outcome,
        record_error,
    })
}

fn full_message(failure: &Failure) -> String {
    std::iter::once(failure.message.as_str())
        .chain(failure.chain.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(": ")
}

fn lifecycle_event(event_type: &str, run_id: &str, plan: &RunPlan, payload: Value) -> Event {
    let mut event = Event::new(event_type, "lorch", run_id);
    event.trace_id = plan.trace_id.clone();
    event.object_type = Some("job_run".to_owned());
    event.payload = Some(payload);
    event
}

/// The payload every lifecycle event of a run carries (SPEC §5).
fn lifecycle_payload(plan: &RunPlan) -> Value {
    let instant = |t: &Option<TimeArg>| {
        t.as_ref()
            .map(|t| t.utc.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    };
    let raw = |t: &Option<TimeArg>| t.as_ref().map(|t| t.raw.clone());
    json!({
        "package": plan.job.meta.package,
        "job": plan.job.meta.name,
        "parameters": {
            "account": plan.account,
            "since": instant(&plan.since),
            "until": instant(&plan.until),
            "since_input": raw(&plan.since),
            "until_input": raw(&plan.until),
            "params": plan.params,
        },
        "attempt": 1,
        "host": gethostname::gethostname().to_string_lossy(),
        "pid": std::process::id(),
        "lorch_version": env!("CARGO_PKG_VERSION"),
        "plugin": plan.job.location.to_string(),
    })
}
