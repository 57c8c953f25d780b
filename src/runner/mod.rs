//! One run of a job: its run id, its attempts, and around each attempt exactly one
//! `job.started` and one terminal event, whatever the job does.
//!
//! By default each attempt runs in a supervised worker process ([`supervisor`]), so a crash, an
//! `exit`, a hang or a signal still ends in a terminal event; `--in-process` calls the job
//! directly instead. The runner knows events only through [`EventSink`].

mod capture;
pub mod protocol;
mod ring;
mod supervisor;
pub mod worker;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use lorch_plugin_api::TimeArg;
use lorch_plugin_api::abi::{Failure, RunRequest};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::backoff;
use crate::events::{Event, EventSink, Object};
use crate::host::{CallResult, JobCall};
pub use crate::lifecycle::Reason;
use crate::lifecycle::{self, EventType, FailureDetail, ObjectCounts, Parameters, Payload, Window};
use crate::locks::{self, Acquired, Holder};
use crate::plugins::Job;
use crate::runlog::{self, Level};
use crate::signals::Signals;
pub use supervisor::Limits;

/// Where an attempt runs.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// In a worker process, with these limits.
    Supervised(Limits),
    /// In lorch's own process: no crash isolation, no timeout.
    InProcess,
}

/// Everything a run needs, already validated.
#[derive(Clone)]
pub struct RunPlan<'a> {
    pub job: &'a Job,
    pub account: Option<String>,
    pub since: Option<TimeArg>,
    pub until: Option<TimeArg>,
    /// The instant the run starts from: the window's end when `until` is not given.
    pub now: chrono::DateTime<chrono::Utc>,
    pub params: Map<String, Value>,
    pub trace_id: Option<String>,
    pub mode: Mode,
    /// Attempts after the first one, for failures that may be transient.
    pub retries: u32,
    /// The wait before the first retry; it doubles for each further one.
    pub retry_backoff: Duration,
    /// How long to wait for the overlap lock of the job and account; `None`: take no lock.
    pub lock_wait: Option<Duration>,
    /// The lorch home, where the locks live.
    pub home: PathBuf,
    /// The `lorch backfill` this run is a window of.
    pub backfill_id: Option<String>,
    /// `--dry-run`: recorded in the payload, so its window does not count as done.
    pub dry_run: bool,
    /// The pipeline run this run is a step of.
    pub pipeline: Option<lifecycle::StepOf>,
}

/// A failed attempt.
#[derive(Debug)]
pub struct Failed {
    pub reason: Reason,
    /// The whole message, causes included.
    pub message: String,
    /// What the job reported, when it reported anything.
    pub error: Option<Box<Failure>>,
    /// The signal that ended the job's process (`SIGSEGV`), or that cancelled the run.
    pub signal: Option<String>,
    /// The exit code of a job process that exited without returning.
    pub exit_code: Option<i32>,
}

impl Failed {
    pub fn new(reason: Reason, message: impl Into<String>) -> Failed {
        Failed {
            reason,
            message: message.into(),
            error: None,
            signal: None,
            exit_code: None,
        }
    }

    /// Worth another attempt: not cancelled, and not marked permanent by the job.
    pub fn retryable(&self) -> bool {
        self.reason != Reason::Cancelled && !self.error.as_ref().is_some_and(|e| e.permanent)
    }
}

/// How an attempt ended.
pub type Attempt = Result<(), Failed>;

/// What became of what an attempt sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// Events and objects the job sent that could not be stored.
    pub not_recorded: usize,
    /// What its upserts did.
    pub objects: ObjectCounts,
}

/// How a run ended: its last attempt's outcome, or skipped.
#[derive(Debug)]
pub enum Outcome {
    Completed,
    Failed(Failed),
    /// Not run: another run holds the job's lock.
    Skipped(Holder),
    /// Not run: its window (a backfill's) was completed meanwhile, by this run.
    AlreadyCompleted(String),
}

