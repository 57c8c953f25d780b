//! What a worker process tells its supervisor over the [`ring`](super::ring): each event the job
//! emits, each object it upserts and each line it logs, then how the call ended. The job's
//! stdout and stderr are pipes of their own (`super::capture`).
//!
//! Events travel in a small binary form, not JSON: a job may emit hundreds of thousands, and
//! the fields are already strings (the payload is JSON text, checked again on arrival).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use lorch_plugin_api::abi::RunRequest;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::events::{Event, Object};
use crate::host::CallResult;
use crate::runlog::Level;

/// The worker's inherited descriptors: the pipe that wakes the supervisor (its closing is how
/// the supervisor learns the worker is gone), the shared ring, the pipe that wakes the worker.
pub const CHANNEL_FD: i32 = 3;
pub const RING_FD: i32 = 4;
pub const ROOM_FD: i32 = 5;
/// The plugin file, opened and checked by the supervisor: the worker loads exactly that file.
pub const PLUGIN_FD: i32 = 6;

/// What the supervisor writes to the worker's stdin.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerInput {
    /// The plugin file's path (the file itself is [`PLUGIN_FD`]), or `None` for a job built
    /// into the lorch binary.
    pub plugin: Option<PathBuf>,
    pub request: RunRequest,
    pub trace_id: Option<String>,
}

/// One message from the worker.
#[derive(Debug)]
pub enum Message {
    /// An event the job emitted, complete with its id and creation time.
    Event(Event),
    /// An object the job upserted, as it was when the job gave it.
    Object(Object),
    /// A line the job logged through its context, and when.
    Log {
        time: DateTime<Utc>,
        level: Level,
        text: String,
    },
    /// How the job's call ended; the last message.
    Result(CallResult),
}

const EVENT: u8 = b'E';
const RESULT: u8 = b'R';
const OBJECT: u8 = b'O';
const LOG: u8 = b'L';
/// The levels in the order of their byte in a log message.
const LEVELS: [Level; 5] = [
    Level::Error,
    Level::Warn,
    Level::Info,
    Level::Debug,
    Level::Trace,
];
const NONE: u32 = u32::MAX;

/// Appends the message for `event` to `out`.
pub fn encode_event(event: &Event, out: &mut Vec<u8>) {
    out.push(EVENT);
    put(out, &event.event_id);
    put(out, &event.event_type);
    put(out, &event.source_system);
    out.extend_from_slice(&event.created_at.timestamp().to_le_bytes());
    out.extend_from_slice(&event.created_at.timestamp_subsec_nanos().to_le_bytes());
    put(out, &event.status);
    put(out, &event.correlation_id);
    put_opt(out, event.trace_id.as_deref());
    put_opt(out, event.object_type.as_deref());
    put_opt(out, event.idem_key.as_deref());
    put_opt(out, event.error_message.as_deref());
    put_opt(out, event.payload.as_deref().map(RawValue::get));
}

/// Appends the message for `object` to `out`. Its `first_seen` is its `last_seen`: the moment
/// the job upserted it.
pub fn encode_object(object: &Object, out: &mut Vec<u8>) {
    out.push(OBJECT);
    put(out, &object.idem_key);
    put(out, &object.source_system);
    put_opt(out, object.connection_name.as_deref());
    put(out, &object.object_type);
    put_opt(out, object.schema_ref.as_deref());
    put_opt(out, object.external_id.as_deref());
    put(out, object.payload.get());
    out.extend_from_slice(&object.last_seen.timestamp().to_le_bytes());
    out.extend_from_slice(&object.last_seen.timestamp_subsec_nanos().to_le_bytes());
    put(out, &object.correlation_id);
}

/// Appends the message for a line the job logged to `out`.
pub fn encode_log(time: DateTime<Utc>, level: Level, text: &str, out: &mut Vec<u8>) {
    out.push(LOG);
    out.extend_from_slice(&time.timestamp().to_le_bytes());
    out.extend_from_slice(&time.timestamp_subsec_nanos().to_le_bytes());
    out.push(LEVELS.iter().position(|l| *l == level).unwrap_or(0) as u8);
    put(out, text);
}

/// Appends the message for the call's result to `out`.
pub fn encode_result(result: &CallResult, out: &mut Vec<u8>) {
    out.push(RESULT);
    serde_json::to_writer(out, result).expect("a CallResult always serializes");
}

fn put(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put(out, s),
        None => out.extend_from_slice(&NONE.to_le_bytes()),
    }
}

