//! One module per command group; `dispatch` routes a parsed command line to it.

mod backfill;
mod completions;
mod config;
mod events;
mod fleet;
mod jobs;
mod logs;
mod objects;
mod pipelines;
mod plugins;
mod run;
mod runs;
mod schedule;
mod state;
mod status;

use std::fmt::Write as _;

use crate::cli::{
    Cli, Command, ConfigCommand, EventsCommand, JobsCommand, ObjectsCommand, PipelinesCommand,
    PluginsCommand, QueueCommand, RunsCommand, ScheduleCommand, StateCommand,
};
use crate::error::{Error, Exit, Result};
use crate::events::{Event, RunRow};
use crate::output::stderr;
use crate::plugins::{Catalog, Lookup, SearchPath};

pub fn dispatch(cli: Cli) -> Result<Exit> {
    let search_path = SearchPath::from_env(&cli.plugin_path);
    // Plugins are loaded only by the commands that need jobs. One catalog per process, kept to
    // its end: freeing 10,000 jobs' strings one by one at exit was 15% of a listing's time.
    let discover = || -> &'static Catalog {
        Box::leak(Box::new(Catalog::discover(
            &search_path,
            cli.allow_insecure_plugins,
        )))
    };
    match cli.command {
        Command::Jobs(JobsCommand::List { package, json }) => {
            jobs::list(discover(), package.as_deref(), json)
        }
        Command::Jobs(JobsCommand::Show { package, job, json }) => {
            jobs::show(discover(), &package, &job, json)
        }
        Command::RunJob {
            package,
            job,
            options,
        } => {
            let catalog = discover();
            catalog.report_problems();
            let job = catalog
                .find(&package, &job)
                .map_err(|e| nowhere(&search_path, e))?;
            let (run, after) = configured(cli.config.as_deref(), job, options.options())?;
            run::run(job, &run, &run::Shown::of(&options), &after)
        }
        Command::Run { job, options } => {
            let job = find_job(discover(), &search_path, &job)?;
            let (run, after) = configured(cli.config.as_deref(), job, options.options())?;
            run::run(job, &run, &run::Shown::of(&options), &after)
        }
        Command::Config(ConfigCommand::Check { json }) => {
            config::check(cli.config.as_deref(), discover(), json)
        }
        Command::Config(ConfigCommand::Show { json }) => config::show(cli.config.as_deref(), json),
        Command::Schedule(ScheduleCommand::List { json }) => {
            schedule::list(cli.config.as_deref(), json)
        }
        Command::Schedule(ScheduleCommand::Install { systemd, .. }) => schedule::install(
            &Passed {
                config: cli.config.as_deref(),
                plugin_path: &cli.plugin_path,
                allow_insecure_plugins: cli.allow_insecure_plugins,
                quiet: true,
            },
            systemd,
        ),
        Command::Backfill {
            job,
            since,
            until,
            step,
            account,
            params,
            timeout,
            retries,
            keep_going,
        } => {
            let passed = Passed {
                config: cli.config.as_deref(),
                plugin_path: &cli.plugin_path,
                allow_insecure_plugins: cli.allow_insecure_plugins,
                quiet: true,
            };
            let job = find_job(discover(), &search_path, &job)?;
            let range = backfill::Range {
                since: &since,
                until: until.as_deref(),
                step,
            };
            let options = backfill::Options {
                account: account.as_deref(),
                params: &params,
                timeout,
                retries,
                keep_going,
            };
            backfill::run(&passed, job, &range, &options)
        }
        Command::Tick {
            watch,
            quiet,
            submit,
            nats,
        } => schedule::tick(
            &Passed {
                config: cli.config.as_deref(),
                plugin_path: &cli.plugin_path,
                allow_insecure_plugins: cli.allow_insecure_plugins,
                quiet,
            },
            &schedule::Ticking {
                watch,
                submit: submit.then_some(nats),
            },
        ),
        Command::Plugins(PluginsCommand::List { json }) => {
            plugins::list(&search_path, discover(), json)
        }
        Command::Plugins(PluginsCommand::Install { files, to }) => plugins::install(&files, to),
        Command::Events(EventsCommand::List { run, limit, json }) => events::list(run, limit, json),
        Command::Events(EventsCommand::Status { json }) => events::status(json),
        Command::Events(EventsCommand::Follow { nats, all, json }) => {
            fleet::follow(nats.as_deref(), all, json)
        }
        Command::Events(EventsCommand::Flush {
            timeout,
            retry_dead,
        }) => events::flush(timeout, retry_dead),
        Command::Events(EventsCommand::Init {
            dry_run,
            events_table,
        }) => events::init(dry_run, events_table.as_deref()),
        Command::Runs(RunsCommand::List(query)) => runs::list(query),
        Command::Runs(RunsCommand::Show { run_id, json }) => runs::show(&run_id, json),
        Command::Runs(RunsCommand::Reap) => runs::reap(),
        Command::Runs(RunsCommand::Logs {
            run_id,
            attempt,
            follow,
            json,
        }) => logs::logs(&logs::Request {
            run_id: &run_id,
            attempt,
            follow,
            json,
        }),
        Command::Runs(RunsCommand::Prune { older_than, events }) => logs::prune(older_than, events),
        Command::Objects(ObjectsCommand::List(query)) => objects::list(query),
        Command::Objects(ObjectsCommand::Show { idem_key, json }) => objects::show(&idem_key, json),
        Command::Objects(ObjectsCommand::Count { json }) => objects::count(json),
        Command::State(StateCommand::Show { job, account, json }) => {
            state::show(job.as_deref(), account.as_deref(), json)
        }
        Command::State(StateCommand::Set { job, account, to }) => {
            let job = find_job(discover(), &search_path, &job)?;
            state::set(job, account.as_deref(), Some(&to))
        }
        Command::State(StateCommand::Reset { job, account }) => {
            let job = find_job(discover(), &search_path, &job)?;
            state::set(job, account.as_deref(), None)
        }
        Command::RunPipeline {
            name,
            since,
            initial_since,
            until,
            account,
            parallel,
            resume,
            quiet,
        } => {
            let request = pipelines::Request {
                name: &name,
                since: since.as_deref(),
                initial_since: initial_since.as_deref(),
                until: until.as_deref(),
                account: account.as_deref(),
                parallel: parallel.map(usize::from),
                resume: resume.as_deref(),
                quiet,
                config: cli.config.as_deref(),
            };
            pipelines::run(discover(), &request)
        }
        Command::Pipelines(PipelinesCommand::List { json }) => {
            pipelines::list(cli.config.as_deref(), json)
        }
        Command::Pipelines(PipelinesCommand::Show { name, json, dot }) => {
            pipelines::show(cli.config.as_deref(), &name, json, dot)
        }
        Command::Status { json, max_age } => status::status(cli.config.as_deref(), json, max_age),
        Command::Metrics => {
            let (home, store) = open_home()?;
            reap_all(&store, &home)?;
            crate::output::print(&metrics_text(&store)?)?;
            Ok(Exit::Success)
        }
        Command::Submit { job, options } => {
            let run = options.request.options();
            fleet::submit(
                discover(),
                &fleet::Submit {
                    job: &job,
                    options: &run,
                    request_id: options.request_id.as_deref(),
                    nats: options.nats.as_deref(),
                    json: options.json,
                    quiet: options.quiet,
                },
            )
        }
        Command::FleetWorker {
            nats,
            concurrency,
            max_deliver,
            ack_wait,
            grace,
            jobs,
        } => fleet::worker(
            &Passed {
                config: cli.config.as_deref(),
                plugin_path: &cli.plugin_path,
                allow_insecure_plugins: cli.allow_insecure_plugins,
                quiet: false,
            },
            fleet::Work {
                nats,
                concurrency: usize::from(concurrency),
                max_deliver: i64::from(max_deliver),
                ack_wait: ack_wait.unwrap_or(std::time::Duration::from_secs(30)),
                ack_wait_given: ack_wait.is_some(),
                grace,
                jobs,
            },
        ),
        Command::Queue(QueueCommand::Status { nats, json }) => fleet::status(nats.as_deref(), json),
        Command::Queue(QueueCommand::Dead {
            nats,
            retry,
            drop,
            json,
        }) => fleet::dead(nats.as_deref(), retry.as_deref(), drop.as_deref(), json),
        Command::Completions { shell } => completions::completions(shell),
        Command::Man => completions::man(),
        Command::CompleteJobs => completions::jobs(discover()),
        Command::Worker => unreachable!("`crate::main` runs the worker without dispatching"),
    }
}

