//! `lorch submit`, `lorch worker` and `lorch queue`: runs on several machines through NATS
//! JetStream (docs/fleet.md). A worker runs each request as a `lorch run-job` of its own, so a
//! request runs exactly as it would from cron on that machine: supervised, recorded in the
//! worker's local store, delivered to BigQuery when configured.

use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{AckKind, Message, stream};
use futures_util::StreamExt as _;
use serde_json::json;

use super::Passed;
use crate::child::{ChildOutcome, RunSummary};
use crate::error::{Error, Exit, Result};
use crate::fleet::{self, Connection, Request};
use crate::lifecycle::RunStatus;
use crate::output::{self, stderr};
use crate::plan::RunOptions;
use crate::plugins::Catalog;
use crate::signals::Signals;

fn unreachable(e: anyhow::Error) -> Error {
    Error::Environment(e)
}

/// `lorch submit PACKAGE/JOB [run options] [--request-id ID] [--nats URL] [--json]`.
pub struct Submit<'a> {
    pub job: &'a str,
    pub options: &'a RunOptions,
    pub request_id: Option<&'a str>,
    pub nats: Option<&'a str>,
    pub json: bool,
    pub quiet: bool,
}

pub fn submit(catalog: &Catalog, submit: &Submit) -> Result<Exit> {
    if let Some(id) = submit.request_id
        && (id.is_empty() || id.len() > 256 || id.chars().any(char::is_control))
    {
        return Err(Error::Usage(format!(
            "invalid --request-id {id:?}: expected 1 to 256 characters, no control characters"
        )));
    }
    let request = request(catalog, submit)?;
    let connection = fleet::connect(submit.nats).map_err(unreachable)?;
    let ack = connection.runtime.block_on(async {
        connection.jobs_stream().await?;
        let payload = serde_json::to_vec(&request)?;
        let (subject, id) = (request.subject(), &request.request_id);
        publish_once(
            &connection.jetstream,
            subject,
            id,
            HeaderMap::new(),
            payload,
        )
        .await
    });
    let ack = ack
        .map_err(|e| e.context(format!("cannot submit to {}", connection.url)))
        .map_err(unreachable)?;
    if submit.json {
        output::print_json(&json!({
            "request_id": request.request_id,
            "submitted_at": request.submitted_at,
            "subject": request.subject(),
            "stream_sequence": ack.sequence,
            "duplicate": ack.duplicate,
        }))?;
    } else if !submit.quiet {
        output::print(&format!("{}\n", request.request_id))?;
        if ack.duplicate {
            stderr!(
                "request {} was already submitted: stored once",
                request.request_id
            );
        }
    }
    Ok(Exit::Success)
}

/// The request, checked as `run-job` would check it when this machine knows the job, with its
/// window resolved now: the worker runs the window the submitter meant, whenever it runs.
fn request(catalog: &Catalog, submit: &Submit) -> Result<Request> {
    let Some((package, job)) = submit
        .job
        .split_once('/')
        .filter(|(p, j)| fleet::valid_name(p) && fleet::valid_name(j))
    else {
        return Err(Error::Usage(format!(
            "invalid job '{}': expected PACKAGE/JOB, each of letters, digits, _ and -",
            submit.job
        )));
    };
    let options = submit.options;
    let now = crate::timearg::now().map_err(Error::Usage)?;
    match catalog.find(package, job) {
        Ok(found) => {
            let home = super::lorch_home()?;
            crate::plan::plan(found, options, home, now)?;
        }
        Err(_) => stderr!(
            "warning: {package}/{job} is not among this machine's jobs; the worker that takes the request checks it"
        ),
    }
    let last_success = |t: &str| t.trim() == crate::lifecycle::LAST_SUCCESS;
    let since = options.since.as_deref().filter(|t| !last_success(t));
    let (since_at, until_at) =
        crate::timearg::run_window(since, options.until.as_deref(), now).map_err(Error::Usage)?;
    let instant = |t: lorch_plugin_api::TimeArg| crate::timearg::micros(&t.utc);
    let until = until_at.map(instant).or_else(|| {
        options
            .since
            .is_some()
            .then(|| crate::timearg::micros(&now))
    });
    let since = match options.since.as_deref() {
        Some(t) if last_success(t) => Some(crate::lifecycle::LAST_SUCCESS.to_owned()),
        _ => since_at.map(instant),
    };
    let duration = |d: Option<Duration>| d.map(|d| humantime::format_duration(d).to_string());
    Ok(Request {
        request_id: submit
            .request_id
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned),
        package: package.to_owned(),
        job: job.to_owned(),
        account: options.account.clone(),
        since,
        until,
        initial_since: match options.initial_since.as_deref() {
            Some(t) => Some(crate::timearg::micros(
                &crate::timearg::resolve(t, now).map_err(Error::Usage)?,
            )),
            None => None,
        },
        params: options.params.clone(),
        timeout: duration(options.timeout),
        kill_after: duration(options.kill_after),
        retries: options.retries,
        retry_backoff: duration(options.retry_backoff),
        trace_id: options.trace_id.clone(),
        submitted_at: crate::timearg::micros(&now),
        submitted_from: gethostname::gethostname().to_string_lossy().into_owned(),
    })
}

