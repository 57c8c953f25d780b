//! Pipeline runs (docs/pipelines.md): one `pipeline_runs` row per run of a pipeline, kept in
//! step with its `pipeline.*` events in their own transaction, and the runs of its steps,
//! found by the `pipeline_run_id` their `runs` rows carry.

use anyhow::{Context as _, Result};
use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use super::{LocalStore, RUN_COLUMNS, RunRow, run_from_row, timestamp};
use crate::events::Event;
use crate::lifecycle::{self, PipelineEvent, PipelinePayload, PipelineSummary, RunStatus};

/// One pipeline run, as `pipeline_runs` keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineRunRow {
    pub pipeline_run_id: String,
    pub pipeline: String,
    pub status: RunStatus,
    pub reason: Option<String>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub pid: Option<u32>,
    pub host: Option<String>,
    /// What `pipeline.started` said: the window, the steps carried from the run it resumes.
    pub started: PipelinePayload,
    /// The terminal event's counts; `None` while it runs.
    pub summary: Option<PipelineSummary>,
}

/// The pipeline event `event` is, if it is one lorch wrote.
pub(super) fn pipeline_event(event: &Event) -> Option<PipelineEvent> {
    (event.source_system == lifecycle::SOURCE
        && event.object_type.as_deref() == Some(lifecycle::PIPELINE_OBJECT))
    .then(|| PipelineEvent::parse(&event.event_type))
    .flatten()
}

/// Keeps the pipeline run's row in step with one of its events.
pub(super) fn update(
    tx: &Transaction<'_>,
    event: &Event,
    kind: PipelineEvent,
) -> rusqlite::Result<()> {
    let value = event.payload_value();
    let Ok(payload) = serde_json::from_value::<PipelinePayload>(value) else {
        return Ok(());
    };
    let at = timestamp(&event.created_at);
    let status = kind.run_status().as_str();
    let reason = payload.reason.map(lifecycle::Reason::as_str);
    match kind {
        PipelineEvent::Started => {
            tx.execute(
                "INSERT INTO pipeline_runs (pipeline_run_id, pipeline, status, started_at, pid,
                     host, started)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (pipeline_run_id) DO NOTHING",
                params![
                    event.correlation_id,
                    payload.pipeline,
                    status,
                    at,
                    payload.pid,
                    payload.host,
                    serde_json::to_string(&payload).unwrap_or_default(),
                ],
            )?;
        }
        PipelineEvent::Completed | PipelineEvent::Failed => {
            tx.execute(
                "UPDATE pipeline_runs SET status = ?2, reason = ?3, ended_at = ?4, summary = ?5
                 WHERE pipeline_run_id = ?1 AND status = 'running'",
                params![
                    event.correlation_id,
                    status,
                    reason,
                    at,
                    serde_json::to_string(&payload.summary).unwrap_or_default(),
                ],
            )?;
        }
    }
    Ok(())
}

/// The columns of `pipeline_runs` that [`pipeline_run_from_row`] reads, in its order.
const COLUMNS: &str = "pipeline_run_id, pipeline, status, reason, started_at, ended_at, pid, host,
    started, summary";

fn pipeline_run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PipelineRunRow> {
    let started: String = row.get(8)?;
    let summary: Option<String> = row.get(9)?;
    Ok(PipelineRunRow {
        pipeline_run_id: row.get(0)?,
        pipeline: row.get(1)?,
        status: row.get(2)?,
        reason: row.get(3)?,
        started_at: row.get(4)?,
        ended_at: row.get(5)?,
        pid: row.get(6)?,
        host: row.get(7)?,
        started: serde_json::from_str(&started).unwrap_or_default(),
        summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
    })
}

impl LocalStore {
    /// Pipeline runs, oldest first: of `pipeline` when given, of `status` when given, the
    /// newest `limit` when given.
    pub fn pipeline_runs(
        &self,
        pipeline: Option<&str>,
        status: Option<RunStatus>,
        limit: Option<usize>,
    ) -> Result<Vec<PipelineRunRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM (SELECT rowid AS seq, * FROM pipeline_runs
                 WHERE (?1 IS NULL OR pipeline = ?1) AND (?2 IS NULL OR status = ?2)
                 ORDER BY started_at DESC, seq DESC LIMIT ?3)
             ORDER BY started_at, seq"
        ))?;
        let limit = limit.map_or(-1, |n| n as i64);
        let rows = stmt.query_map(
            params![pipeline, status.map(RunStatus::as_str), limit],
            pipeline_run_from_row,
        )?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| format!("cannot read the event store {}", self.path.display()))
    }

    /// One pipeline run.
    pub fn pipeline_run(&self, pipeline_run_id: &str) -> Result<Option<PipelineRunRow>> {
        let conn = self.conn();
        let found = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM pipeline_runs WHERE pipeline_run_id = ?1"
            ))?
            .query_row([pipeline_run_id], pipeline_run_from_row)
            .optional()?;
        Ok(found)
    }

    /// The newest run of `pipeline` for `account` whose window ends at `until` (in the store's
    /// form): what a scheduled fire time of the pipeline started.
    pub fn pipeline_run_until(
        &self,
        pipeline: &str,
        account: Option<&str>,
        until: &str,
    ) -> Result<Option<PipelineRunRow>> {
        let conn = self.conn();
        let found = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM pipeline_runs
                 WHERE pipeline = ?1 AND json_extract(started, '$.window.until') = ?2
                   AND json_extract(started, '$.account') IS ?3
                 ORDER BY started_at DESC LIMIT 1"
            ))?
            .query_row(params![pipeline, until, account], pipeline_run_from_row)
            .optional()?;
        Ok(found)
    }

    /// The runs of a pipeline run's steps, in the order they started.
    pub fn steps_of(&self, pipeline_run_id: &str) -> Result<Vec<RunRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE pipeline_run_id = ?1 ORDER BY started_at, rowid"
        ))?;
        let rows = stmt.query_map([pipeline_run_id], run_from_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| format!("cannot read the event store {}", self.path.display()))
    }
}