/// What the configuration file says to do after a run: rewrite the metrics file
/// (docs/metrics.md), call a hook (docs/notifications.md).
pub struct After {
    pub metrics: Option<std::path::PathBuf>,
    pub notify: Option<crate::config::Notify>,
}

impl After {
    fn of(config: &crate::config::Config) -> After {
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
fn configured(
    file: Option<&std::path::Path>,
    job: &crate::plugins::Job,
    options: crate::plan::RunOptions,
) -> Result<(crate::plan::RunOptions, After)> {
    let config = crate::config::Config::read_file(file).map_err(config_problems)?;
    let id = job.id();
    let own: Vec<_> = config
        .problems
        .iter()
        .filter(|p| p.in_defaults_of.as_deref() == Some(id.as_str()) || p.in_notify)
        .cloned()
        .collect();
    if !own.is_empty() {
        return Err(config_problems(own));
    }
    Ok((
        crate::plan::with_defaults(options, config.defaults_of(&id)),
        After::of(&config),
    ))
}

/// `[notify]` around one run (docs/notifications.md): the failures in a row of its job and
/// account before it, then the hook its outcome calls for.
struct Notifier<'a> {
    notify: &'a crate::config::Notify,
    before: u32,
}

impl<'a> Notifier<'a> {
    fn before(
        notify: Option<&'a crate::config::Notify>,
        store: &crate::events::LocalStore,
        job: &crate::plugins::Job,
        account: Option<&str>,
    ) -> anyhow::Result<Option<Notifier<'a>>> {
        let Some(notify) = notify else {
            return Ok(None);
        };
        let before = store.consecutive_failures((job.package(), job.name()), account)?;
        Ok(Some(Notifier { notify, before }))
    }

