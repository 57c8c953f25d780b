//! The embedded event store: one SQLite file under `LORCH_HOME`, holding events, runs and
//! objects.
//!
//! SQLite in WAL mode lets several lorch processes append at once (writers queue on a busy
//! timeout instead of failing) while readers see committed rows. Every `record` is its own
//! transaction, so an event is on disk before the job's `emit` returns.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Event, EventSink, Object};
use crate::lifecycle::{
    self, Completion, EventType, ObjectCounts, Payload, Reason, RunStatus, StateChange,
    WatermarkPayload,
};

mod file;
mod health;
mod objects;
mod outbox;
mod pipelines;
mod state;

use file::SharedMemory;
pub use health::JobRuns;
pub use objects::{ObjectFilter, PendingObject};
pub use outbox::{DeadLetter, DeliveryStatus, Pending};
pub use pipelines::PipelineRunRow;
pub use state::Watermark;

/// How long a command waits for another process's write transaction before giving up, unless
/// `LORCH_STORE_BUSY_TIMEOUT` says otherwise. A run's own events wait longer: see
/// [`LocalStore::wait_while_busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// [`BUSY_TIMEOUT`], or `LORCH_STORE_BUSY_TIMEOUT` (README, "Configuration").
fn busy_timeout() -> Result<Duration> {
    match std::env::var("LORCH_STORE_BUSY_TIMEOUT") {
        Err(_) => Ok(BUSY_TIMEOUT),
        Ok(text) => crate::timearg::duration(&text)
            .map_err(|e| anyhow::anyhow!("invalid LORCH_STORE_BUSY_TIMEOUT '{text}': {e}")),
    }
}

/// The store's layout, kept in SQLite's `user_version`: bump it with every change of
/// [`SCHEMA`] or [`upgrade`], so that stores opened by an earlier lorch are brought up to date.
const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
-- No index but the primary key: each index costs about a quarter of the time of storing an
-- event. event_id is unique by construction (UUIDv7: a millisecond timestamp and 74 random
-- bits), and a run's events are found from the range of seq its `runs` row keeps.
CREATE TABLE IF NOT EXISTS events (
    seq            INTEGER PRIMARY KEY,
    event_id       TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    source_system  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    status         TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    trace_id       TEXT,
    object_type    TEXT,
    idem_key       TEXT,
    error_message  TEXT,
    payload        TEXT
);

-- One row per run, kept up to date from its lifecycle events in the same transaction, so run
-- history and the search for abandoned runs need not scan every event.
CREATE TABLE IF NOT EXISTS runs (
    run_id        TEXT PRIMARY KEY,
    package       TEXT NOT NULL,
    job           TEXT NOT NULL,
    account       TEXT,
    status        TEXT NOT NULL,
    reason        TEXT,
    attempt       INTEGER NOT NULL,
    started_at    TEXT NOT NULL,
    ended_at      TEXT,
    pid           INTEGER,
    host          TEXT,
    error_message TEXT,
    first_seq     INTEGER,  -- the seq of its first event
    last_seq      INTEGER,  -- the seq of its last terminal event; NULL while an attempt runs
    -- Whether the run's events go to BigQuery (1, to queue_target or, when NULL, the configured
    -- table) or not (0), decided when it started: its terminal event follows, whoever records
    -- it. NULL: a run from a lorch that did not record this.
    queued        INTEGER,
    queue_target  TEXT,
    -- The run's window [window_since, window_until) (docs/windows.md); window_since NULL: no
    -- start. NULL window_until: a run from a lorch that did not record windows.
    window_since  TEXT,
    window_until  TEXT,
    -- The pipeline run this run is a step of, and the step (docs/pipelines.md).
    pipeline_run_id TEXT,
    step            TEXT
);

