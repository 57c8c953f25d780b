//! The plugin boundary: a C ABI that does not depend on the Rust compiler version.
//!
//! Plugin authors never use this module directly; [`export_plugin!`](crate::export_plugin!)
//! wires it up. It is public for lorch (the host) and for plugins written in other languages;
//! `include/lorch_plugin.h` is the same contract in C, and `docs/plugin-abi.md` explains it.
//!
//! The rules that keep it stable:
//! - only `#[repr(C)]` data and `extern "C"` functions cross; everything structured crosses as
//!   UTF-8 JSON in a [`Str`] (pointer and length, no terminator);
//! - the plugin exports one symbol, [`ENTRY_SYMBOL`], returning a pointer to a static
//!   [`PluginHeader`] whose `abi_version` and `header_size` the host reads before anything else;
//! - memory is freed by whoever allocated it: strings passed into a call are borrowed for that
//!   call only, and the receiver copies what it keeps; the metadata string lives as long as the
//!   library, which lorch never unloads;
//! - a panic never crosses the boundary: every export runs the job inside `catch_unwind`.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Once, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Args, Context, JobSpec, ParamKind, TimeArg};

/// The ABI version this crate speaks. A host refuses a plugin with any other version.
pub const ABI_VERSION: u32 = 1;

/// The one symbol a plugin exports: `const LorchPluginHeader *lorch_plugin_entry(void)`.
pub const ENTRY_SYMBOL: &str = "lorch_plugin_entry";

/// A borrowed UTF-8 string: pointer and length, not NUL-terminated.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Str {
    /// The first byte; may be null when `len` is 0.
    pub ptr: *const u8,
    /// The length in bytes.
    pub len: usize,
}

impl Str {
    /// The empty string (a null pointer, length 0).
    pub const EMPTY: Str = Str {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// The bytes behind the pointer.
    ///
    /// # Safety
    /// `ptr` must be valid for reads of `len` bytes for `'a` (or `len` must be 0).
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: guaranteed by the caller.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Str {
        Str {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }
}

/// `run` and `emit` return codes.
pub const RUN_OK: i32 = 0;
/// The job returned an error; `fail` was called with it.
pub const RUN_FAILED: i32 = 1;
/// The job panicked; `fail` was called with the panic message and location.
pub const RUN_PANICKED: i32 = 2;
/// The plugin has no job of that name.
pub const RUN_UNKNOWN_JOB: i32 = 3;
/// The request JSON could not be read.
pub const RUN_BAD_REQUEST: i32 = 4;

/// The event was recorded.
pub const EMIT_OK: i32 = 0;
/// The event was refused: not valid JSON, empty type, or a reserved `job.*` or `pipeline.*` type.
pub const EMIT_INVALID: i32 = 1;
/// The host could not store the event.
pub const EMIT_NOT_RECORDED: i32 = 2;

/// `upsert` return codes: every object was stored.
pub const UPSERT_OK: i32 = 0;
/// Nothing was stored: not valid JSON, or an object breaks the rules of
/// [`check_object`](crate::check_object) (the host logs which).
pub const UPSERT_INVALID: i32 = 1;
/// Nothing was stored: the host could not store the objects.
pub const UPSERT_NOT_RECORDED: i32 = 2;

/// What `lorch_plugin_entry` points to. Static, never freed.
#[repr(C)]
#[derive(Debug)]
pub struct PluginHeader {
    /// Read first; must equal the host's [`ABI_VERSION`].
    pub abi_version: u32,
    /// `sizeof` the header as the plugin was built; lets later versions append fields.
    pub header_size: u32,
    /// Returns the [`PluginMetadata`] JSON, valid as long as the library is loaded.
    pub metadata: Option<extern "C" fn() -> Str>,
    /// Runs the job `job` (`PACKAGE/JOB`) with a [`RunRequest`] JSON; returns a `RUN_*` code.
    pub run: Option<unsafe extern "C" fn(host: *const Host, job: Str, request: Str) -> i32>,
}

/// The callbacks the host gives a running job. Valid for the duration of one `run` call; the
/// host makes them safe to call from any thread.
#[repr(C)]
#[derive(Debug)]
pub struct Host {
    /// `sizeof` the struct as the host was built.
    pub size: u32,
    /// Opaque; passed back to every callback.
    pub ctx: *mut c_void,
    /// Records an [`EmittedEvent`] JSON; returns an `EMIT_*` code.
    pub emit: unsafe extern "C" fn(ctx: *mut c_void, event: Str) -> i32,
    /// Writes a log line; `level` is 1 (error) to 5 (trace).
    pub log: unsafe extern "C" fn(ctx: *mut c_void, level: i32, message: Str),
    /// Non-zero once the run should stop.
    pub is_cancelled: unsafe extern "C" fn(ctx: *mut c_void) -> i32,
    /// Reports why the run failed, as a [`Failure`] JSON; called before `run` returns a failure.
    pub fail: unsafe extern "C" fn(ctx: *mut c_void, failure: Str),
    /// Stores objects, an [`Upsert`] JSON, all or none; returns an `UPSERT_*` code. Appended
    /// after version 1 was first published: present only when `size` covers it (see
    /// [`Host::upsert_callback`]).
    pub upsert: unsafe extern "C" fn(ctx: *mut c_void, objects: Str) -> i32,
}

impl Host {
    /// The `upsert` callback, when the host that built this struct has one: a lorch older than
    /// the callback passes a shorter struct, whose memory ends before the field.
    pub fn upsert_callback(&self) -> Option<unsafe extern "C" fn(*mut c_void, Str) -> i32> {
        let end = std::mem::offset_of!(Host, upsert) + size_of::<usize>();
        // The field is read only when the host's struct has it.
        if (self.size as usize) < end {
            return None;
        }
        Some(self.upsert)
    }
}

// SAFETY: the ABI requires the host's callbacks to be thread-safe and `ctx` to stay valid for
// the whole run, which is what makes a `Context` shareable with the job's own threads.
unsafe impl Send for Host {}
// SAFETY: as above.
unsafe impl Sync for Host {}

/// The JSON a plugin's `metadata` function returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginMetadata {
    /// Every job the plugin provides.
    pub jobs: Vec<JobMetadata>,
}

/// One job, as `jobs list`/`jobs show` see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMetadata {
    /// The package, `[a-z0-9_-]+`.
    pub package: String,
    /// The job's name in its package, `[a-z0-9_]+`.
    pub name: String,
    /// The doc comment: the first line is the summary `jobs list --json` shows.
    #[serde(default)]
    pub description: String,
    /// The extra parameters, in declaration order.
    #[serde(default)]
    pub params: Vec<ParamMetadata>,
}

