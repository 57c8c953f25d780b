//! Unit-testing a job without lorch: a [`TestRun`] hands the job a [`Context`] that records
//! what it emits and logs, and [`ArgsBuilder`] makes its [`Args`].
//!
//! ```
//! use lorch_plugin_api::testing::{ArgsBuilder, TestRun};
//! use lorch_plugin_api::{Args, Context, JobResult, Level, json};
//!
//! fn greet(ctx: &Context, args: &Args) -> JobResult {
//!     let who = args.params.string("who").unwrap_or("world");
//!     ctx.info(format!("greeting {who}"));
//!     ctx.emit("demo.greeted", json!({ "who": who, "account": args.account }))
//! }
//!
//! let run = TestRun::new("demo", "greet");
//! let args = ArgsBuilder::new().account("acct1").param("who", "you").build();
//! run.call(greet, &args).unwrap();
//! assert_eq!(run.events()[0].event_type, "demo.greeted");
//! assert_eq!(run.events()[0].payload, json!({ "who": "you", "account": "acct1" }));
//! assert_eq!(run.logs(), [(Level::Info, "greeting you".to_owned())]);
//! ```
//!
//! The context behaves as lorch's does where a job can tell: event types that are empty or
//! start with `job.` are refused with the same error, objects are checked by the same rules
//! ([`Object::check`](crate::Object::check)) and recorded as given ([`TestRun::objects`]), [`Context::is_cancelled`] turns true after
//! [`TestRun::cancel`] (from any thread), and [`Context::attempt`] is what
//! [`TestRun::attempt`] set. What it does not do is isolate the job: a panic or a crash in
//! the job is the test's own.

use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::abi::{self, EmittedEvent, Host, RunRequest, Str, Upsert};
use crate::{Args, Context, JobResult, Level, Object, TimeArg};

/// One run of a job under test, and what it recorded.
pub struct TestRun {
    request: RunRequest,
    cancelled: AtomicBool,
    events: Mutex<Vec<Emitted>>,
    objects: Mutex<Vec<Object>>,
    logs: Mutex<Vec<(Level, String)>>,
}

/// An event the job emitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// The job's event type, e.g. `notes.counted`.
    pub event_type: String,
    /// The payload, `null` when none was given.
    pub payload: Value,
    /// The key given to [`Context::emit_idempotent`].
    pub idem_key: Option<String>,
}

impl TestRun {
    /// A run of `package/job`: run id `test-run`, attempt 1, not cancelled.
    pub fn new(package: &str, job: &str) -> TestRun {
        TestRun {
            request: RunRequest {
                run_id: "test-run".to_owned(),
                package: package.to_owned(),
                job: job.to_owned(),
                attempt: 1,
                account: None,
                since: None,
                until: None,
                params: serde_json::Map::new(),
            },
            cancelled: AtomicBool::new(false),
            events: Mutex::default(),
            objects: Mutex::default(),
            logs: Mutex::default(),
        }
    }

    /// Which attempt [`Context::attempt`] reports (from 1), to test a retried run.
    pub fn attempt(mut self, attempt: u32) -> TestRun {
        self.request.attempt = attempt;
        self
    }

    /// Asks the run to stop: [`Context::is_cancelled`] is true from now on.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Calls `job` with a recording context and `args`; returns what the job returned.
    pub fn call(&self, job: impl FnOnce(&Context, &Args) -> JobResult, args: &Args) -> JobResult {
        let host = Host {
            size: std::mem::size_of::<Host>() as u32,
            ctx: self as *const TestRun as *mut c_void,
            emit,
            log,
            is_cancelled,
            fail,
            upsert,
        };
        let ctx = Context::new(&host, &self.request);
        job(&ctx, args)
    }

