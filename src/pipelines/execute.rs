//! Running the steps: each once every step it needs completed, at most `--parallel` at once,
//! under the job locks steps share.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Error, Exit, Result};
use crate::events::EventSink;
use crate::lifecycle::{PipelineEvent, PipelinePayload, PipelineSummary, Reason};
use crate::output::stderr;
use crate::runner::{self, Outcome, RunPlan, RunReport};
use crate::signals::Signals;
use crate::{history, locks, output};

use super::live::{LiveView, step_line, summary_text};
use super::{PipelineRun, Shared, State, Step};

/// How the steps went.
pub struct Executed {
    /// Steps whose run, or part of it, could not be recorded (exit 3).
    pub record_errors: usize,
    /// The signal that stopped the pipeline before all its steps ended.
    pub cancelled: Option<i32>,
}

impl PipelineRun<'_> {
    /// Runs the steps: each once all it needs completed, at most `parallel` at once; a step
    /// whose need is blocked is skipped. After a signal nothing new starts; the running steps
    /// end as cancelled runs (their supervisors saw the signal too).
    pub fn execute(&self, shared: &Shared, parallel: usize) -> Executed {
        let steps = &self.steps;
        let mut states: Vec<State> = steps
            .iter()
            .map(|s| match shared.carried.contains(s.name) {
                true => State::Completed,
                false => State::Waiting,
            })
            .collect();
        let mut record_errors = 0;
        let view = LiveView::new(steps.len(), &states);
        let job_locks = JobLocks {
            home: self.home,
            pipeline_run_id: self.id,
            held: Mutex::new(HashMap::new()),
        };
        let (done, finished) = mpsc::channel::<(usize, anyhow::Result<RunReport>)>();
        std::thread::scope(|scope| {
            let mut running = 0;
            loop {
                // After a signal nothing starts, and what has not started is left not run.
                if self.signals.received().is_none() {
                    record_errors += self.skip_blocked(&mut states, &view);
                    for i in self.ready(&states).into_iter().take(parallel - running) {
                        states[i] = State::Running;
                        running += 1;
                        let (done, job_locks) = (done.clone(), &job_locks);
                        scope.spawn(move || {
                            let _ = done.send((i, self.run_step(&self.steps[i], job_locks)));
                        });
                    }
                }
                view.update(steps, &states);
                if running == 0 {
                    break;
                }
                let Ok((i, result)) = finished.recv() else {
                    break;
                };
                running -= 1;
                states[i] = ended_as(&steps[i], &result);
                if result.as_ref().map_or(true, |r| {
                    r.record_error.is_some() || r.events_not_recorded > 0
                }) {
                    record_errors += 1;
                }
                view.print(|| step_line(&steps[i], &result, self.quiet));
                view.update(steps, &states);
            }
        });
        view.finish();
        let interrupted = states.contains(&State::Waiting);
        Executed {
            record_errors,
            cancelled: self.signals.received().filter(|_| interrupted),
        }
    }

    /// The waiting steps whose needs all completed (or failed with `continue_on_failure`).
    fn ready(&self, states: &[State]) -> Vec<usize> {
        (0..self.steps.len())
            .filter(|&i| {
                states[i] == State::Waiting
                    && self.steps[i]
                        .needs
                        .iter()
                        .all(|&n| matches!(states[n], State::Completed | State::Tolerated))
            })
            .collect()
    }

    /// Records `job.skipped` (reason `upstream_failed`) for every waiting step that needs a
    /// blocked one, until none is left; returns how many could not be recorded.
    fn skip_blocked(&self, states: &mut [State], view: &LiveView) -> usize {
        let steps = &self.steps;
        let mut not_recorded = 0;
        loop {
            let blocked = (0..steps.len()).find_map(|i| {
                let upstream = steps[i]
                    .needs
                    .iter()
                    .find(|&&n| states[n] == State::Blocked)?;
                (states[i] == State::Waiting).then_some((i, *upstream))
            });
            let Some((i, upstream)) = blocked else {
                return not_recorded;
            };
            states[i] = State::Blocked;
            let step = &steps[i];
            let recorded = runner::skip_for_upstream(&step.plan, self.store, steps[upstream].name);
            not_recorded += usize::from(recorded.is_err());
            view.print(|| match recorded {
                Ok(run) => stderr!(
                    "- {} ({}) skipped: the step {} it needs did not complete (run {run})",
                    step.name,
                    step.job_id,
                    steps[upstream].name
                ),
                Err(e) => stderr!("error: {} ({}): {e:#}", step.name, step.job_id),
            });
        }
    }

    /// One step's run, under the job lock the pipeline's steps share. A panic of lorch's own
    /// while running it is this step's failure, not a pipeline that waits forever.
    fn run_step(&self, step: &Step, job_locks: &JobLocks) -> anyhow::Result<RunReport> {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut plan = step.plan.clone();
            let lock = match job_locks.enter(&plan, self.signals) {
                Entered::Busy(holder) => return runner::skip_locked(&plan, self.store, holder),
                Entered::Shared(path) => {
                    plan.lock_wait = None;
                    Some(path)
                }
                Entered::Unlocked => None,
            };
            let report = self.run_in_window(step, &plan);
            job_locks.leave(lock);
            report
        }))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("lorch panicked while running the step")))
    }

    /// A normal run of the step. One that resumes from its last success starts later when a run
    /// outside this pipeline run moved the watermark since the pipeline started.
    fn run_in_window(&self, step: &Step, plan: &RunPlan) -> anyhow::Result<RunReport> {
        let job = plan.job;
        let watermark = || -> anyhow::Result<Option<DateTime<Utc>>> {
            let Some(mark) =
                self.store
                    .watermark(job.package(), job.name(), plan.account.as_deref())?
            else {
                return Ok(None);
            };
            let by = match &mark.run_id {
                Some(run) => self.store.run(run)?.and_then(|r| r.pipeline_run_id),
                None => None,
            };
            Ok((by.as_deref() != Some(self.id))
                .then(|| mark.until.parse().ok())
                .flatten())
        };
        let recheck = match step.resumes {
            true => runner::Recheck::Watermark(&watermark),
            false => runner::Recheck::Nothing,
        };
        let account = plan.account.as_deref();
        let notifier = crate::notify::Notifier::before(self.notify, self.store, job, account)?;
        let report = runner::run(plan, self.store as &dyn EventSink, self.signals, recheck)?;
        if let Some(notifier) = notifier {
            notifier.after(self.store, job, account, &report);
        }
        Ok(report)
    }

    /// Records the pipeline's terminal event, prints the summary line, and says the exit code.
    pub fn finish(
        &self,
        started: &PipelinePayload,
        executed: &Executed,
        config: Option<&Path>,
    ) -> Result<Exit> {
        let runs = self.store.steps_of(self.id)?;
        let took = self.clock.elapsed();
        let summary = history::pipeline_summary(started, &runs, took.as_secs_f64());
        let tolerated = |name: &String| {
            self.steps
                .iter()
                .any(|s| s.name == name && s.continue_on_failure)
        };
        let failed = summary.failed_steps.iter().any(|s| !tolerated(s))
            || summary.skipped > 0
            || summary.not_run > 0;
        let (kind, reason) = match (executed.cancelled, failed) {
            (Some(_), _) => (PipelineEvent::Failed, Some(Reason::Cancelled)),
            (None, true) => (PipelineEvent::Failed, Some(Reason::StepFailed)),
            (None, false) => (PipelineEvent::Completed, None),
        };
        let payload = PipelinePayload {
            summary: Some(summary.clone()),
            reason,
            ..started.clone()
        };
        let mut event = history::pipeline_event(kind, self.id, &payload);
        if kind == PipelineEvent::Failed {
            event.error_message = Some(summary_text(&summary));
        }
        let recorded = self.store.record(&event);
        self.summary_line(kind, executed.cancelled, &summary, took, config);
        if let Err(e) = recorded {
            return Err(Error::Environment(e.context(format!(
                "cannot record {} of pipeline run {}",
                kind.as_str(),
                self.id
            ))));
        }
        Ok(match executed.cancelled {
            Some(signal) => Exit::cancelled_by(signal),
            None if executed.record_errors > 0 => Exit::Environment,
            None if failed => Exit::JobFailed,
            None => Exit::Success,
        })
    }

    /// The pipeline's one line: `✓` on stdout (unless quiet), `✗` on stderr with how to resume.
    fn summary_line(
        &self,
        kind: PipelineEvent,
        cancelled: Option<i32>,
        summary: &PipelineSummary,
        took: Duration,
        config: Option<&Path>,
    ) {
        let (name, id, counts) = (self.name, self.id, summary_text(summary));
        let took = output::round_duration(took);
        let config = config.map_or(String::new(), |c| format!(" --config {}", c.display()));
        let resume = format!("run the rest with: lorch{config} run-pipeline {name} --resume {id}");
        match (kind, cancelled) {
            (PipelineEvent::Completed, _) if self.quiet => {}
            (PipelineEvent::Completed, _) => {
                let _ = output::print(&format!(
                    "✓ pipeline {name} completed: {counts} in {took} (pipeline run {id})\n"
                ));
            }
            (_, Some(signal)) => stderr!(
                "✗ pipeline {name} cancelled by {}: {counts} (pipeline run {id}); {resume}",
                crate::sys::signal_name(signal)
            ),
            _ => stderr!(
                "✗ pipeline {name} failed: {counts} in {took} (pipeline run {id}); {resume}"
            ),
        }
    }
}

