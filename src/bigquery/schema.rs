//! The `event_log` table (docs/events.md, "BigQuery") and an event as one of its rows.

use chrono::SecondsFormat;
use gcp_bigquery_client::model::clustering::Clustering;
use gcp_bigquery_client::model::table::Table as TableDefinition;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use gcp_bigquery_client::model::time_partitioning::TimePartitioning;
use serde_json::{Map, Value};

use super::config::Table;
use crate::events::Event;

/// `(column, type, required)`, in the documented order.
pub const COLUMNS: [(&str, &str, bool); 11] = [
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

/// The table `lorch events init` creates: partitioned by day on `created_at`, clustered on
/// `event_type, source_system` (the filters of nearly every query on it).
pub fn definition(table: &Table) -> TableDefinition {
    let fields = COLUMNS
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
    .description("lorch events: job runs and what jobs emitted (one row per event)")
    .time_partitioning(TimePartitioning::per_day().field("created_at"))
    .clustering(Clustering {
        fields: Some(vec!["event_type".to_owned(), "source_system".to_owned()]),
    })
}

/// How an existing table differs from what lorch writes, one sentence each: a column missing or
/// of another type, a column lorch may leave empty that the table requires, a required column
/// lorch does not write. Empty when every row lorch sends fits.
pub fn differences(found: &TableSchema) -> Vec<String> {
    let fields = found.fields.as_deref().unwrap_or_default();
    let kind = |field: &TableFieldSchema| {
        serde_json::to_value(&field.r#type)
            .ok()
            .and_then(|v| v.as_str().map(str::to_ascii_uppercase))
            .unwrap_or_default()
    };
    let required = |field: &TableFieldSchema| field.mode.as_deref() == Some("REQUIRED");
    let mut differences = Vec::new();
    for (name, expected, lorch_requires) in COLUMNS {
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
        if required(field) && !COLUMNS.iter().any(|(name, ..)| *name == field.name) {
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
    fn the_table_is_partitioned_and_clustered() {
        let table = Table {
            project: "p".into(),
            dataset: "d".into(),
            table: "t".into(),
        };
        let definition = serde_json::to_value(definition(&table)).unwrap();
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
