//! One module per command group; `dispatch` routes a parsed command line to it.

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

use crate::cli::{
    Cli, Command, ConfigCommand, EventsCommand, JobsCommand, ObjectsCommand, PipelinesCommand,
    PluginsCommand, QueueCommand, RunsCommand, ScheduleCommand, StateCommand,
};
use crate::error::{Exit, Result};
// What the command modules use as `super::NAME`: the domain's helpers, under their names here.
use crate::bigquery::deliver::finish as finish_delivery;
use crate::child::Lorch;
use crate::config::{problems as config_problems, read_reporting as read_config_reporting};
use crate::history::{open_home, reap_all, report_reaped};
use crate::metrics::{text as metrics_text, write_after_run as write_metrics};
use crate::notify::Notifier;
use crate::paths::home as lorch_home;
use crate::plan::{After, configured};
use crate::plugins::{Catalog, SearchPath, find_job, nowhere};

/// What every command may need from the global flags: the configuration file, the plugin
/// search path, and the catalog, loaded only by the commands that need jobs.
struct Context {
    config: Option<std::path::PathBuf>,
    plugin_path: Vec<std::path::PathBuf>,
    allow_insecure_plugins: bool,
    search_path: SearchPath,
}

impl Context {
    fn config(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    /// One catalog per process, kept to its end: freeing 10,000 jobs' strings one by one at
    /// exit was 15% of a listing's time.
    fn discover(&self) -> &'static Catalog {
        Box::leak(Box::new(Catalog::discover(
            &self.search_path,
            self.allow_insecure_plugins,
        )))
    }

    /// `PACKAGE/JOB` or `JOB`, after reporting the plugins that failed to load.
    fn job(&self, id: &str) -> Result<&'static crate::plugins::Job> {
        find_job(self.discover(), &self.search_path, id)
    }

    /// The global flags again, for the child lorch a command starts.
    fn lorch(&self, quiet: bool) -> Lorch<'_> {
        Lorch {
            config: self.config(),
            plugin_path: &self.plugin_path,
            allow_insecure_plugins: self.allow_insecure_plugins,
            quiet,
        }
    }
}

/// Routes a parsed command line: one arm per command or group of subcommands.
pub fn dispatch(cli: Cli) -> Result<Exit> {
    let ctx = Context {
        search_path: SearchPath::from_env(&cli.plugin_path),
        config: cli.config,
        plugin_path: cli.plugin_path,
        allow_insecure_plugins: cli.allow_insecure_plugins,
    };
    match cli.command {
        Command::Jobs(command) => jobs_command(&ctx, command),
        command @ (Command::RunJob { .. } | Command::Run { .. }) => run_command(&ctx, command),
        Command::Config(ConfigCommand::Check { json }) => {
            config::check(ctx.config(), ctx.discover(), json)
        }
        Command::Config(ConfigCommand::Show { json }) => config::show(ctx.config(), json),
        Command::Schedule(ScheduleCommand::List { json }) => schedule::list(ctx.config(), json),
        Command::Schedule(ScheduleCommand::Install { systemd, .. }) => {
            schedule::install(&ctx.lorch(true), systemd)
        }
        command @ (Command::Backfill { .. } | Command::Tick { .. }) => time_command(&ctx, command),
        Command::Plugins(PluginsCommand::List { json }) => {
            plugins::list(&ctx.search_path, ctx.discover(), json)
        }
        Command::Plugins(PluginsCommand::Install { files, to }) => plugins::install(&files, to),
        Command::Events(command) => events_command(command),
        Command::Runs(command) => runs_command(command),
        Command::Objects(ObjectsCommand::List(query)) => objects::list(query),
        Command::Objects(ObjectsCommand::Show { idem_key, json }) => objects::show(&idem_key, json),
        Command::Objects(ObjectsCommand::Count { json }) => objects::count(json),
        Command::State(command) => state_command(&ctx, command),
        command @ (Command::RunPipeline { .. } | Command::Pipelines(_)) => {
            pipeline_command(&ctx, command)
        }
        Command::Status { json, max_age } => status::status(ctx.config(), json, max_age),
        Command::Metrics => {
            let (home, store) = open_home()?;
            reap_all(&store, &home)?;
            crate::output::print(&metrics_text(&store)?)?;
            Ok(Exit::Success)
        }
        command @ (Command::Submit { .. } | Command::FleetWorker { .. } | Command::Queue(_)) => {
            fleet_command(&ctx, command)
        }
        Command::Completions { shell } => completions::completions(shell),
        Command::Man => completions::man(),
        Command::CompleteJobs => completions::jobs(ctx.discover()),
        Command::Worker => unreachable!("`crate::main` runs the worker without dispatching"),
    }
}

fn jobs_command(ctx: &Context, command: JobsCommand) -> Result<Exit> {
    match command {
        JobsCommand::List { package, json } => jobs::list(ctx.discover(), package.as_deref(), json),
        JobsCommand::Show { package, job, json } => {
            jobs::show(ctx.discover(), &package, &job, json)
        }
    }
}

