//! Events as `events list`, `runs show` and `events follow` print them: one line each.

use std::fmt::Write as _;

use crate::events::Event;

/// One line per event: `created_at  run_id  event_type  status  source_system  [error]`.
pub fn format_events(events: &[Event]) -> String {
    let width = events
        .iter()
        .map(|e| e.event_type.chars().count())
        .max()
        .unwrap_or(0);
    events.iter().map(|e| format_event(e, width)).collect()
}

/// One event's line, its type padded to `type_width` characters.
pub fn format_event(event: &Event, type_width: usize) -> String {
    let created = event
        .created_at
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut text = format!(
        "{created}  {}  {:type_width$}  {:6}  {}",
        event.correlation_id, event.event_type, event.status, event.source_system
    );
    if let Some(error) = &event.error_message {
        write!(text, "  {error}").unwrap();
    }
    text.push('\n');
    text
}
