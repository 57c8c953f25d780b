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
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::value::RawValue;

use super::{Event, EventSink, Object};
use crate::lifecycle::ObjectCounts;

mod file;
mod health;
mod objects;
mod outbox;
mod pipelines;
mod runs;
mod schema;
mod state;
#[cfg(test)]
mod tests;

use file::SharedMemory;
pub use health::JobRuns;
pub use objects::{ObjectFilter, PendingObject};
pub use outbox::{DeadLetter, DeliveryStatus, Pending};
pub use pipelines::PipelineRunRow;
use runs::{
    COUNTS, RUN_COLUMNS, change_watermark, event_from_row, is_lifecycle, run_from_row, run_queue,
    state_change, update_run,
};
pub use runs::{RunFilter, RunRow};
use schema::{SCHEMA, SCHEMA_VERSION, upgrade};
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

/// What `runs prune --events` did.
#[derive(Debug)]
pub struct PrunedEvents {
    pub deleted: usize,
    /// Events old enough that were kept: pending for BigQuery, or dead letters.
    pub pending: i64,
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

    /// The run id of the newest event, if any.
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
