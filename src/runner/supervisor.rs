//! The supervisor: runs one attempt in a worker process and turns whatever happens to it into
//! one outcome.
//!
//! The worker is lorch itself (`lorch __worker`), started in a process group of its own so that
//! a timeout or a signal reaches the job and everything it started. Events arrive over a shared
//! [`ring`](super::ring) as the job emits them and are stored at once, many to a transaction
//! when they come fast; the outcome comes from the worker's result message or, when there is
//! none (a crash, `exit`), from how the process ended.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lorch_plugin_api::abi::RunRequest;

use super::protocol::{self, CHANNEL_FD, Message, RING_FD, ROOM_FD, WorkerInput};
use super::ring;
use super::signals::Signals;
use super::{Attempt, Failed, Reason};
use crate::events::{Event, EventSink};
use crate::host::CallResult;
use crate::plugins::Job;
use crate::sys;

/// Time limits of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The attempt is stopped after this long.
    pub timeout: Option<Duration>,
    /// How long a stopped job gets between SIGTERM and SIGKILL.
    pub kill_after: Duration,
}

/// What the supervisor hears, from the ring reader and the process waiter threads.
enum Heard {
    /// Messages in the order the worker sent them.
    Messages(Vec<Message>),
    /// Something the channel carried that lorch could not read.
    Garbage(String),
    ChannelClosed,
    Exited(ExitStatus),
}

/// The most events stored in one transaction.
const MAX_BATCH: usize = 4096;

/// What the supervisor has heard from its worker, and the events not stored yet.
struct Intake<'a> {
    sink: &'a dyn EventSink,
    pending: Vec<Event>,
    unrecorded: usize,
    result: Option<CallResult>,
    exited: Option<ExitStatus>,
    channel_open: bool,
}

impl<'a> Intake<'a> {
    fn new(sink: &'a dyn EventSink) -> Intake<'a> {
        Intake {
            sink,
            pending: Vec::new(),
            unrecorded: 0,
            result: None,
            exited: None,
            channel_open: true,
        }
    }

    /// Takes `first` and whatever else has already arrived, then stores the events among them
    /// in one transaction (group commit): a job emitting fast gets large batches, a lone event
    /// is stored at once.
    fn take(&mut self, first: Heard, rx: &mpsc::Receiver<Heard>) {
        self.hear(first);
        while self.pending.len() < MAX_BATCH
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
                        Message::Result(result) => self.result = Some(result),
                    }
                }
            }
            // Most likely an event lorch could not read: counted, like any event not stored.
            Heard::Garbage(what) => {
                self.unrecorded += 1;
                tracing::error!("unreadable message from the job's worker, not recorded: {what}");
            }
            Heard::ChannelClosed => self.channel_open = false,
            Heard::Exited(status) => self.exited = Some(status),
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Err(e) = self.sink.record_batch(&self.pending) {
            self.unrecorded += self.pending.len();
            tracing::error!(
                "{} events of run {} were not recorded: {e:#}",
                self.pending.len(),
                self.pending[0].correlation_id
            );
        }
        self.pending.clear();
    }
}

/// Why the supervisor stopped the job.
#[derive(Clone, Copy)]
enum Stop {
    Timeout,
    Signal(i32),
}

/// Runs one attempt of `job` in a worker and returns its outcome and how many of its events
/// could not be stored.
pub fn run(
    job: &Job,
    request: &RunRequest,
    trace_id: Option<&str>,
    sink: &dyn EventSink,
    limits: Limits,
    signals: &Signals,
) -> (Attempt, usize) {
    match supervise(job, request, trace_id, sink, limits, signals) {
        Ok(result) => result,
        Err(error) => (
            Err(Failed::new(
                Reason::Error,
                format!("cannot start the job's worker process: {error:#}"),
            )),
            0,
        ),
    }
}

