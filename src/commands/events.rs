//! `lorch events list|status|flush|init`.

use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::time::Instant;

use chrono::Utc;
use serde_json::json;

use crate::bigquery;
use crate::error::{Error, Exit, Result};
use crate::events::EventFilter;
use crate::output;
use crate::output::stderr;

/// Without `--run`, the newest 100 events; with it, all of that run's. Oldest first, streamed:
/// a million events print in constant memory, and `| head` stops the reading.
pub fn list(run: Option<String>, limit: Option<usize>, json: bool) -> Result<Exit> {
    let (_, store) = super::open_home()?;
    let run_id = match run.as_deref() {
        Some("last") => store.last_run_id()?,
        _ => run,
    };
    let limit = limit.or(if run_id.is_some() { None } else { Some(100) });
    let filter = EventFilter {
        run_id: run_id.clone(),
        limit,
    };
    let mut out = output::Stream::new(json);
    let mut count = 0;
    let mut failed = None;
    let mut write = |out: &mut output::Stream, text: &str| match out.write(text) {
        Ok(true) => ControlFlow::Continue(()),
        Ok(false) => ControlFlow::Break(()),
        Err(e) => {
            failed = Some(e);
            ControlFlow::Break(())
        }
    };
    if json {
        if write(&mut out, "{\n  \"events\": [").is_continue() {
            store.for_each(&filter, |event| {
                let comma = if count == 0 { "\n    " } else { ",\n    " };
                count += 1;
                let event = serde_json::to_string(&event).unwrap_or_default();
                write(&mut out, &format!("{comma}{event}"))
            })?;
            let _ = write(&mut out, if count == 0 { "]\n}\n" } else { "\n  ]\n}\n" });
        }
    } else {
        let width = store.widest_event_type(&filter)?;
        store.for_each(&filter, |event| {
            count += 1;
            write(&mut out, &crate::views::events::format_event(&event, width))
        })?;
    }
    if let Some(error) = failed {
        return Err(error.into());
    }
    out.finish()?;
    if count == 0 && !json {
        match (&run_id, limit) {
            (Some(run_id), _) => {
                stderr!("no events for run {run_id} in {}", store.path().display())
            }
            // Zero asked, zero given: nothing to say.
            (None, Some(0)) => {}
            (None, _) => stderr!("no events yet in {}", store.path().display()),
        }
    }
    Ok(Exit::Success)
}

/// `lorch events status`: the outbox's counts, read locally (no network).
pub fn status(json: bool) -> Result<Exit> {
    let (_, store) = super::open_home()?;
    let status = store.delivery_status()?;
    let dead_letters = store.dead_letters(0)?;
    let (table, endpoint, problem) = match bigquery::Config::from_env() {
        Ok(config) => (Some(config.table.to_string()), config.endpoint, None),
        Err(_) if !bigquery::config::requested() => (None, None, None),
        Err(problem) => (None, None, Some(problem.to_string())),
    };
    let age = status.oldest_pending.as_deref().and_then(|at| {
        let at = at.parse::<chrono::DateTime<Utc>>().ok()?;
        Some((Utc::now() - at).to_std().unwrap_or_default())
    });
    if json {
        output::print_json(&json!({
            "bigquery": { "table": table, "endpoint": endpoint, "problem": problem },
            "pending": status.pending,
            "delivered": status.delivered,
            "dead": status.dead,
            "oldest_pending": status.oldest_pending,
            "oldest_pending_age_seconds": age.map(|a| a.as_secs_f64()),
            "last_error": status.last_error,
            "dead_letters": dead_letters,
            "objects_pending": status.objects_pending,
            "objects_last_error": status.objects_last_error,
        }))?;
        return Ok(Exit::Success);
    }
    let mut text = String::new();
    let destination = match (&table, &problem) {
        (Some(table), _) => match &endpoint {
            Some(endpoint) => format!("{table} at {endpoint}"),
            None => table.clone(),
        },
        (None, Some(problem)) => format!("not usable: {problem}"),
        (None, None) => format!(
            "not configured (set {} and {})",
            bigquery::config::DATASET_VAR,
            bigquery::config::TABLE_VAR
        ),
    };
    writeln!(text, "bigquery   {destination}").unwrap();
    writeln!(text, "pending    {}", status.pending).unwrap();
    writeln!(text, "delivered  {}", status.delivered).unwrap();
    writeln!(text, "dead       {}", status.dead).unwrap();
    if let (Some(oldest), Some(age)) = (&status.oldest_pending, age) {
        let age = humantime::format_duration(std::time::Duration::from_secs(age.as_secs()));
        writeln!(text, "oldest     {oldest} ({age} ago)").unwrap();
    }
    if let Some(error) = &status.last_error {
        writeln!(text, "last error {error}").unwrap();
    }
    writeln!(text, "objects    {} pending", status.objects_pending).unwrap();
    if let Some(error) = &status.objects_last_error {
        writeln!(text, "last error {error}").unwrap();
    }
    if !dead_letters.is_empty() {
        writeln!(text, "\ndead letters (BigQuery refused them; `lorch events flush --retry-dead` sends them again):").unwrap();
        for dead in &dead_letters {
            writeln!(
                text,
                "  {}  {}  {}  run {}: {}",
                dead.created_at, dead.event_id, dead.event_type, dead.correlation_id, dead.reason
            )
            .unwrap();
        }
    }
    output::print(&text)?;
    Ok(Exit::Success)
}

