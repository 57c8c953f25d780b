//! A run's one line (`✓`, `✗`, `-`) and its `--json` summary.

use crate::error::Exit;
use crate::lifecycle::{Reason, RunStatus};
use crate::output::{self, stderr};
use crate::plugins::Job;
use crate::runner::{self, Outcome};

/// `; window 2026-11-01T06:00:00Z to 2026-11-02T06:00:00Z` (to the second), what a run's
/// line says of a window given its end.
pub fn window(
    since: Option<&lorch_plugin_api::TimeArg>,
    until: &lorch_plugin_api::TimeArg,
) -> String {
    let at =
        |t: &lorch_plugin_api::TimeArg| t.utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match since {
        Some(since) => format!("; window {} to {}", at(since), at(until)),
        None => format!("; window up to {}", at(until)),
    }
}

/// The one line a run prints: `✓` on stdout (unless `quiet`), `✗` or `-` on stderr, naming the
/// run id and any events that could not be recorded. Printing cannot change the exit code, so a
/// closed or full stdout is ignored here.
pub fn summarize(id: &str, report: &runner::RunReport, quiet: bool, retries: u32, window: &str) {
    let attempt = match report.attempts {
        1 => String::new(),
        n => format!(", attempt {n}"),
    };
    let run = &report.run_id;
    let lost = match report.events_not_recorded {
        0 => String::new(),
        n => {
            format!(", but {n} of its events and objects were not recorded (see the errors above)")
        }
    };
    let counts = report.objects;
    let objects = match counts.total() {
        0 => String::new(),
        _ => format!(
            "; objects: {} inserted, {} updated, {} unchanged",
            counts.inserted, counts.updated, counts.unchanged
        ),
    };
    match &report.outcome {
        Outcome::Completed if lost.is_empty() && quiet => {}
        Outcome::Completed if lost.is_empty() => {
            let took = output::round_duration(report.duration);
            let _ = output::print(&format!(
                "✓ {id} completed in {took} (run {run}{attempt}){window}{objects}\n"
            ));
        }
        Outcome::Completed => stderr!("✗ {id} completed{lost} (run {run}{attempt})"),
        Outcome::Failed(failed) => {
            // Retries were asked for, and not made: say why, in the same line.
            let kept = match (retries > 0 && report.attempts == 1, &failed.error) {
                (true, Some(error)) if error.permanent => {
                    "; not retried: the job said the error is permanent"
                }
                _ => "",
            };
            stderr!(
                "✗ {id} failed: {}{lost} (run {run}{attempt}){window}{kept}",
                failed.message
            )
        }
        Outcome::Skipped(holder) => {
            let by = match (&holder.run_id, holder.pid) {
                (Some(run), Some(pid)) => format!("run {run} (pid {pid})"),
                _ => "another run".to_owned(),
            };
            stderr!("- {id} skipped: {by} holds its lock (run {run})")
        }
        Outcome::AlreadyCompleted(by) => {
            stderr!("- {id} skipped: the run {by} completed its window (run {run})")
        }
    }
}

/// `--json`: the run as one document on stdout (README, "Options of run-job").
pub fn print_summary_json(job: &Job, report: &runner::RunReport, exit: Exit) {
    use crate::child::RunSummary;
    let (status, reason, message) = match &report.outcome {
        Outcome::Completed => (RunStatus::Completed, None, None),
        Outcome::Failed(failed) => (
            RunStatus::Failed,
            Some(failed.reason),
            Some(&failed.message),
        ),
        Outcome::Skipped(_) => (RunStatus::Skipped, Some(Reason::Locked), None),
        Outcome::AlreadyCompleted(_) => (RunStatus::Skipped, Some(Reason::AlreadyCompleted), None),
    };
    let summary = RunSummary {
        run_id: report.run_id.clone(),
        package: job.package().to_owned(),
        job: job.name().to_owned(),
        status,
        reason,
        message: message.cloned(),
        attempts: report.attempts,
        duration_ms: u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
        events_not_recorded: report.events_not_recorded,
        objects: report.objects,
        exit_code: exit as u8,
        retryable: matches!(&report.outcome, Outcome::Failed(f) if f.retryable()),
    };
    // Printing cannot change the exit code, so a closed or full stdout is ignored here.
    let _ = output::print_json(&summary);
}