fn supervise(
    job: &Job,
    request: &RunRequest,
    trace_id: Option<&str>,
    sink: &dyn EventSink,
    limits: Limits,
    signals: &Signals,
) -> anyhow::Result<(Attempt, usize)> {
    let (consumer, files) = ring::create()?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("__worker")
        .stdin(Stdio::piped())
        .process_group(0);
    sys::pass_fds(
        &mut command,
        &[
            (files.wake_reader.as_raw_fd(), CHANNEL_FD),
            (files.ring.as_raw_fd(), RING_FD),
            (files.room.as_raw_fd(), ROOM_FD),
        ],
    );
    let mut child = command.spawn()?;
    // Only the worker holds its end now: the channel closes when the worker is gone.
    drop(files);
    let pgid = child.id();
    let started = Instant::now();

    let input = WorkerInput {
        plugin: job.plugin_file().map(Into::into),
        request: request.clone(),
        trace_id: trace_id.map(Into::into),
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A worker that dies before reading its input is reported below from its exit status.
    let _ = stdin.write_all(&serde_json::to_vec(&input)?);
    drop(stdin);

    // Bounded: when the store falls behind, the reader stops reading, the ring fills and the
    // job's `emit` waits, instead of events piling up in lorch's memory.
    let (tx, rx) = mpsc::sync_channel(1);
    let reader_tx = tx.clone();
    std::thread::spawn(move || forward(consumer, reader_tx));
    std::thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = tx.send(Heard::Exited(status));
        }
    });

    let deadline = limits.timeout.map(|t| started + t);
    let mut stop: Option<(Stop, Instant)> = None;
    let mut killed = false;
    let mut intake = Intake::new(sink);

    // Until the worker exits: store what it sends, stop it on timeout or signal.
    while intake.exited.is_none() {
        let now = Instant::now();
        if stop.is_none() && intake.result.is_none() {
            let reason = match (signals.received(), deadline) {
                (Some(signal), _) => Some(Stop::Signal(signal)),
                (None, Some(deadline)) if now >= deadline => Some(Stop::Timeout),
                _ => None,
            };
            if let Some(reason) = reason {
                let _ = sys::kill_group(pgid, libc::SIGTERM);
                stop = Some((reason, now + limits.kill_after));
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
            (None, Some(deadline)) => deadline,
            _ => now + Duration::from_secs(3600),
        };
        // Signals are polled: wake at least every 50 ms to notice one.
        let wait = next_check
            .saturating_duration_since(now)
            .min(Duration::from_millis(50));
        match rx.recv_timeout(wait) {
            Ok(heard) => intake.take(heard, &rx),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Whatever the job left behind in its process group goes with it.
    let _ = sys::kill_group(pgid, libc::SIGKILL);
    // Then read what is still in the ring. The channel closes once the worker and anything
    // that inherited it are gone; a process that escaped the group cannot hold lorch forever.
    let drain_until = Instant::now() + Duration::from_secs(2);
    while intake.channel_open {
        match rx.recv_timeout(drain_until.saturating_duration_since(Instant::now())) {
            Ok(heard) => intake.take(heard, &rx),
            Err(_) => break,
        }
    }
    let Intake {
        result,
        exited,
        unrecorded,
        ..
    } = intake;

    let elapsed = started.elapsed();
    let outcome = match (stop, result, exited) {
        (Some((Stop::Timeout, _)), _, _) => Err(Failed::new(
            Reason::Timeout,
            format!(
                "timed out after {}",
                humantime::format_duration(limits.timeout.unwrap_or(elapsed))
            ),
        )),
        (Some((Stop::Signal(signal), _)), _, _) => {
            let mut failed = Failed::new(
                Reason::Cancelled,
                format!("cancelled by {}", sys::signal_name(signal)),
            );
            failed.signal = Some(sys::signal_name(signal));
            Err(failed)
        }
        (None, Some(result), _) => Failed::from_call(result),
        (None, None, status) => Err(crash(status)),
    };
    Ok((outcome, unrecorded))
}

/// Passes on what the worker sends, in batches, until the channel closes.
fn forward(mut consumer: ring::Consumer, tx: mpsc::SyncSender<Heard>) {
    let mut out = Forwarded {
        tx,
        messages: Vec::new(),
        listening: true,
    };
    let damage = loop {
        let received = consumer.recv(|bytes| out.take(bytes));
        out.flush();
        if !out.listening {
            return;
        }
        match received {
            Ok(true) => {}
            Ok(false) => {
                break consumer
                    .torn()
                    .then(|| "a message cut short when the job's process ended".to_owned());
            }
            Err(e) => break Some(e.to_string()),
        }
    };
    // Closes the worker's wake-up pipe, so a worker waiting for room in a ring nobody reads any
    // more fails its `emit` instead of hanging.
    drop(consumer);
    if let Some(damage) = damage {
        out.send(Heard::Garbage(damage));
    }
    out.send(Heard::ChannelClosed);
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
