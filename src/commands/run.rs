//! `lorch run-job` and `lorch run`.

use std::path::PathBuf;

use chrono::Utc;
use lorch_plugin_api::TimeArg;

use crate::cli::RunOptions;
use crate::error::{Error, Exit, Result};
use crate::events::LocalStore;
use crate::plugins::Job;
use crate::runner::{self, Limits, Mode, Outcome, RunPlan, Signals};
use crate::{history, output, params, timearg};

/// Validates every argument first (a usage error runs nothing and records nothing), then runs
/// the job and prints one line naming the run id.
pub fn run(job: &Job, options: &RunOptions) -> Result<Exit> {
    let plan = plan(job, options, super::lorch_home()?)?;
    let store = LocalStore::open_in(&plan.home)?;
    super::runs::report_reaped(history::reap(
        &store,
        &plan.home,
        Some((job.meta.package.clone(), job.meta.name.clone())),
    )?);
    if ["BQ_EVENTS_DATASET", "BQ_EVENTS_TABLE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        eprintln!(
            "warning: this lorch does not deliver to BigQuery yet; the run's events are kept in {}",
            store.path().display()
        );
    }
    let signals = Signals::install()
        .map_err(|e| Error::Environment(anyhow::Error::new(e).context("cannot catch signals")))?;
    let report = runner::run(&plan, &store, &signals)?;

    let id = job.id();
    let attempt = match report.attempts {
        1 => String::new(),
        n => format!(", attempt {n}"),
    };
    match &report.outcome {
        Outcome::Completed => output::print(&format!(
            "✓ {id} completed in {} (run {}{attempt})\n",
            format_duration(report.duration),
            report.run_id
        ))?,
        Outcome::Failed(failed) => {
            eprintln!(
                "✗ {id} failed: {} (run {}{attempt})",
                failed.message, report.run_id
            )
        }
        Outcome::Skipped(holder) => {
            let by = match (&holder.run_id, holder.pid) {
                (Some(run), Some(pid)) => format!("run {run} (pid {pid})"),
                _ => "another run".to_owned(),
            };
            eprintln!(
                "- {id} skipped: {by} holds its lock (run {})",
                report.run_id
            )
        }
    }
    if let Some(error) = report.record_error {
        return Err(Error::Environment(error));
    }
    Ok(match (signals.received(), report.outcome) {
        (Some(libc::SIGINT), _) => Exit::Interrupted,
        (Some(_), _) => Exit::Terminated,
        (None, Outcome::Completed) => Exit::Success,
        (None, Outcome::Failed(_)) => Exit::JobFailed,
        (None, Outcome::Skipped(_)) => Exit::Skipped,
    })
}

fn plan<'a>(job: &'a Job, options: &RunOptions, home: PathBuf) -> Result<RunPlan<'a>> {
    // One `now` for both flags: `--since -1d --until now` is exactly one day.
    let now = Utc::now();
    let time = |flag: &str, value: &Option<String>| -> Result<Option<TimeArg>> {
        let Some(raw) = value else { return Ok(None) };
        let utc = timearg::resolve(raw, now).map_err(|why| {
            Error::Usage(format!(
                "invalid value '{raw}' for {flag}: {why}; {}",
                timearg::ACCEPTED
            ))
        })?;
        Ok(Some(TimeArg {
            raw: raw.clone(),
            utc,
        }))
    };
    let since = time("--since", &options.since)?;
    let until = time("--until", &options.until)?;
    if let (Some(since), Some(until)) = (&since, &until)
        && since.utc > until.utc
    {
        return Err(Error::Usage(format!(
            "--since '{}' ({}) is later than --until '{}' ({}); the window must not end before it starts",
            since.raw,
            since.utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            until.raw,
            until.utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )));
    }
    let params = params::resolve(&job.meta, &options.params).map_err(Error::Usage)?;
    Ok(RunPlan {
        job,
        account: options.account.clone(),
        since,
        until,
        params,
        trace_id: options.trace_id.clone().filter(|t| !t.is_empty()),
        mode: if options.in_process {
            Mode::InProcess
        } else {
            Mode::Supervised(Limits {
                timeout: options.timeout,
                kill_after: options.kill_after,
            })
        },
        retries: options.retries,
        retry_backoff: options.retry_backoff,
        lock_wait: match options.no_lock {
            true => None,
            false => Some(options.wait_lock.unwrap_or_default()),
        },
        home,
    })
}

/// `850ms`, `2.41s`, `3m 12s`.
fn format_duration(duration: std::time::Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.2}s", duration.as_secs_f64()),
        _ => humantime::format_duration(std::time::Duration::from_secs(duration.as_secs()))
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::format_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_micros(1500)), "1ms");
        assert_eq!(format_duration(Duration::from_millis(2414)), "2.41s");
        assert_eq!(format_duration(Duration::from_millis(192_700)), "3m 12s");
    }
}
