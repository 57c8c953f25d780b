//! The BigQuery sink (docs/events.md, "BigQuery"): events are committed to the local store first, queued in its
//! outbox, and delivered from there; an outage delays events, it never loses them or changes a
//! job's outcome.
//!
//! Nothing here runs for `jobs list` or `jobs show`: the async runtime and the HTTP client are
//! built only when something is delivered.

mod client;
pub mod config;
pub mod deliver;
pub mod route;
pub mod schema;

pub use client::{Client, Ensured};
pub use config::{Config, Problem, Table};
pub use deliver::{Background, Delivery, Finished, Policy};
