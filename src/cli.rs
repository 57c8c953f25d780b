//! The command line, all in one place (README, "Commands").

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::lifecycle::RunStatus;
use crate::logging::Format;
use crate::plan::RunOptions;

/// The command line of this process, parsed (clap exits with its usage message on a mistake).
pub fn parse() -> Cli {
    <Cli as clap::Parser>::parse()
}

/// A value parser taking one of a closed vocabulary's wire names (`RunStatus::ALL`), so that
/// help and completions list them and the domain enum needs no clap derive.
fn one_of<T: Copy + Send + Sync + 'static, const N: usize>(
    all: [T; N],
    name: fn(T) -> &'static str,
    parse: fn(&str) -> Option<T>,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(all.map(name))
        .map(move |text: String| parse(&text).expect("clap let through one of the names"))
}
use crate::{params, timearg};

#[derive(Debug, Parser)]
#[command(
    name = "lorch",
    version,
    about = "Discover, show and run plugin jobs, recording job.started/job.completed/job.failed events.",
    after_help = "Plugins are searched in every --plugin-path, then LORCH_PLUGIN_PATH (colon-separated), \
then $XDG_DATA_HOME/lorch/plugins (~/.local/share/lorch/plugins). Events go to the local store in \
LORCH_HOME (~/.local/state/lorch), and from there to BigQuery when BQ_EVENTS_DATASET and \
BQ_EVENTS_TABLE are set (see `lorch events status`). Exit codes: 0 ok, 1 job failed, 2 usage error, \
3 environment error (or events not recorded), 75 skipped (lock held), 129/130/131/143 cancelled by \
SIGHUP/SIGINT/SIGQUIT/SIGTERM."
)]
pub struct Cli {
    /// Look for plugins in DIR first (repeatable)
    #[arg(long, value_name = "DIR", global = true)]
    pub plugin_path: Vec<PathBuf>,

    /// Load plugin files even when another user could have written them
    #[arg(long, global = true)]
    pub allow_insecure_plugins: bool,