-- One row per job and account that completed or failed a run, kept up to date from its runs'
-- terminal events in the same transaction, so `lorch status` reads one row a job instead of
-- every run (docs/performance.md, Status). account '' is no account.
CREATE TABLE IF NOT EXISTS job_status (
    package                 TEXT NOT NULL,
    job                     TEXT NOT NULL,
    account                 TEXT NOT NULL,
    last_run_id             TEXT NOT NULL,  -- the newest run that ended (by start)
    last_status             TEXT NOT NULL,
    last_reason             TEXT,
    last_started_at         TEXT NOT NULL,
    last_ended_at           TEXT,
    last_success_at         TEXT,           -- the end of the newest run that counts
    last_success_started_at TEXT,
    consecutive_failures    INTEGER NOT NULL, -- runs failed since then
    runs_completed          INTEGER NOT NULL DEFAULT 0, -- attempts that ended so (they only grow)
    runs_failed             INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (package, job, account)
) WITHOUT ROWID;

-- One row per pipeline run, kept up to date from its pipeline.* events in the same
-- transaction. `started` is the pipeline.started payload (its window, what it resumes),
-- `summary` the terminal event's counts.
CREATE TABLE IF NOT EXISTS pipeline_runs (
    pipeline_run_id TEXT PRIMARY KEY,
    pipeline        TEXT NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT,
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    pid             INTEGER,
    host            TEXT,
    started         TEXT NOT NULL,
    summary         TEXT
);
CREATE INDEX IF NOT EXISTS pipeline_runs_by_name ON pipeline_runs (pipeline, started_at);

-- The end of the newest window each job and account completed: what `--since last-success`
-- starts from. Moved only forward by a completed run (in its job.completed's transaction), or
-- set and reset by hand (`lorch state`, recorded as events too). account '' is no account.
CREATE TABLE IF NOT EXISTS watermarks (
    package    TEXT NOT NULL,
    job        TEXT NOT NULL,
    account    TEXT NOT NULL,
    until      TEXT NOT NULL,
    run_id     TEXT,             -- the run that completed it; NULL when set by hand
    updated_at TEXT NOT NULL,
    PRIMARY KEY (package, job, account)
) WITHOUT ROWID;

-- The last fire time `lorch tick` handled for each schedule entry (docs/schedules.md), keyed
-- by the entry's job, account, cron expression and zone.
CREATE TABLE IF NOT EXISTS schedules (
    key        TEXT PRIMARY KEY,
    last_fire  TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (package, job, started_at);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status);

-- The BigQuery outbox: one row per event recorded while delivery was configured, written in
-- the event's own transaction, so an event is never on disk without its delivery record.
-- Keyed by state first, so finding the pending ones needs no index of its own.
CREATE TABLE IF NOT EXISTS outbox (
    state      TEXT NOT NULL,     -- pending, delivered or dead
    seq        INTEGER NOT NULL,  -- events.seq
    target     TEXT,              -- the run's --events-table; NULL: the configured table
    tries      INTEGER NOT NULL DEFAULT 0,
    error      TEXT,              -- the last delivery error, or BigQuery's reason for a dead row
    updated_at TEXT,
    PRIMARY KEY (state, seq)
) WITHOUT ROWID;

-- One row per idem_key: the latest version of every object jobs upserted (docs/objects.md),
-- written in the transaction of the run's events. `version` counts the writes of the key.
CREATE TABLE IF NOT EXISTS objects (
    idem_key        TEXT PRIMARY KEY,
    source_system   TEXT NOT NULL,
    connection_name TEXT,
    object_type     TEXT NOT NULL,
    schema_ref      TEXT,
    external_id     TEXT,
    payload         TEXT NOT NULL,
    first_seen      TEXT NOT NULL,
    last_seen       TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    version         INTEGER NOT NULL
);

-- The objects waiting for BigQuery: one row per key and table however often the key was
-- upserted since its last delivery (only the newest version needs sending), holding the object
-- as that upsert left it: a test run's upsert of a key never reaches the configured table.
-- Delivery removes the row only if the version it sent is still the newest.
CREATE TABLE IF NOT EXISTS object_outbox (
    seq             INTEGER PRIMARY KEY,
    idem_key        TEXT NOT NULL,
    target          TEXT NOT NULL,     -- the run's --events-table; '': the configured tables
    version         INTEGER NOT NULL,  -- objects.version when queued
    tries           INTEGER NOT NULL DEFAULT 0,
    error           TEXT,              -- the last delivery error
    updated_at      TEXT,
    source_system   TEXT NOT NULL,
    connection_name TEXT,
    object_type     TEXT NOT NULL,
    schema_ref      TEXT,
    external_id     TEXT,
    payload         TEXT NOT NULL,
    first_seen      TEXT NOT NULL,
    last_seen       TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    UNIQUE (target, idem_key)
);
";

pub struct LocalStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    outbox: Option<Outbox>,
    /// The `-shm` file this connection mapped, checked before each write.
    shared_memory: Option<SharedMemory>,
    /// Set for a run's store: writes wait through a busy store until this turns true.
    patience: Option<Arc<AtomicBool>>,
}

