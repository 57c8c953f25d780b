//! The `event_log` table (docs/events.md, "BigQuery"), the `raw_objects` table
//! (docs/objects.md), and an event or an object as one of their rows.

use chrono::SecondsFormat;
use gcp_bigquery_client::model::clustering::Clustering;
use gcp_bigquery_client::model::table::Table as TableDefinition;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use gcp_bigquery_client::model::time_partitioning::TimePartitioning;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::config::Table;
use crate::events::{Event, Object};

/// A column: `(name, type, required)`.
pub type Column = (&'static str, &'static str, bool);

/// What lorch creates and writes: a table's columns, partitioning and clustering.
pub struct Layout {
    pub columns: &'static [Column],
    pub description: &'static str,
    pub partition: (&'static str, &'static str),
    pub clustering: &'static [&'static str],
}

/// The events table: partitioned by day on `created_at`, clustered on `event_type,
/// source_system` (the filters of nearly every query on it).
pub const EVENTS: Layout = Layout {
    columns: &COLUMNS,
    description: "lorch events: job runs and what jobs emitted (one row per event)",
    partition: ("DAY", "created_at"),
    clustering: &["event_type", "source_system"],
};

/// The objects table: partitioned by month on `first_seen` (a row never moves, and a month
/// keeps 4,000 partitions good for 333 years), clustered on `object_type, idem_key`, so a
/// query by type and the MERGE on `idem_key` read only the blocks they need.
pub const OBJECTS: Layout = Layout {
    columns: &OBJECT_COLUMNS,
    description: "lorch objects: what jobs upserted (one row per idem_key)",
    partition: ("MONTH", "first_seen"),
    clustering: &["object_type", "idem_key"],
};

/// The `raw_objects` columns, in the documented order.
pub const OBJECT_COLUMNS: [Column; 10] = [
    ("idem_key", "STRING", true),
    ("source_system", "STRING", true),
    ("connection_name", "STRING", false),
    ("object_type", "STRING", true),
    ("schema_ref", "STRING", false),
    ("external_id", "STRING", false),
    ("payload", "JSON", false),
    ("first_seen", "TIMESTAMP", true),
    ("last_seen", "TIMESTAMP", true),
    ("correlation_id", "STRING", true),
];

/// The `event_log` columns, in the documented order.
pub const COLUMNS: [Column; 11] = [
    ("event_id", "STRING", true),
    ("event_type", "STRING", true),
    ("source_system", "STRING", true),
    ("created_at", "TIMESTAMP", true),
    ("status", "STRING", true),
    ("correlation_id", "STRING", true),
    ("trace_id", "STRING", false),
    ("object_type", "STRING", false),
    ("idem_key", "STRING", false),
    ("error_message", "STRING", false),
    ("payload", "JSON", false),
];

/// The table of `layout` that `lorch events init` creates.
pub fn definition(layout: &Layout, table: &Table) -> TableDefinition {
    let fields = layout
        .columns
        .iter()
        .map(|(name, kind, required)| {
            let mut field = match *kind {
                "TIMESTAMP" => TableFieldSchema::timestamp(name),
                "JSON" => TableFieldSchema::json(name),
                _ => TableFieldSchema::string(name),
            };
            field.mode = Some(if *required { "REQUIRED" } else { "NULLABLE" }.to_owned());
            field
        })
        .collect();
    TableDefinition::new(
        &table.project,
        &table.dataset,
        &table.table,
        TableSchema::new(fields),
    )
    .description(layout.description)
    .time_partitioning(
        TimePartitioning::new(layout.partition.0.to_owned()).field(layout.partition.1),
    )
    .clustering(Clustering {
        fields: Some(layout.clustering.iter().map(|f| (*f).to_owned()).collect()),
    })
}