/// One declared parameter. `default` is written as the user would type it after `KEY=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamMetadata {
    /// `[a-z0-9_]+`, what users write before `=` in `--param KEY=VALUE`.
    pub name: String,
    /// The value's type (`type` in the JSON).
    #[serde(rename = "type")]
    pub kind: ParamKind,
    /// `run-job` refuses to start without it.
    #[serde(default)]
    pub required: bool,
    /// The value when none is given.
    #[serde(default)]
    pub default: Option<String>,
    /// The line `jobs show` prints.
    #[serde(default)]
    pub help: String,
}

/// The JSON the host passes to `run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// The run's id (a UUID), every event's `correlation_id`.
    pub run_id: String,
    /// The job's package.
    pub package: String,
    /// The job's name.
    pub job: String,
    /// Which attempt of the run this is, from 1.
    pub attempt: u32,
    /// `--account`.
    pub account: Option<String>,
    /// `--since`, resolved.
    pub since: Option<TimeArg>,
    /// `--until`, resolved.
    pub until: Option<TimeArg>,
    /// The declared parameters, typed, defaults filled in.
    #[serde(default)]
    pub params: Map<String, Value>,
}

/// The JSON a job passes to `emit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmittedEvent {
    /// The job's own type, e.g. `notes.counted`; `job.*` and `pipeline.*` are lorch's.
    pub event_type: String,
    /// Any JSON.
    #[serde(default)]
    pub payload: Option<Value>,
    /// A key for consumers to de-duplicate re-run events.
    #[serde(default)]
    pub idem_key: Option<String>,
}

/// The JSON a job passes to `upsert`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upsert {
    /// Stored in one transaction: all of them or none.
    pub objects: Vec<crate::Object>,
}

/// The JSON a plugin passes to `fail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// What went wrong, as the job said it.
    pub message: String,
    /// The causes, outermost first.
    #[serde(default)]
    pub chain: Vec<String>,
    /// Retrying cannot help: `--retries` does not try again.
    #[serde(default)]
    pub permanent: bool,
    /// `file:line:column` of a panic.
    #[serde(default)]
    pub location: Option<String>,
}

impl Failure {
    /// A failure with only a message: no causes, worth retrying, not a panic.
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            chain: Vec::new(),
            permanent: false,
            location: None,
        }
    }
}

