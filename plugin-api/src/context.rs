//! What a running job can ask of lorch.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::abi::{self, EmittedEvent, Host, Str};
use crate::{JobError, Object};

/// The job's handle on lorch for one run: emit events, store objects, log, check for
/// cancellation.
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

    /// Stores one object under its idempotency key (lorchestra's `raw_objects`): the first time
    /// a key is stored it is inserted, later it is updated (payload, `last_seen`, the run that
    /// wrote it) and its `first_seen` stays. `payload` is anything that serializes to JSON.
    ///
    /// As with [`emit`](Context::emit), when this returns `Ok` lorch has the object: it is kept
    /// even if the job crashes right after. An object that breaks the rules of
    /// [`Object::check`] (an empty key, a type with spaces, a payload that is not JSON) is
    /// refused with an error saying which.
    ///
    /// ```
    /// # use lorch_plugin_api::{Context, JobResult, json};
    /// fn store(ctx: &Context) -> JobResult {
    ///     ctx.upsert("gmail_message", "gmail:acct1:18c2f", json!({"subject": "Hi"}))
    /// }
    /// ```
    pub fn upsert(
        &self,
        object_type: &str,
        idem_key: &str,
        payload: impl Serialize,
    ) -> Result<(), JobError> {
        let payload = serde_json::to_value(payload).map_err(|e| {
            JobError::new(format!(
                "the payload of object {idem_key:?} is not JSON: {e}"
            ))
        })?;
        self.upsert_objects(&[Object::new(object_type, idem_key, payload)])
    }

    /// Stores several objects at once, all or none, with the optional columns of [`Object`]
    /// (`external_id`, `schema_ref`, ...). One call for a page of results is much cheaper
    /// than one call per object. A key given twice in one call ends up with the later object.
    pub fn upsert_objects(&self, objects: &[Object]) -> Result<(), JobError> {
        if objects.is_empty() {
            return Ok(());
        }
        for (i, object) in objects.iter().enumerate() {
            object.check().map_err(|why| {
                let which = match objects.len() {
                    1 => String::new(),
                    n => format!(" (object {} of {n})", i + 1),
                };
                JobError::new(format!("lorch refused the upsert{which}: {why}"))
            })?;
        }
        let Some(upsert) = self.host.upsert_callback() else {
            return Err(JobError::new(
                "this lorch cannot store objects: it is older than the job's lorch-plugin-api; upgrade lorch",
            ));
        };
        // Serialized as an `abi::Upsert`, without copying the objects into one.
        #[derive(Serialize)]
        struct Objects<'a> {
            objects: &'a [Object],
        }
        let json = serde_json::to_string(&Objects { objects })?;
        // SAFETY: as in `send`.
        let status = unsafe { upsert(self.host.ctx, Str::from(json.as_str())) };
        let what = match objects {
            [one] => format!("object {:?}", one.idem_key),
            _ => format!("{} objects", objects.len()),
        };
        match status {
            abi::UPSERT_OK => Ok(()),
            abi::UPSERT_INVALID => Err(JobError::new(format!("lorch refused {what}"))),
            _ => Err(JobError::new(format!("lorch could not store {what}"))),
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
