//! `lorch run-job` and `lorch run`.

use crate::bigquery::route::{Route, print_dry_run};
use crate::cli::RunArgs;
use crate::error::{Error, Exit, Result};
use crate::events::LocalStore;
use crate::plan::RunOptions;
use crate::plugins::Job;
use crate::runner::{self, Outcome};
use crate::signals::Signals;
use crate::views::run::{print_summary_json, summarize};
use crate::{history, plan};

/// What a run prints, and where its events go: the command line's part beside the run options.
pub struct Shown<'a> {
    pub quiet: bool,
    pub json: bool,
    pub events_table: Option<&'a str>,
}

impl Shown<'_> {
    pub fn of(args: &RunArgs) -> Shown<'_> {
        Shown {
            quiet: args.quiet,
            json: args.json,
            events_table: args.events_table.as_deref(),
        }
    }
}

/// Validates every argument first (a usage error runs nothing and records nothing), then runs
/// the job and prints one line naming the run id.
pub fn run(job: &Job, options: &RunOptions, shown: &Shown, after: &super::After) -> Result<Exit> {
    let now = crate::timearg::now().map_err(Error::Usage)?;
    let mut plan = plan::plan(job, options, super::lorch_home()?, now)?;
    let route = Route::choose(options.dry_run, shown.events_table)?;
    let signals = Signals::install()
        .map_err(|e| Error::Environment(anyhow::Error::new(e).context("cannot catch signals")))?;
    // The run's events wait through a busy store for as long as the run lasts.
    let mut store = LocalStore::open_in(&plan.home)?.wait_while_busy(signals.shared_cancel_flag());
    if plan::last_success(options) {
        plan::resume_from_last_success(
            &mut plan,
            &store,
            options.initial_since.as_deref(),
            plan::Covered::Refuse,
        )?;
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
    // A backfill's window is run once, whatever runs it at the same time (docs/windows.md).
    let completed_by = || -> anyhow::Result<Option<String>> {
        let bound = |t: &Option<lorch_plugin_api::TimeArg>| {
            t.as_ref().map(|t| crate::timearg::micros(&t.utc))
        };
        match (bound(&plan.since), bound(&plan.until)) {
            (Some(since), Some(until)) => {
                let id = (job.package(), job.name());
                store.window_completed(id, plan.account.as_deref(), &since, &until)
            }
            _ => Ok(None),
        }
    };
    let recheck = match (plan::last_success(options), &plan.backfill_id) {
        (true, _) => runner::Recheck::Watermark(&watermark),
        (false, Some(_)) => runner::Recheck::Window(&completed_by),
        (false, None) => runner::Recheck::Nothing,
    };
    let account = plan.account.as_deref();
    let notifier = super::Notifier::before(after.notify.as_ref(), &store, job, account)?;
    let report = runner::run(&plan, &store, &signals, recheck)?;
    let exit = match report.record_error {
        Some(_) => Exit::Environment,
        None => exit_code(&report, signals.received()),
    };
    if shown.json {
        print_summary_json(job, &report, exit);
    }
    // A window given its end (tick's, backfill's, the fleet's runs) is named in the run's line,
    // so that nine caught-up runs read as nine windows.
    let window = match (&plan.until, &options.until) {
        (Some(until), Some(_)) => crate::views::run::window(plan.since.as_ref(), until),
        _ => String::new(),
    };
    summarize(
        &job.id(),
        &report,
        shown.quiet || shown.json,
        plan.retries,
        &window,
    );

    // Whatever happens to delivery, the exit code stays the job's.
    if let Some(background) = background {
        super::finish_delivery(background, &store);
    }
    super::write_metrics(after.metrics.as_deref(), &store);
    if let Some(notifier) = notifier {
        notifier.after(&store, job, account, &report);
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
        // Nothing is owed: the window is done.
        (None, Outcome::AlreadyCompleted(_)) => Exit::Success,
    }
}