/// Queues every recorded event for BigQuery delivery.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    /// The table of this run (`--events-table`); `None`: the configured one at delivery time.
    pub table: Option<String>,
}

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

/// What `runs prune --events` did.
#[derive(Debug)]
pub struct PrunedEvents {
    pub deleted: usize,
    /// Events old enough that were kept: pending for BigQuery, or dead letters.
    pub pending: i64,
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

/// Which events `list` returns.
#[derive(Debug, Default)]
pub struct EventFilter {
    /// Only this run's events.
    pub run_id: Option<String>,
    /// Only the newest N (still returned oldest first).
    pub limit: Option<usize>,
}

impl LocalStore {
    /// Opens (creating when needed) the store of a lorch home directory: `<home>/events.db`.
    pub fn open_in(home: &Path) -> Result<LocalStore> {
        LocalStore::open(&home.join("events.db"))
    }

    /// Opens (creating when needed) the store at `path`.
    pub fn open(path: &Path) -> Result<LocalStore> {
        let fail = || format!("cannot open the event store {}", path.display());
        let busy_timeout = busy_timeout()?;
        file::prepare_dir(path).with_context(fail)?;
        // WAL: concurrent writers queue instead of failing, readers never block them.
        // NORMAL sync is durable across process crashes, which is what a job runner needs.
        let init = |conn: &Connection| -> Result<()> {
            file::check_foreign(conn, path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            Ok(conn.execute_batch(SCHEMA)?)
        };
        file::create_if_missing(path, init).with_context(fail)?;
        file::check_existing(path).with_context(fail)?;
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let mut conn = Connection::open_with_flags(path, flags)
            .map_err(|e| file::explain(path, e))
            .with_context(fail)?;
        conn.busy_timeout(busy_timeout).with_context(fail)?;
        // Plans that do not depend on the values bound: without this SQLite re-prepares
        // `runs`'s `account IS ?` query at every new account (99 times in a `schedule list`
        // of 100 entries, a fifth of its time).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .with_context(fail)?;
        // A store this lorch made or upgraded says so in its header: then opening it parses no
        // schema (that was a third of `tick`'s time with nothing due).
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| file::explain(path, e))
            .with_context(fail)?;
        if version == SCHEMA_VERSION {
            conn.pragma_update(None, "synchronous", "NORMAL")
                .with_context(fail)?;
        } else {
            // A store made by an earlier lorch may still need WAL; switching needs the database
            // to itself, and SQLite reports "busy" at once, without its busy handler: retry.
            retry_while_busy(busy_timeout, || init(&conn))
                .map_err(|e| match e.downcast::<rusqlite::Error>() {
                    Ok(e) => file::explain(path, e),
                    Err(e) => e,
                })
                .with_context(fail)?;
            upgrade(&mut conn).with_context(fail)?;
            retry_while_busy(busy_timeout, || {
                Ok(conn.pragma_update(None, "user_version", SCHEMA_VERSION)?)
            })
            .with_context(fail)?;
        }
        Ok(LocalStore {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            outbox: None,
            shared_memory: SharedMemory::of(path),
            patience: None,
        })
    }

    /// From now on, a write that finds the store busy (another process holds its write lock)
    /// waits until it can write, warning every busy time-out, instead of failing: a run's
    /// events wait as long as the run lasts. It gives up like any command once `give_up` turns
    /// true (lorch was asked to stop).
    pub fn wait_while_busy(mut self, give_up: Arc<AtomicBool>) -> LocalStore {
        self.patience = Some(give_up);
        self
    }

