//! `lorch tick` (docs/schedules.md): runs each fire time a `[[schedule]]` entry is owed as
//! `lorch run-job` (or `run-pipeline`, or `submit`) in a child process, with the window ending
//! at the fire time: the run is an ordinary supervised run (its lock, its events, its BigQuery
//! delivery), and tick only decides what to run. Nothing here loads a plugin or builds an async
//! runtime, so a `tick` with nothing due costs a configuration read and a store read.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::Entry;
use crate::child::ChildOutcome;
use crate::child::Lorch;
use crate::config::{self, Config, Schedule, Target};
use crate::error::{Error, Exit, Result};
use crate::events::LocalStore;
use crate::lifecycle::{LAST_SUCCESS, Reason, RunStatus};
use crate::locks::{self, Acquired};
use crate::output::stderr;
use crate::plan::RunOptions;
use crate::signals::Signals;
use crate::timearg;

/// The configuration with its good entries (see [`crate::config::read_reporting`]), and whether
/// any entry was left out.
pub fn read_config(flag: Option<&Path>) -> Result<(Config, bool)> {
    let config = crate::config::read_reporting(flag)?;
    let broken = !config.problems.is_empty();
    Ok((config, broken))
}

pub fn entries(config: &Config) -> Vec<Entry<'_>> {
    config.schedules.iter().map(Entry::new).collect()
}

/// How `tick` goes about it.
pub struct Ticking {
    /// `--watch`.
    pub watch: bool,
    /// `--submit [--nats URL]`: queue the runs of jobs for the fleet (docs/fleet.md) on this
    /// server (`None`: the default one) instead of running them.
    pub submit: Option<Option<String>>,
}

/// `lorch tick [--watch]`: runs what every entry is owed now; with `--watch`, again at every
/// next fire time until a signal.
pub fn tick(lorch: &Lorch, ticking: &Ticking) -> Result<Exit> {
    let watch = ticking.watch;
    let signals = Signals::install()
        .map_err(|e| Error::Environment(anyhow::anyhow!("cannot catch signals: {e}")))?;
    if watch {
        let file = config::locate(lorch.config).map_or_else(
            || "no configuration file".to_owned(),
            |(p, _)| p.display().to_string(),
        );
        stderr!(
            "lorch tick --watch: running the schedules of {file} as they fall due (catching up first); stop it with Ctrl-C or SIGTERM"
        );
    }
    loop {
        let (exit, next) = match tick_once(lorch, ticking, &signals) {
            Ok(ticked) => ticked,
            // Watching, a file being edited or a busy store is no reason to stop: say so, and
            // look again in a minute.
            Err(error) if watch => {
                stderr!("error: {error}; tick --watch tries again in a minute");
                (Exit::Environment, None)
            }
            Err(error) => return Err(error),
        };
        if !watch || signals.received().is_some() {
            return Ok(match signals.received() {
                Some(signal) => Exit::cancelled_by(signal),
                None => exit,
            });
        }
        let now = timearg::now().map_err(Error::Usage)?;
        // A fire time already past (the tick took long) is run at once.
        let wait = next.map_or(Duration::from_secs(60), |next| {
            (next - now).to_std().unwrap_or_default()
        });
        if !signals.sleep(wait.max(Duration::from_secs(1))) {
            return Ok(Exit::cancelled_by(
                signals.received().unwrap_or(libc::SIGTERM),
            ));
        }
    }
}