/// What a run checks again once it holds its job's lock, where another run may have done its
/// work meanwhile (docs/windows.md): so that no window runs twice.
#[derive(Clone, Copy)]
pub enum Recheck<'a> {
    Nothing,
    /// `--since last-success`: the watermark, read again; the window starts there.
    Watermark(&'a dyn Fn() -> anyhow::Result<Option<DateTime<Utc>>>),
    /// A backfill's window: the run that completed it, if one did; then it is not run.
    Window(&'a dyn Fn() -> anyhow::Result<Option<String>>),
}

impl Failed {
    fn from_call(result: CallResult) -> Attempt {
        let (reason, failure) = match result {
            CallResult::Completed => return Ok(()),
            CallResult::Failed(failure) | CallResult::Refused(failure) => (Reason::Error, failure),
            CallResult::Panicked(failure) => (Reason::Panic, failure),
        };
        let message = match (reason, &failure.location) {
            (Reason::Panic, Some(location)) => {
                format!("panicked at {location}: {}", failure.message)
            }
            (Reason::Panic, None) => format!("panicked: {}", failure.message),
            _ => std::iter::once(failure.message.as_str())
                .chain(failure.chain.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(": "),
        };
        Err(Failed {
            error: Some(Box::new(failure)),
            ..Failed::new(reason, message)
        })
    }
}

pub struct RunReport {
    pub run_id: String,
    /// The number of the last attempt, from 1.
    pub attempts: u32,
    /// The last attempt's outcome, which decides the exit code.
    pub outcome: Outcome,
    pub duration: Duration,
    /// The job's events and objects that could not be stored, over every attempt (each
    /// attempt's terminal event names its own count).
    pub events_not_recorded: usize,
    /// What the upserts of every attempt did (each attempt's terminal event has its own).
    pub objects: ObjectCounts,
    /// Set when a terminal event could not be stored; the outcome above still stands.
    pub record_error: Option<anyhow::Error>,
    /// The last attempt's last lines, when it failed (docs/logs.md).
    pub log_tail: Vec<String>,
}

/// Runs the job's attempts, each between its `job.started` and its one terminal event.
///
/// An error means the first `job.started` could not be recorded and nothing ran: lorch never
/// runs a job whose run it cannot record.
///
/// `recheck` is read once the job's lock is held: a run that resumes from the last success
/// starts where the run it waited for ended, a backfill's window completed meanwhile is not run
/// again (docs/windows.md).
pub fn run(
    plan: &RunPlan,
    sink: &dyn EventSink,
    signals: &Signals,
    recheck: Recheck,
) -> anyhow::Result<RunReport> {
    let run_id = Uuid::now_v7().to_string();
    let job_id = plan.job.id();
    // Held for the whole run: while it is, nobody takes this run for abandoned.
    let _run_lock =
        locks::hold_run(&plan.home, &run_id).context("cannot create the run's lock file")?;
    let _job_lock = match job_lock(plan, &run_id, signals)? {
        Ok(held) => held,
        Err(holder) => return skipped(plan, sink, run_id, holder),
    };
    let resumed;
    let plan = match recheck {
        Recheck::Nothing => plan,
        Recheck::Watermark(watermark) => {
            resumed = after_the_lock(plan, watermark()?);
            &resumed
        }
        Recheck::Window(completed) => match completed()? {
            Some(by) => return already_completed(plan, sink, run_id, by),
            None => plan,
        },
    };
    let mut attempt = 1;
    let mut events_not_recorded = 0;
    let mut objects = ObjectCounts::default();
    loop {
        let base = lifecycle_payload(plan, attempt);
        let started = lifecycle_event(EventType::Started, &run_id, plan, &base);
        // An attempt whose start cannot be recorded is not run; an earlier attempt's outcome
        // was recorded already.
        sink.record(&started).with_context(|| match attempt {
            1 => format!("cannot record job.started of {job_id}; the job was not run"),
            n => {
                format!("cannot record job.started of attempt {n} of run {run_id}; it was not run")
            }
        })?;

        let start = Instant::now();
        let log = runlog::Writer::new(&plan.home, &run_id, attempt);
        let (outcome, tally) = execute(plan, &run_id, attempt, sink, signals, &log);
        let duration = start.elapsed();
        events_not_recorded += tally.not_recorded;
        objects += tally.objects;

        let written = log.finish();
        let log_tail = match &outcome {
            Ok(()) => Vec::new(),
            Err(_) => written.tail.clone(),
        };
        let ended = Ended {
            outcome: &outcome,
            duration,
            tally,
            log: written,
        };
        let terminal = terminal_event(&run_id, plan, base, ended);
        let record_error = sink
            .record(&terminal)
            .with_context(|| format!("cannot record {} of run {run_id}", terminal.event_type))
            .err();

        if let Err(failed) = &outcome
            && attempt <= plan.retries
            && failed.retryable()
            && record_error.is_none()
        {
            let delay = backoff::delay(plan.retry_backoff, attempt);
            tracing::warn!(
                "{job_id} attempt {attempt} failed ({}); retrying in {}",
                failed.message,
                humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
            );
            if signals.sleep(delay) {
                attempt += 1;
                continue;
            }
        }
        let outcome = match outcome {
            Ok(()) => Outcome::Completed,
            Err(failed) => Outcome::Failed(failed),
        };
        return Ok(RunReport {
            run_id,
            attempts: attempt,
            outcome,
            duration,
            events_not_recorded,
            objects,
            record_error,
            log_tail,
        });
    }
}

/// The overlap lock of the job and account, unless the plan takes none (`Ok(None)`); the run
/// that holds it when it is busy (`Err`).
fn job_lock(
    plan: &RunPlan,
    run_id: &str,
    signals: &Signals,
) -> anyhow::Result<Result<Option<locks::Held>, Holder>> {
    let Some(wait) = plan.lock_wait else {
        return Ok(Ok(None));
    };
    let path = locks::job_lock_path(
        &plan.home,
        plan.job.package(),
        plan.job.name(),
        plan.account.as_deref(),
    );
    match locks::acquire(&path, run_id, wait, signals)
        .with_context(|| format!("cannot take the lock {}", path.display()))?
    {
        Acquired::Held(lock) => Ok(Ok(Some(lock))),
        Acquired::Busy(holder) => Ok(Err(holder)),
    }
}

/// The plan of a run that resumes from the last success, with the watermark read once the lock
/// is held: when another run moved it meanwhile, the window starts there (an empty window when
/// that run covered it all).
fn after_the_lock<'a>(plan: &RunPlan<'a>, watermark: Option<DateTime<Utc>>) -> RunPlan<'a> {
    let mut plan = plan.clone();
    if let (Some(since), Some(mark)) = (&mut plan.since, watermark)
        && mark > since.utc
    {
        since.utc = plan
            .until
            .as_ref()
            .map_or(mark, |until| mark.min(until.utc));
    }
    plan
}