    /// From now on, every event recorded through this store is also queued for BigQuery.
    pub fn queue_for_delivery(mut self, outbox: Outbox) -> LocalStore {
        self.outbox = Some(outbox);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave the connection half-written (SQLite
        // rolls back), so a poisoned lock is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Events in the order they were recorded.
    pub fn list(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.for_each(filter, |event| {
            events.push(event);
            ControlFlow::Continue(())
        })?;
        Ok(events)
    }

    /// Passes the events of `filter` to `each` in the order they were recorded, until `each`
    /// breaks: read [`CHUNK`] at a time, each chunk its own short read, so a million events
    /// take the memory of a thousand, and a slow reader (`| less`) never keeps the store from
    /// checkpointing. Events recorded after the call began are not passed.
    pub fn for_each(
        &self,
        filter: &EventFilter,
        mut each: impl FnMut(Event) -> ControlFlow<()>,
    ) -> Result<()> {
        let read = || format!("cannot read the event store {}", self.path.display());
        let (mut next, to) = span(&self.conn(), filter).with_context(read)?;
        loop {
            let chunk = self.chunk(filter, next, to).with_context(read)?;
            let Some((last, _)) = chunk.last() else {
                return Ok(());
            };
            next = last + 1;
            for (_, event) in chunk {
                if each(event).is_break() {
                    return Ok(());
                }
            }
        }
    }

    /// Up to [`CHUNK`] events of `filter` with `seq` from `from` to `to`, and their seq.
    fn chunk(
        &self,
        filter: &EventFilter,
        from: i64,
        to: i64,
    ) -> rusqlite::Result<Vec<(i64, Event)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, event_id, event_type, source_system, created_at, status, correlation_id,
                    trace_id, object_type, idem_key, error_message, payload
             FROM events WHERE seq BETWEEN ?2 AND ?3 AND (?1 IS NULL OR correlation_id = ?1)
             ORDER BY seq LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![filter.run_id, from, to, CHUNK], |row| {
            Ok((row.get(0)?, event_from_row(row)?))
        })?;
        rows.collect()
    }

    /// The length of the longest event type among the events of `filter`, in characters.
    pub fn widest_event_type(&self, filter: &EventFilter) -> Result<usize> {
        let conn = self.conn();
        let (from, to) = span(&conn, filter)?;
        let widest: Option<i64> = conn.query_row(
            "SELECT max(length(event_type)) FROM events
             WHERE seq BETWEEN ?2 AND ?3 AND (?1 IS NULL OR correlation_id = ?1)",
            params![filter.run_id, from, to],
            |r| r.get(0),
        )?;
        Ok(widest.unwrap_or(0) as usize)
    }

    /// The run id of the newest event, if any.
    /// The run of a job started last (pipeline runs are not job runs).
    pub fn newest_job_run_id(&self) -> Result<Option<String>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT run_id FROM runs ORDER BY rowid DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Deletes the events created before `cutoff` (`runs prune --events`, docs/logs.md),
    /// except those still pending for BigQuery or kept as dead letters, and the newest event,
    /// whose `seq` must never be given again.
    pub fn prune_events(&self, cutoff: &chrono::DateTime<chrono::Utc>) -> Result<PrunedEvents> {
        let cutoff = timestamp(cutoff);
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let kept = "SELECT seq FROM outbox WHERE state IN ('pending', 'dead')";
            let deleted = tx.execute(
                &format!(
                    "DELETE FROM events WHERE created_at < ?1 AND seq NOT IN ({kept})
                     AND seq < (SELECT max(seq) FROM events)"
                ),
                [&cutoff],
            )?;
            tx.execute(
                "DELETE FROM outbox WHERE state = 'delivered'
                 AND seq NOT IN (SELECT seq FROM events)",
                [],
            )?;
            let pending = tx.query_row(
                &format!("SELECT count(*) FROM events WHERE created_at < ?1 AND seq IN ({kept})"),
                [&cutoff],
                |r| r.get(0),
            )?;
            tx.commit()?;
            Ok(PrunedEvents { deleted, pending })
        })
    }

    pub fn last_run_id(&self) -> Result<Option<String>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT correlation_id FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// The newest `seq` in the store (0 when empty): events recorded later have a larger one.
