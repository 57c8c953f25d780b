//! Where a run's events go besides the local store (README, "Options of run-job"): nowhere,
//! BigQuery's queue with delivery during the run, or, for `--dry-run`, the rows printed.

use std::time::Duration;

use crate::bigquery::Background;
use crate::error::{Error, Result};
use crate::events::{EventFilter, LocalStore, Outbox};
use crate::output::{self, stderr};

/// Where this run's events go besides the local store.
pub enum Route {
    /// BigQuery is not configured.
    Local,
    /// `--dry-run`: nothing is queued; the rows are printed, with the tables they would go to.
    DryRun(Option<DryRunTables>),
    /// Queued for BigQuery, and delivered during the run unless the configuration is wrong.
    Queue {
        outbox: Outbox,
        config: Result<crate::bigquery::Config, crate::bigquery::Problem>,
        flush_timeout: Duration,
    },
}

impl Route {
    pub fn choose(dry_run: bool, table: Option<&str>) -> Result<Route> {
        if let Some(table) = table {
            crate::bigquery::config::parse_table(table)
                .map_err(|p| Error::Usage(format!("--events-table: {p}")))?;
            if !crate::bigquery::config::requested() {
                return Err(Error::Usage(format!(
                    "--events-table needs BigQuery: set {} and {}",
                    crate::bigquery::config::DATASET_VAR,
                    crate::bigquery::config::TABLE_VAR
                )));
            }
        }
        if dry_run {
            let tables = crate::bigquery::Config::from_env()
                .ok()
                .and_then(|c| Some((c.table_for(table).ok()?, c.objects_table_for(table).ok()?)));
            return Ok(Route::DryRun(tables));
        }
        if !crate::bigquery::config::requested() {
            return Ok(Route::Local);
        }
        Ok(Route::Queue {
            outbox: Outbox {
                table: table.map(str::to_owned),
            },
            config: crate::bigquery::Config::from_env(),
            flush_timeout: super::deliver::flush_timeout()?,
        })
    }

    /// Starts delivering this run's events in the background, when they are queued.
    pub fn start(&self, home: &std::path::Path, store: &LocalStore) -> Result<Option<Background>> {
        let Route::Queue {
            config,
            flush_timeout,
            ..
        } = self
        else {
            return Ok(None);
        };
        Ok(Some(Background::start(
            home,
            config.clone(),
            store.last_seq()?,
            *flush_timeout,
        )))
    }
}

/// `--dry-run`: the run's event rows as insertAll would receive them, then the rows of the
/// objects it upserted as the MERGE would (README, "Options of run-job"), one JSON object per
/// line.
pub fn print_dry_run(store: &LocalStore, run_id: &str, tables: Option<DryRunTables>) -> Result<()> {
    let events = store.list(&EventFilter {
        run_id: Some(run_id.to_owned()),
        limit: None,
    })?;
    let objects = store.objects_of_run(run_id)?;
    let rows = format!(
        "{} event rows and {} object rows",
        events.len(),
        objects.len()
    );
    match tables {
        Some((events, objects)) => {
            stderr!("dry run: {rows} would be sent to {events} and {objects}; nothing was sent")
        }
        None => stderr!("dry run: {rows}; BigQuery is not configured, nothing was sent"),
    }
    let mut text = String::new();
    for event in &events {
        text.push_str(&crate::bigquery::schema::row(event).to_string());
        text.push('\n');
    }
    for object in &objects {
        text.push_str(&crate::bigquery::schema::object_row(object).to_string());
        text.push('\n');
    }
    output::print(&text)?;
    Ok(())
}

/// The events table and the objects table a dry run would have sent to.
pub type DryRunTables = (crate::bigquery::Table, crate::bigquery::Table);