/// One pass over the entries; its exit code and the next fire time of any entry.
fn tick_once(
    lorch: &Lorch,
    ticking: &Ticking,
    signals: &Signals,
) -> Result<(Exit, Option<DateTime<Utc>>)> {
    let (config, mut broken) = read_config(lorch.config)?;
    let now = timearg::now().map_err(Error::Usage)?;
    let (home, store) = crate::history::open_home()?;
    let fires = store.last_fires()?;
    let mut failed = false;
    let mut next: Option<DateTime<Utc>> = None;
    for entry in entries(&config) {
        if signals.received().is_some() {
            break;
        }
        // Most ticks owe nothing: then no lock is taken (a lock file written per entry was
        // most of the time of a tick with nothing due).
        let last = fires.get(&entry.key()).copied();
        let owed = !entry.due(last, now).missed.is_empty();
        let fired = match owed {
            true => owe(&entry, (lorch, ticking), &home, &store, now, signals)?,
            false => Fired::Done,
        };
        match fired {
            Fired::Done | Fired::NotRun => {}
            Fired::Failed => failed = true,
            Fired::NotQueued => broken = true,
            Fired::Refused => {
                let file = config.path.as_deref().unwrap_or(Path::new("lorch.toml"));
                stderr!(
                    "error: {}: the schedule entry of {}: lorch refused to run it (see above); it stays due until it is fixed",
                    file.display(),
                    entry.schedule.target.describe()
                );
                broken = true;
            }
        }
        if let Some(fire) = entry.next_after(now) {
            next = Some(next.map_or(fire, |n| n.min(fire)));
        }
    }
    let exit = match (broken, failed) {
        (true, _) => Exit::Environment,
        (false, true) => Exit::JobFailed,
        (false, false) => Exit::Success,
    };
    Ok((exit, next))
}

/// Runs what `entry` is owed at `now`, under its lock (another tick holding it is running it),
/// reading what it is owed again once the lock is held; the worst of how its runs ended.
fn owe(
    entry: &Entry,
    how: (&Lorch, &Ticking),
    home: &Path,
    store: &LocalStore,
    now: DateTime<Utc>,
    signals: &Signals,
) -> Result<Fired> {
    let key = entry.key();
    let lock = home.join("locks").join(format!(
        "schedule-{:016x}.lock",
        crate::paths::fnv1a(key.as_bytes())
    ));
    let acquired = locks::acquire(&lock, "tick", Duration::ZERO, signals).map_err(|e| {
        Error::Environment(anyhow::anyhow!(
            "cannot take the lock {}: {e}",
            lock.display()
        ))
    })?;
    let _held = match acquired {
        Acquired::Held(held) => held,
        Acquired::Busy(_) => return Ok(Fired::Done),
    };
    let due = entry.due(store.last_fire(&key)?, now);
    let mut worst = Fired::Done;
    for &fire in &due.run {
        if signals.received().is_some() {
            return Ok(worst);
        }
        if !covered(entry.schedule, (home, store), fire)? {
            match run_fire(entry, how, fire, signals)? {
                // A broken entry stays owed from this fire time on: it runs once it is fixed.
                Fired::Refused => {
                    if let Some(before) = entry.previous(fire) {
                        store.set_last_fire(&key, before)?;
                    }
                    return Ok(Fired::Refused);
                }
                Fired::NotRun => return Ok(worst),
                Fired::NotQueued => return Ok(Fired::NotQueued),
                Fired::Failed => worst = Fired::Failed,
                Fired::Done => {}
            }
        }
        store.set_last_fire(&key, fire)?;
    }
    if let Some(&last) = due.missed.last() {
        store.set_last_fire(&key, last)?;
    }
    Ok(worst)
}

/// Whether a completed run already covers the window ending at `fire` (its watermark is there
/// or later): a tick that died after the run, before recording the fire time, does not run the
/// window again.
fn covered(
    schedule: &Schedule,
    (home, store): (&Path, &LocalStore),
    fire: DateTime<Utc>,
) -> Result<bool> {
    if let Target::Pipeline(name) = &schedule.target {
        return pipeline_covered(name.get_ref(), schedule, (home, store), fire);
    }
    let Some(job) = schedule
        .target
        .job()
        .filter(|_| since(schedule) == LAST_SUCCESS)
    else {
        return Ok(false);
    };
    let (package, job) = job.get_ref().split_once('/').unwrap_or_default();
    let mark = store.watermark(package, job, schedule.options.account.as_deref())?;
    Ok(mark.and_then(|m| m.until.parse::<DateTime<Utc>>().ok()) >= Some(fire))
}

/// Whether a run of the pipeline was started for the fire time and went its course: it
/// completed, failed (as a handled fire time does; `--resume` finishes it), or still runs. One
/// cancelled, or whose lorch died, leaves the fire time owed.
fn pipeline_covered(
    name: &str,
    schedule: &Schedule,
    (home, store): (&Path, &LocalStore),
    fire: DateTime<Utc>,
) -> Result<bool> {
    let account = schedule.options.account.as_deref();
    let Some(run) = store.pipeline_run_until(name, account, &timearg::micros(&fire))? else {
        return Ok(false);
    };
    Ok(match run.status {
        RunStatus::Running => locks::run_is_held(home, &run.pipeline_run_id),
        RunStatus::Failed => !matches!(
            run.reason.as_deref().and_then(Reason::parse),
            Some(Reason::Cancelled | Reason::Abandoned)
        ),
        RunStatus::Completed | RunStatus::Skipped => true,
    })
}