/// `lorch worker`'s settings.
pub struct Work {
    pub nats: Option<String>,
    pub concurrency: usize,
    pub max_deliver: i64,
    pub ack_wait: Duration,
    /// Whether `--ack-wait` was given (else: the default, and no warning).
    pub ack_wait_given: bool,
    pub grace: Duration,
    pub jobs: fleet::Jobs,
}

/// What the worker's tasks share.
struct Shared {
    work: Work,
    /// The consumer's ack wait: progress is sent every third of it.
    ack_wait: Duration,
    /// Set once a stop was asked for: a request that got a slot then goes back untouched.
    stopping: AtomicBool,
    /// The worker's global flags, passed on to each `run-job`.
    config: Option<std::path::PathBuf>,
    plugin_path: Vec<std::path::PathBuf>,
    allow_insecure_plugins: bool,
    /// What the worker is doing: its heartbeat, and the runs to pass a stop on to.
    activity: Mutex<Activity>,
    jetstream: async_nats::jetstream::Context,
    /// The fleet-wide job locks; `None` when the server would not give the stream (said once).
    locks: Option<stream::Stream>,
}

/// A worker's heartbeat (`queue status`): who it is, what it runs, what it did.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Activity {
    /// `HOST:PID`.
    worker: String,
    started_at: String,
    /// Requests in progress, by request id.
    running: BTreeMap<String, Running>,
    completed: u64,
    failed: u64,
    #[serde(default)]
    seen_at: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Running {
    job: String,
    since: String,
    /// The `run-job` process, to pass a stop on to.
    pid: u32,
}