/// How an existing table differs from what lorch writes, one sentence each: a column missing or
/// of another type, a column lorch may leave empty that the table requires, a required column
/// lorch does not write. Empty when every row lorch sends fits.
pub fn differences(layout: &Layout, found: &TableSchema) -> Vec<String> {
    let fields = found.fields.as_deref().unwrap_or_default();
    let kind = |field: &TableFieldSchema| {
        serde_json::to_value(&field.r#type)
            .ok()
            .and_then(|v| v.as_str().map(str::to_ascii_uppercase))
            .unwrap_or_default()
    };
    let required = |field: &TableFieldSchema| field.mode.as_deref() == Some("REQUIRED");
    let mut differences = Vec::new();
    for &(name, expected, lorch_requires) in layout.columns {
        match fields.iter().find(|f| f.name == name) {
            None => differences.push(format!("column {name} ({expected}) is missing")),
            Some(field) if kind(field) != expected => differences.push(format!(
                "column {name} is {}, lorch writes {expected}",
                kind(field)
            )),
            Some(field) if required(field) && !lorch_requires => differences.push(format!(
                "column {name} is REQUIRED, lorch leaves it empty when it has no value"
            )),
            Some(_) => {}
        }
    }
    for field in fields {
        if required(field) && !layout.columns.iter().any(|(name, ..)| *name == field.name) {
            differences.push(format!(
                "column {} is REQUIRED and lorch does not write it",
                field.name
            ));
        }
    }
    differences
}

/// The event as insertAll wants it: TIMESTAMP as RFC 3339 (microseconds, UTC), the JSON column
/// as a string holding the JSON text, absent values left out.
pub fn row(event: &Event) -> Value {
    let mut row = Map::new();
    let mut put = |name: &str, value: Option<&str>| {
        if let Some(value) = value {
            row.insert(name.to_owned(), Value::String(value.to_owned()));
        }
    };
    put("event_id", Some(&event.event_id));
    put("event_type", Some(&event.event_type));
    put("source_system", Some(&event.source_system));
    put(
        "created_at",
        Some(
            &event
                .created_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        ),
    );
    put("status", Some(&event.status));
    put("correlation_id", Some(&event.correlation_id));
    put("trace_id", event.trace_id.as_deref());
    put("object_type", event.object_type.as_deref());
    put("idem_key", event.idem_key.as_deref());
    put("error_message", event.error_message.as_deref());
    put("payload", event.payload.as_deref().map(|p| p.get()));
    Value::Object(row)
}

/// The source columns of the MERGE, as `(column, type)`: the objects table's columns with an
/// `s_` prefix (the emulator cannot bind a source column that has a target column's name).
const MERGE_SOURCE: [(&str, &str); 10] = [
    ("idem_key", "STRING"),
    ("source_system", "STRING"),
    ("connection_name", "STRING"),
    ("object_type", "STRING"),
    ("schema_ref", "STRING"),
    ("external_id", "STRING"),
    ("payload", "STRING"),
    ("first_seen", "TIMESTAMP"),
    ("last_seen", "TIMESTAMP"),
    ("correlation_id", "STRING"),
];

/// The statement that upserts `@rows` (one per key) into `table`: a key not there is inserted;
/// one that is there is updated unless the row sent is older than the stored one, so a batch
/// delivered twice, or late, changes nothing. `first_seen` is the earliest ever sent.
pub fn merge_statement(table: &Table) -> String {
    let source = MERGE_SOURCE
        .iter()
        .map(|(name, _)| format!("r.{name} AS s_{name}"))
        .collect::<Vec<_>>()
        .join(", ");
    let value = |name: &str| match name {
        "payload" => "PARSE_JSON(s.s_payload)".to_owned(),
        "first_seen" => "LEAST(t.first_seen, s.s_first_seen)".to_owned(),
        _ => format!("s.s_{name}"),
    };
    let update = MERGE_SOURCE
        .iter()
        .filter(|(name, _)| *name != "idem_key")
        .map(|(name, _)| format!("{name} = {}", value(name)))
        .collect::<Vec<_>>()
        .join(", ");
    let columns = MERGE_SOURCE.map(|(name, _)| name).join(", ");
    let values = MERGE_SOURCE
        .map(|(name, _)| match name {
            "payload" => "PARSE_JSON(s.s_payload)".to_owned(),
            _ => format!("s.s_{name}"),
        })
        .join(", ");
    format!(
        "MERGE `{}.{}.{}` AS t USING (SELECT {source} FROM UNNEST(@rows) AS r) AS s \
         ON t.idem_key = s.s_idem_key \
         WHEN MATCHED AND s.s_last_seen >= t.last_seen THEN UPDATE SET {update} \
         WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})",
        table.project, table.dataset, table.table
    )
}

/// The `@rows` query parameter of [`merge_statement`]: an array of structs, one per object,
/// serialized straight from the objects (5,000 objects a request: building a JSON tree of them
/// first doubled the memory and the time of a delivery).
pub struct MergeRows<'a>(pub &'a [Object]);

impl Serialize for MergeRows<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields: Vec<Value> = MERGE_SOURCE
            .iter()
            .map(|(name, kind)| serde_json::json!({"name": name, "type": {"type": kind}}))
            .collect();
        let kind = serde_json::json!({"type": "ARRAY", "arrayType": {"type": "STRUCT", "structTypes": fields}});
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("name", "rows")?;
        map.serialize_entry("parameterType", &kind)?;
        map.serialize_entry("parameterValue", &ArrayValues(self.0))?;
        map.end()
    }
}

/// `{"arrayValues": [STRUCT_VALUE, ...]}`.
struct ArrayValues<'a>(&'a [Object]);

impl Serialize for ArrayValues<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Rows<'a>(&'a [Object]);
        impl Serialize for Rows<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(StructValue))
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("arrayValues", &Rows(self.0))?;
        map.end()
    }
}

/// `{"structValues": {COLUMN: {"value": TEXT}, ...}}`, the columns of [`MERGE_SOURCE`]; a NULL
/// is a value left out (`{}`).
struct StructValue<'a>(&'a Object);

