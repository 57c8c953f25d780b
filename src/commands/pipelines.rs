//! `lorch run-pipeline`, `lorch pipelines list|show` (docs/pipelines.md).
//!
//! A pipeline run is one lorch process: each step is a normal supervised run (its own worker
//! process, lock, timeout, retries and events), started on a thread of this process once every
//! step it needs completed, at most `--parallel` at once. A step that does not complete skips
//! the steps that need it (`job.skipped`, reason `upstream_failed`); other branches go on.
//! The pipeline run holds a lock on its id, like a run, so a `kill -9` of lorch is found and
//! closed as abandoned by the next command that looks.

use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::cli::RunOptions;
use crate::config::{Config, Pipeline};
use crate::error::{Error, Exit, Result};
use crate::events::{EventSink, LocalStore, Outbox};
use crate::lifecycle::{LAST_SUCCESS, PipelineEvent, PipelinePayload, StepOf, Window};
use crate::output::stderr;
use crate::plugins::Catalog;
use crate::runner::{self, Outcome, RunPlan, RunReport};
use crate::signals::Signals;
use crate::{history, locks, output, plan, timearg};

/// What `run-pipeline` was asked.
pub struct Request<'a> {
    pub name: &'a str,
    pub since: Option<&'a str>,
    /// A fallback for the steps that resume from their last success.
    pub initial_since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub account: Option<&'a str>,
    pub parallel: Option<usize>,
    pub resume: Option<&'a str>,
    pub quiet: bool,
}

/// The configuration's pipeline `name`, or a usage error naming the mistakes in its entry or
/// the pipelines there are.
fn find<'c>(config: &'c Config, name: &str) -> Result<&'c Pipeline> {
    let own: Vec<_> = config
        .problems
        .iter()
        .filter(|p| p.in_pipeline.as_deref() == Some(name))
        .cloned()
        .collect();
    if !own.is_empty() {
        return Err(super::config_problems(own));
    }
    config.pipelines.get(name).ok_or_else(|| {
        let file = config
            .path
            .as_ref()
            .map_or("no configuration file".to_owned(), |p| {
                p.display().to_string()
            });
        let names: Vec<&str> = config.pipelines.keys().map(String::as_str).collect();
        let hint = crate::suggest::hint(name, names.iter().copied());
        let known = match names.is_empty() {
            true => "it has none: add a [pipeline.NAME] entry (docs/pipelines.md)".to_owned(),
            false => format!("its pipelines: {}", names.join(", ")),
        };
        Error::Usage(format!("no pipeline '{name}' in {file}{hint}; {known}"))
    })
}

/// The configuration file; one lorch cannot read or parse is a usage error (a mistake in
/// another entry does not stop a pipeline).
fn read_config(flag: Option<&Path>) -> Result<Config> {
    Config::read_file(flag).map_err(super::config_problems)
}

/// One step, ready to run.
struct Step<'a> {
    name: &'a str,
    job_id: String,
    needs: Vec<usize>,
    continue_on_failure: bool,
    plan: RunPlan<'a>,
    /// `--since last-success`, with the first start when there is no watermark yet.
    resumes: Option<Option<String>>,
}

/// Where each step stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    /// Completed (now or in the run this one resumes).
    Completed,
    /// Failed with `continue_on_failure`: what needs it runs.
    Tolerated,
    /// Failed, or skipped: what needs it is skipped.
    Blocked,
}

/// The window every step shares.
struct Shared {
    since: Option<String>,
    initial_since: Option<String>,
    account: Option<String>,
    until: String,
    carried: BTreeSet<String>,
    resumes: Option<String>,
}