/// Records `job.skipped`, reason `already_completed`, for a backfill's window that the run `by`
/// completed while this one waited to start.
fn already_completed(
    plan: &RunPlan,
    sink: &dyn EventSink,
    run_id: String,
    by: String,
) -> anyhow::Result<RunReport> {
    let payload = Payload {
        reason: Some(Reason::AlreadyCompleted),
        ..lifecycle_payload(plan, 1)
    };
    let why = format!("skipped: the run {by} completed its window");
    record_skipped(plan, sink, &run_id, &payload, Some(why))?;
    Ok(not_run(run_id, Outcome::AlreadyCompleted(by)))
}

/// The report of a run that did not run.
fn not_run(run_id: String, outcome: Outcome) -> RunReport {
    RunReport {
        run_id,
        attempts: 1,
        outcome,
        duration: Duration::ZERO,
        events_not_recorded: 0,
        objects: ObjectCounts::default(),
        record_error: None,
        log_tail: Vec::new(),
    }
}

/// Records `job.skipped` for a run that found the job's lock held.
fn skipped(
    plan: &RunPlan,
    sink: &dyn EventSink,
    run_id: String,
    holder: Holder,
) -> anyhow::Result<RunReport> {
    let payload = Payload {
        reason: Some(Reason::Locked),
        holder: Some(lifecycle::Holder {
            run_id: holder.run_id.clone(),
            pid: holder.pid,
        }),
        ..lifecycle_payload(plan, 1)
    };
    record_skipped(plan, sink, &run_id, &payload, None)?;
    Ok(not_run(run_id, Outcome::Skipped(holder)))
}

/// Records `job.skipped`, reason `locked`, for a run whose caller found the job's lock held
/// (a pipeline step: the pipeline takes the locks its steps share).
pub fn skip_locked(
    plan: &RunPlan,
    sink: &dyn EventSink,
    holder: Holder,
) -> anyhow::Result<RunReport> {
    skipped(plan, sink, Uuid::now_v7().to_string(), holder)
}

/// Records `job.skipped`, reason `upstream_failed`, for a pipeline step that does not run
/// because the step `upstream` it needs did not complete; returns the skipped run's id.
pub fn skip_for_upstream(
    plan: &RunPlan,
    sink: &dyn EventSink,
    upstream: &str,
) -> anyhow::Result<String> {
    let run_id = Uuid::now_v7().to_string();
    let payload = Payload {
        reason: Some(Reason::UpstreamFailed),
        upstream: Some(upstream.to_owned()),
        ..lifecycle_payload(plan, 1)
    };
    let why = format!("skipped: the step {upstream} it needs did not complete");
    record_skipped(plan, sink, &run_id, &payload, Some(why))?;
    Ok(run_id)
}

/// Records `job.skipped` with `payload`, and `why` as its error message.
fn record_skipped(
    plan: &RunPlan,
    sink: &dyn EventSink,
    run_id: &str,
    payload: &Payload,
    why: Option<String>,
) -> anyhow::Result<()> {
    let mut event = lifecycle_event(EventType::Skipped, run_id, plan, payload);
    event.error_message = why;
    sink.record(&event)
        .with_context(|| format!("cannot record job.skipped of run {run_id}"))
}

/// What the job sends to the host, and its logged lines kept in the run's log: a job run in
/// lorch's own process (`--in-process`) has its logged lines kept, not its stdout and stderr.
struct Logged<'a> {
    sink: &'a dyn EventSink,
    log: &'a runlog::Writer,
}

