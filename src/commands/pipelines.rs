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
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::config::{Config, Pipeline, Problem};
use crate::error::{Error, Exit, Result};
use crate::events::{EventSink, LocalStore, Outbox};
use crate::lifecycle::{
    LAST_SUCCESS, PipelineEvent, PipelinePayload, PipelineSummary, Reason, RunStatus, StepOf,
    Window,
};
use crate::output::stderr;
use crate::plan::RunOptions;
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
    /// `--config`: the file the pipeline is read from, repeated in the hint to resume.
    pub config: Option<&'a Path>,
}

/// The configuration's pipeline `name`, or a usage error naming the mistakes in its entry (or
/// in the `[jobs]` entry of one of its steps' jobs, or in `[notify]`), or the pipelines there are.
fn find<'c>(config: &'c Config, name: &str) -> Result<&'c Pipeline> {
    let pipeline = config.pipelines.get(name);
    let jobs: Vec<&str> = pipeline.map_or(Vec::new(), |p| {
        p.steps.iter().map(|s| s.job.get_ref().as_str()).collect()
    });
    let own: Vec<Problem> = config
        .problems
        .iter()
        .filter(|p| {
            p.in_pipeline.as_deref() == Some(name)
                || p.in_notify
                || p.in_defaults_of
                    .as_deref()
                    .is_some_and(|j| jobs.contains(&j))
        })
        .cloned()
        .collect();
    if !own.is_empty() {
        return Err(super::config_problems(own));
    }
    pipeline.ok_or_else(|| {
        let file = match (&config.path, crate::config::locate(None)) {
            (Some(path), _) => path.display().to_string(),
            (None, Some((path, _))) => format!("{} (there is no such file)", path.display()),
            (None, None) => "the configuration file (there is none)".to_owned(),
        };
        let names: Vec<&str> = config.pipelines.keys().map(String::as_str).collect();
        let hint = crate::suggest::hint(name, names.iter().copied());
        let known = match names.is_empty() {
            true => "add a [pipeline.NAME] entry (docs/pipelines.md)".to_owned(),
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
    /// Its window already resolved, `--since last-success` included: every step of a pipeline
    /// run works on the window it had when the pipeline started.
    plan: RunPlan<'a>,
    /// Whether its window starts at its last success: then a run outside this pipeline that
    /// moved the watermark meanwhile moves the start too (no window twice).
    resumes: bool,
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
    /// Failed, skipped, or not recorded: what needs it is skipped.
    Blocked,
}

/// The window every step shares, and what a resumed run carries.
struct Shared {
    /// The instant relative times are read from (the first run's, when resuming).
    now: DateTime<Utc>,
    since: Option<String>,
    initial_since: Option<String>,
    account: Option<String>,
    until: String,
    carried: BTreeSet<String>,
    resumes: Option<String>,
}

/// `lorch run-pipeline NAME`.
pub fn run(catalog: &Catalog, request: &Request) -> Result<Exit> {
    let config = read_config(request.config)?;
    let pipeline = find(&config, request.name)?;
    let home = super::lorch_home()?;
    let signals = Signals::install()
        .map_err(|e| Error::Environment(anyhow::Error::new(e).context("cannot catch signals")))?;
    let mut store = LocalStore::open_in(&home)?.wait_while_busy(signals.shared_cancel_flag());
    if crate::bigquery::config::requested() {
        store = store.queue_for_delivery(Outbox::default());
    }
    super::reap_all(&store, &home)?;
    let id = Uuid::now_v7().to_string();
    // Two `--resume` of one run at once: one decides, the other is told who (docs/pipelines.md).
    let _resuming = match request.resume {
        // Not a run id: `window` says there is no such run.
        Some(resumed) if locks::valid_run_id(resumed) => {
            Some(resume_lock(&home, resumed, &id, &signals)?)
        }
        _ => None,
    };
    let shared = window(&store, pipeline, request)?;
    let steps = plan_steps(catalog, &config, pipeline, &shared, &home, &store)?;

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
        notify: config.notify.as_ref(),
    };
    let executed = run.execute(&shared, parallel(request));
    let exit = run.finish(&started, &executed, request.config);
    let metrics = crate::metrics::dir(config.metrics.as_ref().map(|m| m.dir.as_path()));
    super::write_metrics(metrics.as_deref(), &store);
    let exit = exit?;
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
    /// `[notify]`: each step's run is one of its job's (docs/notifications.md).
    notify: Option<&'a crate::config::Notify>,
}

/// The payload of `pipeline.started`: what this run will do.
fn started(request: &Request, total: usize, shared: &Shared) -> PipelinePayload {
    PipelinePayload {
        pipeline: request.name.to_owned(),
        now: Some(timearg::micros(&shared.now)),
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

/// The window of every step: `--since`/`--until` resolved once, `until` defaulting to the
/// instant the pipeline starts; or the window of the run `--resume` names.
fn window(store: &LocalStore, pipeline: &Pipeline, request: &Request) -> Result<Shared> {
    if let Some(resume) = request.resume {
        return resumed(store, pipeline, request.name, resume);
    }
    let now = timearg::now().map_err(Error::Usage)?;
    let since = request.since.map(str::trim).filter(|s| *s != LAST_SUCCESS);
    let (since, until) = timearg::run_window(since, request.until, now).map_err(Error::Usage)?;
    let micros = |t: &lorch_plugin_api::TimeArg| timearg::micros(&t.utc);
    Ok(Shared {
        now,
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

/// The lock of resuming the pipeline run `resumed`, held by the run `id` while it runs: whether
/// another run resumed it already is decided under it, so two `--resume` at once never both run.
fn resume_lock(home: &Path, resumed: &str, id: &str, signals: &Signals) -> Result<locks::Held> {
    let path = home.join("locks").join(format!("resume.{resumed}.lock"));
    match locks::acquire(&path, id, Duration::ZERO, signals)
        .with_context(|| format!("cannot take the lock {}", path.display()))
        .map_err(Error::Environment)?
    {
        locks::Acquired::Held(held) => Ok(held),
        locks::Acquired::Busy(holder) => Err(Error::Usage(format!(
            "--resume: the pipeline run {resumed} is being resumed already, by {} (pid {}); let that one finish, and resume it if it does not complete",
            holder.run_id.as_deref().unwrap_or("another run"),
            holder.pid.map_or("?".to_owned(), |p| p.to_string())
        ))),
    }
}

/// `--resume ID`: the window of that run, and the steps it and the runs it resumed completed.
/// Refused when it is still running, when nothing is left to run, and when another run already
/// resumed it (that one is the one to resume).
fn resumed(store: &LocalStore, pipeline: &Pipeline, name: &str, id: &str) -> Result<Shared> {
    let usage = |why: String| Err(Error::Usage(format!("--resume: {why}")));
    let Some(run) = store.pipeline_run(id)? else {
        return usage(format!(
            "no pipeline run {id}; see `lorch runs list --pipeline {name}`"
        ));
    };
    if run.pipeline != name {
        return usage(format!(
            "{id} is a run of the pipeline {}, not {name}",
            run.pipeline
        ));
    }
    if run.status == RunStatus::Running {
        return usage(format!(
            "the pipeline run {id} is still running (pid {})",
            run.pid.unwrap_or_default()
        ));
    }
    if let Some(later) = store
        .pipeline_runs(Some(name), None, None)?
        .into_iter()
        .rfind(|r| r.started.resumes.as_deref() == Some(id))
    {
        return usage(format!(
            "the pipeline run {id} was resumed already, by {} ({}); resume that one if it did not complete",
            later.pipeline_run_id,
            later.status.as_str()
        ));
    }
    let steps: BTreeSet<&str> = pipeline.steps.iter().map(|s| s.name.as_str()).collect();
    let mut carried: BTreeSet<String> = run.started.carried.iter().cloned().collect();
    for step in store.steps_of(id)? {
        if step.counts()
            && let Some(name) = step.step
        {
            carried.insert(name);
        }
    }
    carried.retain(|s| steps.contains(s.as_str()));
    if carried.len() == steps.len() {
        return usage(format!(
            "every step of the pipeline run {id} completed; nothing is left to run"
        ));
    }
    let started = &run.started;
    let now = started.now.as_deref().and_then(|t| t.parse().ok());
    Ok(Shared {
        now: now.unwrap_or(timearg::now().map_err(Error::Usage)?),
        since: started.since_input.clone(),
        initial_since: started.initial_since.clone(),
        account: started.account.clone(),
        until: started.window.until.clone(),
        carried,
        resumes: Some(id.to_owned()),
    })
}

/// Every step's plan, checked before anything runs: its job exists, its parameters fit, its
/// window resolves (from its last success too: every step starts from the watermark its job had
/// when the pipeline started). Every mistake is named at its place; with one, nothing runs.
fn plan_steps<'a>(
    catalog: &'a Catalog,
    config: &Config,
    pipeline: &'a Pipeline,
    shared: &Shared,
    home: &Path,
    store: &LocalStore,
) -> Result<Vec<Step<'a>>> {
    catalog.report_problems();
    let mut steps = Vec::new();
    let mut problems = Vec::new();
    for step in &pipeline.steps {
        let at = |why: String| {
            let message = format!("pipeline step '{}': {why}", step.name);
            config.problem(step.job.span(), message)
        };
        match plan_step(catalog, pipeline, step, shared, home, store) {
            Ok(planned) => steps.push(planned),
            Err(Error::Usage(why)) => problems.push(at(why)),
            Err(other) => return Err(other),
        }
    }
    match problems.is_empty() {
        true => Ok(steps),
        false => Err(super::config_problems(problems)),
    }
}

fn plan_step<'a>(
    catalog: &'a Catalog,
    pipeline: &'a Pipeline,
    step: &'a crate::config::Step,
    shared: &Shared,
    home: &Path,
    store: &LocalStore,
) -> Result<Step<'a>> {
    let id = step.job.get_ref();
    let (package, name) = id.split_once('/').unwrap_or_default();
    let job = catalog.find(package, name)?;
    let options = RunOptions {
        account: shared.account.clone(),
        since: shared.since.clone(),
        until: Some(shared.until.clone()),
        ..RunOptions::default()
    };
    let mut options = plan::with_defaults(options, Some(&step.options));
    let resumes = plan::last_success(&options);
    if resumes && options.initial_since.is_none() {
        options.initial_since = shared.initial_since.clone();
    }
    let mut run_plan = plan::plan(job, &options, home.to_owned(), shared.now)?;
    // A carried step does not run: its window is not looked at.
    if resumes && !shared.carried.contains(&step.name) {
        let initial = options.initial_since.as_deref();
        plan::resume_from_last_success(&mut run_plan, store, initial, plan::Covered::Empty)?;
    }
    let needs = step
        .needs
        .iter()
        .filter_map(|n| pipeline.steps.iter().position(|s| &s.name == n))
        .collect();
    Ok(Step {
        name: &step.name,
        job_id: id.clone(),
        needs,
        continue_on_failure: step.continue_on_failure,
        plan: run_plan,
        resumes,
    })
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
    /// Steps whose run, or part of it, could not be recorded (exit 3).
    record_errors: usize,
    /// The signal that stopped the pipeline before all its steps ended.
    cancelled: Option<i32>,
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
        let notifier = super::Notifier::before(self.notify, self.store, job, account)?;
        let report = runner::run(plan, self.store as &dyn EventSink, self.signals, recheck)?;
        if let Some(notifier) = notifier {
            notifier.after(self.store, job, account, &report);
        }
        Ok(report)
    }

    /// Records the pipeline's terminal event, prints the summary line, and says the exit code.
    fn finish(
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
    home: &'a Path,
    /// Named in the lock file as its holder.
    pipeline_run_id: &'a str,
    held: Mutex<HashMap<PathBuf, (locks::Held, usize)>>,
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
fn summary_text(summary: &PipelineSummary) -> String {
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
    let config = super::read_config_reporting(flag)?;
    let (home, store) = super::open_home()?;
    super::reap_all(&store, &home)?;
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
    let quote = |text: &str| text.replace('\\', "\\\\").replace('"', "\\\"");
    let mut text = format!("digraph \"{}\" {{\n  rankdir=LR;\n", quote(name));
    for step in steps {
        let (id, job) = (quote(&step.name), quote(step.job.get_ref()));
        text.push_str(&format!(
            "  \"{id}\" [shape=box, label=\"{id}\\n{job}\"];\n"
        ));
    }
    for step in steps {
        for need in &step.needs {
            text.push_str(&format!(
                "  \"{}\" -> \"{}\";\n",
                quote(need),
                quote(&step.name)
            ));
        }
    }
    text.push_str("}\n");
    text
}
