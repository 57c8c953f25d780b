//! `lorch submit`, `lorch worker` and `lorch queue`: runs on several machines through NATS
//! JetStream (docs/fleet.md). A worker runs each request as a `lorch run-job` of its own, so a
//! request runs exactly as it would from cron on that machine: supervised, recorded in the
//! worker's local store, delivered to BigQuery when configured.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{AckKind, Message, stream};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use super::Passed;
use crate::cli::RunOptions;
use crate::error::{Error, Exit, Result};
use crate::fleet::{self, Connection, Request};
use crate::output::{self, stderr};
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
    let request = request(catalog, submit)?;
    let connection = fleet::connect(submit.nats).map_err(unreachable)?;
    let ack = connection.runtime.block_on(async {
        connection.jobs_stream().await?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", request.request_id.as_str());
        let payload = serde_json::to_vec(&request)?;
        let ack = connection
            .jetstream
            .publish_with_headers(request.subject(), headers, payload.into())
            .await?
            .await?;
        anyhow::Ok(ack)
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
        .filter(|(p, j)| !p.is_empty() && !j.is_empty())
    else {
        return Err(Error::Usage(format!(
            "invalid job '{}': expected PACKAGE/JOB",
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
        crate::timearg::window(since, options.until.as_deref(), now).map_err(Error::Usage)?;
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
        initial_since: options.initial_since.clone(),
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
    pub grace: Duration,
}

/// What the worker's tasks share.
struct Shared {
    work: Work,
    /// The worker's global flags, passed on to each `run-job`.
    config: Option<std::path::PathBuf>,
    plugin_path: Vec<std::path::PathBuf>,
    allow_insecure_plugins: bool,
    /// The process ids of the runs in progress, to pass a stop on to.
    running: Mutex<BTreeMap<String, u32>>,
    jetstream: async_nats::jetstream::Context,
    /// The fleet-wide job locks; `None` when the server would not give the stream (said once).
    locks: Option<stream::Stream>,
}

impl Shared {
    /// `lorch [the worker's global flags] run-job PACKAGE JOB`.
    fn run_job(&self, id: &str) -> Result<std::process::Command> {
        Passed {
            config: self.config.as_deref(),
            plugin_path: &self.plugin_path,
            allow_insecure_plugins: self.allow_insecure_plugins,
            quiet: false,
        }
        .run_job(id)
    }
}

pub fn worker(passed: &Passed, work: Work) -> Result<Exit> {
    let connection = fleet::connect(work.nats.as_deref()).map_err(unreachable)?;
    let signals = Signals::install()
        .map_err(|e| Error::Environment(anyhow::Error::new(e).context("cannot catch signals")))?;
    let locks = connection.runtime.block_on(connection.locks());
    let locks = locks
        .map_err(|e| {
            stderr!("warning: {e:#}; each run takes only its machine's job lock");
        })
        .ok();
    let shared = Arc::new(Shared {
        work,
        config: passed.config.map(std::path::Path::to_path_buf),
        plugin_path: passed.plugin_path.to_vec(),
        allow_insecure_plugins: passed.allow_insecure_plugins,
        running: Mutex::default(),
        jetstream: connection.jetstream.clone(),
        locks,
    });
    let result = connection.runtime.block_on(async {
        let stream = connection.jobs_stream().await?;
        connection.dead_stream().await?;
        connection.events_stream().await?;
        let consumer = connection
            .workers(&stream, shared.work.max_deliver, shared.work.ack_wait)
            .await?;
        stderr!(
            "lorch worker: taking requests from {} ({} at a time); stop it with Ctrl-C or SIGTERM",
            connection.url,
            shared.work.concurrency
        );
        pull(&consumer, &shared, &signals).await;
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
    while signals.received().is_none() {
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!("cannot take requests: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Some(message) = batch.next().await {
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
        for pid in shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let _ = crate::sys::kill(*pid, libc::SIGTERM);
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// What became of one request.
enum Verdict {
    /// Done: completed, or failed for good (a permanent failure).
    Ack,
    /// Again later, after this long (a retryable failure, a held lock).
    Again(Duration),
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
        Taken::Busy(holder) => {
            let why = format!("{id} is running elsewhere ({holder})");
            requeue(shared, &message, &request, &why).await;
            return;
        }
    };
    let ran = run(shared, &message, &request).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    let (code, summary) = match ran {
        Ok(ended) => ended,
        Err(e) => {
            stderr!("✗ {id} request {}: {e:#}", request.request_id);
            (3, Value::Null)
        }
    };
    if let Some(run_id) = summary["run_id"].as_str() {
        publish_events(shared, run_id).await;
    }
    // This machine's lock of the job is held by a run not from this queue: later.
    if code == 75 {
        requeue(
            shared,
            &message,
            &request,
            "its job lock is held on this machine",
        )
        .await;
        return;
    }
    let last = delivered >= shared.work.max_deliver;
    let verdict = verdict(code, &summary, delivered, last);
    let run = summary["run_id"].as_str().unwrap_or("-");
    let request_id = &request.request_id;
    match verdict {
        Verdict::Ack => {
            settle(&message, AckKind::Ack).await;
            let status = summary["status"].as_str().unwrap_or("completed");
            output::print(&format!(
                "{} {id} request {request_id}: {status} (run {run})\n",
                if code == 0 { "✓" } else { "✗" }
            ))
            .ok();
        }
        Verdict::Again(delay) => {
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            stderr!(
                "✗ {id} request {request_id}: exit {code} (run {run}); delivery {delivered} of {}, again in {}",
                shared.work.max_deliver,
                output::round_duration(delay)
            );
        }
        Verdict::Dead(reason) => {
            stderr!("✗ {id} request {request_id}: {reason}; sent to the dead letters");
            dead_letter(shared, &message, Some(&request), delivered, &reason).await;
        }
    }
}

/// Publishes the events of the run `run_id`, as this machine's store has them, to the fleet's
/// events stream (`lorch events follow`); each once, by its event id. A failure is a warning:
/// the events stay in the store.
async fn publish_events(shared: &Shared, run_id: &str) {
    let published = async {
        let store = crate::events::LocalStore::open_in(&super::lorch_home()?)?;
        let events = store.list(&crate::events::EventFilter {
            run_id: Some(run_id.to_owned()),
            limit: None,
        })?;
        let mut acks = Vec::new();
        for event in &events {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.event_id.as_str());
            let payload = serde_json::to_vec(event)?;
            let subject = fleet::event_subject(&event.event_type);
            acks.push(
                shared
                    .jetstream
                    .publish_with_headers(subject, headers, payload.into())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
        anyhow::Ok(())
    };
    if let Err(e) = published.await {
        stderr!("warning: the events of run {run_id} are not in the fleet's event stream: {e:#}");
    }
}

/// The verdict of a `run-job` that exited `code` with this `--json` summary, on delivery
/// `delivered`; `last`: no delivery is left.
fn verdict(code: i32, summary: &Value, delivered: i64, last: bool) -> Verdict {
    let backoff = crate::backoff::delay(Duration::from_secs(1), delivered.max(1) as u32);
    let reason = || {
        summary["message"]
            .as_str()
            .map_or_else(|| format!("run-job exited {code}"), str::to_owned)
    };
    match code {
        0 => Verdict::Ack,
        1 if summary["retryable"] == Value::Bool(false) => Verdict::Ack,
        // The worker was stopped: another worker takes it now.
        130 | 143 => Verdict::Again(Duration::ZERO),
        _ if last => Verdict::Dead(format!("failed {delivered} times: {}", reason())),
        _ => Verdict::Again(backoff),
    }
}

/// `lorch run-job` of the request, to its end, with progress sent every third of the ack wait.
async fn run(
    shared: &Shared,
    message: &Message,
    request: &Request,
) -> anyhow::Result<(i32, Value)> {
    let id = format!("{}/{}", request.package, request.job);
    let mut command = shared.run_job(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
    command
        .args(request.run_job_args())
        .arg("--json")
        .stdout(Stdio::piped());
    crate::sys::die_with_parent(&mut command);
    let child = command.spawn()?;
    shared
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(request.request_id.clone(), child.id());
    let mut waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    let every = shared.work.ack_wait / 3;
    let output = loop {
        tokio::select! {
            output = &mut waiting => break output,
            () = tokio::time::sleep(every) => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    };
    shared
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&request.request_id);
    let output = output??;
    let summary = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    Ok((output.status.code().unwrap_or(3), summary))
}

/// How long a worker waits for a job lock another worker holds before it puts the request back
/// at the end of the queue, for any worker to take again.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// A job and account's fleet-wide lock, renewed while held (docs/fleet.md).
struct FleetLock {
    locks: stream::Stream,
    /// The sequence of the lock's message: the newest renewal's.
    sequence: Arc<AtomicU64>,
    renewing: tokio::task::JoinHandle<()>,
}

enum Taken {
    /// Held; `None` when the fleet has no lock stream.
    Held(Option<Box<FleetLock>>),
    /// Held by another worker, said as its holder.
    Busy(String),
}

impl FleetLock {
    /// Takes the request's job lock, waiting up to [`LOCK_WAIT`] for another worker's run.
    async fn take(shared: &Shared, message: &Message, request: &Request) -> Taken {
        let Some(locks) = &shared.locks else {
            return Taken::Held(None);
        };
        let subject = fleet::lock_key(&request.package, &request.job, request.account.as_deref());
        let holder = serde_json::to_vec(&json!({
            "request_id": request.request_id,
            "host": gethostname::gethostname().to_string_lossy(),
            "pid": std::process::id(),
        }))
        .expect("JSON");
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match publish_after(&shared.jetstream, &subject, &holder, 0).await {
                Ok(sequence) => {
                    return Taken::Held(Some(Box::new(FleetLock::renewed(
                        shared, locks, subject, holder, sequence,
                    ))));
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {}
                Err(e) => {
                    tracing::warn!(
                        "cannot take the fleet-wide lock {subject} ({e}); running with this machine's lock only"
                    );
                    return Taken::Held(None);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let held = locks.get_last_raw_message_by_subject(&subject).await;
                let holder = held.map_or_else(
                    |_| "?".to_owned(),
                    |m| String::from_utf8_lossy(&m.payload).into_owned(),
                );
                return Taken::Busy(holder);
            }
            let _ = message.ack_with(AckKind::Progress).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Renews the lock every third of its lifetime while the run goes on.
    fn renewed(
        shared: &Shared,
        locks: &stream::Stream,
        subject: String,
        holder: Vec<u8>,
        sequence: u64,
    ) -> FleetLock {
        let sequence = Arc::new(AtomicU64::new(sequence));
        let renewing = {
            let (jetstream, sequence) = (shared.jetstream.clone(), Arc::clone(&sequence));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(fleet::LOCK_TTL / 3).await;
                    let last = sequence.load(Ordering::SeqCst);
                    match publish_after(&jetstream, &subject, &holder, last).await {
                        Ok(next) => sequence.store(next, Ordering::SeqCst),
                        Err(e) => tracing::warn!("cannot renew the fleet-wide lock {subject}: {e}"),
                    }
                }
            })
        };
        FleetLock {
            locks: locks.clone(),
            sequence,
            renewing,
        }
    }

    /// Lets go: deletes its message (gone already when it expired and another worker took it).
    async fn release(self) {
        self.renewing.abort();
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

/// Puts the request back at the end of the queue (a new message: the wait does not count as a
/// delivery), then acks this one.
async fn requeue(shared: &Shared, message: &Message, request: &Request, why: &str) {
    let sequence = message.info().map_or(0, |i| i.stream_sequence);
    let mut headers = HeaderMap::new();
    let id = format!("{}.requeued.{sequence}", request.request_id);
    headers.insert("Nats-Msg-Id", id.as_str());
    let published = async {
        shared
            .jetstream
            .publish_with_headers(request.subject(), headers, message.payload.clone())
            .await?
            .await?;
        anyhow::Ok(())
    };
    match published.await {
        Ok(()) => {
            stderr!(
                "- {}/{} request {}: {why}; queued again",
                request.package,
                request.job,
                request.request_id
            );
            settle(message, AckKind::Ack).await;
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
async fn settle(message: &Message, kind: AckKind) {
    let deadline = tokio::time::Instant::now() + SETTLE_FOR;
    let mut attempt = 1;
    loop {
        match message.double_ack_with(kind).await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                stderr!(
                    "warning: the server did not confirm that request {} is done ({e}); it may run again",
                    message.subject
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
    if let Some(request) = request {
        headers.insert(fleet::REQUEST_HEADER, request.request_id.as_str());
        headers.insert(
            "Nats-Msg-Id",
            format!("{}.dead.{delivered}", request.request_id).as_str(),
        );
    }
    let published = async {
        shared
            .jetstream
            .publish_with_headers(subject, headers, message.payload.clone())
            .await?
            .await?;
        anyhow::Ok(())
    };
    match published.await {
        // Only once it is a dead letter does the request leave the queue.
        Ok(()) => settle(message, AckKind::Term).await,
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

/// `lorch queue status [--json]`: requests waiting per job, in progress, redelivered, and the
/// dead letters.
pub fn status(nats: Option<&str>, json: bool) -> Result<Exit> {
    let connection = fleet::connect(nats).map_err(unreachable)?;
    let found = connection.runtime.block_on(async {
        let stream = connection.jobs_stream().await?;
        let subjects = stream.info_with_subjects("lorch.jobs.>").await?;
        let mut waiting = BTreeMap::new();
        futures_util::pin_mut!(subjects);
        while let Some(entry) = subjects.next().await {
            let (subject, count) = entry?;
            let job = subject
                .strip_prefix("lorch.jobs.")
                .unwrap_or(&subject)
                .replacen('.', "/", 1);
            waiting.insert(job, count);
        }
        let consumer = stream.consumer_info(fleet::WORKERS).await.ok();
        let dead = dead_letters(&connection).await?;
        anyhow::Ok((waiting, consumer, dead))
    });
    let (waiting, consumer, dead) = found.map_err(unreachable)?;
    let in_progress = consumer.as_ref().map_or(0, |c| c.num_ack_pending);
    let redelivered = consumer.as_ref().map_or(0, |c| c.num_redelivered);
    if json {
        output::print_json(&json!({
            "server": connection.url,
            "waiting": waiting,
            "in_progress": in_progress,
            "redelivered": redelivered,
            "dead": dead,
        }))?;
        return Ok(Exit::Success);
    }
    let mut text = format!(
        "{}: {} requests waiting, {in_progress} in progress ({redelivered} redelivered), {} dead letters\n",
        connection.url,
        waiting.values().sum::<usize>(),
        dead.len()
    );
    if !waiting.is_empty() {
        let rows: Vec<Vec<String>> = waiting
            .iter()
            .map(|(job, n)| vec![job.clone(), n.to_string()])
            .collect();
        text.push_str(&output::table(&["JOB", "WAITING"], &rows));
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
            let request: Request = serde_json::from_slice(&message.payload)?;
            connection.jobs_stream().await?;
            let mut headers = HeaderMap::new();
            let retry_id = format!("{}.retry.{}", request.request_id, letter.sequence);
            headers.insert("Nats-Msg-Id", retry_id.as_str());
            connection
                .jetstream
                .publish_with_headers(request.subject(), headers, message.payload.clone())
                .await?
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
    let followed = connection.runtime.block_on(async {
        let stream = connection.events_stream().await?;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                deliver_policy: match all {
                    true => async_nats::jetstream::consumer::DeliverPolicy::All,
                    false => async_nats::jetstream::consumer::DeliverPolicy::New,
                },
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut out = output::Stream::new(json);
        while let Some(message) = messages.next().await {
            let message = message?;
            let Ok(event) = serde_json::from_slice::<crate::events::Event>(&message.payload) else {
                continue;
            };
            let line = match json {
                true => format!("{}\n", serde_json::to_string(&event)?),
                false => super::format_event(&event, 14),
            };
            if !out.write(&line)? || !out.flush()? {
                break;
            }
        }
        anyhow::Ok(())
    });
    followed.map_err(unreachable)?;
    Ok(Exit::Success)
}
