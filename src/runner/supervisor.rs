//! The supervisor: runs one attempt in a worker process and turns whatever happens to it into
//! one outcome.
//!
//! The worker is lorch itself (`lorch __worker`), started in a process group of its own so that
//! a timeout or a signal reaches the job and everything it started. Events arrive over a shared
//! [`ring`](super::ring) as the job emits them and are stored at once, many to a transaction
//! when they come fast; the outcome comes from the worker's result message or, when there is
//! none (a crash, `exit`), from how the process ended. The job's stdout and stderr are pipes
//! read by [`capture`](super::capture), and with its logged lines make the run's log.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use lorch_plugin_api::abi::RunRequest;

use super::protocol::{self, CHANNEL_FD, Message, PLUGIN_FD, RING_FD, ROOM_FD, WorkerInput};
use super::{Failed, Reason, Tally};
use super::{capture, ring};
use crate::events::{Event, EventSink, Object};
use crate::host::CallResult;
use crate::plugins::Job;
use crate::runlog::{Stream, Writer};
use crate::signals::Signals;
use crate::{sys, timearg};

/// Time limits of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The attempt is stopped after this long.
    pub timeout: Option<Duration>,
    /// How long a stopped job gets between SIGTERM and SIGKILL.
    pub kill_after: Duration,
}

/// What the storing thread hears from the ring reader (and, at the end, from the supervisor).
enum Heard {
    /// Messages in the order the worker sent them.
    Messages(Vec<Message>),
    /// Something the channel carried that lorch could not read.
    Garbage(String),
    /// No more messages will come.
    ChannelClosed,
}

/// The most events and objects stored in one transaction.
const MAX_BATCH: usize = 4096;

/// What the storing thread found in the worker's messages.
#[derive(Default)]
struct Intake {
    result: Option<CallResult>,
    tally: Tally,
}

/// The storing thread's state: what it has heard, and the events not stored yet.
struct Storing<'a> {
    sink: &'a dyn EventSink,
    /// The run's log, for the lines the job logs.
    log: &'a Writer,
    /// The job's stdout and stderr, emptied before a logged line is kept.
    pipes: &'a capture::Pipes,
    /// The job's span, which its logged lines are shown in.
    span: tracing::Span,
    control: ring::Control,
    /// Set once the result arrived: the job returned, so no time-out or signal applies now.
    returned: &'a AtomicBool,
    pending: Vec<Event>,
    objects: Vec<Object>,
    intake: Intake,
    closed: bool,
}

