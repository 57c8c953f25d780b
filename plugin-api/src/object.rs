//! Objects a job stores: lorchestra's `raw_objects`, one row per idempotency key.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest payload lorch takes, in bytes of JSON text: 8 MiB, so that one object always
/// fits a BigQuery request (10 MB) with its other columns.
pub const MAX_PAYLOAD_BYTES: usize = 8 << 20;
/// The longest idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The longest object type, in bytes.
pub const MAX_TYPE_BYTES: usize = 128;

/// One object for [`Context::upsert_objects`](crate::Context::upsert_objects): what a job
/// fetched (a message, a contact, a form response), stored under its idempotency key.
///
/// lorch keeps one row per `idem_key`: storing a key again replaces the object's payload and
/// columns and moves its `last_seen`, and keeps its `first_seen`.
///
/// ```
/// use lorch_plugin_api::{Object, json};
///
/// let message = Object::new("gmail_message", "gmail:acct1:18c2f", json!({"subject": "Hi"}))
///     .external_id("18c2f")
///     .schema_ref("gmail.message.v1");
/// assert_eq!(message.check(), Ok(()));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// What kind of object: letters, digits, `_`, `.`, `:` and `-`, e.g. `gmail_message`.
    pub object_type: String,
    /// The object's identity, unique across every type: put the source and type in it when
    /// two sources could share an id (`gmail:acct1:message:18c2f`).
    pub idem_key: String,
    /// The object itself, any JSON.
    pub payload: Value,
    /// The id the source system gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The schema the payload follows, e.g. `gmail.message.v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_ref: Option<String>,
    /// The connection it was fetched through; lorch fills in the run's `--account` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_name: Option<String>,
    /// The system it came from; lorch fills in the job's package when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_system: Option<String>,
}

impl Object {
    /// An object with only its type, key and payload; lorch fills in the connection (the
    /// run's account) and the source system (the job's package).
    pub fn new(
        object_type: impl Into<String>,
        idem_key: impl Into<String>,
        payload: Value,
    ) -> Self {
        Object {
            object_type: object_type.into(),
            idem_key: idem_key.into(),
            payload,
            external_id: None,
            schema_ref: None,
            connection_name: None,
            source_system: None,
        }
    }

    /// Sets the id the source system gives the object.
    pub fn external_id(mut self, id: impl Into<String>) -> Self {
        self.external_id = Some(id.into());
        self
    }

    /// Sets the schema the payload follows.
    pub fn schema_ref(mut self, schema: impl Into<String>) -> Self {
        self.schema_ref = Some(schema.into());
        self
    }

    /// Sets the connection, instead of the run's account.
    pub fn connection_name(mut self, connection: impl Into<String>) -> Self {
        self.connection_name = Some(connection.into());
        self
    }

    /// Sets the source system, instead of the job's package.
    pub fn source_system(mut self, system: impl Into<String>) -> Self {
        self.source_system = Some(system.into());
        self
    }

    /// What lorch would refuse in this object, as one sentence; lorch checks the same before
    /// storing it.
    pub fn check(&self) -> Result<(), String> {
        let payload = serde_json::to_string(&self.payload).map_err(|e| e.to_string())?;
        check_object(&self.object_type, &self.idem_key, payload.len())
    }
}

/// The rules every object meets, whoever sends it (a Rust job, a C plugin): a type of 1 to
/// [`MAX_TYPE_BYTES`] letters, digits, `_`, `.`, `:` or `-`; a key of 1 to [`MAX_KEY_BYTES`]
/// bytes, not only spaces, without control characters; a payload of at most
/// [`MAX_PAYLOAD_BYTES`] of JSON text.
pub fn check_object(object_type: &str, idem_key: &str, payload_bytes: usize) -> Result<(), String> {
    let type_ok = |c: char| c.is_ascii_alphanumeric() || "_.:-".contains(c);
    if object_type.is_empty() || object_type.len() > MAX_TYPE_BYTES {
        return Err(format!(
            "object type {object_type:?} must be 1 to {MAX_TYPE_BYTES} bytes"
        ));
    }
    if let Some(bad) = object_type.chars().find(|&c| !type_ok(c)) {
        return Err(format!(
            "object type {object_type:?} contains {bad:?}: use letters, digits, `_`, `.`, `:` and `-`"
        ));
    }
    if idem_key.trim().is_empty() {
        return Err(format!("the idem key of a {object_type} object is empty"));
    }
    if idem_key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the idem key of a {object_type} object is {} bytes; at most {MAX_KEY_BYTES}",
            idem_key.len()
        ));
    }
    if idem_key.chars().any(char::is_control) {
        return Err(format!(
            "the idem key {idem_key:?} contains a control character"
        ));
    }
    if payload_bytes > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "the payload of object {idem_key:?} is {payload_bytes} bytes of JSON; at most {MAX_PAYLOAD_BYTES}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_rules_name_what_is_wrong() {
        let ok = Object::new("gmail_message", "gmail:1", json!({}));
        assert_eq!(ok.check(), Ok(()));
        let cases = [
            (Object::new("gmail message", "k", json!(1)), "contains ' '"),
            (Object::new("", "k", json!(1)), "must be 1 to 128 bytes"),
            (
                Object::new("t", " ", json!(1)),
                "idem key of a t object is empty",
            ),
            (Object::new("t", "a\nb", json!(1)), "control character"),
            (Object::new("t", "k".repeat(1025), json!(1)), "at most 1024"),
            (
                Object::new("t", "big", json!("x".repeat(MAX_PAYLOAD_BYTES))),
                "payload of object \"big\"",
            ),
        ];
        for (object, expected) in cases {
            let error = object.check().unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }
}
