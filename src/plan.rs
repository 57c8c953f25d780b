//! From a run's options to its [`RunPlan`]: the job's defaults from the configuration file,
//! the window (with `--since last-success`), the parameters checked against the job. What
//! `run-job`, the runs `tick` and `backfill` start, and pipeline steps share.

use std::path::PathBuf;
use std::time::Duration;

use lorch_plugin_api::TimeArg;

use crate::config::{self, RunDefaults};
use crate::error::{Error, Result};
use crate::events::LocalStore;
use crate::lifecycle::LAST_SUCCESS;
use crate::plugins::Job;
use crate::runner::{Limits, Mode, RunPlan};
use crate::{params, timearg};

/// What a run is asked to do, whoever asks (the command line, lorch.toml, a pipeline step, a
/// fleet request): free of how it was asked.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    pub account: Option<String>,
    /// A time form, or `last-success`.
    pub since: Option<String>,
    pub initial_since: Option<String>,
    pub until: Option<String>,
    /// `KEY=VALUE`, as `--param` takes them.
    pub params: Vec<String>,
    pub trace_id: Option<String>,
    pub timeout: Option<Duration>,
    pub kill_after: Option<Duration>,
    pub retries: Option<u32>,
    pub retry_backoff: Option<Duration>,
    /// In lorch's own process, without a worker.
    pub in_process: bool,
    pub wait_lock: Option<Duration>,
    pub no_lock: bool,
    pub dry_run: bool,
    /// The `lorch backfill` this run is a window of.
    pub backfill_id: Option<String>,
}

/// The options of a run: its command line, and for what it does not give, the job's defaults
/// in the configuration file (docs/configuration.md).
pub fn with_defaults(mut options: RunOptions, defaults: Option<&RunDefaults>) -> RunOptions {
    let Some(defaults) = defaults else {
        return options;
    };
    let text = |value: &Option<toml::Spanned<String>>| value.as_ref().map(|v| v.get_ref().clone());
    options.account = options.account.or_else(|| defaults.account.clone());
    options.since = options.since.or_else(|| text(&defaults.since));
    // The file's start of a first window applies only to a run that resumes.
    if last_success(&options) {
        options.initial_since = options
            .initial_since
            .or_else(|| text(&defaults.initial_since));
    }
    options.timeout = options
        .timeout
        .or_else(|| config::duration(&defaults.timeout));
    options.kill_after = options
        .kill_after
        .or_else(|| config::duration(&defaults.kill_after));
    options.retries = options.retries.or(defaults.retries);
    options.retry_backoff = options
        .retry_backoff
        .or_else(|| config::duration(&defaults.retry_backoff));
    options.params = defaults.params_with(&options.params);
    options
}

/// Whether `--since` is `last-success`.
pub fn last_success(options: &RunOptions) -> bool {
    options.since.as_deref().map(str::trim) == Some(LAST_SUCCESS)
}

/// What a run resuming from its last success does when that is already past its window's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Covered {
    /// A usage error: `run-job` was asked for a window that is done.
    Refuse,
    /// An empty window at the end: a pipeline step whose job caught up elsewhere.
    Empty,
}

