//! `lorch objects list|show|count`: the objects jobs upserted, from the local store
//! (docs/objects.md).

use std::fmt::Write as _;

use chrono::{SecondsFormat, Utc};
use serde_json::json;

use crate::cli::ObjectsQuery;
use crate::error::{Error, Exit, Result};
use crate::events::{Object, ObjectFilter};
use crate::output::{self, stderr};

pub fn list(query: ObjectsQuery) -> Result<Exit> {
    let now = crate::timearg::now().map_err(Error::Usage)?;
    let (since, _) =
        crate::timearg::window(query.since.as_deref(), None, now).map_err(Error::Usage)?;
    let filter = ObjectFilter {
        object_type: query.object_type,
        connection: query.account,
        since: since.map(|t| t.utc),
        limit: Some(query.limit),
    };
    let (_, store) = super::open_home()?;
    let objects = store.objects(&filter)?;
    if query.json {
        output::print_json(&json!({ "objects": objects }))?;
    } else if objects.is_empty() {
        stderr!("no objects match in {}", store.path().display());
    } else {
        let rows: Vec<Vec<String>> = objects
            .iter()
            .map(|o| {
                vec![
                    seen(o),
                    o.object_type.clone(),
                    o.idem_key.clone(),
                    o.connection_name.clone().unwrap_or_else(|| "-".to_owned()),
                    o.source_system.clone(),
                ]
            })
            .collect();
        let header = ["LAST_SEEN", "TYPE", "IDEM_KEY", "ACCOUNT", "SOURCE"];
        output::print(&output::table(&header, &rows))?;
    }
    Ok(Exit::Success)
}

fn seen(object: &Object) -> String {
    object.last_seen.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn show(idem_key: &str, json: bool) -> Result<Exit> {
    let (_, store) = super::open_home()?;
    let Some(object) = store.object(idem_key)? else {
        return Err(Error::Usage(format!(
            "no object {idem_key:?} in {}; `lorch objects list` shows the stored objects",
            store.path().display()
        )));
    };
    if json {
        output::print_json(&json!(object))?;
        return Ok(Exit::Success);
    }
    let micros = |t: &chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut text = format!("object {}\nType: {}\n", object.idem_key, object.object_type);
    writeln!(text, "Source: {}", object.source_system).unwrap();
    let optional = [
        ("Account", &object.connection_name),
        ("External id", &object.external_id),
        ("Schema", &object.schema_ref),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            writeln!(text, "{name}: {value}").unwrap();
        }
    }
    writeln!(
        text,
        "First seen: {}\nLast seen: {} (run {})",
        micros(&object.first_seen),
        micros(&object.last_seen),
        object.correlation_id
    )
    .unwrap();
    let payload: serde_json::Value =
        serde_json::from_str(object.payload.get()).unwrap_or(serde_json::Value::Null);
    let pretty = serde_json::to_string_pretty(&payload).unwrap_or_default();
    writeln!(text, "Payload:\n{pretty}").unwrap();
    output::print(&text)?;
    Ok(Exit::Success)
}

pub fn count(json: bool) -> Result<Exit> {
    let (_, store) = super::open_home()?;
    let counts = store.count_objects()?;
    let total: u64 = counts.iter().map(|c| c.count).sum();
    if json {
        output::print_json(&json!({ "total": total, "by_type": counts }))?;
        return Ok(Exit::Success);
    }
    let mut rows: Vec<Vec<String>> = counts
        .iter()
        .map(|c| vec![c.object_type.clone(), c.count.to_string()])
        .collect();
    rows.push(vec!["total".to_owned(), total.to_string()]);
    output::print(&output::table(&["TYPE", "OBJECTS"], &rows))?;
    Ok(Exit::Success)
}
