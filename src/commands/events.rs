//! `lorch events list`.

use std::fmt::Write as _;

use serde_json::json;

use crate::error::{Exit, Result};
use crate::events::{Event, EventFilter};
use crate::output;

/// Without `--run`, the newest 100 events; with it, all of that run's. Oldest first.
pub fn list(run: Option<String>, limit: Option<usize>, json: bool) -> Result<Exit> {
    let (_, store) = super::open_home()?;
    let run_id = match run.as_deref() {
        Some("last") => store.last_run_id()?,
        _ => run,
    };
    let limit = limit.or(if run_id.is_some() { None } else { Some(100) });
    let events = store.list(&EventFilter {
        run_id: run_id.clone(),
        limit,
    })?;
    if json {
        output::print_json(&json!({ "events": events }))?;
        return Ok(Exit::Success);
    }
    if events.is_empty() {
        match &run_id {
            Some(run_id) => eprintln!("no events for run {run_id} in {}", store.path().display()),
            None => eprintln!("no events yet in {}", store.path().display()),
        }
    }
    output::print(&format_events(&events))?;
    Ok(Exit::Success)
}

/// One line per event: `created_at  run_id  event_type  status  source_system  [error]`.
pub fn format_events(events: &[Event]) -> String {
    let type_width = events.iter().map(|e| e.event_type.len()).max().unwrap_or(0);
    let mut text = String::new();
    for event in events {
        let created = event
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        write!(
            text,
            "{created}  {}  {:type_width$}  {:6}  {}",
            event.correlation_id, event.event_type, event.status, event.source_system
        )
        .unwrap();
        if let Some(error) = &event.error_message {
            write!(text, "  {error}").unwrap();
        }
        text.push('\n');
    }
    text
}