/// How often a worker says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Publishes the worker's activity every [`HEARTBEAT`], until aborted.
async fn heartbeat(shared: Arc<Shared>) {
    loop {
        beat(&shared).await;
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// Publishes the worker's activity now (also when a run starts or ends).
async fn beat(shared: &Shared) {
    let beat = {
        let mut activity = shared.activity();
        activity.seen_at = crate::timearg::micros(&chrono::Utc::now());
        serde_json::to_vec(&*activity).expect("JSON")
    };
    if let Ok(ack) = shared
        .jetstream
        .publish(shared.heartbeat_subject(), beat.into())
        .await
    {
        let _ = ack.await;
    }
}

impl Shared {
    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `lorch.workers.HOST.PID`.
    fn heartbeat_subject(&self) -> String {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        format!(
            "lorch.workers.{}.{}",
            fleet::token(&host),
            std::process::id()
        )
    }

    /// `lorch [the worker's global flags] run-job PACKAGE JOB [the request's options]`.
    fn run_job(&self, request: &Request) -> anyhow::Result<std::process::Command> {
        let id = format!("{}/{}", request.package, request.job);
        Passed {
            config: self.config.as_deref(),
            plugin_path: &self.plugin_path,
            allow_insecure_plugins: self.allow_insecure_plugins,
            quiet: false,
        }
        .run_job(&id, &request.options()?)
    }
}

pub fn worker(passed: &Passed, work: Work) -> Result<Exit> {
    let connection = fleet::connect(work.nats.as_deref()).map_err(unreachable)?;
    let signals = Signals::install()
        .map_err(|e| Error::Environment(anyhow::Error::new(e).context("cannot catch signals")))?;
    let opened = connection.runtime.block_on(async {
        let stream = connection.jobs_stream().await?;
        connection.dead_stream().await?;
        connection.events_stream().await?;
        let consumer = connection
            .workers(&stream, &work.jobs, work.ack_wait)
            .await?;
        let heartbeats = connection.workers_stream().await?;
        anyhow::Ok((consumer, heartbeats))
    });
    let (consumer, heartbeats) = opened.map_err(unreachable)?;
    let locks = connection.runtime.block_on(connection.locks());
    let locks = locks
        .map_err(|e| {
            stderr!("warning: {e:#}; each run takes only its machine's job lock");
        })
        .ok();
    // The consumer's, which the first worker set: what the server goes by.
    let ack_wait = consumer.cached_info().config.ack_wait;
    if work.ack_wait_given && ack_wait != work.ack_wait {
        stderr!(
            "warning: the workers' consumer on {} waits {} for news of a request, not --ack-wait {}: the first worker set it",
            connection.url,
            humantime::format_duration(ack_wait),
            humantime::format_duration(work.ack_wait)
        );
    }
    let shared = Arc::new(Shared {
        work,
        ack_wait,
        config: passed.config.map(std::path::Path::to_path_buf),
        plugin_path: passed.plugin_path.to_vec(),
        allow_insecure_plugins: passed.allow_insecure_plugins,
        activity: Mutex::new(Activity {
            worker: format!(
                "{}:{}",
                gethostname::gethostname().to_string_lossy(),
                std::process::id()
            ),
            started_at: crate::timearg::micros(&chrono::Utc::now()),
            ..Activity::default()
        }),
        stopping: AtomicBool::new(false),
        jetstream: connection.jetstream.clone(),
        locks,
    });
    let result = connection.runtime.block_on(async {
        stderr!(
            "lorch worker: taking requests from {} ({} at a time); stop it with Ctrl-C or SIGTERM",
            connection.url,
            shared.work.concurrency
        );
        let beating = tokio::spawn(heartbeat(Arc::clone(&shared)));
        pull(&consumer, &shared, &signals).await;
        beating.abort();
        // Gone from `queue status` at once, not a minute later; a server that is gone does not
        // hold the worker (its heartbeat then expires by itself).
        let connected = shared.jetstream.client().connection_state()
            == async_nats::connection::State::Connected;
        if connected {
            let purge = heartbeats.purge().filter(shared.heartbeat_subject());
            let _ = tokio::time::timeout(Duration::from_secs(2), purge).await;
        }
        anyhow::Ok(())
    });
    result.map_err(unreachable)?;
    // A stop asked for and carried out is a success: what was not done is queued again.
    Ok(Exit::Success)
}

/// Takes requests, at most `concurrency` at a time, until a signal; then lets the runs in
/// progress end within the grace period, stops the rest (their requests are not acked, so
/// another worker takes them), and waits for them.
async fn pull(
    consumer: &async_nats::jetstream::consumer::PullConsumer,
    shared: &Arc<Shared>,
    signals: &Signals,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(shared.work.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let stopped = async {
        while signals.received().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::pin!(stopped);
    loop {
        while tasks.try_join_next().is_some() {}
        // Every slot busy: wait for one, or for a stop (which starts the grace period now).
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit,
            () = &mut stopped => break,
        };
        let Ok(permit) = permit else { break };
        if signals.received().is_some() {
            break;
        }
        // Raced with a stop: a server that went away leaves these waiting for it.
        let batch = tokio::select! {
            batch = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_millis(500))
                .messages() => batch,
            () = &mut stopped => break,
        };
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!("cannot take requests: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let next = tokio::select! {
            next = batch.next() => next,
            () = &mut stopped => break,
        };
        if let Some(message) = next {
            match message {
                Ok(message) => {
                    let shared = Arc::clone(shared);
                    tasks.spawn(async move {
                        handle(&shared, message).await;
                        drop(permit);
                    });
                }
                Err(e) => tracing::warn!("cannot take a request: {e}"),
            }
        }
    }
    shared.stopping.store(true, Ordering::SeqCst);
    stderr!(
        "lorch worker: stopping; {} runs in progress get {} to end",
        tasks.len(),
        humantime::format_duration(shared.work.grace)
    );
    let ended = tokio::time::timeout(shared.work.grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if ended.is_err() {
        for running in shared.activity().running.values() {
            let _ = crate::sys::kill(running.pid, libc::SIGTERM);
        }
        // The runs end (recorded as cancelled) within their kill-after; what is left waits on
        // the server (an acknowledgement), which hands its requests to another worker anyway.
        let wound_up = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if wound_up.is_err() {
            tasks.abort_all();
        }
    }
}

/// What became of one request.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Done: completed, or failed for good (a permanent failure).
    Ack,
    /// Again later, after this long (a failure that may not happen again).
    Again(Duration),
    /// Its worker was stopped: for another worker, now.
    Stopped,
    /// Never: to the dead letters, with this reason.
    Dead(String),
}

/// Runs one request as `lorch run-job`, telling the server it is in progress meanwhile, then
/// acks it, hands it back or sends it to the dead letters.
async fn handle(shared: &Shared, message: Message) {
    let delivered = message.info().map_or(1, |i| i.delivered);
    let request: Request = match serde_json::from_slice(&message.payload) {
        Ok(request) => request,
        Err(e) => {
            let reason = format!("not a lorch run request: {e}");
            stderr!("✗ a message on {} is {reason}", message.subject);
            dead_letter(shared, &message, None, delivered, &reason).await;
            return;
        }
    };
    let id = format!("{}/{}", request.package, request.job);
    let lock = match FleetLock::take(shared, &message, &request).await {
        Taken::Held(lock) => lock,
        // An earlier delivery of this very request still runs (its progress reached the server
        // late): that run acks it; meanwhile it is not run again.
        Taken::Ours => {
            let _ = message.ack_with(AckKind::Nak(Some(shared.ack_wait))).await;
            return;
        }
        Taken::Busy(holder) => {
            let why = format!("{id} is running elsewhere ({holder})");
            requeue(shared, &message, &request, &why).await;
            return;
        }
    };
    // A stop came while it waited for its slot or its lock: back, untouched.
    if shared.stopping.load(Ordering::SeqCst) {
        if let Some(lock) = lock {
            lock.release().await;
        }
        let _ = message.ack_with(AckKind::Nak(None)).await;
        return;
    }
    let ran = run(shared, &message, &request).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    let ended = match ran {
        Ok(ended) => ended,
        Err(e) => {
            stderr!("✗ {id} request {}: {e:#}", request.request_id);
            Ended {
                outcome: ChildOutcome::Broken,
                summary: None,
                exit: format!("{e:#}"),
            }
        }
    };
    if let Some(summary) = &ended.summary {
        publish_events(shared, &summary.run_id).await;
    }
    // This machine's lock of the job is held by a run not from this queue (cron's): later.
    if ended.outcome == ChildOutcome::Locked {
        wait_in_progress(&message, LOCK_WAIT, shared.ack_wait).await;
        let why = "its job lock is held by another run on this machine";
        requeue(shared, &message, &request, why).await;
        return;
    }
    let last = delivered >= shared.work.max_deliver;
    let verdict = verdict(&ended, delivered, last);
    settle_request(shared, &message, &request, delivered, &ended, verdict).await;
}

/// How a request's `run-job` ended.
struct Ended {
    outcome: ChildOutcome,
    summary: Option<RunSummary>,
    /// `exit 3`, `killed by SIGKILL`, or why it could not be started, for messages.
    exit: String,
}

/// Tells the server what became of the request, and says so.
async fn settle_request(
    shared: &Shared,
    message: &Message,
    request: &Request,
    delivered: i64,
    ended: &Ended,
    verdict: Verdict,
) {
    let id = format!("{}/{}", request.package, request.job);
    let summary = ended.summary.as_ref();
    let run = summary.map_or("-", |s| s.run_id.as_str());
    let request_id = &request.request_id;
    let completed = summary.is_some_and(|s| s.status == RunStatus::Completed);
    match completed {
        true => shared.activity().completed += 1,
        false => shared.activity().failed += 1,
    }
    match verdict {
        Verdict::Ack => {
            settle(message, AckKind::Ack, request_id).await;
            let status = summary.map_or(RunStatus::Completed, |s| s.status);
            let mark = if completed { "✓" } else { "✗" };
            let line = format!("{mark} {id} request {request_id}: {status} (run {run})\n");
            output::print(&line).ok();
        }
        Verdict::Again(delay) => {
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            stderr!(
                "✗ {id} request {request_id}: {} (run {run}); delivery {delivered} of {}, again in {}",
                ended.exit,
                shared.work.max_deliver,
                output::round_duration(delay)
            );
        }
        // On its last delivery, a fresh message: the stop is not the request's failure.
        Verdict::Stopped if delivered >= shared.work.max_deliver => {
            requeue(shared, message, request, "its worker was stopped").await;
        }
        Verdict::Stopped => {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
        Verdict::Dead(reason) => {
            stderr!("✗ {id} request {request_id}: {reason}; sent to the dead letters");
            dead_letter(shared, message, Some(request), delivered, &reason).await;
        }
    }
}

/// Holds the request for `wait`, telling the server it is in progress.
async fn wait_in_progress(message: &Message, wait: Duration, ack_wait: Duration) {
    let until = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < until {
        let _ = message.ack_with(AckKind::Progress).await;
        tokio::time::sleep((ack_wait / 3).min(until - tokio::time::Instant::now())).await;
    }
}

/// Publishes the events of the run `run_id`, as this machine's store has them, to the fleet's
/// events stream (`lorch events follow`); each once, by its event id. A failure is a warning:
/// the events stay in the store.
async fn publish_events(shared: &Shared, run_id: &str) {
    let published = async {
        // The store may wait for another process's transaction: not on the runtime's thread,
        // which sends every run's progress.
        let run = run_id.to_owned();
        let events = tokio::task::spawn_blocking(move || {
            let store = crate::events::LocalStore::open_in(&super::lorch_home()?)?;
            store.list(&crate::events::EventFilter {
                run_id: Some(run),
                limit: None,
            })
        })
        .await??;
        for event in &events {
            let subject = fleet::event_subject(&event.event_type);
            let payload = serde_json::to_vec(event)?;
            publish_once(
                &shared.jetstream,
                subject,
                &event.event_id,
                HeaderMap::new(),
                payload,
            )
            .await?;
        }
        anyhow::Ok(())
    };
    if let Err(e) = published.await {
        stderr!("warning: the events of run {run_id} are not in the fleet's event stream: {e:#}");
    }
}

/// The verdict of a request's `run-job` on delivery `delivered`; `last`: no delivery is left.
/// A run that completed is not run again, even one that could not record everything (exit 3),
/// nor one whose job said its failure is permanent.
fn verdict(ended: &Ended, delivered: i64, last: bool) -> Verdict {
    let backoff = crate::backoff::delay(Duration::from_secs(1), delivered.max(1) as u32);
    let reason = || {
        let message = ended.summary.as_ref().and_then(|s| s.message.clone());
        message.unwrap_or_else(|| format!("run-job: {}", ended.exit))
    };
    match ended.outcome {
        ChildOutcome::Done | ChildOutcome::Failed { retryable: false } => Verdict::Ack,
        // The worker was stopped (its SIGTERM, or Ctrl-C).
        ChildOutcome::Stopped => Verdict::Stopped,
        _ if last => Verdict::Dead(format!("failed {delivered} times: {}", reason())),
        _ => Verdict::Again(backoff),
    }
}

/// `lorch run-job` of the request, to its end, with progress sent every third of the ack wait.
async fn run(shared: &Shared, message: &Message, request: &Request) -> anyhow::Result<Ended> {
    let id = format!("{}/{}", request.package, request.job);
    let mut command = shared.run_job(request)?;
    // A process group of its own: a Ctrl-C at the worker's terminal (or a stop of its whole
    // control group) reaches the worker, which gives the run its grace period.
    command
        .arg("--json")
        .stdout(Stdio::piped())
        .process_group(0);
    crate::sys::die_with_parent(&mut command);
    let child = command.spawn()?;
    let running = Running {
        job: id,
        since: crate::timearg::micros(&chrono::Utc::now()),
        pid: child.id(),
    };
    shared
        .activity()
        .running
        .insert(request.request_id.clone(), running);
    beat(shared).await;
    let mut waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    let every = shared.ack_wait / 3;
    let output = loop {
        tokio::select! {
            output = &mut waiting => break output,
            () = tokio::time::sleep(every) => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    };
    shared.activity().running.remove(&request.request_id);
    beat(shared).await;
    let output = output??;
    let summary = RunSummary::read(&output.stdout);
    Ok(Ended {
        outcome: ChildOutcome::of(output.status, summary.as_ref()),
        summary,
        exit: match (output.status.code(), output.status.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (_, signal) => format!(
                "killed by {}",
                crate::sys::signal_name(signal.unwrap_or_default())
            ),
        },
    })
}

/// How long a worker waits for a job lock another worker holds before it puts the request back
/// at the end of the queue, for any worker to take again.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// A job and account's fleet-wide lock, renewed while held (docs/fleet.md).
struct FleetLock {
    locks: stream::Stream,
    /// The sequence of the lock's message: the newest renewal's.
    sequence: Arc<AtomicU64>,
    stop: tokio::sync::oneshot::Sender<()>,
    renewing: tokio::task::JoinHandle<()>,
}

enum Taken {
    /// Held; `None` when the fleet has no lock stream.
    Held(Option<Box<FleetLock>>),
    /// Held by an earlier delivery of this same request, still running.
    Ours,
    /// Held by another worker, said as its holder.
    Busy(String),
}

/// Who holds a lock: the lock message's payload.
#[derive(serde::Serialize, serde::Deserialize)]
struct Holder {
    request_id: String,
    host: String,
    pid: u32,
}

impl FleetLock {
    /// Takes the request's job lock, waiting up to [`LOCK_WAIT`] for another worker's run.
    async fn take(shared: &Shared, message: &Message, request: &Request) -> Taken {
        let Some(locks) = &shared.locks else {
            return Taken::Held(None);
        };
        let subject = fleet::lock_key(&request.package, &request.job, request.account.as_deref());
        let holder = serde_json::to_vec(&Holder {
            request_id: request.request_id.clone(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
        })
        .expect("JSON");
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match publish_after(&shared.jetstream, &subject, &holder, 0).await {
                Ok(sequence) => {
                    let lock = FleetLock::renewed(shared, locks, subject, holder, sequence);
                    return Taken::Held(Some(Box::new(lock)));
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {}
                Err(e) => {
                    stderr!(
                        "warning: cannot take the fleet-wide lock {subject} ({e}); request {} runs with this machine's lock only",
                        request.request_id
                    );
                    return Taken::Held(None);
                }
            }
            let held = locks.get_last_raw_message_by_subject(&subject).await;
            let held = held
                .ok()
                .and_then(|m| serde_json::from_slice::<Holder>(&m.payload).ok());
            if held
                .as_ref()
                .is_some_and(|h| h.request_id == request.request_id)
            {
                return Taken::Ours;
            }
            if tokio::time::Instant::now() >= deadline {
                let holder = held.map_or_else(
                    || "?".to_owned(),
                    |h| format!("request {} on {}, pid {}", h.request_id, h.host, h.pid),
                );
                return Taken::Busy(holder);
            }
            let _ = message.ack_with(AckKind::Progress).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Renews the lock every third of its lifetime while the run goes on. A renewal that finds
    /// the lock gone (the server was away longer than its lifetime) takes it again if it is
    /// free, and says so loudly if another worker took it.
    fn renewed(
        shared: &Shared,
        locks: &stream::Stream,
        subject: String,
        holder: Vec<u8>,
        sequence: u64,
    ) -> FleetLock {
        let sequence = Arc::new(AtomicU64::new(sequence));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let renewing = {
            let (jetstream, sequence) = (shared.jetstream.clone(), Arc::clone(&sequence));
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        () = tokio::time::sleep(fleet::LOCK_TTL / 3) => {}
                    }
                    let last = sequence.load(Ordering::SeqCst);
                    let renewed = match publish_after(&jetstream, &subject, &holder, last).await {
                        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                            publish_after(&jetstream, &subject, &holder, 0).await
                        }
                        renewed => renewed,
                    };
                    match renewed {
                        Ok(next) => sequence.store(next, Ordering::SeqCst),
                        Err(e) => stderr!(
                            "warning: cannot renew the fleet-wide lock {subject} ({e}): another worker may run the same job and account meanwhile"
                        ),
                    }
                }
            })
        };
        FleetLock {
            locks: locks.clone(),
            sequence,
            stop,
            renewing,
        }
    }

    /// Lets go, once no renewal is under way: deletes its message (gone already when it
    /// expired and another worker took it).
    async fn release(self) {
        let _ = self.stop.send(());
        let _ = self.renewing.await;
        let _ = self
            .locks
            .delete_message(self.sequence.load(Ordering::SeqCst))
            .await;
    }
}

/// Publishes `holder` on `subject` if its last message is `after` (0: it has none); the new
/// message's sequence.
async fn publish_after(
    jetstream: &async_nats::jetstream::Context,
    subject: &str,
    holder: &[u8],
    after: u64,
) -> std::result::Result<u64, PublishError> {
    let message = PublishMessage::build()
        .payload(holder.to_vec().into())
        .expected_last_subject_sequence(after);
    let ack = jetstream
        .send_publish(subject.to_owned(), message)
        .await?
        .await?;
    Ok(ack.sequence)
}

/// Publishes `payload` on `subject` with these headers and `id` as its `Nats-Msg-Id`, and
/// waits for the server to store it (once: a repeated id within two minutes is stored once).
async fn publish_once(
    jetstream: &async_nats::jetstream::Context,
    subject: String,
    id: &str,
    mut headers: HeaderMap,
    payload: Vec<u8>,
) -> anyhow::Result<async_nats::jetstream::publish::PublishAck> {
    headers.insert("Nats-Msg-Id", id);
    Ok(jetstream
        .publish_with_headers(subject, headers, payload.into())
        .await?
        .await?)
}

/// Puts the request back at the end of the queue (a new message: the wait does not count as a
/// delivery), then acks this one.
async fn requeue(shared: &Shared, message: &Message, request: &Request, why: &str) {
    let sequence = message.info().map_or(0, |i| i.stream_sequence);
    let id = format!("{}.requeued.{sequence}", request.request_id);
    let payload = message.payload.to_vec();
    let published = publish_once(
        &shared.jetstream,
        request.subject(),
        &id,
        HeaderMap::new(),
        payload,
    );
    match published.await {
        Ok(_) => {
            stderr!(
                "- {}/{} request {}: {why}; queued again",
                request.package,
                request.job,
                request.request_id
            );
            settle(message, AckKind::Ack, &request.request_id).await;
        }
        Err(e) => {
            stderr!(
                "warning: cannot queue request {} again ({e:#}); it is delivered again later",
                request.request_id
            );
            let _ = message.ack_with(AckKind::Nak(Some(LOCK_WAIT))).await;
        }
    }
}

/// How long a worker keeps trying to tell the server a request is done, through a server
/// restart: a request whose ack is lost runs again once its ack wait is over.
const SETTLE_FOR: Duration = Duration::from_secs(60);

/// Acks (or terminates) the message and waits for the server to confirm it, trying again while
/// the server is unreachable; said on stderr when it cannot.
async fn settle(message: &Message, kind: AckKind, request_id: &str) {
    let deadline = tokio::time::Instant::now() + SETTLE_FOR;
    let mut attempt = 1;
    loop {
        match message.double_ack_with(kind).await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                stderr!(
                    "warning: the server did not confirm that request {request_id} is done ({e}); it may run again"
                );
                return;
            }
            Err(_) => {
                tokio::time::sleep(crate::backoff::delay(Duration::from_millis(200), attempt))
                    .await;
                attempt += 1;
            }
        }
    }
}

