//! The worker: the child process that runs one job attempt for its supervisor (`lorch __worker`).
//!
//! It reads a [`WorkerInput`] from stdin, loads the one plugin it needs, and runs the job with
//! host callbacks that forward every event over the channel fd as it happens, so events emitted
//! before a crash still reach the supervisor. SIGTERM turns the job's cancellation check true.

use std::fs::File;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use anyhow::{Context as _, Result};
use lorch_plugin_api::abi::Failure;

use super::protocol::{CHANNEL_FD, Message, WorkerInput};
use crate::events::{Event, EventSink};
use crate::host::{CallResult, JobCall};
use crate::plugins::Job;
use crate::sys;

/// Sends events to the supervisor instead of storing them.
struct Channel(Mutex<File>);

impl Channel {
    fn send<E: serde::Serialize>(&self, message: &Message<E>) -> Result<()> {
        let mut line = serde_json::to_vec(message)?;
        line.push(b'\n');
        // One write per message: a message is never split between a crash and the pipe.
        let mut channel = self.0.lock().unwrap_or_else(|p| p.into_inner());
        channel.write_all(&line).context("the supervisor is gone")
    }
}

impl EventSink for Channel {
    fn record_batch(&self, events: &[Event]) -> Result<()> {
        events
            .iter()
            .try_for_each(|event| self.send(&Message::Event(event)))
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
    let channel = Channel(Mutex::new(
        sys::inherited_fd(CHANNEL_FD)
            .context("no channel to the supervisor (this command is internal)")?,
    ));
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
    channel.send(&Message::<Event>::Result(result))
}