impl EventSink for Logged<'_> {
    fn store(&self, events: &[Event], objects: &[Object]) -> anyhow::Result<ObjectCounts> {
        self.sink.store(events, objects)
    }

    fn log(&self, level: Level, message: &str) {
        level.show(message);
        if level.kept() {
            self.log.push(
                runlog::Stream::Log,
                Some(level),
                message,
                chrono::Utc::now(),
            );
            self.log.flush();
        }
    }
}

fn execute(
    plan: &RunPlan,
    run_id: &str,
    attempt: u32,
    sink: &dyn EventSink,
    signals: &Signals,
    log: &runlog::Writer,
) -> (Attempt, Tally) {
    let request = RunRequest {
        run_id: run_id.to_owned(),
        package: plan.job.package().to_owned(),
        job: plan.job.name().to_owned(),
        attempt,
        account: plan.account.clone(),
        since: plan.since.clone(),
        until: plan.until.clone(),
        params: plan.params.clone(),
    };
    let trace_id = plan.trace_id.as_deref();
    match plan.mode {
        Mode::Supervised(limits) => {
            supervisor::run(plan.job, &request, trace_id, sink, limits, signals, log)
        }
        Mode::InProcess => {
            let sink = Logged { sink, log };
            let call = JobCall::new(plan.job, &sink, &request, trace_id, signals.cancel_flag());
            let result = crate::logging::job_span(&request).in_scope(|| call.run(plan.job));
            let outcome = match (signals.received(), Failed::from_call(result)) {
                // The job returned after lorch was asked to stop: the run was cancelled.
                (Some(signal), Err(_)) => {
                    let name = crate::sys::signal_name(signal);
                    Err(Failed {
                        signal: Some(name.clone()),
                        ..Failed::new(Reason::Cancelled, format!("cancelled by {name}"))
                    })
                }
                (_, outcome) => outcome,
            };
            let tally = Tally {
                not_recorded: call.unrecorded(),
                objects: call.objects(),
            };
            (outcome, tally)
        }
    }
}

/// How an attempt ended, for its terminal event.
struct Ended<'a> {
    outcome: &'a Attempt,
    duration: Duration,
    tally: Tally,
    log: runlog::Written,
}

fn terminal_event(run_id: &str, plan: &RunPlan, base: Payload, ended: Ended) -> Event {
    let failed = ended.outcome.is_err();
    let payload = Payload {
        duration_seconds: Some(ended.duration.as_secs_f64()),
        events_not_recorded: ended.tally.not_recorded,
        objects: Some(ended.tally.objects),
        log_lines: ended.log.lines,
        log_tail: failed.then_some(ended.log.tail),
        ..base
    };
    match ended.outcome {
        Ok(()) => lifecycle_event(EventType::Completed, run_id, plan, &payload),
        Err(failed) => {
            let payload = Payload {
                reason: Some(failed.reason),
                failure: Some(FailureDetail {
                    error: failed.error.as_deref().cloned(),
                    signal: failed.signal.clone(),
                    exit_code: failed.exit_code,
                }),
                ..payload
            };
            let mut event = lifecycle_event(EventType::Failed, run_id, plan, &payload);
            event.error_message = Some(failed.message.clone());
            event
        }
    }
}

fn lifecycle_event(kind: EventType, run_id: &str, plan: &RunPlan, payload: &Payload) -> Event {
    let mut event = Event::new(kind.as_str(), lifecycle::SOURCE, run_id);
    event.status = kind.event_status().to_owned();
    event.trace_id = plan.trace_id.clone();
    event.object_type = Some(lifecycle::OBJECT_TYPE.to_owned());
    event.set_payload(&payload.to_value());
    event
}

/// The payload every lifecycle event of an attempt carries (docs/events.md).
fn lifecycle_payload(plan: &RunPlan, attempt: u32) -> Payload {
    let instant = |t: &Option<TimeArg>| {
        t.as_ref()
            .map(|t| t.utc.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    };
    let raw = |t: &Option<TimeArg>| t.as_ref().map(|t| t.raw.clone());
    Payload {
        package: plan.job.package().to_owned(),
        job: plan.job.name().to_owned(),
        parameters: Parameters {
            account: plan.account.clone(),
            since: instant(&plan.since),
            until: instant(&plan.until),
            since_input: raw(&plan.since),
            until_input: raw(&plan.until),
            params: plan.params.clone(),
        },
        window: Some(Window {
            since: instant(&plan.since),
            until: plan
                .until
                .as_ref()
                .map_or(plan.now, |t| t.utc)
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        }),
        attempt,
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        pid: std::process::id(),
        lorch_version: env!("CARGO_PKG_VERSION").to_owned(),
        plugin: plan.job.location().to_string(),
        backfill_id: plan.backfill_id.clone(),
        dry_run: plan.dry_run,
        pipeline: plan.pipeline.clone(),
        ..Payload::default()
    }
}
