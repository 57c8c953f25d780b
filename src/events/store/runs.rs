//! One `runs` row per run, kept in step with its lifecycle events in their transaction (and
//! the watermark a completed run moves), and the queries of run history.

use anyhow::{Context as _, Result};
use rusqlite::{OptionalExtension, Row, Transaction, params};
use serde::Serialize;
use serde_json::value::RawValue;

use super::Event;
use crate::lifecycle::{
    self, Completion, EventType, Payload, Reason, RunStatus, StateChange, WatermarkPayload,
};

use super::*;

/// One run, as the `runs` table keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub package: String,
    pub job: String,
    pub account: Option<String>,
    pub status: RunStatus,
    pub reason: Option<Reason>,
    /// The number of the latest attempt.
    pub attempt: u32,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub pid: Option<u32>,
    pub host: Option<String>,
    pub error_message: Option<String>,
    /// The run's window (docs/windows.md): `[window_since, window_until)`.
    pub window_since: Option<String>,
    pub window_until: Option<String>,
    /// The pipeline run this run is a step of, and the step (docs/pipelines.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

impl RunRow {
    /// Whether it completed and counts for its window ([`Completion`]; a test run, whose
    /// events went to another table, is told apart in SQL only).
    pub fn counts(&self) -> bool {
        self.status == RunStatus::Completed
            && Completion::from_reason(self.reason).counts_for_window()
    }
}

/// Which runs `runs` returns.
#[derive(Debug, Default)]
pub struct RunFilter {
    pub run_id: Option<String>,
    /// `(package, job)`.
    pub job: Option<(String, String)>,
    pub status: Option<RunStatus>,
    pub account: Option<String>,
    /// Only runs started at or after this instant.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only runs started before this instant.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only the newest N (still returned oldest first).
    pub limit: Option<usize>,
}

/// A lifecycle event of a run, written by lorch.
pub(super) fn is_lifecycle(event: &Event) -> bool {
    event.source_system == "lorch" && event.object_type.as_deref() == Some("job_run")
}

/// The hand-made watermark change `event` records, if it is one.
pub(super) fn state_change(event: &Event) -> Option<StateChange> {
    (event.source_system == lifecycle::SOURCE
        && event.object_type.as_deref() == Some(lifecycle::WATERMARK_OBJECT))
    .then(|| StateChange::parse(&event.event_type))
    .flatten()
}

/// Applies a `lorch state set|reset` event to the watermarks table.
pub(super) fn change_watermark(
    tx: &Transaction<'_>,
    event: &Event,
    change: StateChange,
) -> rusqlite::Result<()> {
    let Ok(w) = serde_json::from_value::<WatermarkPayload>(event.payload_value()) else {
        return Ok(());
    };
    let account = w.account.unwrap_or_default();
    match (change, w.until) {
        (StateChange::Set, Some(until)) => {
            tx.execute(
                "INSERT INTO watermarks (package, job, account, until, run_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4, NULL, ?5)
                 ON CONFLICT (package, job, account) DO UPDATE SET until = excluded.until,
                     run_id = NULL, updated_at = excluded.updated_at",
                params![
                    w.package,
                    w.job,
                    account,
                    until,
                    timestamp(&event.created_at)
                ],
            )?;
        }
        _ => {
            tx.execute(
                "DELETE FROM watermarks WHERE package = ?1 AND job = ?2 AND account = ?3",
                params![w.package, w.job, account],
            )?;
        }
    }
    Ok(())
}

/// A window bound of a payload (any RFC 3339 form) in the store's one fixed form, so that text
/// order is time order.
pub(super) fn window_bound(text: &str) -> Option<String> {
    text.parse::<chrono::DateTime<chrono::Utc>>()
        .ok()
        .map(|t| timestamp(&t))
}

/// Where a run's events are queued for BigQuery, as recorded when it started: `Some(None)` not
/// at all; `None` when the store does not know (no such run, or one from an earlier lorch).
pub(super) fn run_queue(
    tx: &Transaction<'_>,
    run: &str,
) -> rusqlite::Result<Option<Option<Outbox>>> {
    let row: Option<(Option<bool>, Option<String>)> = tx
        .prepare_cached("SELECT queued, queue_target FROM runs WHERE run_id = ?1")?
        .query_row([run], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        Some((Some(true), table)) => Some(Some(Outbox { table })),
        Some((Some(false), _)) => Some(None),
        _ => None,
    })
}