impl Serialize for StructValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Cell<'a>(Option<&'a str>);
        impl Serialize for Cell<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(usize::from(self.0.is_some())))?;
                if let Some(value) = self.0 {
                    map.serialize_entry("value", value)?;
                }
                map.end()
            }
        }
        struct Cells<'a>([Option<&'a str>; 10]);
        impl Serialize for Cells<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(MERGE_SOURCE.len()))?;
                for ((name, _), cell) in MERGE_SOURCE.iter().zip(self.0) {
                    map.serialize_entry(name, &Cell(cell))?;
                }
                map.end()
            }
        }
        let o = self.0;
        let (first, last) = (
            crate::timearg::micros(&o.first_seen),
            crate::timearg::micros(&o.last_seen),
        );
        // In the order of MERGE_SOURCE.
        let cells = Cells([
            Some(&o.idem_key),
            Some(&o.source_system),
            o.connection_name.as_deref(),
            Some(&o.object_type),
            o.schema_ref.as_deref(),
            o.external_id.as_deref(),
            Some(o.payload.get()),
            Some(&first),
            Some(&last),
            Some(&o.correlation_id),
        ]);
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("structValues", &cells)?;
        map.end()
    }
}

/// The object as a row of the MERGE's source: the JSON column as JSON text, times as RFC 3339.
pub fn object_row(object: &Object) -> Value {
    let time = crate::timearg::micros;
    serde_json::json!({
        "idem_key": object.idem_key,
        "source_system": object.source_system,
        "connection_name": object.connection_name,
        "object_type": object.object_type,
        "schema_ref": object.schema_ref,
        "external_id": object.external_id,
        "payload": object.payload.get(),
        "first_seen": time(&object.first_seen),
        "last_seen": time(&object.last_seen),
        "correlation_id": object.correlation_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_row_has_rfc3339_time_and_the_payload_as_json_text() {
        let mut event = Event::new("job.completed", "lorch", "run-1");
        event.created_at = "2026-11-22T06:00:00.123456Z".parse().unwrap();
        event.set_payload(&json!({"attempt": 1}));
        event.trace_id = Some("t".into());
        let row = row(&event);
        assert_eq!(row["created_at"], "2026-11-22T06:00:00.123456Z");
        assert_eq!(row["payload"], r#"{"attempt":1}"#);
        assert_eq!(row["trace_id"], "t");
        assert!(row.get("idem_key").is_none(), "absent values are left out");
        for (name, _, required) in COLUMNS {
            assert!(!required || row.get(name).is_some(), "{name} is required");
        }
    }

    #[test]
    fn merge_rows_are_one_struct_per_object_with_nulls_left_out() {
        let at: chrono::DateTime<chrono::Utc> = "2026-11-22T06:00:00.123456Z".parse().unwrap();
        let object = Object {
            idem_key: "k".into(),
            source_system: "s".into(),
            connection_name: None,
            object_type: "t".into(),
            schema_ref: None,
            external_id: Some("e".into()),
            payload: serde_json::value::RawValue::from_string(r#"{"a":1}"#.into()).unwrap(),
            first_seen: at,
            last_seen: at,
            correlation_id: "r".into(),
        };
        let json = serde_json::to_value(MergeRows(std::slice::from_ref(&object))).unwrap();
        assert_eq!(json["name"], "rows");
        assert_eq!(
            json["parameterType"]["arrayType"]["structTypes"][7]["type"]["type"],
            "TIMESTAMP"
        );
        assert_eq!(
            json["parameterValue"]["arrayValues"][0]["structValues"],
            json!({
                "idem_key": {"value": "k"}, "source_system": {"value": "s"}, "connection_name": {},
                "object_type": {"value": "t"}, "schema_ref": {}, "external_id": {"value": "e"},
                "payload": {"value": "{\"a\":1}"},
                "first_seen": {"value": "2026-11-22T06:00:00.123456Z"},
                "last_seen": {"value": "2026-11-22T06:00:00.123456Z"},
                "correlation_id": {"value": "r"},
            })
        );
    }

    #[test]
    fn the_table_is_partitioned_and_clustered() {
        let table = Table {
            project: "p".into(),
            dataset: "d".into(),
            table: "t".into(),
        };
        let definition = serde_json::to_value(definition(&EVENTS, &table)).unwrap();
        assert_eq!(definition["timePartitioning"]["type"], "DAY");
        assert_eq!(definition["timePartitioning"]["field"], "created_at");
        assert_eq!(
            definition["clustering"]["fields"],
            json!(["event_type", "source_system"])
        );
        let fields = definition["schema"]["fields"].as_array().unwrap();
        assert_eq!(fields.len(), 11);
        assert_eq!(
            fields[10],
            json!({"name": "payload", "type": "JSON", "mode": "NULLABLE"})
        );
    }
}
