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

use super::protocol::{self, CHANNEL_FD, RING_FD, ROOM_FD, WorkerInput};
use super::ring::Producer;
use crate::events::{Event, EventSink};
use crate::host::{CallResult, JobCall};
use crate::plugins::Job;
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

    fn send(&self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Outgoing { producer, buffer } = &mut *out;
        buffer.clear();
        encode(buffer);
        producer.send(buffer).context("the supervisor is gone")
    }
}

impl EventSink for Channel {
    fn record_batch(&self, events: &[Event]) -> Result<()> {
        events
            .iter()
            .try_for_each(|event| self.send(|out| protocol::encode_event(event, out)))
    }
}

pub fn main() -> ExitCode {
    sys::die_with_parent();
    match work() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lorch worker: {error:#}");
            ExitCode::from(3)
        }
    }
}

fn work() -> Result<()> {
    let channel = Channel::open()?;
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let input: WorkerInput = serde_json::from_str(&input).context("invalid worker input")?;

    let cancelled = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(libc::SIGTERM, Arc::clone(&cancelled))?;

    let request = &input.request;
    let result = match Job::load(input.plugin.as_deref(), &request.package, &request.job) {
        Ok(job) => {
            let call = JobCall::new(
                &job,
                &channel,
                &request.run_id,
                input.trace_id.as_deref(),
                &cancelled,
            );
            tracing::info_span!("job", id = %job.id()).in_scope(|| call.run(&job, request))
        }
        Err(why) => CallResult::Refused(Failure {
            message: format!("cannot load the job in the worker: {why}"),
            chain: Vec::new(),
            permanent: false,
            location: None,
        }),
    };
    channel.send(|out| protocol::encode_result(&result, out))
}
