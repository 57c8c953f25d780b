//! Runs as `runs list` and `runs show` print them.

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::events::{LocalStore, PipelineRunRow, RunFilter, RunRow};
use crate::output::{self, stderr};

/// One line a run, in aligned columns under a header.
pub fn table(runs: &[RunRow]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            [
                short_time(&run.started_at),
                run.run_id.clone(),
                format!("{}/{}", run.package, run.job),
                run.account.clone().unwrap_or_else(|| "-".to_owned()),
                status_text(run),
                run.attempt.to_string(),
                duration(run),
                run.error_message
                    .as_deref()
                    .map_or_else(String::new, one_line),
            ]
            .into()
        })
        .collect();
    output::table(
        &[
            "STARTED", "RUN", "JOB", "ACCOUNT", "STATUS", "ATTEMPTS", "DURATION", "ERROR",
        ],
        &rows,
    )
}

/// `run ID of PACKAGE/JOB: failed (error): the error's first line`: what `runs logs` says
/// first.
pub fn headline(run: &RunRow) -> String {
    let error = run.error_message.as_deref().map(one_line);
    format!(
        "run {} of {}/{}: {}{}",
        run.run_id,
        run.package,
        run.job,
        status_text(run),
        error.map_or_else(String::new, |e| format!(": {e}"))
    )
}

/// The longest error a table shows; `runs show` has all of it.
const ERROR_WIDTH: usize = 60;

/// A message as one short line: its first line, cut at [`ERROR_WIDTH`] characters with `…`.
pub fn one_line(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    match first.char_indices().nth(ERROR_WIDTH) {
        Some((cut, _)) => format!("{}…", &first[..cut]),
        None => first.to_owned(),
    }
}

/// `completed`, `failed (timeout)`, `skipped (locked)`, `running`.
pub fn status_text(run: &RunRow) -> String {
    match &run.reason {
        Some(reason) => format!("{} ({reason})", run.status.as_str()),
        None => run.status.as_str().to_owned(),
    }
}

pub fn duration(run: &RunRow) -> String {
    between(&run.started_at, run.ended_at.as_deref())
}

/// `1.25s` from a start to an end; `-` while it runs.
pub fn between(started_at: &str, ended_at: Option<&str>) -> String {
    let parse = |s: &str| s.parse::<DateTime<Utc>>().ok();
    match (parse(started_at), ended_at.and_then(parse)) {
        (Some(start), Some(end)) => format!("{:.2}s", (end - start).as_seconds_f64()),
        _ => "-".to_owned(),
    }
}

/// `2026-11-26T06:00:00Z`: a stored time to the second.
pub fn short_time(at: &str) -> String {
    at.get(..19).unwrap_or(at).to_owned() + "Z"
}

/// `failed (step_failed)`, `completed`, `running`.
pub fn pipeline_status(run: &PipelineRunRow) -> String {
    match &run.reason {
        Some(reason) => format!("{} ({reason})", run.status.as_str()),
        None => run.status.as_str().to_owned(),
    }
}

/// What the run's log keeps of an attempt.
#[derive(serde::Serialize)]
pub struct KeptLog {
    pub attempt: u32,
    pub kept: usize,
    pub dropped: u64,
}

pub fn kept_logs(home: &std::path::Path, run_id: &str) -> Result<Vec<KeptLog>> {
    let unreadable = |e: std::io::Error| {
        Error::Environment(anyhow::Error::new(e).context("cannot read the run's log"))
    };
    let mut logs = Vec::new();
    for attempt in crate::runlog::attempts(home, run_id).map_err(unreadable)? {
        let kept = crate::runlog::read(home, run_id, attempt, 0).map_err(unreadable)?;
        logs.push(KeptLog {
            attempt,
            kept: kept.lines.len(),
            dropped: kept.dropped,
        });
    }
    Ok(logs)
}

/// `runs reap`: a line per run and pipeline run it closed, or that there were none.
pub fn reaped_text(runs: &[RunRow], pipelines: &[PipelineRunRow]) -> String {
    let mut text = String::new();
    for run in runs {
        text.push_str(&format!(
            "closed abandoned run {} of {}/{} (started {})\n",
            run.run_id, run.package, run.job, run.started_at
        ));
    }
    for run in pipelines {
        text.push_str(&format!(
            "closed abandoned pipeline run {} of {} (started {})\n",
            run.pipeline_run_id, run.pipeline, run.started_at
        ));
    }
    if runs.is_empty() && pipelines.is_empty() {
        text.push_str("no abandoned runs\n");
    }
    text
}

/// Why `runs list` printed nothing, without claiming the store is empty when only the filters
/// matched nothing: with a hint when `--job` names a job that never ran.
pub fn say_why_none(store: &LocalStore, filter: &RunFilter) -> Result<()> {
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