/// `lorch run-pipeline NAME`.
pub fn run(flag: Option<&Path>, catalog: &Catalog, request: &Request) -> Result<Exit> {
    let config = read_config(flag)?;
    let pipeline = find(&config, request.name)?;
    let home = super::lorch_home()?;
    let signals = Signals::install()
        .map_err(|e| Error::Environment(anyhow::Error::new(e).context("cannot catch signals")))?;
    let mut store = LocalStore::open_in(&home)?.wait_while_busy(signals.shared_cancel_flag());
    if crate::bigquery::config::requested() {
        store = store.queue_for_delivery(Outbox::default());
    }
    super::report_reaped(history::reap(&store, &home, None)?);
    super::report_reaped_pipelines(history::reap_pipelines(&store, &home)?);
    let now = timearg::now().map_err(Error::Usage)?;
    let shared = window(&store, request, now)?;
    let steps = plan_steps(catalog, pipeline, request, &shared, &home, &store, now)?;

    let id = Uuid::now_v7().to_string();
    let _lock = locks::hold_run(&home, &id)
        .context("cannot create the pipeline run's lock file")
        .map_err(Error::Environment)?;
    let started = started(request, pipeline.steps.len(), &shared);
    store
        .record(&history::pipeline_event(
            PipelineEvent::Started,
            &id,
            &started,
        ))
        .with_context(|| {
            format!(
                "cannot record pipeline.started of {}; nothing was run",
                request.name
            )
        })
        .map_err(Error::Environment)?;
    let background = super::start_delivery(&home, &store)?;
    let run = PipelineRun {
        name: request.name,
        id: &id,
        home: &home,
        store: &store,
        signals: &signals,
        steps: steps_with_ids(steps, request.name, &id),
        quiet: request.quiet,
        clock: Instant::now(),
    };
    let executed = run.execute(&shared, parallel(request));
    let exit = run.finish(&started, &executed)?;
    if let Some(background) = background {
        super::finish_delivery(background, &store);
    }
    Ok(exit)
}

/// A pipeline run under way: what its steps share.
struct PipelineRun<'a> {
    name: &'a str,
    /// The pipeline run id.
    id: &'a str,
    home: &'a Path,
    store: &'a LocalStore,
    signals: &'a Signals,
    steps: Vec<Step<'a>>,
    quiet: bool,
    clock: Instant,
}