fn max_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))
}

/// Events read at a time by [`LocalStore::for_each`].
const CHUNK: i64 = 1000;

/// The range of `seq` that holds the events of `filter`, as the store is now: a run's events lie
/// between its first and last seq, among other runs' events; with a limit, the range starts at
/// the N-th newest.
fn span(conn: &Connection, filter: &EventFilter) -> rusqlite::Result<(i64, i64)> {
    let (first, last) = match &filter.run_id {
        Some(run) => conn
            .query_row(
                "SELECT first_seq, last_seq FROM runs WHERE run_id = ?1",
                [run],
                |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?)),
            )
            .optional()?
            .unwrap_or_default(),
        None => (None, None),
    };
    let to = match last {
        Some(last) => last,
        None => max_seq(conn)?,
    };
    let from = first.unwrap_or(0);
    let from = match filter.limit {
        None => from,
        Some(0) => return Ok((1, 0)),
        Some(n) => conn
            .query_row(
                "SELECT seq FROM events
                 WHERE seq BETWEEN ?2 AND ?3 AND (?1 IS NULL OR correlation_id = ?1)
                 ORDER BY seq DESC LIMIT 1 OFFSET ?4",
                params![
                    filter.run_id,
                    from,
                    to,
                    (n - 1).min(i64::MAX as usize) as i64
                ],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(from),
    };
    Ok((from, to))
}

/// Brings a store made by an earlier lorch up to date: `runs` gains the seq range of each run's
/// events (filled in from the per-run index those stores have), and the index goes; the outbox
/// is keyed by state and seq instead of having an index by state; `runs` gains the columns of
/// queueing, windows and pipeline steps; `job_status` is made again from the runs.
fn upgrade(conn: &mut Connection) -> rusqlite::Result<()> {
    let outbox_outdated = |conn: &Connection| {
        conn.prepare("SELECT 1 FROM sqlite_master WHERE name = 'outbox_by_state'")?
            .exists([])
    };
    // Another lorch may be upgrading too: look again once holding the write lock.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if lacks(&tx, "runs", "first_seq")? {
        tx.execute_batch(
            "ALTER TABLE runs ADD COLUMN first_seq INTEGER;
             ALTER TABLE runs ADD COLUMN last_seq INTEGER;
             UPDATE runs SET
                 first_seq = (SELECT min(seq) FROM events WHERE correlation_id = run_id),
                 last_seq = CASE WHEN status = 'running' THEN NULL
                     ELSE (SELECT max(seq) FROM events WHERE correlation_id = run_id) END;
             DROP INDEX IF EXISTS events_by_run;",
        )?;
    }
    if lacks(&tx, "runs", "queued")? {
        tx.execute_batch(
            "ALTER TABLE runs ADD COLUMN queued INTEGER;
             ALTER TABLE runs ADD COLUMN queue_target TEXT;",
        )?;
    }
    if lacks(&tx, "object_outbox", "payload")? {
        // SCHEMA creates only what is missing: the new object outbox, filled from the objects.
        tx.execute_batch(&format!(
            "ALTER TABLE object_outbox RENAME TO object_outbox_before;
             {SCHEMA}
             INSERT INTO object_outbox (seq, idem_key, target, version, tries, error, updated_at,
                 source_system, connection_name, object_type, schema_ref, external_id, payload,
                 first_seen, last_seen, correlation_id)
                 SELECT q.seq, q.idem_key, q.target, o.version, q.tries, q.error, q.updated_at,
                     o.source_system, o.connection_name, o.object_type, o.schema_ref,
                     o.external_id, o.payload, o.first_seen, o.last_seen, o.correlation_id
                 FROM object_outbox_before q JOIN objects o USING (idem_key);
             DROP TABLE object_outbox_before;"
        ))?;
    }
    if lacks(&tx, "runs", "window_until")? {
        tx.execute_batch(
            "ALTER TABLE runs ADD COLUMN window_since TEXT;
             ALTER TABLE runs ADD COLUMN window_until TEXT;",
        )?;
    }
    if lacks(&tx, "runs", "step")? {
        tx.execute_batch(
            "ALTER TABLE runs ADD COLUMN pipeline_run_id TEXT;
             ALTER TABLE runs ADD COLUMN step TEXT;",
        )?;
    }
    tx.execute_batch(RUNS_BY_PIPELINE)?;
    if lacks(&tx, "job_status", "runs_failed")? {
        tx.execute_batch(&format!("DROP TABLE job_status; {SCHEMA}"))?;
    }
    health::rebuild(&tx)?;
    if outbox_outdated(&tx)? {
        // SCHEMA creates only what is missing: the new outbox.
        tx.execute_batch(&format!(
            "DROP INDEX outbox_by_state;
             ALTER TABLE outbox RENAME TO outbox_before;
             {SCHEMA}
             INSERT INTO outbox (state, seq, target, tries, error, updated_at)
                 SELECT state, seq, target, tries, error, updated_at FROM outbox_before;
             DROP TABLE outbox_before;"
        ))?;
    }
    tx.commit()
}

