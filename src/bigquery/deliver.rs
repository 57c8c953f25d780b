//! Delivery of the outbox to BigQuery: batches of queued events, sent with their event ids as
//! `insertId`, marked delivered only once BigQuery accepted them; then batches of queued
//! objects, each batch one MERGE into the objects table (docs/objects.md).
//!
//! One lorch at a time sends: a batch is chosen, sent and settled under the lock
//! `<home>/locks/bigquery.lock`, so two processes never send the same pending event (the
//! emulator, unlike BigQuery, does not drop repeated insertIds).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::client::{Client, Failure, RowError};
use super::config::{Config, Problem, Table};
use super::schema;
use crate::backoff;
use crate::events::{DeadLetter, LocalStore, Object, Pending, PendingObject};
use crate::locks::{self, Acquired};
use crate::signals::Signals;

/// insertAll takes at most 500 rows per request as recommended, and 10 MB: stay well under.
const MAX_ROWS: usize = 500;
const MAX_BYTES: usize = 5 << 20;
/// Objects merged by one statement. Each MERGE is a BigQuery job, with a second or more of
/// fixed cost, so batches are large; the emulator merges 5,000 rows in about 0.4 s.
const MAX_OBJECTS: usize = 5000;
/// A row this large can never be sent, so it is a dead letter from the start.
const MAX_ROW_BYTES: usize = 9 << 20;
/// How long a request that was sent gets to answer, whatever deadline the delivery has: a
/// deadline stops *starting* requests, it never cuts one short (a request given up on may
/// still be stored, and sending it again would store it twice where insertIds are not
/// de-duplicated).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The free disk space delivery keeps, for recording what BigQuery accepted: settling a batch of
/// 500 rows writes well under 1 MiB.
const HEADROOM: u64 = 8 << 20;
/// The first wait after a transient failure; it doubles (with jitter) up to [`MAX_PAUSE`].
const RETRY_BASE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// What one delivery did.
#[derive(Debug, Default)]
pub struct Report {
    pub delivered: usize,
    /// Objects merged into BigQuery.
    pub objects: usize,
    pub requests: usize,
    /// Events BigQuery refused (now dead letters).
    pub dead: usize,
    /// Why events may still be pending: the last failure, if the delivery ended on one.
    pub stopped: Option<Failure>,
    /// Another lorch held the delivery lock for the whole wait.
    pub busy: bool,
}

/// How long to try, and what first.
pub struct Policy {
    /// No request starts after this (but one whose answer was lost is sent again at once);
    /// a request in flight gets its whole [`REQUEST_TIMEOUT`].
    pub deadline: Instant,
    /// Events with a larger `seq` (this run's) go before older pending ones.
    pub prefer_after: i64,
    /// How long to wait for another lorch's delivery to finish.
    pub lock_wait: Duration,
    /// Retry transient failures until the deadline; otherwise return at the first one (the
    /// caller waits between rounds).
    pub retry: bool,
}

/// One request's worth of pending events or objects.
struct Batch {
    table: Table,
    seqs: Vec<i64>,
    rows: Rows,
}

enum Rows {
    /// `(insertId, row)`, for insertAll.
    Events(Vec<(String, serde_json::Value)>),
    /// For one MERGE: the objects, the version of each that is sent, the request's id.
    Objects {
        objects: Vec<Object>,
        versions: Vec<i64>,
        request_id: String,
    },
}

pub struct Delivery<'a> {
    pub store: &'a LocalStore,
    pub client: &'a Client,
    pub config: &'a Config,
    pub home: &'a Path,
}

