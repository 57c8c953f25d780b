//! The worker: the child process that runs one job attempt for its supervisor (`lorch __worker`).
//!
//! It reads a [`WorkerInput`] from stdin, loads the one plugin it needs, and runs the job with
//! host callbacks that publish every event to the shared ring as it happens, so events emitted
//! before a crash still reach the supervisor. SIGTERM turns the job's cancellation check true.

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use anyhow::{Context as _, Result};
use lorch_plugin_api::abi::Failure;

use super::protocol::{self, CHANNEL_FD, PLUGIN_FD, RING_FD, ROOM_FD, WorkerInput};
use super::ring::Producer;
use crate::events::{Event, EventSink, Object};
use crate::host::{CallResult, JobCall};
use crate::lifecycle::ObjectCounts;
use crate::output::stderr;
use crate::plugins::Job;
use crate::runlog::Level;
use crate::sys;

/// Sends events to the supervisor instead of storing them. The job's threads take turns.
struct Channel(Mutex<Outgoing>);

struct Outgoing {
    producer: Producer,
    /// The message being encoded, kept to spare an allocation each event.
    buffer: Vec<u8>,
}

impl Channel {
    fn open() -> Result<Channel> {
        let fd = |fd| {
            sys::inherited_fd(fd).context("no channel to the supervisor (this command is internal)")
        };
        let producer = Producer::open(fd(RING_FD)?, fd(CHANNEL_FD)?, fd(ROOM_FD)?)
            .context("cannot open the channel to the supervisor")?;
        Ok(Channel(Mutex::new(Outgoing {
            producer,
            buffer: Vec::new(),
        })))
    }

    /// Sends one message, which `encode` writes. An event or object is refused when the
    /// supervisor said it cannot store them any more: then the job's `emit` or `upsert` fails,
    /// instead of succeeding for data that would be lost.
    fn send(&self, is_data: bool, encode: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Outgoing { producer, buffer } = &mut *out;
        if is_data && producer.refuse_event() {
            anyhow::bail!(
                "lorch cannot store this run's events and objects (the event store failed; see lorch's errors)"
            );
        }
        buffer.clear();
        encode(buffer);
        producer.send(buffer).context("the supervisor is gone")
    }
}

impl EventSink for Channel {
    /// The supervisor stores and counts; the counts here are zero.
    fn store(&self, events: &[Event], objects: &[Object]) -> Result<ObjectCounts> {
        for event in events {
            self.send(true, |out| protocol::encode_event(event, out))?;
        }
        for object in objects {
            self.send(true, |out| protocol::encode_object(object, out))?;
        }
        Ok(ObjectCounts::default())
    }

    /// The supervisor shows the line and keeps it in the run's log. A line that cannot reach
    /// it (the supervisor is gone) is dropped: nobody is left to read it.
    fn log(&self, level: Level, message: &str) {
        if level.kept() {
            let _ = self.send(false, |out| {
                protocol::encode_log(chrono::Utc::now(), level, message, out)
            });
        }
    }
}

unsafe extern "C" {
    /// The C library's `stdout` stream, which a C plugin's `printf` writes to.
    static mut stdout: *mut libc::FILE;
}

/// stdout is a pipe to the supervisor: C's stdio would buffer it by 4 KiB blocks, so lines
/// would show late and a crash would lose up to a block. Line by line, as on a terminal.
fn line_buffered_stdout() {
    // SAFETY: no other thread uses stdio yet; glibc and musl both export `stdout`.
    unsafe {
        libc::setvbuf(stdout, std::ptr::null_mut(), libc::_IOLBF, 0);
    }
}

pub fn main() -> ExitCode {
    // The supervisor armed PARENT_DIED before exec; until now its default action ends this
    // process alone, from now on it ends the job's whole process group.
    if let Err(e) = sys::kill_own_group_on(sys::PARENT_DIED) {
        stderr!("lorch worker: cannot watch for the supervisor's death: {e}");
        return ExitCode::from(3);
    }
    match work() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            stderr!("lorch worker: {error:#}");
            ExitCode::from(3)
        }
    }
}

fn work() -> Result<()> {
    let channel = Channel::open()?;
    line_buffered_stdout();
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let input: WorkerInput = serde_json::from_str(&input).context("invalid worker input")?;

    let cancelled = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(libc::SIGTERM, Arc::clone(&cancelled))?;

    let request = &input.request;
    let plugin = match &input.plugin {
        Some(path) => Some((
            sys::inherited_fd(PLUGIN_FD).context("no plugin file from the supervisor")?,
            path.as_path(),
        )),
        None => None,
    };
    let result = match Job::load(plugin, &request.package, &request.job) {
        Ok(job) => {
            let call = JobCall::new(
                &job,
                &channel,
                request,
                input.trace_id.as_deref(),
                &cancelled,
            );
            crate::logging::job_span(request).in_scope(|| call.run(&job))
        }
        Err(why) => CallResult::Refused(Failure::new(format!(
            "cannot load the job in the worker: {why}"
        ))),
    };
    channel.send(false, |out| protocol::encode_result(&result, out))
}
