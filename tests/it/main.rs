//! lorch's integration tests, in one binary (as ripgrep's and just's are): it builds once, and
//! the fixtures in `common` (the built plugins, the BigQuery emulator) are made once for all.
//! Each module is one area, named after what it checks.

mod architecture;
mod bigquery;
mod cheap_listing;
mod cli;
mod common;
mod concurrency;
mod config;
mod discovery;
mod docs_jobs;
mod faults;
mod fleet;
mod logs;
mod notify;
mod objects;
mod pipelines;
mod runs;
mod schedules;
mod status;
mod supervision;
mod trust;
mod windows;