/// `run-job PACKAGE JOB` and `run PACKAGE/JOB`, with the job's defaults from lorch.toml.
fn run_command(ctx: &Context, command: Command) -> Result<Exit> {
    let (job, options) = match command {
        Command::RunJob {
            package,
            job,
            options,
        } => {
            let catalog = ctx.discover();
            catalog.report_problems();
            let found = catalog.find(&package, &job);
            (found.map_err(|e| nowhere(&ctx.search_path, e))?, options)
        }
        Command::Run { job, options } => (ctx.job(&job)?, options),
        _ => unreachable!("dispatch routes run-job and run here"),
    };
    let (run, after) = configured(ctx.config(), job, options.options())?;
    run::run(job, &run, &run::Shown::of(&options), &after)
}

/// `backfill` and `tick`: runs of windows of time, each a child lorch.
fn time_command(ctx: &Context, command: Command) -> Result<Exit> {
    match command {
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
            let range = crate::backfill::Range {
                since: &since,
                until: until.as_deref(),
                step,
            };
            let options = crate::backfill::Options {
                account: account.as_deref(),
                params: &params,
                timeout,
                retries,
                keep_going,
            };
            crate::backfill::run(&ctx.lorch(true), ctx.job(&job)?, &range, &options)
        }
        Command::Tick {
            watch,
            quiet,
            submit,
            nats,
        } => {
            let ticking = schedule::Ticking {
                watch,
                submit: submit.then_some(nats),
            };
            schedule::tick(&ctx.lorch(quiet), &ticking)
        }
        _ => unreachable!("dispatch routes backfill and tick here"),
    }
}

fn events_command(command: EventsCommand) -> Result<Exit> {
    match command {
        EventsCommand::List { run, limit, json } => events::list(run, limit, json),
        EventsCommand::Status { json } => events::status(json),
        EventsCommand::Follow { nats, all, json } => fleet::follow(nats.as_deref(), all, json),
        EventsCommand::Flush {
            timeout,
            retry_dead,
        } => events::flush(timeout, retry_dead),
        EventsCommand::Init {
            dry_run,
            events_table,
        } => events::init(dry_run, events_table.as_deref()),
    }
}

fn runs_command(command: RunsCommand) -> Result<Exit> {
    match command {
        RunsCommand::List(query) => runs::list(query),
        RunsCommand::Show { run_id, json } => runs::show(&run_id, json),
        RunsCommand::Reap => runs::reap(),
        RunsCommand::Logs {
            run_id,
            attempt,
            follow,
            json,
        } => logs::logs(&logs::Request {
            run_id: &run_id,
            attempt,
            follow,
            json,
        }),
        RunsCommand::Prune { older_than, events } => logs::prune(older_than, events),
    }
}

fn state_command(ctx: &Context, command: StateCommand) -> Result<Exit> {
    match command {
        StateCommand::Show { job, account, json } => {
            state::show(job.as_deref(), account.as_deref(), json)
        }
        StateCommand::Set { job, account, to } => {
            state::set(ctx.job(&job)?, account.as_deref(), Some(&to))
        }
        StateCommand::Reset { job, account } => {
            state::set(ctx.job(&job)?, account.as_deref(), None)
        }
    }
}

fn pipeline_command(ctx: &Context, command: Command) -> Result<Exit> {
    match command {
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
                config: ctx.config(),
            };
            pipelines::run(ctx.discover(), &request)
        }
        Command::Pipelines(PipelinesCommand::List { json }) => pipelines::list(ctx.config(), json),
        Command::Pipelines(PipelinesCommand::Show { name, json, dot }) => {
            pipelines::show(ctx.config(), &name, json, dot)
        }
        _ => unreachable!("dispatch routes run-pipeline and pipelines here"),
    }
}

/// `submit`, `worker` and `queue` (docs/fleet.md).
fn fleet_command(ctx: &Context, command: Command) -> Result<Exit> {
    match command {
        Command::Submit { job, options } => {
            let run = options.request.options();
            let submit = fleet::Submit {
                job: &job,
                options: &run,
                request_id: options.request_id.as_deref(),
                nats: options.nats.as_deref(),
                json: options.json,
                quiet: options.quiet,
            };
            fleet::submit(ctx.discover(), &submit)
        }
        Command::FleetWorker {
            nats,
            concurrency,
            max_deliver,
            ack_wait,
            grace,
            jobs,
        } => {
            let work = fleet::Work {
                nats,
                concurrency: usize::from(concurrency),
                max_deliver: i64::from(max_deliver),
                ack_wait: ack_wait.unwrap_or(std::time::Duration::from_secs(30)),
                ack_wait_given: ack_wait.is_some(),
                grace,
                jobs,
            };
            fleet::worker(&ctx.lorch(false), work)
        }
        Command::Queue(QueueCommand::Status { nats, json }) => fleet::status(nats.as_deref(), json),
        Command::Queue(QueueCommand::Dead {
            nats,
            retry,
            drop,
            json,
        }) => fleet::dead(nats.as_deref(), retry.as_deref(), drop.as_deref(), json),
        _ => unreachable!("dispatch routes submit, worker and queue here"),
    }
}
