//! The host side of the plugin ABI: the callbacks a running job calls to emit events, upsert
//! objects, log and check for cancellation.

use std::ffi::c_void;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use lorch_plugin_api::abi::{self, Failure, Host, RunRequest, Str};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::events::{Event, EventSink, Object};
use crate::lifecycle::{self, ObjectCounts};
use crate::plugins::Job;

/// `abi::EmittedEvent` as the host reads it: the payload stays JSON text, borrowed.
#[derive(Deserialize)]
struct Emitted<'a> {
    event_type: String,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    idem_key: Option<String>,
}

/// An object's payload as BigQuery's JSON columns take it, checked before it is stored (the
/// store keeps the text as the job wrote it): numbers that fit a double, no key twice in an
/// object, strings without lone UTF-16 surrogates. serde_json refuses the first and the last
/// while parsing; [`NoDuplicateKeys`] the second.
fn check_payload(idem_key: &str, payload: &str) -> Result<(), String> {
    serde_json::from_str::<NoDuplicateKeys>(payload)
        .map(drop)
        .map_err(|e| {
            let what = match e.to_string() {
                why if why.contains("escape") => {
                    format!("a \\u escape that is no character (a lone UTF-16 surrogate): {why}")
                }
                why => why,
            };
            format!("the payload of object {idem_key:?} is JSON BigQuery refuses: {what}")
        })
}

/// Any JSON value, refused when an object in it has a key twice.
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<NoDuplicateKeys>()?;
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} is there twice"
                )));
            }
        }
        Ok(NoDuplicateKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Self, E> {
        match n.is_finite() {
            true => Ok(NoDuplicateKeys),
            false => Err(E::custom("a number too large for a double")),
        }
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(NoDuplicateKeys)
    }
}

/// `abi::Upsert` as the host reads it: each payload stays JSON text, borrowed.
#[derive(Deserialize)]
struct Upserted<'a> {
    #[serde(borrow)]
    objects: Vec<Incoming<'a>>,
}

#[derive(Deserialize)]
struct Incoming<'a> {
    object_type: String,
    idem_key: String,
    #[serde(borrow)]
    payload: &'a RawValue,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    schema_ref: Option<String>,
    #[serde(default)]
    connection_name: Option<String>,
    #[serde(default)]
    source_system: Option<String>,
}

/// What one call of a job gave.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", content = "failure", rename_all = "snake_case")]
pub enum CallResult {
    Completed,
    /// The job returned an error.
    Failed(Failure),
    /// The job panicked; `location` is set when known.
    Panicked(Failure),
    /// The plugin could not run the job at all (unknown job, unreadable request).
    Refused(Failure),
}

/// The state behind the `ctx` pointer the job's callbacks receive. It is shared with any thread
/// the job starts, so everything in it is thread-safe.
pub struct JobCall<'a> {
    sink: &'a dyn EventSink,
    request: &'a RunRequest,
    source_system: String,
    trace_id: Option<&'a str>,
    cancelled: &'a AtomicBool,
    failure: Mutex<Option<Failure>>,
    unrecorded: AtomicUsize,
    objects: Mutex<ObjectCounts>,
}