/// Whether `table` lacks `column`: a store made by an earlier lorch.
fn lacks(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists([table, column])
        .map(|has| !has)
}

/// Made by [`upgrade`], not [`SCHEMA`]: a store from an earlier lorch gets the column first.
const RUNS_BY_PIPELINE: &str =
    "CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline_run_id);";

/// Runs `f` again while SQLite says the database is busy or locked, for up to `timeout`.
fn retry_while_busy<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let give_up = crate::timearg::after(timeout);
    loop {
        match f() {
            Err(e) if is_busy(&e) && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(5 + fastrand::u64(..20)));
            }
            result => return result,
        }
    }
}

/// Whether SQLite said another process holds the lock.
fn is_busy(error: &anyhow::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<rusqlite::Error>())
        .any(|e| matches!(e.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked)))
}

impl LocalStore {
    /// Runs one write transaction: after checking the store's shared memory is still the one
    /// this connection mapped, and, for a patient store, again and again while it is busy.
    fn write<T>(&self, mut write: impl FnMut(&mut Connection) -> Result<T>) -> Result<T> {
        let waiting_since = Instant::now();
        loop {
            if let Some(shared_memory) = self.shared_memory {
                shared_memory.check(&self.path)?;
            }
            let result = write(&mut self.conn());
            match (&result, &self.patience) {
                (Err(e), Some(give_up)) if is_busy(e) && !give_up.load(Ordering::SeqCst) => {
                    crate::output::stderr!(
                        "warning: the event store {} is busy: another process has held its write lock for {}s; this run's events wait for it",
                        self.path.display(),
                        waiting_since.elapsed().as_secs()
                    );
                }
                _ => return result,
            }
        }
    }
}

impl EventSink for LocalStore {
    fn store(&self, events: &[Event], objects: &[Object]) -> Result<ObjectCounts> {
        let context = || match (events, objects) {
            ([event], []) => format!(
                "cannot write event {} to {}",
                event.event_type,
                self.path.display()
            ),
            (_, []) => format!(
                "cannot write {} events to {}",
                events.len(),
                self.path.display()
            ),
            _ => format!(
                "cannot write {} events and {} objects to {}",
                events.len(),
                objects.len(),
                self.path.display()
            ),
        };
        self.write(|conn| self.insert(conn, events, objects))
            .with_context(context)
    }
}

