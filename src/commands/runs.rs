//! `lorch runs list|show|reap`: run history from the local store. Each first closes the runs
//! whose lorch process is gone, so no run shows "running" forever.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{format_events, report_reaped};
use crate::cli::RunsQuery;
use crate::error::{Error, Exit, Result};
use crate::events::{EventFilter, LocalStore, RunFilter, RunRow};
use crate::output::stderr;
use crate::{history, output};

/// Opens the store and closes abandoned runs, saying so on stderr.
fn open_reaped() -> Result<LocalStore> {
    let (home, store) = super::open_home()?;
    report_reaped(history::reap(&store, &home, None)?);
    Ok(store)
}

pub fn list(query: RunsQuery) -> Result<Exit> {
    let json = query.json;
    let filter = filter(query)?;
    let store = open_reaped()?;
    let runs = store.runs(&filter)?;
    if json {
        output::print_json(&json!({ "runs": runs }))?;
    } else if runs.is_empty() {
        say_why_none(&store, &filter)?;
    } else {
        output::print(&table(&runs))?;
    }
    Ok(Exit::Success)
}

/// The store's filter; a malformed `--job`, `--since` or `--until` is a usage error.
fn filter(query: RunsQuery) -> Result<RunFilter> {
    let job = match query.job {
        None => None,
        Some(id) => match id.split_once('/') {
            Some((package, name)) if !package.is_empty() && !name.is_empty() => {
                Some((package.to_owned(), name.to_owned()))
            }
            _ => {
                return Err(Error::Usage(format!(
                    "invalid --job '{id}': expected PACKAGE/JOB"
                )));
            }
        },
    };
    let now = crate::timearg::now().map_err(Error::Usage)?;
    let (since, until) =
        crate::timearg::window(query.since.as_deref(), query.until.as_deref(), now)
            .map_err(Error::Usage)?;
    Ok(RunFilter {
        job,
        status: query.status,
        account: query.account,
        since: since.map(|t| t.utc),
        until: until.map(|t| t.utc),
        limit: Some(query.limit),
        ..RunFilter::default()
    })
}

/// One line a run, in aligned columns under a header.
fn table(runs: &[RunRow]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            [
                run.started_at
                    .get(..19)
                    .unwrap_or(&run.started_at)
                    .to_owned()
                    + "Z",
                run.run_id.clone(),
                format!("{}/{}", run.package, run.job),
                run.account.clone().unwrap_or_else(|| "-".to_owned()),
                status_text(run),
                run.attempt.to_string(),
                duration(run),
            ]
            .into()
        })
        .collect();
    output::table(
        &[
            "STARTED", "RUN", "JOB", "ACCOUNT", "STATUS", "ATTEMPTS", "DURATION",
        ],
        &rows,
    )
}

/// Why `runs list` printed nothing, without claiming the store is empty when only the filters
/// matched nothing: with a hint when `--job` names a job that never ran.
fn say_why_none(store: &LocalStore, filter: &RunFilter) -> Result<()> {
    let path = store.path().display();
    let recorded = store.recorded_jobs()?;
    if recorded.is_empty() {
        stderr!("no runs recorded in {path}");
        return Ok(());
    }
    match &filter.job {
        Some((package, job)) if !recorded.contains(&format!("{package}/{job}")) => {
            let id = format!("{package}/{job}");
            let hint = crate::suggest::hint(&id, recorded.iter().map(String::as_str));
            stderr!(
                "no runs of {id} in {path}{hint}; jobs with runs: {}",
                recorded.join(", ")
            );
        }
        _ => stderr!(
            "no runs match in {path} ({} runs of {} jobs recorded)",
            store.count_runs()?,
            recorded.len()
        ),
    }
    Ok(())
}

/// `completed`, `failed (timeout)`, `skipped (locked)`, `running`.
fn status_text(run: &RunRow) -> String {
    match &run.reason {
        Some(reason) => format!("{} ({reason})", run.status.as_str()),
        None => run.status.as_str().to_owned(),
    }
}

fn duration(run: &RunRow) -> String {
    let parse = |s: &str| s.parse::<DateTime<Utc>>().ok();
    match (
        parse(&run.started_at),
        run.ended_at.as_deref().and_then(parse),
    ) {
        (Some(start), Some(end)) => format!("{:.2}s", (end - start).as_seconds_f64()),
        _ => "-".to_owned(),
    }
}

pub fn show(run_id: &str, json: bool) -> Result<Exit> {
    let store = open_reaped()?;
    // `last`: the newest run, as `events list --run last` has it.
    let newest;
    let run_id = match run_id {
        "last" => {
            newest = store.last_run_id()?.ok_or_else(|| {
                Error::Usage(format!(
                    "no runs recorded in {} yet",
                    store.path().display()
                ))
            })?;
            newest.as_str()
        }
        id => id,
    };
    let Some(run) = store.run(run_id)? else {
        return Err(Error::Usage(format!(
            "no run {run_id} in {}; `lorch runs list` shows the recorded runs",
            store.path().display()
        )));
    };
    let events = store.list(&EventFilter {
        run_id: Some(run_id.to_owned()),
        limit: None,
    })?;
    if json {
        output::print_json(&json!({ "run": run, "events": events }))?;
        return Ok(Exit::Success);
    }
    let mut text = format!(
        "run {}\nJob: {}/{}\nStatus: {}\n",
        run.run_id,
        run.package,
        run.job,
        status_text(&run)
    );
    if let Some(account) = &run.account {
        writeln!(text, "Account: {account}").unwrap();
    }
    if let Some(until) = &run.window_until {
        let since = run.window_since.as_deref().unwrap_or("(no start)");
        writeln!(text, "Window: {since} to {until}").unwrap();
    }
    writeln!(
        text,
        "Attempts: {}\nStarted: {}",
        run.attempt, run.started_at
    )
    .unwrap();
    if let Some(ended) = &run.ended_at {
        writeln!(text, "Ended: {ended} (after {})", duration(&run)).unwrap();
    }
    if let Some(error) = &run.error_message {
        writeln!(text, "Error: {error}").unwrap();
    }
    text.push_str("Events:\n");
    for line in format_events(&events).lines() {
        writeln!(text, "  {line}").unwrap();
    }
    output::print(&text)?;
    Ok(Exit::Success)
}

pub fn reap() -> Result<Exit> {
    let (home, store) = super::open_home()?;
    let reaped = history::reap(&store, &home, None)?;
    let mut text = String::new();
    for run in &reaped {
        writeln!(
            text,
            "closed abandoned run {} of {}/{} (started {})",
            run.run_id, run.package, run.job, run.started_at
        )
        .unwrap();
    }
    if reaped.is_empty() {
        text.push_str("no abandoned runs\n");
    }
    output::print(&text)?;
    Ok(Exit::Success)
}