fn since(schedule: &Schedule) -> &str {
    schedule
        .options
        .since
        .as_ref()
        .map_or(LAST_SUCCESS, |s| s.get_ref())
}

/// How a run of a fire time ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fired {
    /// Completed, or skipped because another run of the job and account holds its lock (the
    /// next window covers this one).
    Done,
    Failed,
    /// `run-job` refused it as a usage error: the entry names a job that does not exist, or
    /// parameters it does not take. The entry is broken, as a bad cron expression is.
    Refused,
    /// Not started: tick was asked to stop first. The fire time stays owed.
    NotRun,
    /// `tick --submit` could not queue it (the server is unreachable): it stays owed, and tick
    /// exits 3.
    NotQueued,
}

/// `lorch run-job` (or `run-pipeline`) for the window ending at `fire`, after the entry's
/// jitter. A signal to tick
/// reaches the run (it is in tick's process group) and is waited out.
fn run_fire(
    entry: &Entry,
    (lorch, ticking): (&Lorch, &Ticking),
    fire: DateTime<Utc>,
    signals: &Signals,
) -> Result<Fired> {
    let s = entry.schedule;
    if let Some(jitter) = config::duration(&s.jitter).filter(|j| !j.is_zero()) {
        let pause = Duration::from_millis(fastrand::u64(..=jitter.as_millis() as u64));
        if !signals.sleep(pause) {
            return Ok(Fired::NotRun);
        }
    }
    let submit = match &s.target {
        Target::Job(_) => ticking.submit.as_ref(),
        Target::Pipeline(_) => None,
    };
    let options = fire_options(entry, fire, submit.is_some());
    let mut command = match (&s.target, submit) {
        (Target::Job(id), Some(nats)) => lorch.submit(id.get_ref(), &options, nats.as_deref()),
        (Target::Job(id), None) => lorch.run_job(id.get_ref(), &options),
        (Target::Pipeline(name), _) => lorch.run_pipeline(name.get_ref(), &options),
    }
    .map_err(Error::Environment)?;
    if submit.is_some() {
        // The same fire time submitted again (a tick that died before recording it) is stored
        // once.
        let key = crate::paths::fnv1a(entry.key().as_bytes());
        command.args([
            "--request-id",
            &format!("schedule-{key:016x}-{}", fire.timestamp()),
        ]);
    }
    let status = crate::child::run(command, signals)?;
    Ok(match (ChildOutcome::of(status, None), submit) {
        (ChildOutcome::Done | ChildOutcome::Locked, _) => Fired::Done,
        (ChildOutcome::Refused, _) => Fired::Refused,
        (_, Some(_)) => Fired::NotQueued,
        _ => Fired::Failed,
    })
}

/// The run of the window ending at `fire`: from the last success (submitted: from the fire
/// time before, the workers that run the requests do not share one watermark, docs/fleet.md),
/// with the entry's options.
fn fire_options(entry: &Entry, fire: DateTime<Utc>, submitted: bool) -> RunOptions {
    let s = entry.schedule;
    let text = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let previous = entry.previous(fire).map(text);
    let since = match (submitted, since(s), &previous) {
        (true, LAST_SUCCESS, Some(previous)) => previous.clone(),
        (_, since, _) => since.to_owned(),
    };
    let options = &s.options;
    // The first window of a new entry: one period back from its fire time.
    let initial_since = match since == LAST_SUCCESS {
        true => options
            .initial_since
            .as_ref()
            .map(|t| t.get_ref().clone())
            .or(previous),
        false => None,
    };
    RunOptions {
        account: options.account.clone(),
        since: Some(since),
        until: Some(text(fire)),
        initial_since,
        params: options.param_flags(),
        timeout: config::duration(&options.timeout),
        kill_after: config::duration(&options.kill_after),
        retries: options.retries,
        retry_backoff: config::duration(&options.retry_backoff),
        ..RunOptions::default()
    }
}