/// `lorch events flush`: delivers every pending event, retrying transient failures until
/// `timeout`. Exit 3 when events are left pending or BigQuery refused some.
pub fn flush(timeout: std::time::Duration, retry_dead: bool) -> Result<Exit> {
    let (home, store) = super::open_home()?;
    let config = bigquery::Config::from_env().map_err(cannot_deliver)?;
    if retry_dead {
        let requeued = store.requeue_dead()?;
        stderr!("{requeued} dead letters queued again");
    }
    let client = bigquery::Client::connect(&config).map_err(|f| cannot_deliver(f.message()))?;
    let delivery = bigquery::Delivery {
        store: &store,
        client: &client,
        config: &config,
        home: &home,
    };
    let start = Instant::now();
    let report = delivery.run(&bigquery::Policy {
        deadline: crate::timearg::after(timeout),
        prefer_after: 0,
        lock_wait: timeout,
        retry: true,
    })?;
    let elapsed = start.elapsed();
    let status = store.delivery_status()?;
    let pending = status.pending;
    let rate = report.delivered as f64 / elapsed.as_secs_f64().max(1e-6);
    let mut text = format!(
        "delivered {} events to {} in {} requests ({:.2}s, {rate:.0} events/s); {pending} pending\n",
        report.delivered,
        config.table,
        report.requests,
        elapsed.as_secs_f64()
    );
    if report.objects > 0 || status.objects_pending > 0 {
        let rate = report.objects as f64 / elapsed.as_secs_f64().max(1e-6);
        writeln!(
            text,
            "merged {} objects into {} ({rate:.0} objects/s); {} pending",
            report.objects, config.objects_table, status.objects_pending
        )
        .unwrap();
    }
    output::print(&text)?;
    let pending = pending + status.objects_pending;
    if report.dead > 0 {
        stderr!(
            "warning: BigQuery refused {} events; they are kept as dead letters: see `lorch events status`",
            report.dead
        );
    }
    if pending == 0 {
        return Ok(if report.dead > 0 {
            Exit::Environment
        } else {
            Exit::Success
        });
    }
    let why = match (&report.stopped, report.busy) {
        (Some(failure), _) => failure.message().to_owned(),
        (None, true) => "another lorch kept the delivery lock".to_owned(),
        (None, false) => format!("not done within {}", humantime::format_duration(timeout)),
    };
    let waiting = match status.objects_pending {
        0 => format!("{} events are", status.pending),
        objects => format!("{} events and {objects} objects are", status.pending),
    };
    Err(Error::Environment(anyhow::anyhow!(
        "{waiting} still pending: {why}"
    )))
}

/// `lorch events init`: the dataset, the events table (docs/events.md) and the objects table
/// (docs/objects.md), created when missing.
pub fn init(dry_run: bool, events_table: Option<&str>) -> Result<Exit> {
    let config = bigquery::Config::from_env().map_err(cannot_deliver)?;
    let usage = |p: bigquery::Problem| Error::Usage(p.to_string());
    let table = config.table_for(events_table).map_err(usage)?;
    let objects = config.objects_table_for(events_table).map_err(usage)?;
    let tables = [
        (&table, &bigquery::schema::EVENTS),
        (&objects, &bigquery::schema::OBJECTS),
    ];
    if dry_run {
        let mut text = format!(
            "would create, if missing:\n  dataset {}.{}\n",
            table.project, table.dataset
        );
        for (table, layout) in tables {
            let (period, field) = layout.partition;
            writeln!(
                text,
                "  table   {table}, partitioned by {} on {field}, clustered on {}",
                period.to_lowercase(),
                layout.clustering.join(", ")
            )
            .unwrap();
            for &(name, kind, required) in layout.columns {
                let mode = if required { "REQUIRED" } else { "NULLABLE" };
                writeln!(text, "    {name:15} {kind:10} {mode}").unwrap();
            }
        }
        output::print(&text)?;
        return Ok(Exit::Success);
    }
    let client = bigquery::Client::connect(&config).map_err(|f| cannot_deliver(f.message()))?;
    let timeout = std::time::Duration::from_secs(60);
    let said = |ensured: &bigquery::Ensured| match ensured {
        bigquery::Ensured::Created => "created".to_owned(),
        bigquery::Ensured::Existed => "already exists".to_owned(),
        bigquery::Ensured::Differs(how) => format!(
            "exists, but rows lorch sends would not fit it: {}",
            how.join("; ")
        ),
    };
    let dataset = client
        .ensure_dataset(&table, timeout)
        .map_err(|f| cannot_deliver(f.message()))?;
    output::print(&format!(
        "dataset {}.{}: {}\n",
        table.project,
        table.dataset,
        said(&dataset)
    ))?;
    for (table, layout) in tables {
        let created = client
            .ensure_table(table, layout, timeout)
            .map_err(|f| cannot_deliver(f.message()))?;
        if let bigquery::Ensured::Differs(_) = created {
            return Err(cannot_deliver(format!(
                "table {table} {}; fix or replace it (docs/events.md and docs/objects.md list the columns), or use another table (BQ_EVENTS_TABLE, BQ_OBJECTS_TABLE)",
                said(&created)
            )));
        }
        output::print(&format!("table {table}: {}\n", said(&created)))?;
    }
    Ok(Exit::Success)
}

fn cannot_deliver(problem: impl std::fmt::Display) -> Error {
    Error::Environment(anyhow::anyhow!("BigQuery: {problem}"))
}