/// The payload of `pipeline.started`: what this run will do.
fn started(request: &Request, total: usize, shared: &Shared) -> PipelinePayload {
    PipelinePayload {
        pipeline: request.name.to_owned(),
        window: Window {
            since: shared.since.clone().filter(|s| s != LAST_SUCCESS),
            until: shared.until.clone(),
        },
        since_input: shared.since.clone(),
        initial_since: shared.initial_since.clone(),
        account: shared.account.clone(),
        parallel: parallel(request),
        total,
        resumes: shared.resumes.clone(),
        carried: shared.carried.iter().cloned().collect(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        pid: std::process::id(),
        lorch_version: env!("CARGO_PKG_VERSION").to_owned(),
        summary: None,
        reason: None,
    }
}

fn parallel(request: &Request) -> usize {
    request
        .parallel
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}

/// The window of every step: `--since`/`--until` resolved once (or the window of the run
/// `--resume` names), `until` defaulting to the instant the pipeline starts.
fn window(store: &LocalStore, request: &Request, now: DateTime<Utc>) -> Result<Shared> {
    if let Some(resume) = request.resume {
        let run = store.pipeline_run(resume)?.ok_or_else(|| {
            Error::Usage(format!(
                "--resume: no pipeline run {resume}; see `lorch runs list --pipeline {}`",
                request.name
            ))
        })?;
        if run.pipeline != request.name {
            return Err(Error::Usage(format!(
                "--resume: {resume} is a run of the pipeline {}, not {}",
                run.pipeline, request.name
            )));
        }
        if run.status == crate::lifecycle::RunStatus::Running {
            return Err(Error::Usage(format!(
                "--resume: the pipeline run {resume} is still running (pid {})",
                run.pid.unwrap_or_default()
            )));
        }
        let mut carried: BTreeSet<String> = run.started.carried.iter().cloned().collect();
        for step in store.steps_of(resume)? {
            if step.status == crate::lifecycle::RunStatus::Completed
                && step.reason.is_none()
                && let Some(name) = step.step
            {
                carried.insert(name);
            }
        }
        return Ok(Shared {
            since: run.started.since_input.clone(),
            initial_since: run.started.initial_since.clone(),
            account: request
                .account
                .map(str::to_owned)
                .or(run.started.account.clone()),
            until: run.started.window.until.clone(),
            carried,
            resumes: Some(resume.to_owned()),
        });
    }
    let since = request.since.map(str::trim).filter(|s| *s != LAST_SUCCESS);
    let (since, until) = timearg::window(since, request.until, now).map_err(Error::Usage)?;
    let micros = |t: &lorch_plugin_api::TimeArg| timearg::micros(&t.utc);
    Ok(Shared {
        since: match request.since.map(str::trim) {
            Some(LAST_SUCCESS) => Some(LAST_SUCCESS.to_owned()),
            _ => since.as_ref().map(micros),
        },
        initial_since: request.initial_since.map(str::to_owned),
        account: request.account.map(str::to_owned),
        until: until.as_ref().map_or_else(|| timearg::micros(&now), micros),
        carried: BTreeSet::new(),
        resumes: None,
    })
}

/// Every step's plan, checked before anything runs: its job exists, its parameters fit, its
/// window resolves. A mistake in any step is a usage error and nothing runs.
fn plan_steps<'a>(
    catalog: &'a Catalog,
    pipeline: &'a Pipeline,
    request: &Request,
    shared: &Shared,
    home: &Path,
    store: &LocalStore,
    now: DateTime<Utc>,
) -> Result<Vec<Step<'a>>> {
    catalog.report_problems();
    let mut steps = Vec::new();
    for step in &pipeline.steps {
        let id = step.job.get_ref();
        let mistake = |e: Error| match e {
            Error::Usage(why) => Error::Usage(format!(
                "pipeline {}: step '{}': {why}",
                request.name, step.name
            )),
            other => other,
        };
        let (package, name) = id.split_once('/').unwrap_or_default();
        let job = catalog.find(package, name).map_err(|e| mistake(e.into()))?;
        let options = RunOptions {
            account: shared.account.clone(),
            since: shared.since.clone(),
            until: Some(shared.until.clone()),
            ..RunOptions::default()
        };
        let mut options = plan::with_defaults(options, Some(&step.options));
        if plan::last_success(&options) && options.initial_since.is_none() {
            options.initial_since = shared.initial_since.clone();
        }
        let mut run_plan = plan::plan(job, &options, home.to_owned()).map_err(mistake)?;
        run_plan.now = now;
        let resumes = plan::last_success(&options).then(|| options.initial_since.clone());
        if let Some(initial) = &resumes {
            // Checked now, resolved again when the step starts (an earlier step may move it).
            plan::resume_from_last_success(&mut run_plan.clone(), store, initial.as_deref())
                .map_err(mistake)?;
        }
        let needs = step
            .needs
            .iter()
            .filter_map(|n| pipeline.steps.iter().position(|s| &s.name == n))
            .collect();
        steps.push(Step {
            name: &step.name,
            job_id: id.clone(),
            needs,
            continue_on_failure: step.continue_on_failure,
            plan: run_plan,
            resumes,
        });
    }
    Ok(steps)
}

/// The steps, each run's plan naming the pipeline run (payload, and `trace_id` unless the step
/// has one of its own).
fn steps_with_ids<'a>(mut steps: Vec<Step<'a>>, pipeline: &str, id: &str) -> Vec<Step<'a>> {
    for step in &mut steps {
        step.plan.pipeline = Some(StepOf {
            pipeline: pipeline.to_owned(),
            pipeline_run_id: id.to_owned(),
            step: step.name.to_owned(),
        });
        step.plan.trace_id.get_or_insert_with(|| id.to_owned());
    }
    steps
}

/// How the steps went.
struct Executed {
    /// A step whose run could not be recorded (lorch could not keep its promise: exit 3).
    record_errors: usize,
}