impl Storing<'_> {
    /// Stores what arrives until the channel closes. A busy store makes this wait (the ring
    /// fills and the job's `emit` waits too); a store that fails makes the worker refuse
    /// further events, so the job learns of it.
    fn run(mut self, rx: &mpsc::Receiver<Heard>) -> Intake {
        while !self.closed {
            let Ok(first) = rx.recv() else { break };
            self.take(first, rx);
        }
        self.intake.tally.not_recorded += self.control.refused() as usize;
        self.intake
    }

    /// Takes `first` and whatever else has already arrived, then stores the events among them
    /// in one transaction (group commit): a job emitting fast gets large batches, a lone event
    /// is stored at once.
    fn take(&mut self, first: Heard, rx: &mpsc::Receiver<Heard>) {
        self.hear(first);
        while self.pending.len() + self.objects.len() < MAX_BATCH
            && !self.closed
            && let Ok(more) = rx.try_recv()
        {
            self.hear(more);
        }
        self.flush();
    }

    fn hear(&mut self, heard: Heard) {
        match heard {
            Heard::Messages(messages) => {
                for message in messages {
                    match message {
                        Message::Event(event) => self.pending.push(event),
                        Message::Object(object) => self.objects.push(object),
                        Message::Log { time, level, text } => {
                            self.pipes.catch_up(self.log);
                            self.span.in_scope(|| level.show(&text));
                            self.log.push(Stream::Log, Some(level), &text, time);
                        }
                        Message::Result(result) => {
                            self.intake.result = Some(result);
                            self.returned.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }
            // Most likely an event lorch could not read: counted, like any event not stored.
            Heard::Garbage(what) => {
                self.intake.tally.not_recorded += 1;
                tracing::error!("unreadable message from the job's worker, not recorded: {what}");
            }
            Heard::ChannelClosed => self.closed = true,
        }
    }

    fn flush(&mut self) {
        self.log.flush();
        let count = self.pending.len() + self.objects.len();
        if count == 0 {
            return;
        }
        match self.sink.store(&self.pending, &self.objects) {
            Ok(objects) => self.intake.tally.objects += objects,
            Err(e) => {
                self.intake.tally.not_recorded += count;
                self.control.refuse_events();
                let run = self.pending.first().map(|e| &e.correlation_id);
                let run = run.or(self.objects.first().map(|o| &o.correlation_id));
                tracing::error!(
                    "{} events and objects of run {} were not recorded: {e:#}",
                    count,
                    run.map_or("?", String::as_str)
                );
            }
        }
        self.pending.clear();
        self.objects.clear();
    }
}

/// Why the supervisor stopped the job.
#[derive(Clone, Copy)]
enum Stop {
    Timeout,
    Signal(i32),
}

/// What one attempt needs besides the job: shared by its steps.
struct Spec<'a> {
    limits: Limits,
    signals: &'a Signals,
    log: &'a Writer,
}

/// Runs one attempt of `job` in a worker and returns its outcome and what became of what it
/// sent.
pub fn run(
    job: &Job,
    request: &RunRequest,
    trace_id: Option<&str>,
    sink: &dyn EventSink,
    limits: Limits,
    signals: &Signals,
    log: &Writer,
) -> (super::Attempt, Tally) {
    let spec = Spec {
        limits,
        signals,
        log,
    };
    match supervise(job, request, trace_id, sink, &spec) {
        Ok(result) => result,
        Err(error) => (
            Err(Failed::new(
                Reason::Error,
                format!("cannot start the job's worker process: {error:#}"),
            )),
            Tally::default(),
        ),
    }
}

fn supervise(
    job: &Job,
    request: &RunRequest,
    trace_id: Option<&str>,
    sink: &dyn EventSink,
    spec: &Spec,
) -> anyhow::Result<(super::Attempt, Tally)> {
    let plugin = job.open_plugin().map_err(|why| anyhow::anyhow!(why))?;
    let (consumer, files) = ring::create()?;
    let control = consumer.control();
    let started = Instant::now();
    let mut child = spawn(&files, plugin.as_ref())?;
    // Only the worker holds its end now: the channel closes when the worker is gone.
    drop(files);
    let pgid = child.id();
    send_input(&mut child, job, request, trace_id)?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let pipes = capture::Pipes::new(stdout.into(), stderr.into())?;

    let returned = AtomicBool::new(false);
    let exited = Arc::new(AtomicBool::new(false));
    let give_up = AtomicBool::new(false);
    // Bounded: when the store falls behind, the reader stops reading, the ring fills and the
    // job's `emit` waits, instead of events piling up in lorch's memory. The reader is the only
    // sender, so everything it read reaches the storing thread before `ChannelClosed`.
    let (tx, rx) = mpsc::sync_channel(1);
    let (exit_tx, exit_rx) = mpsc::channel();
    let (stop, status, intake) = std::thread::scope(|scope| {
        // Dropped when the readers end: `drain` waits on it, not in naps (5 ms naps were a
        // third of a pipeline step's time, docs/performance.md).
        let (reader_alive, reader_ended) = mpsc::channel::<()>();
        {
            let exited = Arc::clone(&exited);
            let give_up = &give_up;
            let alive = reader_alive.clone();
            scope.spawn(move || {
                forward(consumer, tx, &exited, give_up);
                drop(alive);
            });
        }
        {
            let (give_up, pipes) = (&give_up, &pipes);
            scope.spawn(move || {
                pipes.capture(spec.log, give_up);
                drop(reader_alive);
            });
        }
        std::thread::spawn(move || {
            let status = child.wait().ok();
            exited.store(true, Ordering::SeqCst);
            let _ = exit_tx.send(status);
        });
        let storing = Storing {
            sink,
            log: spec.log,
            pipes: &pipes,
            span: crate::logging::job_span(request),
            control,
            returned: &returned,
            pending: Vec::new(),
            objects: Vec::new(),
            intake: Intake::default(),
            closed: false,
        };
        let stored = scope.spawn(move || storing.run(&rx));
        let (stop, status) = escalate(spec, pgid, started, &returned, &exit_rx);
        drain(pgid, &reader_ended, &give_up);
        let intake = stored.join().unwrap_or_default();
        pipes.finish(spec.log);
        (stop, status, intake)
    });
    let elapsed = started.elapsed();
    Ok((
        outcome(stop, intake.result, status, spec, elapsed),
        intake.tally,
    ))
}

/// Starts `lorch __worker` in a process group of its own, with its end of the ring and the
/// plugin file, already open and checked.
fn spawn(files: &ring::WorkerFiles, plugin: Option<&std::fs::File>) -> anyhow::Result<Child> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("__worker")
        // The job needs no NATS server, and its URL may hold a password (docs/fleet.md).
        .env_remove(crate::paths::NATS_URL_VAR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut fds = vec![
        (files.wake_reader.as_raw_fd(), CHANNEL_FD),
        (files.ring.as_raw_fd(), RING_FD),
        (files.room.as_raw_fd(), ROOM_FD),
    ];
    fds.extend(plugin.map(|file| (file.as_raw_fd(), PLUGIN_FD)));
    sys::pass_fds(&mut command, &fds);
    sys::die_with_parent(&mut command);
    sys::keep_starting_files_limit(&mut command);
    Ok(command.spawn()?)
}

/// Tells the worker what to run, on its stdin.
fn send_input(
    child: &mut Child,
    job: &Job,
    request: &RunRequest,
    trace_id: Option<&str>,
) -> anyhow::Result<()> {
    let input = WorkerInput {
        plugin: job.plugin_file().map(Into::into),
        request: request.clone(),
        trace_id: trace_id.map(Into::into),
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A worker that dies before reading its input is reported from its exit status.
    let _ = stdin.write_all(&serde_json::to_vec(&input)?);
    Ok(())
}

/// Until the worker exits: stops it on timeout or signal, SIGTERM first and SIGKILL after the
/// grace period, unless the job already returned. Returns why it was stopped, and how it ended.
fn escalate(
    spec: &Spec,
    pgid: u32,
    started: Instant,
    returned: &AtomicBool,
    exit_rx: &mpsc::Receiver<Option<ExitStatus>>,
) -> (Option<Stop>, Option<ExitStatus>) {
    let limits = spec.limits;
    let deadline = limits
        .timeout
        .map(|t| started.checked_add(t).unwrap_or(timearg::after(t)));
    let mut stop: Option<(Stop, Instant)> = None;
    let mut killed = false;
    loop {
        let now = Instant::now();
        if stop.is_none() && !returned.load(Ordering::SeqCst) {
            let reason = match (spec.signals.received(), deadline) {
                (Some(signal), _) => Some(Stop::Signal(signal)),
                (None, Some(deadline)) if now >= deadline => Some(Stop::Timeout),
                _ => None,
            };
            if let Some(reason) = reason {
                let _ = sys::kill_group(pgid, libc::SIGTERM);
                stop = Some((reason, timearg::after(limits.kill_after)));
            }
        } else if let Some((_, kill_at)) = stop
            && now >= kill_at
            && !killed
        {
            let _ = sys::kill_group(pgid, libc::SIGKILL);
            killed = true;
        }
        let next_check = match (stop, deadline) {
            (Some((_, kill_at)), _) if !killed => kill_at,
            (None, Some(deadline)) if !returned.load(Ordering::SeqCst) => deadline,
            _ => now + Duration::from_secs(3600),
        };
        // Signals are polled: wake at least every 50 ms to notice one.
        let wait = next_check
            .saturating_duration_since(now)
            .min(Duration::from_millis(50));
        match exit_rx.recv_timeout(wait) {
            Ok(status) => return (stop.map(|(why, _)| why), status),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return (stop.map(|(why, _)| why), None),
        }
    }
}

/// After the worker exited: whatever the job left in its process group goes with it, then the
/// readers pass on what is still in the ring and the pipes. The channel and the pipes close
/// once the worker and anything that inherited them are gone; a process that escaped the group
/// cannot hold lorch forever, so after 2 s without them closing the readers are told to stop
/// waiting for more: they pass on what was published, then close (the ring reader's batches
/// may still be waiting for a busy store, which they do, however long: nothing it read is
/// dropped).
fn drain(pgid: u32, reader_ended: &mpsc::Receiver<()>, give_up: &AtomicBool) {
    let _ = sys::kill_group(pgid, libc::SIGKILL);
    // Nothing is ever sent: this returns when the reader ends, or after 2 s.
    let _ = reader_ended.recv_timeout(Duration::from_secs(2));
    give_up.store(true, Ordering::SeqCst);
}

/// The attempt's outcome: why lorch stopped it, else what the job returned, else how its
/// process ended.
fn outcome(
    stop: Option<Stop>,
    result: Option<CallResult>,
    status: Option<ExitStatus>,
    spec: &Spec,
    elapsed: Duration,
) -> super::Attempt {
    match (stop, result) {
        (Some(Stop::Timeout), _) => Err(Failed::new(
            Reason::Timeout,
            format!(
                "timed out after {}",
                humantime::format_duration(spec.limits.timeout.unwrap_or(elapsed))
            ),
        )),
        (Some(Stop::Signal(signal)), _) => {
            let mut failed = Failed::new(
                Reason::Cancelled,
                format!("cancelled by {}", sys::signal_name(signal)),
            );
            failed.signal = Some(sys::signal_name(signal));
            Err(failed)
        }
        (None, Some(result)) => Failed::from_call(result),
        (None, None) => Err(crash(status)),
    }
}

/// Passes on what the worker sends, in batches, until the channel closes. When the wake-up pipe
/// closes while the worker still runs (a job that closed every descriptor it inherited), the
/// ring is read by polling until the worker exits: its events and result are still published.
fn forward(
    mut consumer: ring::Consumer,
    tx: mpsc::SyncSender<Heard>,
    exited: &AtomicBool,
    give_up: &AtomicBool,
) {
    let mut out = Forwarded {
        tx,
        messages: Vec::new(),
        listening: true,
    };
    let damage = loop {
        let received = consumer.recv(|bytes| out.take(bytes), give_up);
        out.flush();
        if !out.listening {
            return;
        }
        match received {
            Ok(true) => {}
            Ok(false) => match poll_until_exit(&mut consumer, &mut out, exited) {
                Ok(()) => {
                    break consumer
                        .torn()
                        .then(|| "a message cut short when the job's process ended".to_owned());
                }
                Err(e) => break Some(e.to_string()),
            },
            Err(e) => break Some(e.to_string()),
        }
    };
    // What was read before any damage goes on first.
    out.flush();
    // Closes the worker's wake-up pipe, so a worker waiting for room in a ring nobody reads any
    // more fails its `emit` instead of hanging.
    drop(consumer);
    if let Some(damage) = damage {
        out.send(Heard::Garbage(damage));
    }
    out.send(Heard::ChannelClosed);
}

/// Reads the ring every few milliseconds until the worker has exited, then once more.
fn poll_until_exit(
    consumer: &mut ring::Consumer,
    out: &mut Forwarded,
    exited: &AtomicBool,
) -> std::io::Result<()> {
    loop {
        let gone = exited.load(Ordering::SeqCst);
        consumer.poll(|bytes| out.take(bytes))?;
        out.flush();
        if gone || !out.listening {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Messages decoded from the ring, on their way to the supervisor's loop.
struct Forwarded {
    tx: mpsc::SyncSender<Heard>,
    messages: Vec<Message>,
    /// Whether the supervisor's loop still listens.
    listening: bool,
}

/// Messages handed on at a time: many to a transaction, and few enough that the decoded events
/// waiting in memory stay a few megabytes.
const FORWARD_BATCH: usize = 1024;

impl Forwarded {
    fn take(&mut self, bytes: &[u8]) {
        match protocol::decode(bytes) {
            Some(message) => {
                self.messages.push(message);
                if self.messages.len() == FORWARD_BATCH {
                    self.flush();
                }
            }
            None => self.send(Heard::Garbage(format!(
                "a message of {} bytes",
                bytes.len()
            ))),
        }
    }

    fn flush(&mut self) {
        if !self.messages.is_empty() {
            let messages = std::mem::take(&mut self.messages);
            self.send(Heard::Messages(messages));
        }
    }

    fn send(&mut self, heard: Heard) {
        self.listening = self.listening && self.tx.send(heard).is_ok();
    }
}

/// The outcome of a worker that ended without reporting a result.
fn crash(status: Option<ExitStatus>) -> Failed {
    match status {
        Some(status) if status.signal().is_some() => {
            let name = sys::signal_name(status.signal().unwrap_or_default());
            let mut failed = Failed::new(Reason::Crash, format!("crashed: killed by {name}"));
            failed.signal = Some(name);
            failed
        }
        Some(status) => {
            let code = status.code().unwrap_or_default();
            let mut failed = Failed::new(
                Reason::Crash,
                format!("the job's process exited with code {code} before the job returned"),
            );
            failed.exit_code = Some(code);
            failed
        }
        None => Failed::new(Reason::Crash, "the job's process could not be waited for"),
    }
}
