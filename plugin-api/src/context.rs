//! What a running job can ask of lorch.

use std::fmt;

use serde_json::Value;

use crate::JobError;
use crate::abi::{self, EmittedEvent, Host, Str};

/// The job's handle on lorch for one run: emit events, log, check for cancellation.
///
/// It is `Send + Sync`, so a job may share it with the threads it starts (for example with
/// `std::thread::scope`).
pub struct Context<'a> {
    host: &'a Host,
    run_id: String,
    package: String,
    job: String,
    attempt: u32,
}

/// Log levels, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub enum Level {
    /// Something failed.
    Error = 1,
    /// Something the user should look at; the run goes on.
    Warn = 2,
    /// Progress worth a line in a cron mail (not shown with `run-job --quiet`).
    Info = 3,
    /// Detail for debugging (`LORCH_LOG=debug`).
    Debug = 4,
    /// More detail still (`LORCH_LOG=trace`).
    Trace = 5,
}

impl<'a> Context<'a> {
    pub(crate) fn new(host: &'a Host, request: &abi::RunRequest) -> Self {
        Context {
            host,
            run_id: request.run_id.clone(),
            package: request.package.clone(),
            job: request.job.clone(),
            attempt: request.attempt,
        }
    }

    /// The run id (a UUID), also the `correlation_id` of every event of this run.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The package this job was registered under.
    pub fn package(&self) -> &str {
        &self.package
    }

    /// The job's name.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Records an event of the job's own, e.g. `ingester.messages_extracted` with a count.
    ///
    /// It carries this run's `correlation_id` and `source_system = PACKAGE/JOB`. When this
    /// returns `Ok`, lorch has the event: it is kept even if the job crashes right after.
    /// Event types starting with `job.` are lorch's own lifecycle events and are refused.
    pub fn emit(&self, event_type: &str, payload: Value) -> Result<(), JobError> {
        self.send(event_type, payload, None)
    }

    /// Like [`emit`](Context::emit), with an idempotency key stored in the event's `idem_key`
    /// column so consumers can de-duplicate events of re-run jobs.
    pub fn emit_idempotent(
        &self,
        event_type: &str,
        idem_key: &str,
        payload: Value,
    ) -> Result<(), JobError> {
        self.send(event_type, payload, Some(idem_key))
    }

    fn send(
        &self,
        event_type: &str,
        payload: Value,
        idem_key: Option<&str>,
    ) -> Result<(), JobError> {
        let event = EmittedEvent {
            event_type: event_type.to_owned(),
            payload: Some(payload),
            idem_key: idem_key.map(str::to_owned),
        };
        let json = serde_json::to_string(&event)?;
        // SAFETY: the host promised, for the duration of the run, a valid context pointer and
        // thread-safe callbacks; `json` outlives the call.
        let status = unsafe { (self.host.emit)(self.host.ctx, Str::from(json.as_str())) };
        match status {
            abi::EMIT_OK => Ok(()),
            abi::EMIT_INVALID => Err(JobError::new(format!(
                "lorch refused event `{event_type}`: event types must be non-empty and must not start with `job.`"
            ))),
            _ => Err(JobError::new(format!(
                "lorch could not record event `{event_type}`"
            ))),
        }
    }

    /// True once lorch has been asked to stop this run (Ctrl-C, SIGTERM, a timeout). A
    /// long-running job should check it between units of work and return early.
    pub fn is_cancelled(&self) -> bool {
        // SAFETY: as in `send`.
        unsafe { (self.host.is_cancelled)(self.host.ctx) != 0 }
    }

    /// Writes a line to lorch's log (stderr), tagged with this run.
    pub fn log(&self, level: Level, message: impl fmt::Display) {
        let message = message.to_string();
        // SAFETY: as in `send`.
        unsafe { (self.host.log)(self.host.ctx, level as i32, Str::from(message.as_str())) }
    }

    /// [`log`](Context::log) at [`Level::Error`].
    pub fn error(&self, message: impl fmt::Display) {
        self.log(Level::Error, message)
    }

    /// [`log`](Context::log) at [`Level::Warn`].
    pub fn warn(&self, message: impl fmt::Display) {
        self.log(Level::Warn, message)
    }

    /// [`log`](Context::log) at [`Level::Info`].
    pub fn info(&self, message: impl fmt::Display) {
        self.log(Level::Info, message)
    }

    /// [`log`](Context::log) at [`Level::Debug`].
    pub fn debug(&self, message: impl fmt::Display) {
        self.log(Level::Debug, message)
    }
}