impl PipelineRun<'_> {
    /// Runs the steps: each once all it needs completed, at most `parallel` at once; a step
    /// whose need is blocked is skipped. After a signal nothing new starts; the running steps
    /// end as cancelled runs (their supervisors saw the signal too).
    fn execute(&self, shared: &Shared, parallel: usize) -> Executed {
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
                    self.skip_blocked(&mut states, &view);
                    for i in self.ready(&states).into_iter().take(parallel - running) {
                        states[i] = State::Running;
                        running += 1;
                        let (done, step, job_locks) = (done.clone(), &steps[i], &job_locks);
                        let (store, signals) = (self.store, self.signals);
                        scope.spawn(move || {
                            let _ = done.send((i, run_step(step, store, signals, job_locks)));
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
                if result.as_ref().map_or(true, |r| r.record_error.is_some()) {
                    record_errors += 1;
                }
                view.print(|| step_line(&steps[i], &result, self.quiet));
            }
        });
        view.finish();
        Executed { record_errors }
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
    /// blocked one, until none is left.
    fn skip_blocked(&self, states: &mut [State], view: &LiveView) {
        let steps = &self.steps;
        loop {
            let blocked = (0..steps.len()).find_map(|i| {
                let upstream = steps[i]
                    .needs
                    .iter()
                    .find(|&&n| states[n] == State::Blocked)?;
                (states[i] == State::Waiting).then_some((i, *upstream))
            });
            let Some((i, upstream)) = blocked else {
                return;
            };
            states[i] = State::Blocked;
            let step = &steps[i];
            let recorded = runner::skip_for_upstream(&step.plan, self.store, steps[upstream].name);
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
}

/// What a step's end means for the steps that need it.
fn ended_as(step: &Step, result: &anyhow::Result<RunReport>) -> State {
    match result {
        Ok(report) => match &report.outcome {
            Outcome::Completed if report.events_not_recorded == 0 => State::Completed,
            Outcome::Failed(_) if step.continue_on_failure => State::Tolerated,
            _ => State::Blocked,
        },
        Err(_) => State::Blocked,
    }
}

/// The job locks of the running steps. Steps of one job and account share theirs: a
/// pipeline does not lock itself out (two steps of one sleeping job overlap with
/// `--parallel 2`), while a run of the job from outside the pipeline finds it locked.
struct JobLocks<'a> {
    home: &'a Path,
    /// Named in the lock file as its holder.
    pipeline_run_id: &'a str,
    held: Mutex<HashMap<PathBuf, (locks::Held, usize)>>,
}

impl JobLocks<'_> {
    /// Holds the lock of `plan`'s job and account for one more step; `None` when the step
    /// takes its own (another process holds it: the step's run then records `job.skipped`).
    fn enter(&self, plan: &RunPlan, signals: &Signals) -> Option<PathBuf> {
        plan.lock_wait?;
        let (package, job, account) =
            (plan.job.package(), plan.job.name(), plan.account.as_deref());
        let path = locks::job_lock_path(self.home, package, job, account);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, steps)) = held.get_mut(&path) {
            *steps += 1;
            return Some(path);
        }
        match locks::acquire(&path, self.pipeline_run_id, Duration::ZERO, signals) {
            Ok(locks::Acquired::Held(lock)) => {
                held.insert(path.clone(), (lock, 1));
                Some(path)
            }
            _ => None,
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

/// One step's run: its window resolved from its last success when it resumes (at its start:
/// an earlier step of the same job may have moved it), then a normal run under the job lock
/// the pipeline's steps share.
fn run_step(
    step: &Step,
    store: &LocalStore,
    signals: &Signals,
    job_locks: &JobLocks,
) -> anyhow::Result<RunReport> {
    let mut plan = step.plan.clone();
    let lock = job_locks.enter(&plan, signals);
    if lock.is_some() {
        plan.lock_wait = None;
    }
    let report = run_under_lock(step, plan, store, signals);
    job_locks.leave(lock);
    report
}

fn run_under_lock(
    step: &Step,
    mut plan: RunPlan,
    store: &LocalStore,
    signals: &Signals,
) -> anyhow::Result<RunReport> {
    if let Some(initial) = &step.resumes {
        plan::resume_from_last_success(&mut plan, store, initial.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let job = plan.job;
    let watermark = || -> anyhow::Result<Option<DateTime<Utc>>> {
        let mark = store.watermark(job.package(), job.name(), plan.account.as_deref())?;
        Ok(mark.and_then(|m| m.until.parse().ok()))
    };
    let resumes = step
        .resumes
        .is_some()
        .then_some(&watermark as &dyn Fn() -> _);
    runner::run(&plan, store as &dyn EventSink, signals, resumes)
}

/// The line a step prints when it ends: `✓` on stdout (unless quiet), `✗` or `-` on stderr.
fn step_line(step: &Step, result: &anyhow::Result<RunReport>, quiet: bool) {
    let (name, job) = (step.name, &step.job_id);
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            stderr!("✗ {name} ({job}) did not run: {e:#}");
            return;
        }
    };
    let run = &report.run_id;
    match &report.outcome {
        Outcome::Completed if report.events_not_recorded > 0 => stderr!(
            "✗ {name} ({job}) completed, but {} of its events were not recorded (run {run})",
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
    }
}

/// Records the pipeline's terminal event, prints the summary line, and says the exit code.
impl PipelineRun<'_> {
    fn finish(&self, started: &PipelinePayload, executed: &Executed) -> Result<Exit> {
        let (store, id, steps, name) = (self.store, self.id, &self.steps, self.name);
        let runs = store.steps_of(id)?;
        let summary = history::pipeline_summary(started, &runs, self.clock.elapsed().as_secs_f64());
        let tolerated = |name: &String| {
            steps
                .iter()
                .any(|s| s.name == name && s.continue_on_failure)
        };
        let failed = summary.failed_steps.iter().any(|s| !tolerated(s))
            || summary.skipped > 0
            || summary.not_run > 0;
        let signal = self.signals.received();
        let (kind, reason) = match (signal, failed) {
            (Some(_), _) => (
                PipelineEvent::Failed,
                Some(crate::lifecycle::Reason::Cancelled),
            ),
            (None, true) => (
                PipelineEvent::Failed,
                Some(crate::lifecycle::Reason::StepFailed),
            ),
            (None, false) => (PipelineEvent::Completed, None),
        };
        let payload = PipelinePayload {
            summary: Some(summary.clone()),
            reason,
            ..started.clone()
        };
        let mut event = history::pipeline_event(kind, id, &payload);
        if kind == PipelineEvent::Failed {
            event.error_message = Some(summary_text(&summary));
        }
        let recorded = store.record(&event);
        let took =
            output::round_duration(std::time::Duration::from_secs_f64(summary.duration_seconds));
        match (kind, signal) {
            (PipelineEvent::Completed, _) if !self.quiet => {
                let _ = output::print(&format!(
                    "✓ pipeline {name} completed: {} in {took} (pipeline run {id})\n",
                    summary_text(&summary)
                ));
            }
            (PipelineEvent::Completed, _) => {}
            (_, Some(signal)) => stderr!(
                "✗ pipeline {name} cancelled by {}: {} (pipeline run {id}); run the rest with: lorch run-pipeline {name} --resume {id}",
                crate::sys::signal_name(signal),
                summary_text(&summary)
            ),
            _ => stderr!(
                "✗ pipeline {name} failed: {} in {took} (pipeline run {id}); run the rest with: lorch run-pipeline {name} --resume {id}",
                summary_text(&summary)
            ),
        }
        if let Err(e) = recorded {
            return Err(Error::Environment(e.context(format!(
                "cannot record {} of pipeline run {id}",
                kind.as_str()
            ))));
        }
        Ok(match signal {
            Some(signal) => Exit::cancelled_by(signal),
            None if executed.record_errors > 0 => Exit::Environment,
            None if failed => Exit::JobFailed,
            None => Exit::Success,
        })
    }
}

/// `4 succeeded, 1 failed (c), 1 skipped (d)`.
fn summary_text(summary: &crate::lifecycle::PipelineSummary) -> String {
    let mut text = format!("{} succeeded", summary.succeeded);
    if summary.failed > 0 {
        text.push_str(&format!(
            ", {} failed ({})",
            summary.failed,
            summary.failed_steps.join(", ")
        ));
    }
    if summary.skipped > 0 {
        text.push_str(&format!(
            ", {} skipped ({})",
            summary.skipped,
            summary.skipped_steps.join(", ")
        ));
    }
    if summary.not_run > 0 {
        text.push_str(&format!(", {} not run", summary.not_run));
    }
    text
}

/// On a terminal, one line under the steps' lines: how many ended, which are running.
struct LiveView(Option<indicatif::ProgressBar>);

impl LiveView {
    fn new(len: usize, states: &[State]) -> LiveView {
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

    fn update(&self, steps: &[Step], states: &[State]) {
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
    fn print(&self, print: impl FnOnce()) {
        match &self.0 {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    fn finish(&self) {
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

/// `lorch pipelines list`: each pipeline, its steps, its last run.
pub fn list(flag: Option<&Path>, json: bool) -> Result<Exit> {
    let config = read_config(flag)?;
    for problem in &config.problems {
        stderr!("error: {problem} (this entry is left out)");
    }
    let (_, store) = super::open_home()?;
    let mut listed = Vec::new();
    for (name, pipeline) in &config.pipelines {
        let last = store.pipeline_runs(Some(name), None, Some(1))?.pop();
        listed.push(json!({
            "name": name,
            "steps": pipeline.steps.len(),
            "defined_at": pipeline.defined_at,
            "last_run": last.map(|r| json!({
                "pipeline_run_id": r.pipeline_run_id,
                "status": r.status,
                "reason": r.reason,
                "started_at": r.started_at,
            })),
        }));
    }
    if json {
        output::print_json(&json!({ "pipelines": listed }))?;
    } else if listed.is_empty() {
        stderr!(
            "no pipelines: add a [pipeline.NAME] entry to the configuration file (docs/pipelines.md)"
        );
    } else {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
        let rows: Vec<Vec<String>> = listed
            .iter()
            .map(|p| {
                let last = match &p["last_run"] {
                    serde_json::Value::Null => "-".to_owned(),
                    run => format!("{} ({})", text(&run["started_at"]), text(&run["status"])),
                };
                vec![
                    text(&p["name"]),
                    p["steps"].to_string(),
                    last,
                    text(&p["defined_at"]),
                ]
            })
            .collect();
        output::print(&output::table(
            &["PIPELINE", "STEPS", "LAST RUN", "DEFINED AT"],
            &rows,
        ))?;
    }
    Ok(match config.problems.is_empty() {
        true => Exit::Success,
        false => Exit::Environment,
    })
}

/// `lorch pipelines show NAME [--json] [--dot]`: the steps in the order they run.
pub fn show(flag: Option<&Path>, name: &str, json: bool, dot: bool) -> Result<Exit> {
    let config = read_config(flag)?;
    let pipeline = find(&config, name)?;
    let order = pipeline.order().unwrap_or_default();
    let steps: Vec<&crate::config::Step> = order.iter().map(|&i| &pipeline.steps[i]).collect();
    if dot {
        output::print(&dot_graph(name, &steps))?;
    } else if json {
        output::print_json(&json!({
            "name": name,
            "defined_at": pipeline.defined_at,
            "steps": steps,
        }))?;
    } else {
        let mut rows = Vec::new();
        for (n, step) in steps.iter().enumerate() {
            let mut notes = Vec::new();
            if let Some(account) = &step.options.account {
                notes.push(format!("account {account}"));
            }
            if step.continue_on_failure {
                notes.push("continue_on_failure".to_owned());
            }
            let needs = match step.needs.is_empty() {
                true => "-".to_owned(),
                false => step.needs.join(", "),
            };
            rows.push(vec![
                format!("{}.", n + 1),
                step.name.clone(),
                step.job.get_ref().clone(),
                needs,
                notes.join(", "),
            ]);
        }
        let mut text = format!(
            "pipeline {name} ({}), {} steps\n",
            pipeline.defined_at,
            steps.len()
        );
        text.push_str(&output::table(&["", "STEP", "JOB", "NEEDS", ""], &rows));
        output::print(&text)?;
    }
    Ok(Exit::Success)
}

/// The steps as a Graphviz digraph: an edge from each need to the step that needs it.
fn dot_graph(name: &str, steps: &[&crate::config::Step]) -> String {
    let quote = |text: &str| format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
    let mut text = format!("digraph {} {{\n  rankdir=LR;\n", quote(name));
    for step in steps {
        let label = format!("{}\\n{}", step.name, step.job.get_ref());
        text.push_str(&format!(
            "  {} [shape=box, label={}];\n",
            quote(&step.name),
            quote(&label).replace("\\\\n", "\\n")
        ));
    }
    for step in steps {
        for need in &step.needs {
            text.push_str(&format!("  {} -> {};\n", quote(need), quote(&step.name)));
        }
    }
    text.push_str("}\n");
    text
}