    /// Calls the hook the run's outcome calls for; a hook's failure, or a store that cannot
    /// say, is a warning: the run's exit code stays.
    fn after(
        &self,
        store: &crate::events::LocalStore,
        job: &crate::plugins::Job,
        account: Option<&str>,
        report: &crate::runner::RunReport,
    ) {
        use crate::lifecycle::RunStatus;
        use crate::runner::Outcome;
        let (status, failed) = match &report.outcome {
            Outcome::Completed => (RunStatus::Completed, None),
            Outcome::Failed(failed) => (RunStatus::Failed, Some(failed)),
            Outcome::Skipped(_) | Outcome::AlreadyCompleted(_) => return,
        };
        let after = match store.consecutive_failures((job.package(), job.name()), account) {
            Ok(after) => after,
            Err(e) => {
                stderr!(
                    "warning: no notification: cannot read the failures of {}: {e:#}",
                    job.id()
                );
                return;
            }
        };
        let Some(occasion) =
            crate::notify::Occasion::of(status, self.before, after, self.notify.notify_after)
        else {
            return;
        };
        let note = crate::notify::Note {
            occasion,
            run_id: report.run_id.clone(),
            package: job.package().to_owned(),
            job: job.name().to_owned(),
            account: account.map(str::to_owned),
            status,
            reason: failed.map(|f| f.reason),
            error: failed.map(|f| f.message.clone()),
            attempts: report.attempts,
            duration_seconds: report.duration.as_secs_f64(),
            consecutive_failures: match occasion {
                crate::notify::Occasion::Failure => after,
                crate::notify::Occasion::Recovery => self.before,
            },
            log_tail: report.log_tail.clone(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
        };
        crate::notify::send(self.notify, &note);
    }
}

/// The Prometheus exposition of what the store knows of every job (docs/metrics.md).
fn metrics_text(store: &crate::events::LocalStore) -> anyhow::Result<String> {
    Ok(crate::metrics::exposition(
        &store.job_runs()?,
        store.events_pending()?,
    ))
}

/// After a run: the metrics file rewritten, when a directory is set. A failure is a warning:
/// it never changes the run's exit code.
fn write_metrics(dir: Option<&std::path::Path>, store: &crate::events::LocalStore) {
    let Some(dir) = dir else { return };
    let written = crate::metrics::write(dir, || metrics_text(store));
    if let Err(e) = written {
        stderr!(
            "warning: cannot write the metrics file {}: {e:#}",
            dir.join(crate::metrics::FILE).display()
        );
    }
}

/// The configuration file for a command that reads every entry (`tick`, `schedule list`,
/// `status`, `pipelines list`): a file lorch cannot read or parse is a usage error; an entry with
/// a mistake is left out, and said so on stderr.
fn read_config_reporting(flag: Option<&std::path::Path>) -> Result<crate::config::Config> {
    let config = crate::config::Config::read_file(flag).map_err(config_problems)?;
    for problem in &config.problems {
        stderr!("error: {problem} (this entry is left out)");
    }
    Ok(config)
}

/// The mistakes of a configuration file, one a line, as a usage error.
fn config_problems(problems: Vec<crate::config::Problem>) -> Error {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Error::Usage(lines.join("\nerror: "))
}

/// What a child lorch (of `tick`, of `backfill`, of a fleet worker) is given again.
use crate::child::Lorch as Passed;

/// Runs a child `lorch run-job` to its end. A signal lorch receives meanwhile is passed on to
/// it once (a `docker stop` or `systemctl stop` signals lorch alone, not its process group), so
/// the run ends as a cancelled run, recorded; then it is waited for.
fn run_child(
    command: std::process::Command,
    signals: &crate::signals::Signals,
) -> Result<std::process::ExitStatus> {
    wait_child(&mut spawn_child(command)?, signals)
}

/// Starts a child lorch that ends, cancelled (SIGTERM: its run recorded as such), when this
/// lorch dies: a killed tick or backfill leaves no run going on unsupervised.
fn spawn_child(mut command: std::process::Command) -> Result<std::process::Child> {
    crate::sys::signal_when_parent_dies(&mut command, libc::SIGTERM);
    command
        .spawn()
        .map_err(|e| Error::Environment(anyhow::anyhow!("cannot start lorch: {e}")))
}

/// Waits for a child lorch, passing on the first signal this lorch receives.
fn wait_child(
    child: &mut std::process::Child,
    signals: &crate::signals::Signals,
) -> Result<std::process::ExitStatus> {
    let mut passed_on = false;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => {
                return Err(Error::Environment(anyhow::anyhow!(
                    "cannot wait for the lorch it started: {e}"
                )));
            }
        }
        if let (Some(signal), false) = (signals.received(), passed_on) {
            let _ = crate::sys::kill(child.id(), signal);
            passed_on = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// [`run_child`] for a `run-job --json`: its exit status and the summary it printed, when it
/// printed one (a run-job refused as a usage error prints none).
fn run_child_json(
    mut command: std::process::Command,
    signals: &crate::signals::Signals,
) -> Result<(std::process::ExitStatus, Option<crate::child::RunSummary>)> {
    // One summary of a few hundred bytes: the pipe holds it until the child has ended.
    command.stdout(std::process::Stdio::piped());
    let mut child = spawn_child(command)?;
    let status = wait_child(&mut child, signals)?;
    let mut text = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = std::io::Read::read_to_end(&mut out, &mut text);
    }
    Ok((status, crate::child::RunSummary::read(&text)))
}

/// The job `PACKAGE/JOB` (or `JOB` when no other package has a job of that name), after
/// reporting the plugins that failed to load.
fn find_job<'a>(
    catalog: &'a Catalog,
    search_path: &SearchPath,
    id: &str,
) -> Result<&'a crate::plugins::Job> {
    catalog.report_problems();
    let job = match id.split_once('/') {
        Some((package, name)) => catalog.find(package, name),
        None => catalog.find_unique(id),
    };
    job.map_err(|e| nowhere(search_path, e))
}

