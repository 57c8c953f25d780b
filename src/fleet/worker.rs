//! The fleet worker (docs/fleet.md, `lorch worker`): takes requests from the queue, runs each
//! as a `lorch run-job` of its own (supervised, recorded in this machine's store), tells the
//! server it is in progress meanwhile, then acks it, hands it back or sends it to the dead
//! letters.

use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{AckKind, Message, stream};
use futures_util::StreamExt as _;

use crate::child::{ChildOutcome, Lorch, RunSummary};
use crate::error::{Error, Exit, Result};
use crate::fleet::{self, Request};
use crate::lifecycle::RunStatus;
use crate::output::{self, stderr};
use crate::signals::Signals;

use super::lock::{FleetLock, LOCK_WAIT, Taken};
use super::publish::{dead_letter, publish_once, requeue, settle};

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
pub struct Shared {
    pub work: Work,
    /// The consumer's ack wait: progress is sent every third of it.
    pub ack_wait: Duration,
    /// Set once a stop was asked for: a request that got a slot then goes back untouched.
    pub stopping: AtomicBool,
    /// The worker's global flags, passed on to each `run-job`.
    pub config: Option<std::path::PathBuf>,
    pub plugin_path: Vec<std::path::PathBuf>,
    pub allow_insecure_plugins: bool,
    /// What the worker is doing: its heartbeat, and the runs to pass a stop on to.
    pub activity: Mutex<Activity>,
    pub jetstream: async_nats::jetstream::Context,
    /// The fleet-wide job locks; `None` when the server would not give the stream (said once).
    pub locks: Option<stream::Stream>,
}

/// A worker's heartbeat (`queue status`): who it is, what it runs, what it did.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Activity {
    /// `HOST:PID`.
    pub worker: String,
    pub started_at: String,
    /// Requests in progress, by request id.
    pub running: BTreeMap<String, Running>,
    pub completed: u64,
    pub failed: u64,
    #[serde(default)]
    pub seen_at: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Running {
    pub job: String,
    pub since: String,
    /// The `run-job` process, to pass a stop on to.
    pub pid: u32,
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
        Lorch {
            config: self.config.as_deref(),
            plugin_path: &self.plugin_path,
            allow_insecure_plugins: self.allow_insecure_plugins,
            quiet: false,
        }
        .run_job(&id, &request.options()?)
    }
}

pub fn worker(lorch: &Lorch, work: Work) -> Result<Exit> {
    let connection = fleet::connect(work.nats.as_deref()).map_err(Error::Environment)?;
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
    let (consumer, heartbeats) = opened.map_err(Error::Environment)?;
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
        config: lorch.config.map(std::path::Path::to_path_buf),
        plugin_path: lorch.plugin_path.to_vec(),
        allow_insecure_plugins: lorch.allow_insecure_plugins,
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
    result.map_err(Error::Environment)?;
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
    pub outcome: ChildOutcome,
    pub summary: Option<RunSummary>,
    /// `exit 3`, `killed by SIGKILL`, or why it could not be started, for messages.
    pub exit: String,
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
            let store = crate::events::LocalStore::open_in(&crate::paths::home()?)?;
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
