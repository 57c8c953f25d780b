//! One module per command group; `dispatch` routes a parsed command line to it.

mod events;
mod jobs;
mod plugins;
mod run;
mod runs;

use crate::cli::{Cli, Command, EventsCommand, JobsCommand, PluginsCommand, RunsCommand};
use crate::error::{Error, Exit, Result};
use crate::plugins::{Catalog, SearchPath};

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
            run::run(job, &options)
        }
        Command::Run { job, options } => {
            let catalog = discover();
            catalog.report_problems();
            let job = match job.split_once('/') {
                Some((package, name)) => catalog.find(package, name),
                None => catalog.find_unique(&job),
            };
            run::run(job.map_err(|e| nowhere(&search_path, e))?, &options)
        }
        Command::Plugins(PluginsCommand::List { json }) => {
            plugins::list(&search_path, &discover(), json)
        }
        Command::Plugins(PluginsCommand::Install { files, to }) => plugins::install(&files, to),
        Command::Events(EventsCommand::List { run, limit, json }) => events::list(run, limit, json),
        Command::Events(EventsCommand::Status { json }) => events::status(json),
        Command::Events(EventsCommand::Flush {
            timeout,
            retry_dead,
        }) => events::flush(timeout, retry_dead),
        Command::Events(EventsCommand::Init {
            dry_run,
            events_table,
        }) => events::init(dry_run, events_table.as_deref()),
        Command::Runs(RunsCommand::List {
            job,
            status,
            account,
            since,
            until,
            limit,
            json,
        }) => {
            let query = runs::Query {
                job,
                status,
                account,
                since,
                until,
                limit,
            };
            runs::list(query, json)
        }
        Command::Runs(RunsCommand::Show { run_id, json }) => runs::show(&run_id, json),
        Command::Runs(RunsCommand::Reap) => runs::reap(),
        Command::Worker => unreachable!("the worker is dispatched before logging starts"),
    }
}

/// An unknown job when lorch had nowhere to look (no `HOME`, no plugin path): the environment is
/// the problem, not the name.
fn nowhere(search_path: &SearchPath, error: Error) -> Error {
    match error {
        Error::Usage(why) if search_path.dirs().next().is_none() => {
            Error::Environment(anyhow::anyhow!(
                "{why}: lorch had no plugin directory to look in (HOME is not set, nor XDG_DATA_HOME, LORCH_PLUGIN_PATH or --plugin-path); set HOME, or name the directory with --plugin-path or LORCH_PLUGIN_PATH"
            ))
        }
        error => error,
    }
}

/// `LORCH_HOME`.
fn lorch_home() -> anyhow::Result<std::path::PathBuf> {
    crate::paths::lorch_home()
        .ok_or_else(|| anyhow::anyhow!("no place for the event store: set LORCH_HOME (or HOME)"))
}

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