/// Keeps the run's row in step with one of its lifecycle events, the one numbered `seq`; a run
/// that starts takes `outbox` as where its events go.
pub(super) fn update_run(
    tx: &Transaction<'_>,
    event: &Event,
    seq: i64,
    outbox: Option<&Outbox>,
) -> rusqlite::Result<()> {
    let Some(kind) = EventType::parse(&event.event_type) else {
        return Ok(());
    };
    let payload = Payload::read(&event.payload_value()).unwrap_or_default();
    let at = timestamp(&event.created_at);
    let run = &event.correlation_id;
    let status = kind.run_status().as_str();
    let reason = payload.reason.map(Reason::as_str);
    match kind {
        EventType::Started | EventType::Skipped => {
            let (ended_at, last_seq) = match kind {
                EventType::Started => (None, None),
                _ => (Some(&at), Some(seq)),
            };
            let window = payload.window.as_ref();
            tx.execute(
                "INSERT INTO runs (run_id, package, job, account, status, reason, attempt, started_at,
                     ended_at, pid, host, first_seq, last_seq, queued, queue_target, window_since,
                     window_until, pipeline_run_id, step)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                     ?18, ?19)
                 ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, attempt = excluded.attempt,
                     reason = NULL, ended_at = NULL, error_message = NULL, pid = excluded.pid,
                     last_seq = NULL",
                params![
                    run,
                    payload.package,
                    payload.job,
                    payload.parameters.account,
                    status,
                    reason,
                    payload.attempt.max(1),
                    at,
                    ended_at,
                    (payload.pid != 0).then_some(payload.pid),
                    (!payload.host.is_empty()).then_some(&payload.host),
                    seq,
                    last_seq,
                    outbox.is_some(),
                    outbox.and_then(|o| o.table.as_deref()),
                    window.and_then(|w| w.since.as_deref()).and_then(window_bound),
                    window.and_then(|w| window_bound(&w.until)),
                    payload.pipeline.as_ref().map(|p| &p.pipeline_run_id),
                    payload.pipeline.as_ref().map(|p| &p.step),
                ],
            )?;
        }
        EventType::Completed | EventType::Failed => {
            // A completion that does not count for its window says why in `reason`: its events
            // or objects were not all recorded, or it was a dry run (docs/windows.md).
            let reason = match kind {
                EventType::Completed => Completion::of(&payload).reason(),
                _ => payload.reason,
            }
            .map(Reason::as_str);
            tx.execute(
                "UPDATE runs SET status = ?2, reason = ?3, ended_at = ?4, error_message = ?5,
                     last_seq = ?6
                 WHERE run_id = ?1",
                params![run, status, reason, at, event.error_message, seq],
            )?;
            if kind == EventType::Completed && reason.is_none() {
                move_watermark(tx, run, &at)?;
            }
            health::record_end(tx, run)?;
        }
    }
    Ok(())
}

/// What makes a completed run count for its window, and a success for its job: it recorded
/// everything (`reason` is NULL: [`Completion::Counts`]) and its events went to the configured
/// tables, not a test table.
pub(super) const COUNTS: &str = "status = 'completed' AND reason IS NULL AND queue_target IS NULL";

/// Moves the watermark of the run `run`'s job and account to the end of its window when the
/// window joins on (starts at or before the watermark; any window with a start when there is
/// none yet), then on through the completed windows that join on after it (a backfill that
/// resumed a failed window). Never back, never over a gap.
pub(super) fn move_watermark(tx: &Transaction<'_>, run: &str, at: &str) -> rusqlite::Result<()> {
    let moved = tx.execute(
        &format!(
            "INSERT INTO watermarks (package, job, account, until, run_id, updated_at)
             SELECT package, job, coalesce(account, ''), window_until, run_id, ?2
             FROM runs WHERE run_id = ?1 AND window_since IS NOT NULL AND {COUNTS}
             ON CONFLICT (package, job, account) DO UPDATE SET until = excluded.until,
                 run_id = excluded.run_id, updated_at = excluded.updated_at
             WHERE excluded.until > watermarks.until
               AND (SELECT window_since FROM runs WHERE run_id = ?1) <= watermarks.until"
        ),
        params![run, at],
    )?;
    if moved == 0 {
        return Ok(());
    }
    let joining = format!(
        "FROM runs r WHERE r.package = w.package AND r.job = w.job
           AND coalesce(r.account, '') = w.account AND r.{} AND r.window_since <= w.until
           AND r.window_until > w.until",
        COUNTS.replace(" AND ", " AND r.")
    );
    let mut extend = tx.prepare_cached(&format!(
        "UPDATE watermarks AS w SET until = (SELECT max(r.window_until) {joining}), updated_at = ?2
         WHERE (package, job, account) = (SELECT package, job, coalesce(account, '') FROM runs
                                          WHERE run_id = ?1)
           AND EXISTS (SELECT 1 {joining})"
    ))?;
    while extend.execute(params![run, at])? > 0 {}
    Ok(())
}