/// `--since last-success` (docs/windows.md): the end of the newest window this job and account
/// completed, else `--initial-since`, else a usage error (never "all time"). The window ends at
/// `--until`, or at the run's start: the next run starts exactly there.
pub fn resume_from_last_success(
    plan: &mut RunPlan,
    store: &LocalStore,
    initial: Option<&str>,
    covered: Covered,
) -> Result<()> {
    let (package, name, account) = (plan.job.package(), plan.job.name(), plan.account.as_deref());
    let start = match store.watermark(package, name, account)? {
        Some(mark) => TimeArg {
            utc: mark.until.parse().map_err(|e| {
                Error::Environment(anyhow::anyhow!(
                    "the watermark {} of {package}/{name} in {} is not a time: {e}",
                    mark.until,
                    store.path().display()
                ))
            })?,
            raw: LAST_SUCCESS.to_owned(),
        },
        None => {
            let Some(initial) = initial else {
                let of = account.map_or(String::new(), |a| format!(" for account {a}"));
                return Err(Error::Usage(format!(
                    "--since last-success: no run of {package}/{name}{of} has completed yet, so there is no window to start from; give the first start with --initial-since (e.g. --initial-since -30d), or set one with `lorch state set {package}/{name} --to TIME`"
                )));
            };
            let (since, _) = timearg::window(Some(initial), None, plan.now)
                .map_err(|e| Error::Usage(e.replace("for --since", "for --initial-since")))?;
            since.expect("a value was given")
        }
    };
    let until = plan.until.get_or_insert_with(|| TimeArg {
        raw: "now".to_owned(),
        utc: plan.now,
    });
    if start.utc > until.utc && covered == Covered::Empty {
        plan.since = Some(TimeArg {
            utc: until.utc,
            raw: LAST_SUCCESS.to_owned(),
        });
        return Ok(());
    }
    if start.utc > until.utc {
        return Err(Error::Usage(format!(
            "--since last-success is {} (the end of the last completed window of {package}/{name}), later than --until '{}' ({}); nothing is left to run",
            timearg::micros(&start.utc),
            until.raw,
            timearg::micros(&until.utc)
        )));
    }
    plan.since = Some(start);
    Ok(())
}

/// The plan of a run starting at `now` (relative times are read from there).
pub fn plan<'a>(
    job: &'a Job,
    options: &RunOptions,
    home: PathBuf,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<RunPlan<'a>> {
    let resumes = last_success(options);
    if options.initial_since.is_some() && !resumes {
        return Err(Error::Usage(
            "--initial-since is the start of the first window of --since last-success; give --since last-success with it".to_owned(),
        ));
    }
    let since = options.since.as_deref().filter(|_| !resumes);
    let (since, until) =
        timearg::run_window(since, options.until.as_deref(), now).map_err(Error::Usage)?;
    let params = params::resolve(job.meta(), &options.params).map_err(Error::Usage)?;
    Ok(RunPlan {
        job,
        account: options.account.clone(),
        since,
        until,
        now,
        params,
        trace_id: options.trace_id.clone().filter(|t| !t.is_empty()),
        mode: if options.in_process {
            Mode::InProcess
        } else {
            Mode::Supervised(Limits {
                timeout: options.timeout,
                kill_after: options.kill_after.unwrap_or(Duration::from_secs(5)),
            })
        },
        retries: options.retries.unwrap_or(0),
        retry_backoff: options.retry_backoff.unwrap_or(Duration::from_secs(10)),
        lock_wait: match options.no_lock {
            true => None,
            false => Some(options.wait_lock.unwrap_or_default()),
        },
        home,
        backfill_id: options.backfill_id.clone(),
        dry_run: options.dry_run,
        pipeline: None,
    })
}

/// What the configuration file says to do after a run: rewrite the metrics file
/// (docs/metrics.md), call a hook (docs/notifications.md).
pub struct After {
    pub metrics: Option<std::path::PathBuf>,
    pub notify: Option<crate::config::Notify>,
}

impl After {
    pub fn of(config: &crate::config::Config) -> After {
        After {
            metrics: crate::metrics::dir(config.metrics.as_ref().map(|m| m.dir.as_path())),
            notify: config.notify.clone(),
        }
    }
}

/// A run's options with the job's defaults from the configuration file (docs/configuration.md),
/// and what to do after the run. A file lorch cannot read, or a mistake in this job's own
/// `[jobs]` entry (or in `[notify]`), is a usage error naming it; mistakes in other entries are
/// `config check`'s and `tick`'s to report.
pub fn configured(
    file: Option<&std::path::Path>,
    job: &crate::plugins::Job,
    options: crate::plan::RunOptions,
) -> crate::error::Result<(crate::plan::RunOptions, After)> {
    let config = crate::config::Config::read_file(file).map_err(crate::config::problems)?;
    let id = job.id();
    let own: Vec<_> = config
        .problems
        .iter()
        .filter(|p| p.in_defaults_of.as_deref() == Some(id.as_str()) || p.in_notify)
        .cloned()
        .collect();
    if !own.is_empty() {
        return Err(crate::config::problems(own));
    }
    Ok((
        crate::plan::with_defaults(options, config.defaults_of(&id)),
        After::of(&config),
    ))
}