/// Reads one message; `None` when the bytes are not one (a job damaged the channel).
pub fn decode(bytes: &[u8]) -> Option<Message> {
    let (&kind, rest) = bytes.split_first()?;
    match kind {
        RESULT => serde_json::from_slice(rest).ok().map(Message::Result),
        EVENT => {
            let mut r = Reader(rest);
            let event = Event {
                event_id: r.string()?,
                event_type: r.string()?,
                source_system: r.string()?,
                created_at: DateTime::from_timestamp(r.i64()?, r.u32()?)?,
                status: r.string()?,
                correlation_id: r.string()?,
                trace_id: r.opt()?,
                object_type: r.opt()?,
                idem_key: r.opt()?,
                error_message: r.opt()?,
                payload: match r.opt()? {
                    Some(json) => Some(RawValue::from_string(json).ok()?),
                    None => None,
                },
            };
            r.0.is_empty().then_some(Message::Event(event))
        }
        OBJECT => {
            let mut r = Reader(rest);
            let idem_key = r.string()?;
            let source_system = r.string()?;
            let connection_name = r.opt()?;
            let object_type = r.string()?;
            let schema_ref = r.opt()?;
            let external_id = r.opt()?;
            let payload = RawValue::from_string(r.string()?).ok()?;
            let seen = DateTime::from_timestamp(r.i64()?, r.u32()?)?;
            let object = Object {
                idem_key,
                source_system,
                connection_name,
                object_type,
                schema_ref,
                external_id,
                payload,
                first_seen: seen,
                last_seen: seen,
                correlation_id: r.string()?,
            };
            r.0.is_empty().then_some(Message::Object(object))
        }
        LOG => {
            let mut r = Reader(rest);
            let time = DateTime::from_timestamp(r.i64()?, r.u32()?)?;
            let level = *LEVELS.get(usize::from(r.take::<1>()?[0]))?;
            let text = r.string()?;
            r.0.is_empty().then_some(Message::Log { time, level, text })
        }
        _ => None,
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (bytes, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }

    fn opt(&mut self) -> Option<Option<String>> {
        match self.u32()? {
            NONE => Some(None),
            len => self.text(len as usize).map(Some),
        }
    }

    fn string(&mut self) -> Option<String> {
        let len = self.u32()?;
        self.text(len as usize)
    }

    fn text(&mut self, len: usize) -> Option<String> {
        if len > self.0.len() {
            return None;
        }
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(text.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lorch_plugin_api::abi::Failure;

    #[test]
    fn events_and_results_come_back_as_they_were_sent() {
        let mut event = Event::new("ingester.messages_extracted", "ingester/extract", "run-1");
        event.trace_id = Some("trace".into());
        event.idem_key = Some("k".into());
        event.set_payload(&serde_json::json!({"n": 3, "s": "é\n"}));
        let bare = Event::new("x", "y", "z");
        for event in [event, bare] {
            let mut bytes = Vec::new();
            encode_event(&event, &mut bytes);
            let Some(Message::Event(back)) = decode(&bytes) else {
                panic!("not an event");
            };
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(&event).unwrap()
            );
            assert_eq!(back.created_at, event.created_at);
            // Every cut is refused, never misread.
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_none(), "cut at {cut}");
            }
        }

        let failed = CallResult::Failed(Failure {
            message: "boom".into(),
            chain: vec!["cause".into()],
            permanent: true,
            location: None,
        });
        let mut bytes = Vec::new();
        encode_result(&failed, &mut bytes);
        let Some(Message::Result(CallResult::Failed(failure))) = decode(&bytes) else {
            panic!("not a failure");
        };
        assert_eq!(
            (failure.message.as_str(), failure.permanent),
            ("boom", true)
        );
    }

    #[test]
    fn objects_come_back_as_they_were_sent() {
        let object = Object {
            idem_key: "gmail:1".into(),
            source_system: "ingester".into(),
            connection_name: Some("acct1".into()),
            object_type: "gmail_message".into(),
            schema_ref: None,
            external_id: Some("1".into()),
            payload: RawValue::from_string(r#"{"subject":"é"}"#.into()).unwrap(),
            first_seen: chrono::Utc::now(),
            last_seen: chrono::Utc::now(),
            correlation_id: "run-1".into(),
        };
        let mut bytes = Vec::new();
        encode_object(&object, &mut bytes);
        let Some(Message::Object(back)) = decode(&bytes) else {
            panic!("not an object");
        };
        let expected = Object {
            first_seen: object.last_seen,
            ..object
        };
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&expected).unwrap()
        );
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn logged_lines_come_back_as_they_were_sent() {
        let time = chrono::Utc::now();
        let mut bytes = Vec::new();
        encode_log(time, Level::Warn, "disk 91% full é", &mut bytes);
        let Some(Message::Log {
            time: at,
            level,
            text,
        }) = decode(&bytes)
        else {
            panic!("not a log line");
        };
        assert_eq!(
            (at, level, text.as_str()),
            (time, Level::Warn, "disk 91% full é")
        );
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn a_payload_that_is_not_json_is_refused() {
        let mut event = Event::new("x", "y", "z");
        event.set_payload(&serde_json::json!({"a": 1}));
        let mut bytes = Vec::new();
        encode_event(&event, &mut bytes);
        let at = bytes.len() - 1;
        bytes[at] = b'{';
        assert!(decode(&bytes).is_none());
    }
}