impl<'a> JobCall<'a> {
    pub fn new(
        job: &Job,
        sink: &'a dyn EventSink,
        request: &'a RunRequest,
        trace_id: Option<&'a str>,
        cancelled: &'a AtomicBool,
    ) -> JobCall<'a> {
        JobCall {
            sink,
            request,
            source_system: job.id(),
            trace_id,
            cancelled,
            failure: Mutex::new(None),
            unrecorded: AtomicUsize::new(0),
            objects: Mutex::default(),
        }
    }

    /// How many of the job's events and objects could not be stored (each time logged as an
    /// error and reported to the job as a failed `emit` or `upsert`).
    pub fn unrecorded(&self) -> usize {
        self.unrecorded.load(Ordering::Relaxed)
    }

    /// What the job's upserts did, as the sink reported it (a sink that forwards objects to
    /// a supervisor reports nothing: the supervisor counts).
    pub fn objects(&self) -> ObjectCounts {
        *self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `job` and waits for it.
    pub fn run(&self, job: &Job) -> CallResult {
        let host = Host {
            size: size_of::<Host>() as u32,
            ctx: self as *const JobCall as *mut c_void,
            emit: host_emit,
            log: host_log,
            is_cancelled: host_is_cancelled,
            fail: host_fail,
            upsert: host_upsert,
        };
        let request = serde_json::to_string(self.request).expect("a RunRequest always serializes");
        let code = match job.call(&host, &request) {
            Ok(code) => code,
            Err(why) => {
                let message = format!("cannot load the plugin: {why}");
                return CallResult::Refused(Failure::new(message));
            }
        };
        let failure = || {
            self.failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| {
                    Failure::new(format!(
                        "the plugin returned status {code} without saying why"
                    ))
                })
        };
        match code {
            abi::RUN_OK => CallResult::Completed,
            abi::RUN_FAILED => CallResult::Failed(failure()),
            abi::RUN_PANICKED => CallResult::Panicked(failure()),
            _ => CallResult::Refused(failure()),
        }
    }

    fn emit(&self, json: &[u8]) -> i32 {
        let emitted: Emitted = match serde_json::from_slice(json) {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(
                    "{} emitted an event that is not valid JSON: {e}",
                    self.source_system
                );
                return abi::EMIT_INVALID;
            }
        };
        if emitted.event_type.trim().is_empty()
            || lifecycle::RESERVED_PREFIXES
                .iter()
                .any(|p| emitted.event_type.starts_with(p))
        {
            tracing::error!(
                "{} emitted event type {:?}: event types must be non-empty and `job.*` and `pipeline.*` are reserved for lorch",
                self.source_system,
                emitted.event_type
            );
            return abi::EMIT_INVALID;
        }
        let mut event = Event::new(
            &emitted.event_type,
            &self.source_system,
            &self.request.run_id,
        );
        event.trace_id = self.trace_id.map(str::to_owned);
        event.idem_key = emitted.idem_key;
        event.payload = emitted.payload.map(RawValue::to_owned);
        match self.sink.record(&event) {
            Ok(()) => abi::EMIT_OK,
            Err(e) => {
                self.unrecorded.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "event {} of run {} was not recorded: {e:#}",
                    event.event_type,
                    self.request.run_id
                );
                abi::EMIT_NOT_RECORDED
            }
        }
    }

    /// Checks and stores an `abi::Upsert`, filling in the connection (the run's account) and
    /// the source system (the job's package) the job left unset.
    fn upsert(&self, json: &[u8]) -> i32 {
        let refuse = |why: &dyn std::fmt::Display| {
            tracing::error!(
                "{} upserted objects lorch refuses: {why}",
                self.source_system
            );
            abi::UPSERT_INVALID
        };
        let upserted: Upserted = match serde_json::from_slice(json) {
            Ok(upserted) => upserted,
            Err(e) => return refuse(&format!("not the JSON of an upsert: {e}")),
        };
        let now = chrono::Utc::now();
        let mut objects = Vec::with_capacity(upserted.objects.len());
        for o in upserted.objects {
            let checked =
                lorch_plugin_api::check_object(&o.object_type, &o.idem_key, o.payload.get().len())
                    .and_then(|()| check_payload(&o.idem_key, o.payload.get()));
            if let Err(why) = checked {
                return refuse(&why);
            }
            objects.push(Object {
                idem_key: o.idem_key,
                source_system: o
                    .source_system
                    .unwrap_or_else(|| self.request.package.clone()),
                connection_name: o.connection_name.or_else(|| self.request.account.clone()),
                object_type: o.object_type,
                schema_ref: o.schema_ref,
                external_id: o.external_id,
                payload: o.payload.to_owned(),
                first_seen: now,
                last_seen: now,
                correlation_id: self.request.run_id.clone(),
            });
        }
        match self.sink.store(&[], &objects) {
            Ok(counts) => {
                *self.objects.lock().unwrap_or_else(|p| p.into_inner()) += counts;
                abi::UPSERT_OK
            }
            Err(e) => {
                self.unrecorded.fetch_add(objects.len(), Ordering::Relaxed);
                tracing::error!(
                    "{} objects of run {} were not stored: {e:#}",
                    objects.len(),
                    self.request.run_id
                );
                abi::UPSERT_NOT_RECORDED
            }
        }
    }
}

/// Recovers the `JobCall` behind `ctx` and runs `f`, never letting a panic cross `extern "C"`.
fn with_call<T>(ctx: *mut c_void, on_panic: T, f: impl FnOnce(&JobCall) -> T) -> T {
    // SAFETY: `ctx` is the `JobCall` that `JobCall::run` passed in, alive until `run` returns,
    // which the ABI says is the last moment the plugin may call back.
    let call = unsafe { &*(ctx as *const JobCall) };
    panic::catch_unwind(AssertUnwindSafe(|| f(call))).unwrap_or(on_panic)
}

unsafe extern "C" fn host_emit(ctx: *mut c_void, event: Str) -> i32 {
    // SAFETY: the plugin passes a string valid for this call.
    let bytes = unsafe { event.as_bytes() };
    with_call(ctx, abi::EMIT_NOT_RECORDED, |call| call.emit(bytes))
}

unsafe extern "C" fn host_upsert(ctx: *mut c_void, objects: Str) -> i32 {
    // SAFETY: as in `host_emit`.
    let bytes = unsafe { objects.as_bytes() };
    with_call(ctx, abi::UPSERT_NOT_RECORDED, |call| call.upsert(bytes))
}

unsafe extern "C" fn host_log(ctx: *mut c_void, level: i32, message: Str) {
    // SAFETY: as in `host_emit`.
    let message = String::from_utf8_lossy(unsafe { message.as_bytes() });
    with_call(ctx, (), |call| {
        call.sink
            .log(crate::runlog::Level::from_abi(level), &message)
    })
}

unsafe extern "C" fn host_is_cancelled(ctx: *mut c_void) -> i32 {
    with_call(ctx, 0, |call| {
        i32::from(call.cancelled.load(Ordering::Relaxed))
    })
}

unsafe extern "C" fn host_fail(ctx: *mut c_void, failure: Str) {
    // SAFETY: as in `host_emit`.
    let bytes = unsafe { failure.as_bytes() };
    with_call(ctx, (), |call| {
        let failure = serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Failure::new(String::from_utf8_lossy(bytes)));
        *call.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure);
    })
}
