//! What a pipeline run shows while it runs and when it ends.

use std::io::IsTerminal as _;

use crate::lifecycle::PipelineSummary;
use crate::output;
use crate::output::stderr;
use crate::runner::{Outcome, RunReport};

use super::{State, Step};

/// The line a step prints when it ends: `✓` on stdout (unless quiet), `✗` or `-` on stderr.
pub fn step_line(step: &Step, result: &anyhow::Result<RunReport>, quiet: bool) {
    let (name, job) = (step.name, &step.job_id);
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            stderr!("✗ {name} ({job}) did not run: {e:#}");
            return;
        }
    };
    let run = &report.run_id;
    if let Some(e) = &report.record_error {
        stderr!("✗ {name} ({job}): its outcome could not be recorded: {e:#} (run {run})");
        return;
    }
    match &report.outcome {
        Outcome::Completed if report.events_not_recorded > 0 => stderr!(
            "✗ {name} ({job}) completed, but {} of its events and objects were not recorded (run {run})",
            report.events_not_recorded
        ),
        Outcome::Completed if quiet => {}
        Outcome::Completed => {
            let took = output::round_duration(report.duration);
            let _ = output::print(&format!(
                "✓ {name} ({job}) completed in {took} (run {run})\n"
            ));
        }
        Outcome::Failed(failed) => {
            let go_on = match step.continue_on_failure {
                true => "; continue_on_failure: what needs it runs",
                false => "",
            };
            stderr!(
                "✗ {name} ({job}) failed: {}{go_on} (run {run})",
                failed.message
            )
        }
        Outcome::Skipped(_) => {
            stderr!("- {name} ({job}) skipped: another run holds its lock (run {run})")
        }
        // Only a backfill's runs check their window again.
        Outcome::AlreadyCompleted(_) => {}
    }
}

/// `4 succeeded, 1 failed (c), 1 skipped (d)`.
pub fn summary_text(summary: &PipelineSummary) -> String {
    let mut text = format!("{} succeeded", summary.succeeded);
    if summary.failed > 0 {
        let names = summary.failed_steps.join(", ");
        text.push_str(&format!(", {} failed ({names})", summary.failed));
    }
    if summary.skipped > 0 {
        let names = summary.skipped_steps.join(", ");
        text.push_str(&format!(", {} skipped ({names})", summary.skipped));
    }
    if summary.not_run > 0 {
        text.push_str(&format!(", {} not run", summary.not_run));
    }
    text
}

/// On a terminal, one line under the steps' lines: how many ended, which are running.
pub struct LiveView(Option<indicatif::ProgressBar>);

impl LiveView {
    pub fn new(len: usize, states: &[State]) -> LiveView {
        if !std::io::stderr().is_terminal() {
            return LiveView(None);
        }
        let bar = indicatif::ProgressBar::new(len as u64);
        let style = indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} steps  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar.set_position(ended(states));
        LiveView(Some(bar))
    }

    pub fn update(&self, steps: &[Step], states: &[State]) {
        if let Some(bar) = &self.0 {
            bar.set_position(ended(states));
            let running: Vec<&str> = steps
                .iter()
                .zip(states)
                .filter(|(_, s)| **s == State::Running)
                .map(|(step, _)| step.name)
                .collect();
            bar.set_message(format!("running: {}", running.join(", ")));
        }
    }

    /// Prints with the live line out of the way.
    pub fn print(&self, print: impl FnOnce()) {
        match &self.0 {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

fn ended(states: &[State]) -> u64 {
    states
        .iter()
        .filter(|s| !matches!(s, State::Waiting | State::Running))
        .count() as u64
}