/// What a step's end means for the steps that need it: only a run that completed and was
/// recorded whole lets them run (or a failure with `continue_on_failure`).
fn ended_as(step: &Step, result: &anyhow::Result<RunReport>) -> State {
    match result {
        Ok(report) if report.record_error.is_some() => State::Blocked,
        Ok(report) => match &report.outcome {
            Outcome::Completed if report.events_not_recorded == 0 => State::Completed,
            Outcome::Failed(_) if step.continue_on_failure => State::Tolerated,
            _ => State::Blocked,
        },
        Err(_) => State::Blocked,
    }
}

/// How a step took its job's lock.
enum Entered {
    /// The pipeline holds it (at this path) for this step and any sibling of the same job and
    /// account.
    Shared(PathBuf),
    /// Another process holds it: the step is skipped.
    Busy(locks::Holder),
    /// The step takes no lock.
    Unlocked,
}

/// The job locks of the running steps. Steps of one job and account share theirs: a
/// pipeline does not lock itself out (two steps of one sleeping job overlap with
/// `--parallel 2`), while a run of the job from outside the pipeline finds it locked.
struct JobLocks<'a> {
    pub home: &'a Path,
    /// Named in the lock file as its holder.
    pub pipeline_run_id: &'a str,
    pub held: Mutex<HashMap<PathBuf, (locks::Held, usize)>>,
}

impl JobLocks<'_> {
    /// Holds the lock of `plan`'s job and account for one more step.
    fn enter(&self, plan: &RunPlan, signals: &Signals) -> Entered {
        if plan.lock_wait.is_none() {
            return Entered::Unlocked;
        }
        let (package, job) = (plan.job.package(), plan.job.name());
        let path = locks::job_lock_path(self.home, package, job, plan.account.as_deref());
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, steps)) = held.get_mut(&path) {
            *steps += 1;
            return Entered::Shared(path);
        }
        match locks::acquire(&path, self.pipeline_run_id, Duration::ZERO, signals) {
            Ok(locks::Acquired::Held(lock)) => {
                held.insert(path.clone(), (lock, 1));
                Entered::Shared(path)
            }
            Ok(locks::Acquired::Busy(holder)) => Entered::Busy(holder),
            // The run takes it itself, and reports why it cannot.
            Err(_) => Entered::Unlocked,
        }
    }

    /// One step fewer holds the lock at `path`; the last one releases it.
    fn leave(&self, path: Option<PathBuf>) {
        let Some(path) = path else { return };
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, steps)) = held.get_mut(&path) {
            *steps -= 1;
            if *steps == 0 {
                held.remove(&path);
            }
        }
    }
}