impl Delivery<'_> {
    /// Sends pending events until none is left, a failure needs fixing, or the deadline.
    /// Transient failures are retried with exponential back-off and jitter. An error means the
    /// local store itself failed.
    pub fn run(&self, policy: &Policy) -> Result<Report> {
        let mut report = Report::default();
        let mut failures = 0;
        let lock_path = self.home.join("locks").join("bigquery.lock");
        // The batch of a request that got no answer: sent again at once, exactly as it was, even
        // past the deadline, while BigQuery still drops repeated insertIds (about a minute).
        // Once in a row: a second lost answer is an outage, retried like any other.
        let mut lost: Option<Batch> = None;
        loop {
            let now = Instant::now();
            if now >= policy.deadline && lost.is_none() {
                return Ok(report);
            }
            let wait = policy
                .lock_wait
                .min(policy.deadline.saturating_duration_since(now));
            let lock = match locks::acquire(&lock_path, "delivery", wait, &Signals::default())? {
                Acquired::Held(lock) => lock,
                Acquired::Busy(_) => {
                    report.busy = true;
                    return Ok(report);
                }
            };
            let (batch, resent) = match lost.take() {
                Some(batch) => (batch, true),
                None => match self.next_batch(policy.prefer_after, &mut report)? {
                    Some(batch) => (batch, false),
                    None => {
                        report.stopped = None;
                        return Ok(report);
                    }
                },
            };
            let Some(failure) = self.send(&batch, &mut report)? else {
                failures = 0;
                continue;
            };
            let transient = failure.is_transient();
            if matches!(failure, Failure::Unanswered(_)) && !resent {
                lost = Some(batch);
            }
            report.stopped = Some(failure);
            if lost.is_some() {
                continue;
            }
            if !transient || !policy.retry {
                return Ok(report);
            }
            failures += 1;
            drop(lock);
            let pause = backoff::delay(RETRY_BASE, failures).min(MAX_PAUSE);
            std::thread::sleep(
                pause.min(policy.deadline.saturating_duration_since(Instant::now())),
            );
        }
    }

    /// Sends one batch and records BigQuery's answer; `None` when it took every row. Nothing
    /// is sent while the disk is too full to record the answer.
    fn send(&self, batch: &Batch, report: &mut Report) -> Result<Option<Failure>> {
        if let Some(full) = self.disk_full() {
            return Ok(Some(full));
        }
        match &batch.rows {
            Rows::Events(rows) => {
                self.store.note_sending(&batch.seqs)?;
                report.requests += 1;
                match self.client.insert(&batch.table, rows, REQUEST_TIMEOUT) {
                    Ok(row_errors) => self.settle(&batch.seqs, &row_errors, report),
                    Err(failure) => {
                        self.store.note_failure(&batch.seqs, failure.message())?;
                        Ok(Some(failure))
                    }
                }
            }
            Rows::Objects {
                objects,
                versions,
                request_id,
            } => {
                self.store.note_sending_objects(&batch.seqs)?;
                report.requests += 1;
                let merged = self
                    .client
                    .merge(&batch.table, objects, request_id, REQUEST_TIMEOUT);
                match merged {
                    Ok(()) => {
                        let sent: Vec<(i64, i64)> = batch
                            .seqs
                            .iter()
                            .copied()
                            .zip(versions.iter().copied())
                            .collect();
                        self.store.settle_objects(&sent)?;
                        report.objects += sent.len();
                        Ok(None)
                    }
                    Err(failure) => {
                        self.store
                            .note_object_failure(&batch.seqs, failure.message())?;
                        Ok(Some(failure))
                    }
                }
            }
        }
    }

    /// Why nothing should be sent now: the disk holding the store has less than [`HEADROOM`]
    /// free, so the store might not record that BigQuery accepted a batch, and the next
    /// delivery would send it again (and again, each time).
    fn disk_full(&self) -> Option<Failure> {
        let dir = self.store.path().parent()?;
        let free = crate::sys::free_space(dir).ok()?;
        (free < HEADROOM).then(|| {
            Failure::Fatal(format!(
                "the disk holding {} has {} KiB free: lorch sends nothing while it might not be able to record it as delivered (it keeps {} MiB free for that)",
                dir.display(),
                free / 1024,
                HEADROOM >> 20
            ))
        })
    }

    /// Records BigQuery's answer to a request: rows it did not name are delivered, rows it
    /// found invalid are dead letters, others stay pending (a transient failure).
    fn settle(
        &self,
        seqs: &[i64],
        row_errors: &[RowError],
        report: &mut Report,
    ) -> Result<Option<Failure>> {
        let mut dead = Vec::new();
        let mut retry = Vec::new();
        for error in row_errors {
            let Some(&seq) = seqs.get(error.index) else {
                continue;
            };
            match error.is_permanent() {
                true => dead.push((seq, format!("{}: {}", error.reason, error.message))),
                false => retry.push(seq),
            }
        }
        let accepted: Vec<i64> = seqs
            .iter()
            .copied()
            .filter(|seq| !retry.contains(seq) && !dead.iter().any(|(s, _)| s == seq))
            .collect();
        self.store.settle(&accepted, &dead)?;
        report.delivered += accepted.len();
        report.dead += dead.len();
        let Some(first) = row_errors.iter().find(|e| !e.is_permanent()) else {
            return Ok(None);
        };
        let failure = Failure::Transient(format!(
            "BigQuery did not store {} rows ({}: {})",
            retry.len(),
            first.reason,
            first.message
        ));
        self.store.note_failure(&retry, failure.message())?;
        Ok(Some(failure))
    }

    /// The next batch: pending events first, then pending objects.
    fn next_batch(&self, prefer_after: i64, report: &mut Report) -> Result<Option<Batch>> {
        match self.next_events(prefer_after, report)? {
            Some(batch) => Ok(Some(batch)),
            None => self.next_objects(),
        }
    }

    /// Pending objects of one table, at most [`MAX_OBJECTS`] and [`MAX_BYTES`] (an object is
    /// never larger: `lorch_plugin_api::MAX_PAYLOAD_BYTES`), as they are now.
    fn next_objects(&self) -> Result<Option<Batch>> {
        let pending = self.store.pending_objects(MAX_OBJECTS)?;
        let Some(first) = pending.first() else {
            return Ok(None);
        };
        let target = first.target.clone();
        let table = self
            .config
            .objects_table_for(target.as_deref())
            .map_err(anyhow::Error::new)?;
        let (mut seqs, mut versions, mut objects) = (Vec::new(), Vec::new(), Vec::new());
        let mut bytes = 0;
        for PendingObject {
            seq,
            version,
            object,
            ..
        } in pending.into_iter().take_while(|p| p.target == target)
        {
            // The payload, and the other columns with room to spare.
            let size = object.payload.get().len() + 1024;
            if !objects.is_empty() && bytes + size > MAX_BYTES {
                break;
            }
            bytes += size;
            seqs.push(seq);
            versions.push(version);
            objects.push(object);
        }
        Ok(Some(Batch {
            table,
            seqs,
            rows: Rows::Objects {
                objects,
                versions,
                request_id: uuid::Uuid::now_v7().to_string(),
            },
        }))
    }

    /// Pending events of one table, at most [`MAX_ROWS`] and [`MAX_BYTES`], those after
    /// `prefer_after` first. Events too large to ever send become dead letters.
    fn next_events(&self, prefer_after: i64, report: &mut Report) -> Result<Option<Batch>> {
        loop {
            let mut pending = self.store.pending(prefer_after, MAX_ROWS)?;
            if pending.is_empty() && prefer_after > 0 {
                pending = self.store.pending(0, MAX_ROWS)?;
            }
            let Some(first) = pending.first() else {
                return Ok(None);
            };
            let target = first.target.clone();
            let table = self
                .config
                .table_for(target.as_deref())
                .map_err(anyhow::Error::new)?;
            let mut seqs = Vec::new();
            let mut rows = Vec::new();
            let mut too_large = Vec::new();
            let mut bytes = 0;
            for Pending { seq, event, .. } in pending.into_iter().take_while(|p| p.target == target)
            {
                let row = schema::row(&event);
                let size = row.to_string().len();
                if size > MAX_ROW_BYTES {
                    too_large.push((seq, format!("too large: the row is {size} bytes; insertAll takes at most 10 MB per request")));
                    continue;
                }
                if !rows.is_empty() && bytes + size > MAX_BYTES {
                    break;
                }
                bytes += size;
                seqs.push(seq);
                rows.push((event.event_id, row));
            }
            if !too_large.is_empty() {
                report.dead += too_large.len();
                self.store.settle(&[], &too_large)?;
            }
            if !rows.is_empty() {
                return Ok(Some(Batch {
                    table,
                    seqs,
                    rows: Rows::Events(rows),
                }));
            }
        }
    }
}

