//! Pipelines (docs/pipelines.md): what `lorch run-pipeline` runs.
//!
//! A pipeline run is one lorch process: each step is a normal supervised run (its own worker
//! process, lock, timeout, retries and events), started on a thread of this process once every
//! step it needs completed, at most `--parallel` at once. A step that does not complete skips
//! the steps that need it (`job.skipped`, reason `upstream_failed`); other branches go on.
//! The pipeline run holds a lock on its id, like a run, so a `kill -9` of lorch is found and
//! closed as abandoned by the next command that looks.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::{Config, Pipeline, Problem};
use crate::error::{Error, Exit, Result};
use crate::events::{EventSink, LocalStore, Outbox};
use crate::lifecycle::{LAST_SUCCESS, PipelineEvent, PipelinePayload, Window};
use crate::plugins::Catalog;
use crate::runner::RunPlan;
use crate::signals::Signals;
use crate::{history, locks, timearg};

mod execute;
mod live;
mod steps;
mod window;

use steps::{plan_steps, steps_with_ids};
use window::{resume_lock, window};

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
pub fn find<'c>(config: &'c Config, name: &str) -> Result<&'c Pipeline> {
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
        return Err(crate::config::problems(own));
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
pub fn read_config(flag: Option<&Path>) -> Result<Config> {
    Config::read_file(flag).map_err(crate::config::problems)
}

/// One step, ready to run.
struct Step<'a> {
    pub name: &'a str,
    pub job_id: String,
    pub needs: Vec<usize>,
    pub continue_on_failure: bool,
    /// Its window already resolved, `--since last-success` included: every step of a pipeline
    /// run works on the window it had when the pipeline started.
    pub plan: RunPlan<'a>,
    /// Whether its window starts at its last success: then a run outside this pipeline that
    /// moved the watermark meanwhile moves the start too (no window twice).
    pub resumes: bool,
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
pub struct Shared {
    /// The instant relative times are read from (the first run's, when resuming).
    pub now: DateTime<Utc>,
    pub since: Option<String>,
    pub initial_since: Option<String>,
    pub account: Option<String>,
    pub until: String,
    pub carried: BTreeSet<String>,
    pub resumes: Option<String>,
}

/// `lorch run-pipeline NAME`.
pub fn run(catalog: &Catalog, request: &Request) -> Result<Exit> {
    let config = read_config(request.config)?;
    let pipeline = find(&config, request.name)?;
    let home = crate::paths::home()?;
    let signals = Signals::install()
        .map_err(|e| Error::Environment(anyhow::Error::new(e).context("cannot catch signals")))?;
    let mut store = LocalStore::open_in(&home)?.wait_while_busy(signals.shared_cancel_flag());
    if crate::bigquery::config::requested() {
        store = store.queue_for_delivery(Outbox::default());
    }
    crate::history::reap_all(&store, &home)?;
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
    let background = crate::bigquery::deliver::start(&home, &store)?;
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
    crate::metrics::write_after_run(metrics.as_deref(), &store);
    let exit = exit?;
    if let Some(background) = background {
        crate::bigquery::deliver::finish(background, &store);
    }
    Ok(exit)
}

/// A pipeline run under way: what its steps share.
struct PipelineRun<'a> {
    pub name: &'a str,
    /// The pipeline run id.
    pub id: &'a str,
    pub home: &'a Path,
    pub store: &'a LocalStore,
    pub signals: &'a Signals,
    pub steps: Vec<Step<'a>>,
    pub quiet: bool,
    pub clock: Instant,
    /// `[notify]`: each step's run is one of its job's (docs/notifications.md).
    pub notify: Option<&'a crate::config::Notify>,
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