/// A name that is not there is the user's mistake; a plugin that failed to load is the
/// environment's (README, "Exit codes").
impl From<Lookup> for Error {
    fn from(lookup: Lookup) -> Error {
        match lookup {
            Lookup::Unknown(why) => Error::Usage(why),
            Lookup::Unavailable(why) => Error::Environment(anyhow::anyhow!(why)),
        }
    }
}

/// An unknown job when lorch had nowhere to look (no `HOME`, no plugin path): the environment is
/// the problem, not the name.
fn nowhere(search_path: &SearchPath, lookup: Lookup) -> Error {
    match lookup {
        Lookup::Unknown(why) if search_path.dirs().next().is_none() => {
            Error::Environment(anyhow::anyhow!(
                "{why}: lorch had no plugin directory to look in (HOME is not set, nor XDG_DATA_HOME, LORCH_PLUGIN_PATH or --plugin-path); set HOME, or name the directory with --plugin-path or LORCH_PLUGIN_PATH"
            ))
        }
        lookup => lookup.into(),
    }
}

use crate::paths::home as lorch_home;

/// `LORCH_HOME` and its event store; what it records is queued for BigQuery when that is
/// configured.
fn open_home() -> anyhow::Result<(std::path::PathBuf, crate::events::LocalStore)> {
    use crate::events::{LocalStore, Outbox};
    let home = lorch_home()?;
    let mut store = LocalStore::open_in(&home)?;
    if crate::bigquery::config::requested() {
        store = store.queue_for_delivery(Outbox::default());
    }
    Ok((home, store))
}