/// Terminates the message and publishes it to the dead letters with the reason.
async fn dead_letter(
    shared: &Shared,
    message: &Message,
    request: Option<&Request>,
    delivered: i64,
    reason: &str,
) {
    let subject = request.map_or_else(
        || "lorch.dead.unknown.unknown".to_owned(),
        Request::dead_subject,
    );
    let mut headers = HeaderMap::new();
    headers.insert(fleet::REASON_HEADER, reason);
    headers.insert(fleet::DELIVERIES_HEADER, delivered.to_string().as_str());
    // Its message's sequence: the same request dead again (after `queue dead --retry`) is a new
    // dead letter, not a duplicate.
    let sequence = message.info().map_or(0, |i| i.stream_sequence);
    let request_id = request.map_or("", |r| r.request_id.as_str());
    if request.is_some() {
        headers.insert(fleet::REQUEST_HEADER, request_id);
    }
    let id = format!("{request_id}.dead.{sequence}");
    let payload = message.payload.to_vec();
    match publish_once(&shared.jetstream, subject, &id, headers, payload).await {
        // Only once it is a dead letter does the request leave the queue.
        Ok(_) => settle(message, AckKind::Term, request_id).await,
        Err(e) => {
            stderr!("warning: cannot publish a dead letter ({e:#}); the request stays queued");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
        }
    }
}