    /// The events emitted so far, in order.
    pub fn events(&self) -> Vec<Emitted> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The objects upserted so far, in order, as the job gave them (lorch would fill in the
    /// connection and source system the job left unset, and keep only the last of each key).
    pub fn objects(&self) -> Vec<Object> {
        self.objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The lines logged so far, in order.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// # Safety
/// `ctx` is the `TestRun` that built the host, alive for the whole call.
unsafe fn run<'a>(ctx: *mut c_void) -> &'a TestRun {
    // SAFETY: as the function says; `call` borrows the run for as long as the job runs.
    unsafe { &*(ctx as *const TestRun) }
}

unsafe extern "C" fn emit(ctx: *mut c_void, event: Str) -> i32 {
    // SAFETY: the context passes a valid string for the duration of the call.
    let json = unsafe { event.as_bytes() };
    let Ok(event) = serde_json::from_slice::<EmittedEvent>(json) else {
        return abi::EMIT_INVALID;
    };
    let reserved = ["job.", "pipeline."];
    if event.event_type.trim().is_empty()
        || reserved.iter().any(|p| event.event_type.starts_with(p))
    {
        return abi::EMIT_INVALID;
    }
    // SAFETY: see `run`.
    let run = unsafe { run(ctx) };
    run.events
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Emitted {
            event_type: event.event_type,
            payload: event.payload.unwrap_or(Value::Null),
            idem_key: event.idem_key,
        });
    abi::EMIT_OK
}

unsafe extern "C" fn upsert(ctx: *mut c_void, objects: Str) -> i32 {
    // SAFETY: as in `emit`.
    let json = unsafe { objects.as_bytes() };
    let Ok(upsert) = serde_json::from_slice::<Upsert>(json) else {
        return abi::UPSERT_INVALID;
    };
    if upsert.objects.iter().any(|o| o.check().is_err()) {
        return abi::UPSERT_INVALID;
    }
    // SAFETY: see `run`.
    let run = unsafe { run(ctx) };
    run.objects
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(upsert.objects);
    abi::UPSERT_OK
}

unsafe extern "C" fn log(ctx: *mut c_void, level: i32, message: Str) {
    let level = match level {
        1 => Level::Error,
        2 => Level::Warn,
        3 => Level::Info,
        4 => Level::Debug,
        _ => Level::Trace,
    };
    // SAFETY: as in `emit`.
    let message = String::from_utf8_lossy(unsafe { message.as_bytes() }).into_owned();
    // SAFETY: see `run`.
    let run = unsafe { run(ctx) };
    run.logs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((level, message));
}

unsafe extern "C" fn is_cancelled(ctx: *mut c_void) -> i32 {
    // SAFETY: see `run`.
    i32::from(unsafe { run(ctx) }.cancelled.load(Ordering::SeqCst))
}

/// Only `abi::run_registered` reports failures through the host; a job called directly returns
/// its error instead.
unsafe extern "C" fn fail(_ctx: *mut c_void, _failure: Str) {}

/// Builds the [`Args`] of a run as lorch would pass them: times are instants with the text
/// they were given as, parameters are typed values.
#[derive(Debug, Default)]
pub struct ArgsBuilder {
    args: Args,
}

impl ArgsBuilder {
    /// No account, no window, no parameters.
    pub fn new() -> ArgsBuilder {
        ArgsBuilder::default()
    }

    /// `--account`.
    pub fn account(mut self, account: &str) -> ArgsBuilder {
        self.args.account = Some(account.to_owned());
        self
    }

    /// `--since`, as an RFC 3339 instant such as `2024-01-01T00:00:00Z`.
    ///
    /// # Panics
    /// When `instant` is not RFC 3339: a mistake in the test itself.
    pub fn since(mut self, instant: &str) -> ArgsBuilder {
        self.args.since = Some(time_arg(instant));
        self
    }

    /// `--until`, like [`since`](ArgsBuilder::since).
    ///
    /// # Panics
    /// When `instant` is not RFC 3339.
    pub fn until(mut self, instant: &str) -> ArgsBuilder {
        self.args.until = Some(time_arg(instant));
        self
    }

    /// A declared parameter, already typed: `.param("limit", 10)`, `.param("dry", true)`.
    pub fn param(mut self, name: &str, value: impl Into<Value>) -> ArgsBuilder {
        self.args.params = std::mem::take(&mut self.args.params).with(name, value);
        self
    }

    /// The arguments.
    pub fn build(self) -> Args {
        self.args
    }
}

fn time_arg(instant: &str) -> TimeArg {
    let utc = DateTime::parse_from_rfc3339(instant)
        .unwrap_or_else(|e| panic!("{instant:?} is not an RFC 3339 instant: {e}"))
        .with_timezone(&Utc);
    TimeArg {
        raw: instant.to_owned(),
        utc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobError, json};

    fn busy(ctx: &Context, args: &Args) -> JobResult {
        if ctx.is_cancelled() {
            return Err(JobError::new("cancelled before starting"));
        }
        ctx.warn(format!("attempt {}", ctx.attempt()));
        ctx.emit_idempotent(
            "t.done",
            "k1",
            json!({ "window": args.in_window(Utc::now()) }),
        )?;
        ctx.upsert("t_item", "t:1", json!({ "n": 1 }))?;
        ctx.emit("job.completed", json!({}))
    }

    #[test]
    fn records_events_logs_attempt_and_refusals_like_lorch() {
        let run = TestRun::new("t", "busy").attempt(3);
        let args = ArgsBuilder::new().since("2000-01-01T00:00:00Z").build();
        let err = run.call(busy, &args).unwrap_err();
        assert!(
            err.message()
                .contains("lorch refused event `job.completed`"),
            "{err}"
        );
        assert_eq!(
            run.events(),
            [Emitted {
                event_type: "t.done".into(),
                payload: json!({ "window": true }),
                idem_key: Some("k1".into()),
            }]
        );
        assert_eq!(
            run.objects(),
            [Object::new("t_item", "t:1", json!({ "n": 1 }))]
        );
        assert_eq!(run.logs(), [(Level::Warn, "attempt 3".to_owned())]);

        let cancelled = TestRun::new("t", "busy");
        cancelled.cancel();
        assert!(cancelled.call(busy, &args).is_err());
        assert!(cancelled.events().is_empty());
    }

    #[test]
    fn refused_objects_are_not_recorded_and_the_error_says_why() {
        let run = TestRun::new("t", "store");
        let job = |ctx: &Context, _: &Args| {
            ctx.upsert_objects(&[
                Object::new("t_item", "t:1", json!(1)),
                Object::new("t item", "t:2", json!(2)),
            ])
        };
        let err = run.call(job, &Args::default()).unwrap_err();
        assert_eq!(
            err.message(),
            "lorch refused the upsert (object 2 of 2): object type \"t item\" contains ' ': use letters, digits, `_`, `.`, `:` and `-`"
        );
        assert!(run.objects().is_empty(), "all or none");
        let err = run
            .call(
                |ctx, _| ctx.upsert("t_item", "", json!(1)),
                &Args::default(),
            )
            .unwrap_err();
        assert_eq!(
            err.message(),
            "lorch refused the upsert: the idem key of a t_item object is empty"
        );
    }

    #[test]
    fn args_are_built_as_lorch_passes_them() {
        let args = ArgsBuilder::new()
            .account("a")
            .since("2024-01-01T00:00:00Z")
            .until("2024-01-02T00:00:00+02:00")
            .param("limit", 5)
            .param("dry", true)
            .build();
        assert_eq!(args.account.as_deref(), Some("a"));
        assert_eq!(
            args.until.as_ref().unwrap().utc.to_rfc3339(),
            "2024-01-01T22:00:00+00:00"
        );
        assert_eq!(args.params.int("limit"), Some(5));
        assert_eq!(args.params.bool("dry"), Some(true));
    }
}
