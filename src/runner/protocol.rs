//! What a worker process tells its supervisor, one JSON line per message on file descriptor 3.
//! stdout and stderr stay the job's own.

use std::path::PathBuf;

use lorch_plugin_api::abi::RunRequest;
use serde::{Deserialize, Serialize};

use crate::events::Event;
use crate::host::CallResult;

/// The fd the worker writes messages to.
pub const CHANNEL_FD: i32 = 3;

/// What the supervisor writes to the worker's stdin.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerInput {
    /// The plugin file, or `None` for a job built into the lorch binary.
    pub plugin: Option<PathBuf>,
    pub request: RunRequest,
    pub trace_id: Option<String>,
}

/// `E` is `Event` when read and `&Event` when written, so sending copies nothing. Externally
/// tagged (`{"event": {...}}`): an internally tagged enum would make serde buffer the event,
/// which the raw JSON payload cannot go through.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message<E = Event> {
    /// An event the job emitted, complete with its id and creation time.
    Event(E),
    /// How the job's call ended; the last message.
    Result(CallResult),
}