/// A dead letter, as `queue status` and `queue dead` show it.
#[derive(serde::Serialize)]
struct Dead {
    sequence: u64,
    request_id: Option<String>,
    job: String,
    deliveries: Option<String>,
    reason: Option<String>,
    dead_at: String,
}

/// Every dead letter, oldest first.
async fn dead_letters(connection: &Connection) -> anyhow::Result<Vec<Dead>> {
    let mut stream = connection.dead_stream().await?;
    let state = stream.info().await?.state.clone();
    let mut dead = Vec::new();
    if state.messages == 0 {
        return Ok(dead);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue; // deleted
        };
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
        let job = message
            .subject
            .strip_prefix("lorch.dead.")
            .unwrap_or(&message.subject)
            .replacen('.', "/", 1);
        dead.push(Dead {
            sequence,
            request_id: header(fleet::REQUEST_HEADER),
            job,
            deliveries: header(fleet::DELIVERIES_HEADER),
            reason: header(fleet::REASON_HEADER),
            dead_at: chrono::DateTime::from_timestamp_nanos(
                i64::try_from(message.time.unix_timestamp_nanos()).unwrap_or_default(),
            )
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
    }
    Ok(dead)
}

/// Every live worker's last heartbeat.
async fn workers(connection: &Connection) -> anyhow::Result<Vec<Activity>> {
    let stream = connection.workers_stream().await?;
    let subjects = stream.info_with_subjects("lorch.workers.>").await?;
    futures_util::pin_mut!(subjects);
    let mut workers = Vec::new();
    while let Some(entry) = subjects.next().await {
        let (subject, _) = entry?;
        if let Ok(message) = stream.get_last_raw_message_by_subject(&subject).await
            && let Ok(activity) = serde_json::from_slice::<Activity>(&message.payload)
        {
            workers.push(activity);
        }
    }
    workers.sort_by(|a, b| a.worker.cmp(&b.worker));
    Ok(workers)
}

/// `lorch queue status [--json]`: requests queued per job, in progress, redelivered, the
/// workers and what they run, and the dead letters.
pub fn status(nats: Option<&str>, json: bool) -> Result<Exit> {
    let connection = fleet::connect(nats).map_err(unreachable)?;
    let found = connection.runtime.block_on(async {
        let stream = connection.jobs_stream().await?;
        let subjects = stream.info_with_subjects("lorch.jobs.>").await?;
        // A request stays in the stream until it is acknowledged: waiting or in progress.
        let mut queued = BTreeMap::new();
        futures_util::pin_mut!(subjects);
        while let Some(entry) = subjects.next().await {
            let (subject, count) = entry?;
            let job = subject
                .strip_prefix("lorch.jobs.")
                .unwrap_or(&subject)
                .replacen('.', "/", 1);
            queued.insert(job, count);
        }
        // Every group of workers' consumer (`worker --jobs`).
        let (mut in_progress, mut redelivered) = (0, 0);
        let consumers = stream.consumers();
        futures_util::pin_mut!(consumers);
        while let Some(info) = consumers.next().await {
            let info = info?;
            in_progress += info.num_ack_pending;
            redelivered += info.num_redelivered;
        }
        let dead = dead_letters(&connection).await?;
        let workers = workers(&connection).await?;
        let version = connection.jetstream.client().server_info().version;
        let storage = stream.cached_info().config.storage;
        let warnings = fleet::durability_warnings(&version, storage);
        anyhow::Ok((queued, in_progress, redelivered, dead, workers, warnings))
    });
    let (queued, in_progress, redelivered, dead, workers, warnings) = found.map_err(unreachable)?;
    if json {
        output::print_json(&json!({
            "server": connection.url,
            "warnings": warnings,
            "queued": queued,
            "in_progress": in_progress,
            "redelivered": redelivered,
            "workers": workers,
            "dead": dead,
        }))?;
        return Ok(Exit::Success);
    }
    for warning in &warnings {
        stderr!("warning: {warning}");
    }
    let mut text = format!(
        "{}: {} requests queued, {in_progress} of them in progress ({redelivered} redelivered); {} workers; {} dead letters\n",
        connection.url,
        queued.values().sum::<usize>(),
        workers.len(),
        dead.len()
    );
    if !workers.is_empty() {
        let rows: Vec<Vec<String>> = workers
            .iter()
            .map(|w| {
                let running: Vec<String> = w
                    .running
                    .iter()
                    .map(|(id, r)| format!("{} ({id})", r.job))
                    .collect();
                vec![
                    w.worker.clone(),
                    if running.is_empty() {
                        "-".to_owned()
                    } else {
                        running.join(", ")
                    },
                    w.completed.to_string(),
                    w.failed.to_string(),
                    w.seen_at
                        .get(..19)
                        .map_or_else(String::new, |t| format!("{t}Z")),
                ]
            })
            .collect();
        text.push_str(&output::table(
            &["WORKER", "RUNNING", "COMPLETED", "FAILED", "SEEN"],
            &rows,
        ));
    }
    if !queued.is_empty() {
        let rows: Vec<Vec<String>> = queued
            .iter()
            .map(|(job, n)| vec![job.clone(), n.to_string()])
            .collect();
        text.push_str(&output::table(&["JOB", "QUEUED"], &rows));
    }
    text.push_str(&dead_table(&dead));
    output::print(&text)?;
    Ok(Exit::Success)
}

fn dead_table(dead: &[Dead]) -> String {
    if dead.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = dead
        .iter()
        .map(|d| {
            vec![
                d.request_id
                    .clone()
                    .unwrap_or_else(|| format!("#{}", d.sequence)),
                d.job.clone(),
                d.deliveries.clone().unwrap_or_default(),
                d.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(&["DEAD REQUEST", "JOB", "DELIVERIES", "REASON"], &rows)
}

/// `lorch queue dead [--retry ID | --drop ID] [--json]`.
pub fn dead(
    nats: Option<&str>,
    retry: Option<&str>,
    drop: Option<&str>,
    json: bool,
) -> Result<Exit> {
    let connection = fleet::connect(nats).map_err(unreachable)?;
    let Some(id) = retry.or(drop) else {
        let dead = connection
            .runtime
            .block_on(dead_letters(&connection))
            .map_err(unreachable)?;
        match json {
            true => output::print_json(&json!({ "dead": dead }))?,
            false if dead.is_empty() => stderr!("no dead letters on {}", connection.url),
            false => output::print(&dead_table(&dead))?,
        }
        return Ok(Exit::Success);
    };
    let done = connection.runtime.block_on(async {
        let dead = dead_letters(&connection).await?;
        let Some(letter) = dead
            .iter()
            .find(|d| d.request_id.as_deref() == Some(id) || format!("#{}", d.sequence) == id)
        else {
            return Ok(None);
        };
        let stream = connection.dead_stream().await?;
        if retry.is_some() {
            let message = stream.get_raw_message(letter.sequence).await?;
            let request: Request = serde_json::from_slice(&message.payload).map_err(|_| {
                anyhow::anyhow!(
                    "dead letter {id} is not a lorch run request: it can only be dropped (--drop)"
                )
            })?;
            connection.jobs_stream().await?;
            let retry_id = format!("{}.retry.{}", request.request_id, letter.sequence);
            let payload = message.payload.to_vec();
            publish_once(
                &connection.jetstream,
                request.subject(),
                &retry_id,
                HeaderMap::new(),
                payload,
            )
            .await?;
        }
        stream.delete_message(letter.sequence).await?;
        anyhow::Ok(Some(letter.job.clone()))
    });
    match done.map_err(unreachable)? {
        None => Err(Error::Usage(format!(
            "no dead letter {id} on {}; `lorch queue dead` lists them",
            connection.url
        ))),
        Some(job) => {
            let what = if retry.is_some() {
                "queued again"
            } else {
                "dropped"
            };
            output::print(&format!("{id} ({job}): {what}\n"))?;
            Ok(Exit::Success)
        }
    }
}

/// `lorch events follow [--all] [--json]`: the fleet's events as workers publish them, one a
/// line, until Ctrl-C.
pub fn follow(nats: Option<&str>, all: bool, json: bool) -> Result<Exit> {
    let connection = fleet::connect(nats).map_err(unreachable)?;
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    let followed = connection.runtime.block_on(async {
        let stream = connection.events_stream().await?;
        let mut out = output::Stream::new(json);
        let mut from = match all {
            true => DeliverPolicy::All,
            false => DeliverPolicy::New,
        };
        // A server restart ends the consumer: a new one goes on after the last event printed.
        loop {
            let consumer = stream.create_consumer(OrderedConfig {
                deliver_policy: from,
                ..Default::default()
            });
            let messages = match consumer.await {
                Ok(consumer) => consumer.messages().await.map_err(anyhow::Error::new),
                Err(e) => Err(anyhow::Error::new(e)),
            };
            let Ok(mut messages) = messages else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            while let Some(Ok(message)) = messages.next().await {
                if let Ok(info) = message.info() {
                    from = DeliverPolicy::ByStartSequence {
                        start_sequence: info.stream_sequence + 1,
                    };
                }
                let Ok(event) = serde_json::from_slice::<crate::events::Event>(&message.payload)
                else {
                    continue;
                };
                let line = match json {
                    true => format!("{}\n", serde_json::to_string(&event)?),
                    false => super::format_event(&event, 14),
                };
                if !out.write(&line)? || !out.flush()? {
                    return anyhow::Ok(());
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    followed.map_err(unreachable)?;
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_or_permanent_run_is_done_a_stopped_one_handed_back() {
        let ended = |outcome, message: Option<&str>| Ended {
            outcome,
            summary: message.map(|m| RunSummary {
                run_id: "r".into(),
                package: "p".into(),
                job: "j".into(),
                status: RunStatus::Failed,
                reason: None,
                message: Some(m.into()),
                attempts: 1,
                duration_ms: 1,
                events_not_recorded: 0,
                objects: Default::default(),
                exit_code: 1,
                retryable: true,
            }),
            exit: "exit 2".into(),
        };
        let again = ChildOutcome::Failed { retryable: true };
        assert_eq!(
            verdict(&ended(ChildOutcome::Done, None), 1, false),
            Verdict::Ack
        );
        let permanent = ChildOutcome::Failed { retryable: false };
        assert_eq!(verdict(&ended(permanent, None), 1, false), Verdict::Ack);
        assert!(matches!(
            verdict(&ended(again, Some("boom")), 2, false),
            Verdict::Again(_)
        ));
        assert_eq!(
            verdict(&ended(again, Some("boom")), 5, true),
            Verdict::Dead("failed 5 times: boom".into())
        );
        assert_eq!(
            verdict(&ended(ChildOutcome::Stopped, Some("boom")), 5, true),
            Verdict::Stopped
        );
        // No summary at all (run-job could not start): how it exited.
        assert_eq!(
            verdict(&ended(ChildOutcome::Refused, None), 3, true),
            Verdict::Dead("failed 3 times: run-job: exit 2".into())
        );
    }
}