impl JobSpec {
    /// The job's metadata as it crosses the boundary; the doc comment loses rustdoc's leading
    /// space on each line.
    pub fn metadata(&self) -> JobMetadata {
        let description = self
            .description
            .lines()
            .map(|line| line.strip_prefix(' ').unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n");
        JobMetadata {
            package: self.package.to_owned(),
            name: self.name.to_owned(),
            description: description.trim().to_owned(),
            params: self
                .params
                .iter()
                .map(|p| ParamMetadata {
                    name: p.name.to_owned(),
                    kind: p.kind,
                    required: p.required,
                    default: p.default.map(str::to_owned),
                    help: p.help.to_owned(),
                })
                .collect(),
        }
    }
}

/// Every job registered with [`job!`](crate::job!) in this binary or library.
pub fn registered_jobs() -> impl Iterator<Item = &'static JobSpec> {
    inventory::iter::<JobSpec>.into_iter()
}

/// The header [`export_plugin!`](crate::export_plugin!) returns.
pub static PLUGIN_HEADER: PluginHeader = PluginHeader {
    abi_version: ABI_VERSION,
    header_size: size_of::<PluginHeader>() as u32,
    metadata: Some(plugin_metadata),
    run: Some(plugin_run),
};

extern "C" fn plugin_metadata() -> Str {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = panic::catch_unwind(|| {
        JSON.get_or_init(|| {
            let metadata = PluginMetadata {
                jobs: registered_jobs().map(JobSpec::metadata).collect(),
            };
            serde_json::to_string(&metadata).unwrap_or_default()
        })
        .as_str()
    });
    json.map(Str::from).unwrap_or(Str::EMPTY)
}

unsafe extern "C" fn plugin_run(host: *const Host, job: Str, request: Str) -> i32 {
    let run = || {
        // SAFETY: the ABI says `host` points to a valid `Host` and both strings are valid for
        // the duration of this call.
        let (host, job, request) = unsafe { (&*host, job.as_bytes(), request.as_bytes()) };
        run_registered(host, job, request)
    };
    // `run_registered` already catches the job's panics; this catches anything else so that
    // no unwind ever crosses `extern "C"`.
    panic::catch_unwind(run).unwrap_or(RUN_PANICKED)
}

/// Runs the registered job `job` (`PACKAGE/JOB`) with a [`RunRequest`] JSON, reporting through
/// `host`. This is what a plugin's `run` export does; lorch calls it directly for jobs linked
/// into its own binary, so both kinds of job take the same path.
pub fn run_registered(host: &Host, job: &[u8], request: &[u8]) -> i32 {
    let fail = |failure: Failure| {
        let json = serde_json::to_string(&failure).unwrap_or_default();
        // SAFETY: the host's callbacks are valid for the duration of the run.
        unsafe { (host.fail)(host.ctx, Str::from(json.as_str())) };
    };
    let job = String::from_utf8_lossy(job);
    let Some(spec) =
        registered_jobs().find(|spec| job.split_once('/') == Some((spec.package, spec.name)))
    else {
        fail(Failure::new(format!(
            "this plugin has no job named `{job}`"
        )));
        return RUN_UNKNOWN_JOB;
    };
    let request: RunRequest = match serde_json::from_slice(request) {
        Ok(request) => request,
        Err(e) => {
            fail(Failure::new(format!("invalid run request: {e}")));
            return RUN_BAD_REQUEST;
        }
    };
    let ctx = Context::new(host, &request);
    let args = Args {
        account: request.account,
        since: request.since,
        until: request.until,
        params: serde_json::from_value(Value::Object(request.params)).unwrap_or_default(),
    };

    install_panic_hook();
    let outcome = {
        let _in_job = InJob::enter();
        panic::catch_unwind(AssertUnwindSafe(|| (spec.run)(&ctx, &args)))
    };
    match outcome {
        Ok(Ok(())) => RUN_OK,
        Ok(Err(error)) => {
            fail(Failure {
                message: error.message().to_owned(),
                chain: error.chain().to_vec(),
                permanent: error.is_permanent(),
                location: None,
            });
            RUN_FAILED
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".to_owned());
            let location = PANIC_LOCATION.with(|l| l.borrow_mut().take());
            fail(Failure {
                location,
                ..Failure::new(message)
            });
            RUN_PANICKED
        }
    }
}

thread_local! {
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Marks the current thread as running a job until dropped (also when the job unwinds).
struct InJob;

impl InJob {
    fn enter() -> InJob {
        IN_JOB.with(|f| f.set(true));
        InJob
    }
}

impl Drop for InJob {
    fn drop(&mut self) {
        IN_JOB.with(|f| f.set(false));
    }
}

/// A panic's location is only known to the panic hook, so on the job's thread the hook keeps
/// it for the failure report instead of printing the usual message; lorch prints the failure
/// itself. Panics elsewhere go to the previous hook unchanged.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_JOB.with(Cell::get) {
                let location = info.location().map(|l| l.to_string());
                PANIC_LOCATION.with(|l| *l.borrow_mut() = location);
            } else {
                previous(info);
            }
        }));
    });
}
