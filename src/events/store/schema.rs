//! The store's tables, and the upgrade of a store an earlier lorch made.

use rusqlite::{Connection, TransactionBehavior};

use super::*;

/// The store's layout, kept in SQLite's `user_version`: bump it with every change of
/// [`SCHEMA`] or [`upgrade`], so that stores opened by an earlier lorch are brought up to date.
pub(super) const SCHEMA_VERSION: i64 = 4;

pub(super) const SCHEMA: &str = "
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

/// Brings a store made by an earlier lorch up to date: `runs` gains the seq range of each run's
/// events (filled in from the per-run index those stores have), and the index goes; the outbox
/// is keyed by state and seq instead of having an index by state; `runs` gains the columns of
/// queueing, windows and pipeline steps; `job_status` is made again from the runs.
pub(super) fn upgrade(conn: &mut Connection) -> rusqlite::Result<()> {
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
pub(super) fn lacks(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists([table, column])
        .map(|has| !has)
}

/// Made by [`upgrade`], not [`SCHEMA`]: a store from an earlier lorch gets the column first.
pub(super) const RUNS_BY_PIPELINE: &str =
    "CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline_run_id);";
