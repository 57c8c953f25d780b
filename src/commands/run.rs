//! `lorch run-job` and `lorch run`.

use std::path::PathBuf;
use std::time::Duration;

use lorch_plugin_api::TimeArg;

use crate::bigquery::{self, Background, Finished};
use crate::cli::RunOptions;
use crate::config::{self, RunDefaults};
use crate::error::{Error, Exit, Result};
use crate::events::{EventFilter, LocalStore, Outbox};
use crate::lifecycle::{LAST_SUCCESS, Reason, RunStatus};
use crate::output::stderr;
use crate::plugins::Job;
use crate::runner::{self, Limits, Mode, Outcome, RunPlan};
use crate::signals::Signals;
use crate::{history, output, params, timearg};

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

/// Validates every argument first (a usage error runs nothing and records nothing), then runs
/// the job and prints one line naming the run id.
pub fn run(job: &Job, options: &RunOptions) -> Result<Exit> {
    let mut plan = plan(job, options, super::lorch_home()?)?;
    let route = Route::choose(options)?;
    let signals = Signals::install()
        .map_err(|e| Error::Environment(anyhow::Error::new(e).context("cannot catch signals")))?;
    // The run's events wait through a busy store for as long as the run lasts.
    let mut store = LocalStore::open_in(&plan.home)?.wait_while_busy(signals.shared_cancel_flag());
    if last_success(options) {
        resume_from_last_success(&mut plan, &store, options.initial_since.as_deref())?;
    }
    if let Route::Queue { outbox, .. } = &route {
        store = store.queue_for_delivery(outbox.clone());
    }
    super::report_reaped(history::reap(
        &store,
        &plan.home,
        Some((job.package().to_owned(), job.name().to_owned())),
    )?);
    let background = route.start(&plan.home, &store)?;
    let watermark = || -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
        let mark = store.watermark(job.package(), job.name(), plan.account.as_deref())?;
        Ok(mark.and_then(|m| m.until.parse().ok()))
    };
    let resumes = last_success(options).then_some(&watermark as &dyn Fn() -> _);
    let report = runner::run(&plan, &store, &signals, resumes)?;
    let exit = match report.record_error {
        Some(_) => Exit::Environment,
        None => exit_code(&report, signals.received()),
    };
    if options.json {
        print_summary_json(job, &report, exit);
    }
    summarize(&job.id(), &report, options.quiet || options.json);

    // Whatever happens to delivery, the exit code stays the job's.
    if let Some(background) = background {
        match background.finish() {
            Ok(finished) => warn_undelivered(finished, &store),
            Err(e) => stderr!(
                "warning: BigQuery delivery stopped ({e:#}); pending events stay in {}; deliver them with: lorch events flush",
                store.path().display()
            ),
        }
    }
    if let Route::DryRun(tables) = route {
        print_dry_run(&store, &report.run_id, tables)?;
    }
    if let Some(error) = report.record_error {
        return Err(Error::Environment(error));
    }
    Ok(exit)
}

fn exit_code(report: &runner::RunReport, signal: Option<i32>) -> Exit {
    match (signal, &report.outcome) {
        (Some(signal), _) => Exit::cancelled_by(signal),
        // The job did its work, but lorch could not keep all it reported: not a success.
        (None, Outcome::Completed) if report.events_not_recorded > 0 => Exit::Environment,
        (None, Outcome::Completed) => Exit::Success,
        (None, Outcome::Failed(_)) => Exit::JobFailed,
        (None, Outcome::Skipped(_)) => Exit::Skipped,
    }
}

/// `--json`: the run as one document on stdout (README, "Options of run-job").
fn print_summary_json(job: &Job, report: &runner::RunReport, exit: Exit) {
    let (status, reason, message) = match &report.outcome {
        Outcome::Completed => (RunStatus::Completed, None, None),
        Outcome::Failed(failed) => (
            RunStatus::Failed,
            Some(failed.reason),
            Some(&failed.message),
        ),
        Outcome::Skipped(_) => (RunStatus::Skipped, Some(Reason::Locked), None),
    };
    let summary = serde_json::json!({
        "run_id": report.run_id,
        "package": job.package(),
        "job": job.name(),
        "status": status,
        "reason": reason,
        "message": message,
        "attempts": report.attempts,
        "duration_ms": u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
        "events_not_recorded": report.events_not_recorded,
        "objects": report.objects,
        "exit_code": exit as u8,
    });
    // Printing cannot change the exit code, so a closed or full stdout is ignored here.
    let _ = output::print_json(&summary);
}

/// The one line a run prints: `✓` on stdout (unless `quiet`), `✗` or `-` on stderr, naming the
/// run id and any events that could not be recorded. Printing cannot change the exit code, so a
/// closed or full stdout is ignored here.
fn summarize(id: &str, report: &runner::RunReport, quiet: bool) {
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
                "✓ {id} completed in {took} (run {run}{attempt}){objects}\n"
            ));
        }
        Outcome::Completed => stderr!("✗ {id} completed{lost} (run {run}{attempt})"),
        Outcome::Failed(failed) => {
            stderr!(
                "✗ {id} failed: {}{lost} (run {run}{attempt})",
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
    }
}

/// Where this run's events go besides the local store.
enum Route {
    /// BigQuery is not configured.
    Local,
    /// `--dry-run`: nothing is queued; the rows are printed, with the tables they would go to.
    DryRun(Option<DryRunTables>),
    /// Queued for BigQuery, and delivered during the run unless the configuration is wrong.
    Queue {
        outbox: Outbox,
        config: Result<bigquery::Config, bigquery::Problem>,
        flush_timeout: Duration,
    },
}

