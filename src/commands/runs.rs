//! `lorch runs list|show|reap`: run history from the local store, pipeline runs included
//! (docs/pipelines.md). Each first closes the runs whose lorch process is gone, so no run shows
//! "running" forever.

use std::fmt::Write as _;

use serde_json::json;

use crate::cli::RunsQuery;
use crate::error::{Error, Exit, Result};
use crate::events::{EventFilter, LocalStore, PipelineRunRow, RunFilter};
use crate::output::stderr;
use crate::views::events::format_events;
use crate::views::runs::{
    between, duration, kept_logs, pipeline_status, reaped_text, say_why_none, short_time,
    status_text, table,
};
use crate::{history, output};

/// Opens the store and closes abandoned runs, saying so on stderr.
fn open_reaped() -> Result<LocalStore> {
    let (home, store) = super::open_home()?;
    super::reap_all(&store, &home)?;
    Ok(store)
}

pub fn list(query: RunsQuery) -> Result<Exit> {
    if let Some(pipeline) = &query.pipeline {
        return list_pipeline(pipeline, query.status, query.limit, query.json);
    }
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

/// `runs list --pipeline NAME`: its runs, one line each.
fn list_pipeline(
    name: &str,
    status: Option<crate::lifecycle::RunStatus>,
    limit: usize,
    json: bool,
) -> Result<Exit> {
    let store = open_reaped()?;
    let runs = store.pipeline_runs(Some(name), status, Some(limit))?;
    if json {
        output::print_json(&json!({ "pipeline_runs": runs }))?;
        return Ok(Exit::Success);
    }
    if runs.is_empty() {
        stderr!(
            "no runs of the pipeline {name} match in {}",
            store.path().display()
        );
        return Ok(Exit::Success);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            let counts = run.summary.as_ref().map_or("-".to_owned(), |s| {
                let not_run = match s.not_run {
                    0 => String::new(),
                    n => format!(", {n} not run"),
                };
                format!(
                    "{} ok, {} failed, {} skipped{not_run}",
                    s.succeeded, s.failed, s.skipped
                )
            });
            vec![
                short_time(&run.started_at),
                run.pipeline_run_id.clone(),
                pipeline_status(run),
                counts,
                between(&run.started_at, run.ended_at.as_deref()),
            ]
        })
        .collect();
    let header = ["STARTED", "PIPELINE RUN", "STATUS", "STEPS", "DURATION"];
    output::print(&output::table(&header, &rows))?;
    Ok(Exit::Success)
}

pub fn show(run_id: &str, json: bool) -> Result<Exit> {
    let (home, store) = super::open_home()?;
    super::reap_all(&store, &home)?;
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
    if let Some(pipeline_run) = store.pipeline_run(run_id)? {
        return show_pipeline(&store, pipeline_run, json);
    }
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
    let logs = kept_logs(&home, run_id)?;
    if json {
        output::print_json(&json!({ "run": run, "events": events, "logs": logs }))?;
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
    let (kept, dropped) = logs
        .iter()
        .fold((0, 0), |(k, d), l| (k + l.kept, d + l.dropped));
    if kept > 0 {
        let dropped = match dropped {
            0 => String::new(),
            n => format!(" ({n} older lines dropped)"),
        };
        writeln!(
            text,
            "Logs: {kept} lines{dropped}: lorch runs logs {}",
            run.run_id
        )
        .unwrap();
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
    let pipelines = history::reap_pipelines(&store, &home)?;
    output::print(&reaped_text(&reaped, &pipelines))?;
    Ok(Exit::Success)
}

/// `runs show PIPELINE_RUN_ID`: the pipeline run, then each step's run: status, reason,
/// duration.
fn show_pipeline(store: &LocalStore, run: PipelineRunRow, json: bool) -> Result<Exit> {
    let steps = store.steps_of(&run.pipeline_run_id)?;
    if json {
        output::print_json(&json!({ "pipeline_run": run, "steps": steps }))?;
        return Ok(Exit::Success);
    }
    let mut text = format!(
        "pipeline run {}\nPipeline: {}\nStatus: {}\n",
        run.pipeline_run_id,
        run.pipeline,
        pipeline_status(&run)
    );
    let window = &run.started.window;
    let since = match (&window.since, &run.started.since_input) {
        (Some(since), _) => since.as_str(),
        (None, Some(input)) => input.as_str(),
        (None, None) => "(no start)",
    };
    writeln!(text, "Window: {since} to {}", window.until).unwrap();
    if let Some(resumes) = &run.started.resumes {
        writeln!(
            text,
            "Resumes: {resumes} (carried: {})",
            run.started.carried.join(", ")
        )
        .unwrap();
    }
    writeln!(text, "Started: {}", run.started_at).unwrap();
    if let Some(ended) = &run.ended_at {
        let took = between(&run.started_at, Some(ended));
        writeln!(text, "Ended: {ended} (after {took})").unwrap();
    }
    if let Some(summary) = &run.summary {
        writeln!(
            text,
            "Steps: {} of {} succeeded, {} failed, {} skipped, {} not run",
            summary.succeeded, summary.total, summary.failed, summary.skipped, summary.not_run
        )
        .unwrap();
    }
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|step| {
            vec![
                step.step.clone().unwrap_or_default(),
                format!("{}/{}", step.package, step.job),
                status_text(step),
                duration(step),
                step.run_id.clone(),
            ]
        })
        .collect();
    text.push_str(&output::table(
        &["STEP", "JOB", "STATUS", "DURATION", "RUN"],
        &rows,
    ));
    output::print(&text)?;
    Ok(Exit::Success)
}
