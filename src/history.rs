//! Run history that never lies: a run that shows "running" but whose lorch process is gone
//! (a reboot, `kill -9` of lorch) is closed with `job.failed`, reason `abandoned`.
//!
//! A live run holds a lock on its run id (see [`locks`](crate::locks)); if another process can
//! take that lock, nobody is left to finish the run. The check runs before every run of a job
//! (for that job), and for all jobs in `lorch runs list|show|reap`. A pipeline run holds a lock
//! on its pipeline run id the same way and is closed with `pipeline.failed`, reason
//! `abandoned`, once its steps are.

use std::path::Path;

use crate::events::{Event, EventFilter, EventSink, LocalStore, PipelineRunRow, RunRow};
use crate::lifecycle::{
    self, EventType, Payload, PipelineEvent, PipelinePayload, PipelineSummary, Reason, RunStatus,
};
use crate::locks;
use anyhow::Result;
use chrono::Utc;

/// Closes the abandoned runs (of one `(package, job)`, or all) and returns them.
pub fn reap(store: &LocalStore, home: &Path, job: Option<(String, String)>) -> Result<Vec<RunRow>> {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let job = job.as_ref().map(|(p, j)| (p.as_str(), j.as_str()));
    let mut reaped = Vec::new();
    for run in store.running(job)? {
        // Another machine's run (a shared LORCH_HOME): its lock is not ours to judge.
        if run.host.as_deref().is_some_and(|h| h != host) {
            continue;
        }
        // Not an id lorch made: a damaged or tampered store. It never becomes a path.
        if !locks::valid_run_id(&run.run_id) {
            tracing::warn!(
                "run id {:?} in {} is not one lorch made; not checked for abandonment",
                run.run_id,
                store.path().display()
            );
            continue;
        }
        let Some(_lock) = locks::take_orphaned_run(home, &run.run_id)? else {
            continue;
        };
        // Under the lock, so two reapers cannot both close it.
        if store
            .run(&run.run_id)?
            .is_none_or(|r| r.status != RunStatus::Running)
        {
            continue;
        }
        store.record(&abandoned(store, &run)?)?;
        reaped.push(run);
    }
    remove_stale_run_locks(store, home)?;
    Ok(reaped)
}

/// Removes the lock files of runs that never recorded `job.started` (lorch was killed before
/// it could) and whose process is gone. A lorch that is starting holds its lock, so its file
/// is left alone; one that opened its file but had not locked it yet notices the removal and
/// takes a new one ([`locks::hold_run`]).
fn remove_stale_run_locks(store: &LocalStore, home: &Path) -> Result<()> {
    for run_id in locks::run_lock_ids(home)? {
        let Some(lock) = locks::take_orphaned_run(home, &run_id)? else {
            continue;
        };
        // A run with a row is reaped above, by the rules for its job; keep its file for that.
        if store
            .run(&run_id)?
            .is_some_and(|r| r.status == RunStatus::Running)
        {
            lock.keep_file();
        }
    }
    Ok(())
}

/// The `job.failed` of an abandoned run: its last `job.started`, closed now.
fn abandoned(store: &LocalStore, run: &RunRow) -> Result<Event> {
    let events = store.list(&EventFilter {
        run_id: Some(run.run_id.clone()),
        limit: None,
    })?;
    let started = events
        .iter()
        .rev()
        .find(|e| e.event_type == EventType::Started.as_str());
    let kind = EventType::Failed;
    let mut event = Event::new(kind.as_str(), lifecycle::SOURCE, &run.run_id);
    event.status = kind.event_status().to_owned();
    event.object_type = Some(lifecycle::OBJECT_TYPE.to_owned());
    event.trace_id = started.and_then(|e| e.trace_id.clone());
    let pid = run.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    event.error_message = Some(format!(
        "abandoned: the lorch process{pid} running it ended without recording an outcome"
    ));
    // The attempt's own payload, closed: what the job was asked to do stays on record. Without
    // one (a damaged store), what the run's row knows.
    let recorded = started.and_then(|e| Payload::read(&e.payload_value()));
    let payload = Payload {
        reason: Some(Reason::Abandoned),
        duration_seconds: started.map(|started| (Utc::now() - started.created_at).as_seconds_f64()),
        failure: None,
        ..recorded.unwrap_or_else(|| Payload {
            package: run.package.clone(),
            job: run.job.clone(),
            parameters: lifecycle::Parameters {
                account: run.account.clone(),
                ..Default::default()
            },
            attempt: run.attempt,
            host: run.host.clone().unwrap_or_default(),
            pid: run.pid.unwrap_or_default(),
            ..Payload::default()
        })
    };
    event.set_payload(&payload.to_value());
    Ok(event)
}