impl Route {
    fn choose(options: &RunOptions) -> Result<Route> {
        let table = options.events_table.as_deref();
        if let Some(table) = table {
            bigquery::config::parse_table(table)
                .map_err(|p| Error::Usage(format!("--events-table: {p}")))?;
            if !bigquery::config::requested() {
                return Err(Error::Usage(format!(
                    "--events-table needs BigQuery: set {} and {}",
                    bigquery::config::DATASET_VAR,
                    bigquery::config::TABLE_VAR
                )));
            }
        }
        if options.dry_run {
            let tables = bigquery::Config::from_env()
                .ok()
                .and_then(|c| Some((c.table_for(table).ok()?, c.objects_table_for(table).ok()?)));
            return Ok(Route::DryRun(tables));
        }
        if !bigquery::config::requested() {
            return Ok(Route::Local);
        }
        Ok(Route::Queue {
            outbox: Outbox {
                table: table.map(str::to_owned),
            },
            config: bigquery::Config::from_env(),
            flush_timeout: flush_timeout()?,
        })
    }

    /// Starts delivering this run's events in the background, when they are queued.
    fn start(&self, home: &std::path::Path, store: &LocalStore) -> Result<Option<Background>> {
        let Route::Queue {
            config,
            flush_timeout,
            ..
        } = self
        else {
            return Ok(None);
        };
        Ok(Some(Background::start(
            home,
            config.clone(),
            store.last_seq()?,
            *flush_timeout,
        )))
    }
}

/// `LORCH_BQ_FLUSH_TIMEOUT`: how long a run may spend, after its job, delivering what is
/// still pending (default 10s).
fn flush_timeout() -> Result<Duration> {
    match std::env::var("LORCH_BQ_FLUSH_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(10)),
        Ok(value) => timearg::duration(&value)
            .map_err(|e| Error::Usage(format!("invalid LORCH_BQ_FLUSH_TIMEOUT '{value}': {e}"))),
    }
}

/// One warning when events of this run (or earlier ones) are not in BigQuery yet.
fn warn_undelivered(finished: Finished, store: &LocalStore) {
    if !finished.dead.is_empty() {
        stderr!(
            "warning: BigQuery refused {} events of this run ({}); they are kept as dead letters: see `lorch events status`",
            finished.dead.len(),
            finished.dead[0].reason
        );
    }
    let waiting = match (finished.pending, finished.objects_pending) {
        (0, 0) => return,
        (events, 0) => format!("{events} events are"),
        (0, objects) => format!("{objects} objects are"),
        (events, objects) => format!("{events} events and {objects} objects are"),
    };
    let why = finished
        .problem
        .unwrap_or_else(|| "delivery did not finish in time".to_owned());
    stderr!(
        "warning: {waiting} not in BigQuery yet ({why}); they are kept in {}; deliver them with: lorch events flush",
        store.path().display()
    );
}

/// `--dry-run`: the run's event rows as insertAll would receive them, then the rows of the
/// objects it upserted as the MERGE would (README, "Options of run-job"), one JSON object per
/// line.
fn print_dry_run(store: &LocalStore, run_id: &str, tables: Option<DryRunTables>) -> Result<()> {
    let events = store.list(&EventFilter {
        run_id: Some(run_id.to_owned()),
        limit: None,
    })?;
    let objects = store.objects_of_run(run_id)?;
    let rows = format!(
        "{} event rows and {} object rows",
        events.len(),
        objects.len()
    );
    match tables {
        Some((events, objects)) => {
            stderr!("dry run: {rows} would be sent to {events} and {objects}; nothing was sent")
        }
        None => stderr!("dry run: {rows}; BigQuery is not configured, nothing was sent"),
    }
    let mut text = String::new();
    for event in &events {
        text.push_str(&bigquery::schema::row(event).to_string());
        text.push('\n');
    }
    for object in &objects {
        text.push_str(&bigquery::schema::object_row(object).to_string());
        text.push('\n');
    }
    output::print(&text)?;
    Ok(())
}

/// The events table and the objects table a dry run would have sent to.
type DryRunTables = (bigquery::Table, bigquery::Table);

/// Whether `--since` is `last-success`.
fn last_success(options: &RunOptions) -> bool {
    options.since.as_deref().map(str::trim) == Some(LAST_SUCCESS)
}

/// `--since last-success` (docs/windows.md): the end of the newest window this job and account
/// completed, else `--initial-since`, else a usage error (never "all time"). The window ends at
/// `--until`, or at the run's start: the next run starts exactly there.
fn resume_from_last_success(
    plan: &mut RunPlan,
    store: &LocalStore,
    initial: Option<&str>,
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

fn plan<'a>(job: &'a Job, options: &RunOptions, home: PathBuf) -> Result<RunPlan<'a>> {
    let now = timearg::now().map_err(Error::Usage)?;
    let resumes = last_success(options);
    if options.initial_since.is_some() && !resumes {
        return Err(Error::Usage(
            "--initial-since is the start of the first window of --since last-success; give --since last-success with it".to_owned(),
        ));
    }
    let since = options.since.as_deref().filter(|_| !resumes);
    let (since, until) =
        timearg::window(since, options.until.as_deref(), now).map_err(Error::Usage)?;
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
    })
}