impl LocalStore {
    /// Inserts `events` and upserts `objects` (and queues them, and keeps the runs table in
    /// step) in one transaction.
    fn insert(
        &self,
        conn: &mut Connection,
        events: &[Event],
        objects: &[Object],
    ) -> Result<ObjectCounts> {
        // IMMEDIATE: take the write lock up front, so a busy store waits instead of failing.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            // Prepared once a batch: a job emitting fast makes batches of thousands.
            let mut insert = tx.prepare_cached(INSERT_EVENT)?;
            let mut seqs = None;
            for event in events {
                let seq = insert_event(&mut insert, event)?;
                let (first, _) = seqs.unwrap_or((seq, seq));
                seqs = Some((first, seq));
                if is_lifecycle(event) {
                    update_run(&tx, event, seq, self.outbox.as_ref())?;
                } else if let Some(change) = state_change(event) {
                    change_watermark(&tx, event, change)?;
                } else if let Some(kind) = pipelines::pipeline_event(event) {
                    pipelines::update(&tx, event, kind)?;
                }
            }
            // A run's lifecycle event goes where its run's events go, whichever lorch records
            // it (the one that reaps an abandoned run may have other settings); job events
            // come from the run's own lorch.
            let queue = match events {
                [event] if is_lifecycle(event) => {
                    run_queue(&tx, &event.correlation_id)?.unwrap_or_else(|| self.outbox.clone())
                }
                _ => self.outbox.clone(),
            };
            if let (Some(outbox), Some((first, last))) = (queue, seqs) {
                tx.prepare_cached(QUEUE_EVENTS)?
                    .execute(params![first, last, outbox.table])?;
            }
        }
        // Objects come from the run's own lorch, like job events.
        let counts = objects::upsert(&tx, objects, self.outbox.as_ref())?;
        tx.commit()?;
        Ok(counts)
    }
}

const INSERT_EVENT: &str = "INSERT INTO events (event_id, event_type, source_system, created_at,
        status, correlation_id, trace_id, object_type, idem_key, error_message, payload)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// Queues the events just inserted (seq `?1` to `?2`: a write transaction has the store to
/// itself, so its events are numbered one after another) for BigQuery, in the same
/// transaction: one statement a batch instead of one an event.
const QUEUE_EVENTS: &str = "INSERT INTO outbox (state, seq, target)
    SELECT 'pending', seq, ?3 FROM events WHERE seq BETWEEN ?1 AND ?2";

/// Inserts `event` and returns its seq.
fn insert_event(
    insert: &mut rusqlite::CachedStatement<'_>,
    event: &Event,
) -> rusqlite::Result<i64> {
    insert.insert(params![
        event.event_id,
        event.event_type,
        event.source_system,
        timestamp(&event.created_at),
        event.status,
        event.correlation_id,
        event.trace_id,
        event.object_type,
        event.idem_key,
        event.error_message,
        event.payload.as_deref().map(RawValue::get),
    ])
}

fn timestamp(at: &chrono::DateTime<chrono::Utc>) -> String {
    crate::timearg::micros(at)
}

/// A lifecycle event of a run, written by lorch.
fn is_lifecycle(event: &Event) -> bool {
    event.source_system == "lorch" && event.object_type.as_deref() == Some("job_run")
}

/// The hand-made watermark change `event` records, if it is one.
fn state_change(event: &Event) -> Option<StateChange> {
    (event.source_system == lifecycle::SOURCE
        && event.object_type.as_deref() == Some(lifecycle::WATERMARK_OBJECT))
    .then(|| StateChange::parse(&event.event_type))
    .flatten()
}

/// Applies a `lorch state set|reset` event to the watermarks table.
fn change_watermark(
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
fn window_bound(text: &str) -> Option<String> {
    text.parse::<chrono::DateTime<chrono::Utc>>()
        .ok()
        .map(|t| timestamp(&t))
}

/// Where a run's events are queued for BigQuery, as recorded when it started: `Some(None)` not
/// at all; `None` when the store does not know (no such run, or one from an earlier lorch).
fn run_queue(tx: &Transaction<'_>, run: &str) -> rusqlite::Result<Option<Option<Outbox>>> {
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
fn update_run(
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
fn move_watermark(tx: &Transaction<'_>, run: &str, at: &str) -> rusqlite::Result<()> {
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
const RUN_COLUMNS: &str = "run_id, package, job, account, status, reason, attempt, started_at,
    ended_at, pid, host, error_message, window_since, window_until, pipeline_run_id, step";

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
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

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
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

#[cfg(test)]
mod tests {
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
}
