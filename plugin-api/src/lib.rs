//! Write jobs for [lorch](https://github.com/lorch-dev/lorch), the plugin job runner.
//!
//! A job is a plain Rust function that takes a [`Context`] and the run's [`Args`] and returns a
//! [`JobResult`]. The [`job!`] macro registers it under a `PACKAGE/JOB` name together with its
//! description (the doc comment) and its extra parameters, so `lorch jobs show` can print them
//! and `lorch run-job` can check `--param KEY=VALUE` before anything runs.
//!
//! Through its [`Context`] a job emits events (`ctx.emit`), stores what it fetched as objects
//! keyed by an idempotency key (`ctx.upsert`, one row per key: lorchestra's `raw_objects`),
//! logs, and checks for cancellation.
//!
//! The same crate works both ways lorch finds jobs:
//!
//! - **as a plugin**: build it as a `cdylib`, call [`export_plugin!`] once, and drop the `.so`
//!   (`.dylib` on macOS) into lorch's plugin directory;
//! - **built in**: depend on it from a custom `lorch` binary; the registrations are found with
//!   [`inventory`](https://docs.rs/inventory) at start-up.
//!
//! Plugin code needs no `unsafe`: the C ABI behind [`export_plugin!`] lives in [`abi`].
//!
//! # Example
//!
//! ```
//! use lorch_plugin_api::{Args, Context, JobResult, ParamSpec, json};
//!
//! lorch_plugin_api::job! {
//!     /// Counts the messages of an account in the requested window.
//!     ///
//!     /// Emits one `mail.counted` event with the count.
//!     package = "mailbox",
//!     name = "count_messages",
//!     params = [
//!         ParamSpec::int("limit").default("100").help("Stop after this many messages"),
//!         ParamSpec::string("folder").required().help("Folder to read"),
//!     ],
//!     run = count_messages,
//! }
//!
//! fn count_messages(ctx: &Context, args: &Args) -> JobResult {
//!     let limit = args.params.int("limit").unwrap_or(100);
//!     let folder = args.params.string("folder").unwrap_or("INBOX");
//!     ctx.info(format!("reading {folder} for {:?}", args.account));
//!     let count = 0.min(limit); // a real job reads the folder here
//!     ctx.emit("mail.counted", json!({ "folder": folder, "count": count }))?;
//!     Ok(())
//! }
//!
//! // In a `cdylib` plugin, once per crate:
//! lorch_plugin_api::export_plugin!();
//! # fn main() {}
//! ```
//!
//! The [`guide`] walks through a whole plugin, from `cargo new --lib` to seeing the job in
//! `lorch jobs list`, with its unit tests ([`testing`]).

#![deny(missing_docs)]

pub mod abi;
mod args;
mod context;
mod error;
mod job;
mod object;
pub mod testing;

/// Writing a job, step by step: `docs/jobs.md` of the lorch repository, included whole (its
/// code is built and tested by lorch's own test suite, not as doctests here).
#[cfg(not(doctest))]
#[doc = include_str!("../../docs/jobs.md")]
// `file=src/lib.rs` in a block's info string names the file for that test suite.
#[allow(rustdoc::invalid_codeblock_attributes)]
pub mod guide {}

pub use args::{Args, Params, TimeArg};
pub use context::{Context, Level};
pub use error::{JobError, JobResult};
pub use job::{__check_declaration, JobFn, JobSpec, ParamKind, ParamSpec};
pub use object::{MAX_KEY_BYTES, MAX_PAYLOAD_BYTES, MAX_TYPE_BYTES, Object, check_object};

/// Re-exported so jobs can build event and object payloads without naming `serde_json` themselves.
pub use serde_json::{Value, json};

/// Used by [`job!`]; not part of the API.
#[doc(hidden)]
pub use inventory as __inventory;