/// Delivery alongside a run, in a thread of its own: this run's events (and earlier pending
/// ones) go out while the job works, and whatever is left is flushed when it ends.
pub struct Background {
    home: PathBuf,
    mark: i64,
    running: Result<(mpsc::Sender<()>, JoinHandle<Result<Finished>>), Problem>,
}

/// What was left when the run's delivery ended.
#[derive(Debug)]
pub struct Finished {
    /// Events still pending (of any run).
    pub pending: u64,
    /// Objects still pending (of any run).
    pub objects_pending: u64,
    /// Why: the problem that stopped delivery.
    pub problem: Option<String>,
    /// Events of this run BigQuery refused.
    pub dead: Vec<DeadLetter>,
}

/// How often the thread looks for new events while all is well.
const POLL: Duration = Duration::from_millis(200);
/// One round of delivery while the job runs; short, so the final flush starts promptly.
const ROUND: Duration = Duration::from_secs(2);

impl Background {
    /// Starts delivering from `home`'s store, events recorded after `mark` (this run's) first.
    /// With a configuration problem nothing is sent, and [`finish`](Self::finish) says why.
    pub fn start(
        home: &Path,
        config: Result<Config, Problem>,
        mark: i64,
        flush_timeout: Duration,
    ) -> Background {
        let running = config.and_then(|config| {
            let (stop, stopped) = mpsc::channel();
            let thread_home = home.to_owned();
            std::thread::Builder::new()
                .name("bigquery".into())
                .spawn(move || {
                    deliver_in_background(&thread_home, &config, mark, flush_timeout, &stopped)
                })
                .map(|thread| (stop, thread))
                .map_err(|e| Problem(format!("cannot start the BigQuery delivery thread: {e}")))
        });
        Background {
            home: home.to_owned(),
            mark,
            running,
        }
    }