/// Closes the abandoned pipeline runs (after [`reap`] closed their steps' runs) and returns them.
pub fn reap_pipelines(store: &LocalStore, home: &Path) -> Result<Vec<PipelineRunRow>> {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let mut reaped = Vec::new();
    for run in store.pipeline_runs(None, Some(RunStatus::Running), None)? {
        let id = &run.pipeline_run_id;
        if run.host.as_deref().is_some_and(|h| h != host) || !locks::valid_run_id(id) {
            continue;
        }
        let Some(lock) = locks::take_orphaned_run(home, id)? else {
            continue;
        };
        if store
            .pipeline_run(id)?
            .is_none_or(|r| r.status != RunStatus::Running)
        {
            continue;
        }
        let steps = store.steps_of(id)?;
        let started = chrono::DateTime::parse_from_rfc3339(&run.started_at)
            .map(|t| (Utc::now() - t.with_timezone(&Utc)).as_seconds_f64())
            .unwrap_or_default();
        let payload = PipelinePayload {
            summary: Some(pipeline_summary(&run.started, &steps, started)),
            reason: Some(Reason::Abandoned),
            ..run.started.clone()
        };
        let mut event = pipeline_event(PipelineEvent::Failed, id, &payload);
        let pid = run.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        event.error_message = Some(format!(
            "abandoned: the lorch process{pid} running it ended without recording an outcome"
        ));
        store.record(&event)?;
        drop(lock);
        reaped.push(run);
    }
    Ok(reaped)
}

/// A pipeline event of the pipeline run `id` (docs/pipelines.md).
pub fn pipeline_event(kind: PipelineEvent, id: &str, payload: &PipelinePayload) -> Event {
    let mut event = Event::new(kind.as_str(), lifecycle::SOURCE, id);
    event.status = kind.event_status().to_owned();
    event.trace_id = Some(id.to_owned());
    event.object_type = Some(lifecycle::PIPELINE_OBJECT.to_owned());
    event.set_payload(&serde_json::to_value(payload).unwrap_or_default());
    event
}

/// The counts of a pipeline run from its steps' runs (one each: a step's retries are attempts
/// of its run): the steps it carried from the run it resumed count as succeeded, a completed run
/// that does not count for its window (events not recorded) as failed, the steps with no run as
/// not run.
pub fn pipeline_summary(
    started: &PipelinePayload,
    steps: &[RunRow],
    duration_seconds: f64,
) -> PipelineSummary {
    let named = |keep: &dyn Fn(&RunRow) -> bool| -> Vec<String> {
        steps
            .iter()
            .filter(|r| keep(r))
            .filter_map(|r| r.step.clone())
            .collect()
    };
    let completed = RunRow::counts;
    let failed_steps = named(&|r| {
        r.status == RunStatus::Failed || (r.status == RunStatus::Completed && !completed(r))
    });
    let skipped_steps = named(&|r| r.status == RunStatus::Skipped);
    let succeeded = started.carried.len() + named(&completed).len();
    let ended = succeeded + failed_steps.len() + skipped_steps.len();
    PipelineSummary {
        total: started.total,
        succeeded,
        failed: failed_steps.len(),
        skipped: skipped_steps.len(),
        not_run: started.total.saturating_sub(ended),
        failed_steps,
        skipped_steps,
        duration_seconds,
    }
}

/// `LORCH_HOME` and its event store; what it records is queued for BigQuery when that is
/// configured.
pub fn open_home() -> anyhow::Result<(std::path::PathBuf, crate::events::LocalStore)> {
    use crate::events::{LocalStore, Outbox};
    let home = crate::paths::home()?;
    let mut store = LocalStore::open_in(&home)?;
    if crate::bigquery::config::requested() {
        store = store.queue_for_delivery(Outbox::default());
    }
    Ok((home, store))
}

/// One warning per run the reaper closed.
pub fn report_reaped(runs: Vec<RunRow>) {
    for run in runs {
        crate::output::stderr!(
            "warning: run {} of {}/{} (started {}) was abandoned: its lorch process is gone; recorded job.failed, reason abandoned",
            run.run_id,
            run.package,
            run.job,
            run.started_at
        );
    }
}

/// Closes every abandoned run, then every abandoned pipeline run, with a warning for each.
pub fn reap_all(
    store: &crate::events::LocalStore,
    home: &std::path::Path,
) -> crate::error::Result<()> {
    report_reaped(reap(store, home, None)?);
    let pipelines = reap_pipelines(store, home)?;
    for run in pipelines {
        crate::output::stderr!(
            "warning: pipeline run {} of {} (started {}) was abandoned: its lorch process is gone; recorded pipeline.failed, reason abandoned",
            run.pipeline_run_id,
            run.pipeline,
            run.started_at
        );
    }
    Ok(())
}