// What several commands print.

/// One warning per run the reaper closed.
fn report_reaped(runs: Vec<RunRow>) {
    for run in runs {
        stderr!(
            "warning: run {} of {}/{} (started {}) was abandoned: its lorch process is gone; recorded job.failed, reason abandoned",
            run.run_id,
            run.package,
            run.job,
            run.started_at
        );
    }
}

/// Closes every abandoned run, then every abandoned pipeline run, with a warning for each.
fn reap_all(store: &crate::events::LocalStore, home: &std::path::Path) -> Result<()> {
    report_reaped(crate::history::reap(store, home, None)?);
    let pipelines = crate::history::reap_pipelines(store, home)?;
    for run in pipelines {
        stderr!(
            "warning: pipeline run {} of {} (started {}) was abandoned: its lorch process is gone; recorded pipeline.failed, reason abandoned",
            run.pipeline_run_id,
            run.pipeline,
            run.started_at
        );
    }
    Ok(())
}

/// Delivers what the store queues for BigQuery in the background, when BigQuery is configured.
fn start_delivery(
    home: &std::path::Path,
    store: &crate::events::LocalStore,
) -> Result<Option<crate::bigquery::Background>> {
    if !crate::bigquery::config::requested() {
        return Ok(None);
    }
    Ok(Some(crate::bigquery::Background::start(
        home,
        crate::bigquery::Config::from_env(),
        store.last_seq()?,
        flush_timeout()?,
    )))
}

/// Stops background delivery, with a warning for what is not in BigQuery yet; the exit code
/// stays the runs'.
fn finish_delivery(background: crate::bigquery::Background, store: &crate::events::LocalStore) {
    match background.finish() {
        Ok(finished) => warn_undelivered(finished, store),
        Err(e) => stderr!(
            "warning: BigQuery delivery stopped ({e:#}); pending events stay in {}; deliver them with: lorch events flush",
            store.path().display()
        ),
    }
}

/// `LORCH_BQ_FLUSH_TIMEOUT`: how long a run may spend, after its job, delivering what is
/// still pending (default 10s).
fn flush_timeout() -> Result<std::time::Duration> {
    match std::env::var("LORCH_BQ_FLUSH_TIMEOUT") {
        Err(_) => Ok(std::time::Duration::from_secs(10)),
        Ok(value) => crate::timearg::duration(&value)
            .map_err(|e| Error::Usage(format!("invalid LORCH_BQ_FLUSH_TIMEOUT '{value}': {e}"))),
    }
}

/// One warning when events of this run (or earlier ones) are not in BigQuery yet.
fn warn_undelivered(finished: crate::bigquery::Finished, store: &crate::events::LocalStore) {
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

/// One line per event: `created_at  run_id  event_type  status  source_system  [error]`.
fn format_events(events: &[Event]) -> String {
    let width = events
        .iter()
        .map(|e| e.event_type.chars().count())
        .max()
        .unwrap_or(0);
    events.iter().map(|e| format_event(e, width)).collect()
}

/// One event's line, its type padded to `type_width` characters.
fn format_event(event: &Event, type_width: usize) -> String {
    let created = event
        .created_at
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut text = format!(
        "{created}  {}  {:type_width$}  {:6}  {}",
        event.correlation_id, event.event_type, event.status, event.source_system
    );
    if let Some(error) = &event.error_message {
        write!(text, "  {error}").unwrap();
    }
    text.push('\n');
    text
}