    /// Flushes what is pending (for at most the flush timeout) and says what is left.
    pub fn finish(self) -> Result<Finished> {
        match self.running {
            Ok((stop, thread)) => {
                let _ = stop.send(());
                thread.join().unwrap_or_else(|_| {
                    Err(anyhow::anyhow!("the BigQuery delivery thread panicked"))
                })
            }
            Err(problem) => finished(
                &LocalStore::open_in(&self.home)?,
                self.mark,
                Some(problem.0),
            ),
        }
    }
}

fn finished(store: &LocalStore, mark: i64, problem: Option<String>) -> Result<Finished> {
    let status = store.delivery_status()?;
    Ok(Finished {
        pending: status.pending,
        objects_pending: status.objects_pending,
        problem,
        dead: store.dead_letters(mark)?,
    })
}

fn deliver_in_background(
    home: &Path,
    config: &Config,
    mark: i64,
    flush_timeout: Duration,
    stopped: &mpsc::Receiver<()>,
) -> Result<Finished> {
    let store = LocalStore::open_in(home)?;
    let client = match Client::connect(config) {
        Ok(client) => client,
        Err(failure) => {
            let _ = stopped.recv();
            return finished(&store, mark, Some(failure.message().to_owned()));
        }
    };
    let delivery = Delivery {
        store: &store,
        client: &client,
        config,
        home,
    };
    let mut failures = 0;
    loop {
        let report = delivery.run(&Policy {
            deadline: Instant::now() + ROUND,
            prefer_after: mark,
            lock_wait: Duration::ZERO,
            retry: false,
        })?;
        let pause = match report.stopped {
            None => {
                failures = 0;
                POLL
            }
            // Refused credentials, a missing table, a 4xx: sending again changes nothing until
            // someone fixes it, so this run sends no more and says why.
            Some(failure) if !failure.is_transient() => {
                let _ = stopped.recv();
                return finished(&store, mark, Some(failure.message().to_owned()));
            }
            Some(_) => {
                failures += 1;
                backoff::delay(RETRY_BASE, failures).min(MAX_PAUSE)
            }
        };
        if stopped.recv_timeout(pause) != Err(mpsc::RecvTimeoutError::Timeout) {
            break;
        }
    }
    let report = delivery.run(&Policy {
        deadline: crate::timearg::after(flush_timeout),
        prefer_after: mark,
        lock_wait: flush_timeout,
        retry: true,
    })?;
    let problem = match (&report.stopped, report.busy) {
        (Some(failure), _) => Some(failure.message().to_owned()),
        (None, true) => Some("another lorch is delivering".to_owned()),
        (None, false) => None,
    };
    finished(&store, mark, problem)
}