    /// The configuration file [default: LORCH_CONFIG, else ~/.config/lorch/lorch.toml]
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Log lines on stderr as text, or one JSON object a line (with a job's run id, package,
    /// job and account) [default: LORCH_LOG_FORMAT, else text]
    #[arg(long, value_name = "FORMAT", global = true, value_parser = one_of(Format::ALL, Format::as_str, Format::parse))]
    pub log_format: Option<Format>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List jobs or show one
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Run one job: `lorch run-job ingester extract_gmail --since -7d`
    RunJob {
        /// The job's package
        package: String,
        /// The job's name
        job: String,
        #[command(flatten)]
        options: RunArgs,
    },
    /// Run PACKAGE/JOB, or JOB alone when no other package has a job of that name
    Run {
        /// PACKAGE/JOB or JOB
        #[arg(value_name = "PACKAGE/JOB")]
        job: String,
        #[command(flatten)]
        options: RunArgs,
    },
    /// Show plugin files, their ABI and jobs, or why they failed to load
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Read the recorded events; deliver them to BigQuery
    #[command(subcommand)]
    Events(EventsCommand),
    /// Run history: what ran, how it ended; abandoned runs are closed first
    #[command(subcommand)]
    Runs(RunsCommand),
    /// The objects jobs upserted (raw_objects): one row per idem key
    #[command(subcommand)]
    Objects(ObjectsCommand),
    /// Check or show the configuration file (lorch.toml)
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The [[schedule]] entries of the configuration file: when they fire, what is due
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Run a job over a range of time, one window after another: `lorch backfill
    /// ingester/extract_gmail --since 2026-01-01 --until 2026-03-01 --step 1d`. Windows that
    /// already completed are skipped, so running it again resumes
    Backfill {
        /// PACKAGE/JOB
        #[arg(value_name = "PACKAGE/JOB")]
        job: String,
        /// Start of the range (the time forms of run-job)
        #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
        since: String,
        /// End of the range [default: now]
        #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
        until: Option<String>,
        /// The length of each window: 1d, 6h, 1w, ...
        #[arg(long, value_name = "DURATION", value_parser = timearg::positive_duration)]
        step: Duration,
        /// The account the job works on
        #[arg(long, value_name = "ACCOUNT", value_parser = params::account)]
        account: Option<String>,
        /// A declared job parameter (repeatable)
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Stop an attempt after this long
        #[arg(long, value_name = "DURATION", value_parser = timearg::positive_duration)]
        timeout: Option<Duration>,
        /// Retry a failed window's attempt up to N times
        #[arg(long, value_name = "N")]
        retries: Option<u32>,
        /// Go on after a window fails (by default the backfill stops there)
        #[arg(long)]
        keep_going: bool,
    },
    /// Run every schedule entry that is due, or missed since its last fire time (call it every
    /// minute from cron or a systemd timer: `lorch schedule install`)
    Tick {
        /// Keep running: sleep until the next fire time, run it, and so on, until SIGTERM
        #[arg(long)]
        watch: bool,
        /// Pass --quiet to the runs: print nothing when they complete
        #[arg(long, short)]
        quiet: bool,
        /// Queue the due runs of jobs for the fleet's workers instead of running them here
        /// (`lorch submit`, docs/fleet.md); pipelines still run here
        #[arg(long)]
        submit: bool,
        /// With --submit: the NATS server [default: LORCH_NATS_URL, else nats://127.0.0.1:4222]
        #[arg(long, value_name = "URL", requires = "submit")]
        nats: Option<String>,
    },
    /// Run a pipeline of the configuration file: each step once the steps it needs completed,
    /// independent ones in parallel (docs/pipelines.md)
    RunPipeline {
        /// The pipeline's name ([pipeline.NAME] in lorch.toml)
        name: String,
        /// Start of every step's window (the time forms of run-job, or last-success: each
        /// step from its own last completed window) [default: each step's own since]
        #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
        since: Option<String>,
        /// With last-success: the start of a step's first window, for a step that has no
        /// watermark yet nor an initial_since of its own
        #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
        initial_since: Option<String>,
        /// End of every step's window [default: the instant the pipeline starts]
        #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
        until: Option<String>,
        /// The account every step works on [default: each step's own]
        #[arg(long, value_name = "ACCOUNT", value_parser = params::account)]
        account: Option<String>,
        /// Run at most N steps at once [default: the number of CPUs]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        parallel: Option<u16>,
        /// Run only the steps of an earlier run of this pipeline that did not complete, with its
        /// window
        #[arg(long, value_name = "PIPELINE_RUN_ID", conflicts_with_all = ["since", "until", "initial_since", "account"])]
        resume: Option<String>,
        /// Print nothing for the steps that complete, nor for the pipeline when it completes
        #[arg(long, short)]
        quiet: bool,
    },
    /// The pipelines of the configuration file
    #[command(subcommand)]
    Pipelines(PipelinesCommand),
    /// Prometheus metrics of every job and account (the text exposition format), as the file
    /// each run writes to LORCH_METRICS_DIR has them
    Metrics,
    /// Queue a run for the fleet's workers (NATS JetStream, docs/fleet.md); prints its request id
    Submit {
        /// PACKAGE/JOB
        #[arg(value_name = "PACKAGE/JOB")]
        job: String,
        #[command(flatten)]
        options: SubmitOptions,
    },
    /// Take run requests from NATS JetStream and run each as run-job does (docs/fleet.md)
    #[command(name = "worker")]
    FleetWorker {
        /// The NATS server [default: LORCH_NATS_URL, else nats://127.0.0.1:4222]
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
        /// Runs at a time
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        concurrency: u16,
        /// Deliveries of a request before it goes to the dead letters
        #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
        max_deliver: u16,
        /// How long a request may go without news from its worker before another takes it
        /// [default: 30s; the first worker on a server sets it]
        #[arg(long, value_name = "DURATION", value_parser = timearg::positive_duration)]
        ack_wait: Option<Duration>,
        /// On SIGTERM, how long runs in progress get to end before they are cancelled
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = timearg::duration)]
        grace: Duration,
        /// Take only these jobs: PACKAGE/JOB, PACKAGE/* or * (give every worker of a server
        /// --jobs with patterns that do not overlap, or none)
        #[arg(long, value_name = "PATTERN", default_value = "*", value_parser = crate::fleet::Jobs::parse)]
        jobs: crate::fleet::Jobs,
    },
    /// The fleet's queue: requests waiting and in progress, dead letters (docs/fleet.md)
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Is everything healthy? One row per job and account that has a schedule or has run, with
    /// a verdict (ok, failing, stale, running long); exit 0 when all are ok, 1 otherwise
    Status {
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
        /// Stale: no success for this long (every job, scheduled or not), e.g. 26h
        #[arg(long, value_name = "DURATION", value_parser = timearg::positive_duration)]
        max_age: Option<Duration>,
    },
    /// Watermarks: where each job and account's last completed window ends (--since
    /// last-success starts there)
    #[command(subcommand)]
    State(StateCommand),
    /// Print a completion script: `source <(lorch completions bash)`, and job names complete
    /// after `run`, `run-job`, `jobs show`, `backfill` and `state` (docs/completions.md)
    Completions {
        /// bash, zsh or fish
        shell: CompletionShell,
    },
    /// Print the manual page (roff): `lorch man > lorch.1`, then `man ./lorch.1`
    Man,
    /// Internal: the PACKAGE/JOB names a completion script offers, one a line
    #[command(name = "__complete-jobs", hide = true)]
    CompleteJobs,
    /// Internal: runs one job attempt for a supervising lorch
    #[command(name = "__worker", hide = true)]
    Worker,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs by package
    List {
        /// Only this package
        package: Option<String>,
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
    /// Show a job's location, parameters and description
    Show {
        package: String,
        job: String,
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List the search path and every plugin file found on it
    List {
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
    /// Check plugin files and install them: atomically (safe while jobs run from the old
    /// version), with permissions lorch accepts, into ~/.local/share/lorch/plugins
    Install {
        /// The plugin files (lib*.so; lib*.dylib on macOS)
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Install into DIR instead of $XDG_DATA_HOME/lorch/plugins
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List recorded events, oldest first
    List {
        /// Only the events of this run id (`last` for the newest run)
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
        /// At most this many of the newest events [default: 100, or all with --run]
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
    /// BigQuery delivery: pending, delivered and dead events, the oldest pending one
    Status {
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
    /// Deliver pending events to BigQuery now
    Flush {
        /// Give up after this long, leaving what is left pending
        #[arg(long, value_name = "DURATION", value_parser = timearg::positive_duration, default_value = "1m")]
        timeout: Duration,
        /// First put the events BigQuery refused (dead letters) back in the queue
        #[arg(long)]
        retry_dead: bool,
    },
    /// Create the BigQuery dataset and events table when they do not exist
    Init {
        /// Print what would be created, without contacting BigQuery
        #[arg(long)]
        dry_run: bool,
        /// Create this table instead of BQ_EVENTS_TABLE: TABLE, DATASET.TABLE or PROJECT.DATASET.TABLE
        #[arg(long, value_name = "TABLE")]
        events_table: Option<String>,
    },
    /// Print the fleet's events as its workers record them, until Ctrl-C (docs/fleet.md)
    Follow {
        /// The NATS server [default: LORCH_NATS_URL, else nats://127.0.0.1:4222]
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
        /// From the oldest event the server keeps, not only new ones
        #[arg(long)]
        all: bool,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PipelinesCommand {
    /// List the pipelines, with their last run
    List {
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
    /// Show a pipeline's steps in the order they run, with what each needs
    Show {
        /// The pipeline's name
        name: String,
        /// One JSON document on stdout
        #[arg(long, conflicts_with = "dot")]
        json: bool,
        /// The steps as a Graphviz graph (`lorch pipelines show daily --dot | dot -Tsvg`)
        #[arg(long)]
        dot: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, oldest first
    List(RunsQuery),
    /// Show a run and its events in order
    Show {
        /// The run id, or `last` for the newest run
        run_id: String,
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
    /// Close runs whose lorch process is gone with job.failed, reason abandoned
    Reap,
    /// What a run's job wrote to stdout and stderr and logged, with timestamps (docs/logs.md)
    Logs {
        /// The run id, or `last` for the run of a job started last
        run_id: String,
        /// Only this attempt [default: every attempt]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        attempt: Option<u32>,
        /// Keep printing lines as the run writes them, until it ends
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line on stdout
        #[arg(long)]
        json: bool,
    },
    /// Delete the logs of runs started before a time and, with --events, their events
    Prune {
        /// How old: 90d, 12w, ... (a duration back from now)
        #[arg(long, value_name = "DURATION", value_parser = timearg::positive_duration)]
        older_than: Duration,
        /// Delete events older than that too, except those still pending for BigQuery
        #[arg(long)]
        events: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ObjectsCommand {
    /// List objects, least recently seen first
    List(ObjectsQuery),
    /// Show one object, payload included
    Show {
        /// The object's idem key
        idem_key: String,
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
    /// Count the objects, by type
    Count {
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the configuration file: syntax, keys, types, jobs, cron expressions, time zones
    /// (exit 2 naming each mistake's file:line:column)
    Check {
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
    /// Print the configuration in effect, and where it was read from
    Show {
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Each entry: its last run, its next fire time (local and UTC), what is due or missed now
    List {
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
    /// Print (not install) a crontab line or a systemd user timer that calls `lorch tick`
    #[command(group(clap::ArgGroup::new("kind").required(true).args(["cron", "systemd"])))]
    Install {
        /// A crontab line
        #[arg(long)]
        cron: bool,
        /// A systemd user .service and .timer (Persistent=true)
        #[arg(long)]
        systemd: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Show the watermarks, by job and account
    Show {
        /// Only this job
        #[arg(value_name = "PACKAGE/JOB")]
        job: Option<String>,
        /// Only this account
        #[arg(long, value_name = "ACCOUNT", value_parser = params::account)]
        account: Option<String>,
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
    /// Set a watermark by hand: the next --since last-success run starts there
    Set {
        #[arg(value_name = "PACKAGE/JOB")]
        job: String,
        /// The account (none: the runs without --account)
        #[arg(long, value_name = "ACCOUNT", value_parser = params::account)]
        account: Option<String>,
        /// The new watermark: -7d, today, 2024-01-01, 2024-01-01T06:00:00Z, ...
        #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
        to: String,
    },
    /// Remove a watermark: the next --since last-success run needs --initial-since again
    Reset {
        #[arg(value_name = "PACKAGE/JOB")]
        job: String,
        /// The account (none: the runs without --account)
        #[arg(long, value_name = "ACCOUNT", value_parser = params::account)]
        account: Option<String>,
    },
}

/// `lorch objects list`: which objects, and how to print them.
#[derive(Debug, Args)]
pub struct ObjectsQuery {
    /// Only objects of this type
    #[arg(long = "type", value_name = "TYPE")]
    pub object_type: Option<String>,
    /// Only objects of this account (their connection_name)
    #[arg(long, value_name = "ACCOUNT", value_parser = params::account)]
    pub account: Option<String>,
    /// Only objects seen (upserted) at or after this time: -7d, today, 2024-01-01, ... (as
    /// run-job's)
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// At most this many of the most recently seen
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
    /// One JSON document on stdout, payloads included
    #[arg(long)]
    pub json: bool,
}

/// `lorch runs list`: which runs, and how to print them.
#[derive(Debug, Args)]
pub struct RunsQuery {
    /// Only runs of this job
    #[arg(long, value_name = "PACKAGE/JOB")]
    pub job: Option<String>,
    /// The runs of this pipeline instead, one line each (`runs show` shows its steps)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["job", "account"])]
    pub pipeline: Option<String>,
    /// Only runs with this status
    #[arg(long, value_parser = one_of(RunStatus::ALL, RunStatus::as_str, RunStatus::parse))]
    pub status: Option<RunStatus>,
    /// Only runs for this account
    #[arg(long, value_name = "ACCOUNT", value_parser = params::account)]
    pub account: Option<String>,
    /// Only runs started at or after this time: -7d, today, 2024-01-01, ... (as run-job's)
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Only runs started before this time, same forms
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub until: Option<String>,
    /// At most this many of the newest runs
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
    /// One JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Requests waiting per job, in progress, redelivered; the dead letters
    Status {
        /// The NATS server [default: LORCH_NATS_URL, else nats://127.0.0.1:4222]
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
    /// List the dead letters, or queue one again, or drop it
    Dead {
        /// The NATS server [default: LORCH_NATS_URL, else nats://127.0.0.1:4222]
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
        /// Queue the dead request with this request id (or #N: the dead letter's number) again
        #[arg(long, value_name = "REQUEST_ID", conflicts_with = "drop")]
        retry: Option<String>,
        /// Delete the dead request with this request id (or #N)
        #[arg(long, value_name = "REQUEST_ID")]
        drop: Option<String>,
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
}

/// `lorch submit`'s options: the run options a request carries, and where it goes.
#[derive(Debug, Args)]
pub struct SubmitOptions {
    #[command(flatten)]
    pub request: RequestArgs,
    /// The request id (default: a new UUIDv7); a request submitted again with the same id
    /// within 2 minutes is stored once
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    /// The NATS server [default: LORCH_NATS_URL, else nats://127.0.0.1:4222]
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// One JSON document on stdout
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print nothing when the request is queued
    #[arg(long, short)]
    pub quiet: bool,
}

/// What a run is asked to do: the flags `run-job` and `submit` share (README, "Options of
/// run-job and run"; docs/fleet.md).
#[derive(Debug, Default, Args)]
pub struct RequestArgs {
    /// The account the job works on
    #[arg(long, value_name = "ACCOUNT", value_parser = params::account)]
    pub account: Option<String>,
    /// Start of the window: -7d, 36h, today, 2024-01-01, 2024-01-01T06:00:00Z, ..., or
    /// last-success: where the last completed run of this job and account ended
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// With --since last-success: the start when no run of this job and account has completed
    /// yet (same forms as --since)
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub initial_since: Option<String>,
    /// End of the window, same forms as --since
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub until: Option<String>,
    /// A declared job parameter (repeatable); see `lorch jobs show`
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Cross-system trace id stored with every event of the run
    #[arg(long, value_name = "ID", env = "LORCH_TRACE_ID")]
    pub trace_id: Option<String>,
    /// Stop an attempt after this long (e.g. 30s, 10m, 2h): SIGTERM, then SIGKILL after --kill-after
    #[arg(long, value_name = "DURATION", value_parser = timearg::positive_duration)]
    pub timeout: Option<Duration>,
    /// Grace period between SIGTERM and SIGKILL when a job is stopped [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = timearg::duration)]
    pub kill_after: Option<Duration>,
    /// Retry a failed attempt up to N times (not usage errors, cancellations or permanent
    /// errors) [default: 0]
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Wait before the first retry; doubles each time, with jitter, at most 10 minutes
    /// [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = timearg::duration)]
    pub retry_backoff: Option<Duration>,
}

impl RequestArgs {
    /// The run options these flags give.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            account: self.account.clone(),
            since: self.since.clone(),
            initial_since: self.initial_since.clone(),
            until: self.until.clone(),
            params: self.params.clone(),
            trace_id: self.trace_id.clone(),
            timeout: self.timeout,
            kill_after: self.kill_after,
            retries: self.retries,
            retry_backoff: self.retry_backoff,
            ..RunOptions::default()
        }
    }
}

/// `run-job`'s and `run`'s flags: the request, how lorch runs it here, and what it prints.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub request: RequestArgs,
    /// Run the job inside lorch's own process, without a supervised worker (for debugging: a
    /// crash takes lorch down with it, and --timeout is not available)
    #[arg(long, conflicts_with = "timeout")]
    pub in_process: bool,
    /// If another run of this job and account holds the lock, wait up to DURATION for it
    /// instead of exiting 75 at once
    #[arg(long, value_name = "DURATION", value_parser = timearg::duration)]
    pub wait_lock: Option<Duration>,
    /// Take no lock: allow this run to overlap another run of the same job and account
    #[arg(long, conflicts_with = "wait_lock")]
    pub no_lock: bool,
    /// Run the job but send nothing to BigQuery; print the rows that would be sent
    #[arg(long)]
    pub dry_run: bool,
    /// Send this run's events to another BigQuery table (TABLE, DATASET.TABLE or
    /// PROJECT.DATASET.TABLE), e.g. a test table
    #[arg(long, value_name = "TABLE")]
    pub events_table: Option<String>,
    /// Print nothing when the run completes (for cron: mail only on failure); failures, skips
    /// and warnings still go to stderr. Logs at `warn` unless LORCH_LOG says otherwise
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the run's summary (run id, status, reason, attempts, duration, exit code) as one
    /// JSON document on stdout, whatever the outcome
    #[arg(long, conflicts_with = "dry_run")]
    pub json: bool,
    /// Internal: the `lorch backfill` this run is a window of
    #[arg(long, hide = true, value_name = "ID")]
    pub backfill_id: Option<String>,
}

impl RunArgs {
    /// The run options these flags give.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            in_process: self.in_process,
            wait_lock: self.wait_lock,
            no_lock: self.no_lock,
            dry_run: self.dry_run,
            backfill_id: self.backfill_id.clone(),
            ..self.request.options()
        }
    }
}

/// The shells `lorch completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}