impl LocalStore {
    /// Runs in the order they started.
    pub fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>> {
        let conn = self.conn();
        let (package, job) = filter.job.clone().unzip();
        let limit = filter.limit.map_or(-1, |n| n as i64);
        // Cached: `schedule list` asks once per entry.
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS}
             FROM (SELECT rowid AS seq, * FROM runs
                   WHERE (?1 IS NULL OR package = ?1) AND (?2 IS NULL OR job = ?2)
                     AND (?3 IS NULL OR status = ?3) AND (?5 IS NULL OR run_id = ?5)
                     AND (?6 IS NULL OR account = ?6)
                     AND (?7 IS NULL OR started_at >= ?7) AND (?8 IS NULL OR started_at < ?8)
                   ORDER BY started_at DESC, seq DESC LIMIT ?4)
             ORDER BY started_at, seq"
        ))?;
        // Timestamps are stored in one fixed form (`timestamp`), so text order is time order.
        let since = filter.since.as_ref().map(timestamp);
        let until = filter.until.as_ref().map(timestamp);
        let rows = stmt.query_map(
            params![
                package,
                job,
                filter.status.map(RunStatus::as_str),
                limit,
                filter.run_id,
                filter.account,
                since,
                until
            ],
            run_from_row,
        )?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| format!("cannot read the event store {}", self.path.display()))
    }

    /// `PACKAGE/JOB` of every job with a recorded run, sorted.
    pub fn recorded_jobs(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT DISTINCT package || '/' || job FROM runs ORDER BY 1")?;
        let jobs = stmt.query_map([], |r| r.get(0))?;
        Ok(jobs.collect::<rusqlite::Result<Vec<String>>>()?)
    }

    /// How many runs are recorded.
    pub fn count_runs(&self) -> Result<i64> {
        let conn = self.conn();
        Ok(conn.query_row("SELECT count(*) FROM runs", [], |r| r.get(0))?)
    }

    /// One run, by its primary key.
    pub fn run(&self, run_id: &str) -> Result<Option<RunRow>> {
        let conn = self.conn();
        let found = conn
            .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"))?
            .query_row([run_id], run_from_row)
            .optional()?;
        Ok(found)
    }

    /// The runs in progress (of one `(package, job)` when given), through `runs_by_status`:
    /// what the reaper looks at before every run, however long the history.
    pub fn running(&self, job: Option<(&str, &str)>) -> Result<Vec<RunRow>> {
        let conn = self.conn();
        let (package, name) = job.unzip();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running'
                 AND (?1 IS NULL OR package = ?1) AND (?2 IS NULL OR job = ?2)
             ORDER BY started_at, rowid"
        ))?;
        let rows = stmt.query_map(params![package, name], run_from_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| format!("cannot read the event store {}", self.path.display()))
    }
}

/// The columns of `runs` that [`run_from_row`] reads, in its order.
pub(super) const RUN_COLUMNS: &str =
    "run_id, package, job, account, status, reason, attempt, started_at,
    ended_at, pid, host, error_message, window_since, window_until, pipeline_run_id, step";

pub(super) fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        run_id: row.get(0)?,
        package: row.get(1)?,
        job: row.get(2)?,
        account: row.get(3)?,
        status: row.get(4)?,
        reason: row.get(5)?,
        attempt: row.get(6)?,
        started_at: row.get(7)?,
        ended_at: row.get(8)?,
        pid: row.get(9)?,
        host: row.get(10)?,
        error_message: row.get(11)?,
        window_since: row.get(12)?,
        window_until: row.get(13)?,
        pipeline_run_id: row.get(14)?,
        step: row.get(15)?,
    })
}

pub(super) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    let created_at: String = row.get("created_at")?;
    let payload: Option<String> = row.get("payload")?;
    Ok(Event {
        event_id: row.get("event_id")?,
        event_type: row.get("event_type")?,
        source_system: row.get("source_system")?,
        created_at: created_at.parse().unwrap_or_default(),
        status: row.get("status")?,
        correlation_id: row.get("correlation_id")?,
        trace_id: row.get("trace_id")?,
        object_type: row.get("object_type")?,
        idem_key: row.get("idem_key")?,
        error_message: row.get("error_message")?,
        payload: payload.and_then(|p| RawValue::from_string(p).ok()),
    })
}

/// A run's status as the `runs` table keeps it (its wire name).
impl rusqlite::types::FromSql for RunStatus {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        RunStatus::parse(text).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(format!("unknown run status {text:?}").into())
        })
    }
}

/// A run's reason as the `runs` table keeps it (its wire name).
impl rusqlite::types::FromSql for Reason {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        Reason::parse(text).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(format!("unknown run reason {text:?}").into())
        })
    }
}