/// Delivers what the store queues for BigQuery in the background, when BigQuery is configured.
pub fn start(
    home: &std::path::Path,
    store: &crate::events::LocalStore,
) -> crate::error::Result<Option<crate::bigquery::Background>> {
    if !crate::bigquery::config::requested() {
        return Ok(None);
    }
    Ok(Some(crate::bigquery::Background::start(
        home,
        crate::bigquery::Config::from_env(),
        store.last_seq()?,
        flush_timeout()?,
    )))
}

/// Stops background delivery, with a warning for what is not in BigQuery yet; the exit code
/// stays the runs'.
pub fn finish(background: crate::bigquery::Background, store: &crate::events::LocalStore) {
    match background.finish() {
        Ok(finished) => warn_undelivered(finished, store),
        Err(e) => crate::output::stderr!(
            "warning: BigQuery delivery stopped ({e:#}); pending events stay in {}; deliver them with: lorch events flush",
            store.path().display()
        ),
    }
}

/// `LORCH_BQ_FLUSH_TIMEOUT`: how long a run may spend, after its job, delivering what is
/// still pending (default 10s).
pub fn flush_timeout() -> crate::error::Result<std::time::Duration> {
    match std::env::var("LORCH_BQ_FLUSH_TIMEOUT") {
        Err(_) => Ok(std::time::Duration::from_secs(10)),
        Ok(value) => crate::timearg::duration(&value).map_err(|e| {
            crate::error::Error::Usage(format!("invalid LORCH_BQ_FLUSH_TIMEOUT '{value}': {e}"))
        }),
    }
}

/// One warning when events of this run (or earlier ones) are not in BigQuery yet.
pub fn warn_undelivered(finished: crate::bigquery::Finished, store: &crate::events::LocalStore) {
    if !finished.dead.is_empty() {
        crate::output::stderr!(
            "warning: BigQuery refused {} events of this run ({}); they are kept as dead letters: see `lorch events status`",
            finished.dead.len(),
            finished.dead[0].reason
        );
    }
    let waiting = match (finished.pending, finished.objects_pending) {
        (0, 0) => return,
        (events, 0) => format!("{events} events are"),
        (0, objects) => format!("{objects} objects are"),
        (events, objects) => format!("{events} events and {objects} objects are"),
    };
    let why = finished
        .problem
        .unwrap_or_else(|| "delivery did not finish in time".to_owned());
    crate::output::stderr!(
        "warning: {waiting} not in BigQuery yet ({why}); they are kept in {}; deliver them with: lorch events flush",
        store.path().display()
    );
}
