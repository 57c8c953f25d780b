//! `lorch schedule list|install` and `lorch tick` (docs/schedules.md): the `[[schedule]]`
//! entries of the configuration file, what each is owed now, and running it.
//!
//! `tick` runs each owed fire time as `lorch run-job` in a child process, with the window
//! ending at the fire time: the run is an ordinary supervised run (its lock, its events, its
//! BigQuery delivery), and tick only decides what to run. Nothing here loads a plugin or builds
//! an async runtime, so a `tick` with nothing due costs a configuration read and a store read.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::child::{self, ChildOutcome};
use crate::config::{self, Config, Schedule, Target};
use crate::error::{Error, Exit, Result};
use crate::events::LocalStore;
use crate::lifecycle::{LAST_SUCCESS, Reason, RunStatus};
use crate::locks::{self, Acquired};
use crate::output::{self, stderr};
use crate::plan::RunOptions;
use crate::schedule::Entry;
use crate::signals::Signals;
use crate::timearg;

use super::Passed;

/// The configuration with its good entries (see [`super::read_config_reporting`]), and whether
/// any entry was left out.
fn read_config(flag: Option<&Path>) -> Result<(Config, bool)> {
    let config = super::read_config_reporting(flag)?;
    let broken = !config.problems.is_empty();
    Ok((config, broken))
}

fn entries(config: &Config) -> Vec<Entry<'_>> {
    config.schedules.iter().map(Entry::new).collect()
}

fn utc(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `lorch schedule list`: each entry, when it last fired and what ran, when it fires next
/// (local and UTC), and what `tick` would do now.
pub fn list(flag: Option<&Path>, json: bool) -> Result<Exit> {
    let (config, broken) = read_config(flag)?;
    let now = timearg::now().map_err(Error::Usage)?;
    let (_, store) = super::open_home()?;
    let fires = store.last_fires()?;
    let entries = entries(&config);
    let mut listed = Vec::new();
    // One read transaction for every entry's last run.
    store.reading(|| {
        for entry in &entries {
            listed.push(describe(entry, &fires, &store, now)?);
        }
        Ok(())
    })?;
    if json {
        output::print_json(&json!({ "schedules": listed }))?;
    } else if listed.is_empty() {
        stderr!(
            "no schedules: add [[schedule]] entries to the configuration file (docs/schedules.md)"
        );
    } else {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
        let rows: Vec<Vec<String>> = listed
            .iter()
            .map(|e| {
                let last_run = match &e["last_run"] {
                    serde_json::Value::Null => "-".to_owned(),
                    run => format!("{} ({})", text(&run["started_at"]), text(&run["status"])),
                };
                let due = e["due"].as_array().map_or(0, Vec::len);
                let missed = e["missed"].as_array().map_or(0, Vec::len);
                let target = match &e["pipeline"] {
                    serde_json::Value::String(name) => format!("pipeline {name}"),
                    _ => text(&e["job"]),
                };
                vec![
                    target,
                    text(&e["account"]),
                    format!("{} {}", text(&e["cron"]), text(&e["timezone"])),
                    last_run,
                    format!(
                        "{} ({})",
                        text(&e["next_fire_local"]),
                        text(&e["next_fire"])
                    ),
                    format!("{due} due, {missed} missed"),
                ]
            })
            .collect();
        let header = ["JOB", "ACCOUNT", "CRON", "LAST RUN", "NEXT FIRE", "NOW"];
        output::print(&output::table(&header, &rows))?;
    }
    Ok(if broken {
        Exit::Environment
    } else {
        Exit::Success
    })
}

/// One entry as `schedule list` shows it.
fn describe(
    entry: &Entry,
    fires: &HashMap<String, DateTime<Utc>>,
    store: &LocalStore,
    now: DateTime<Utc>,
) -> anyhow::Result<serde_json::Value> {
    let s = entry.schedule;
    let last = fires.get(&entry.key()).copied();
    let due = entry.due(last, now);
    let next = entry.next_after(now);
    let last_run = match &s.target {
        Target::Job(id) => {
            let id = id.get_ref().split_once('/').unwrap_or_default();
            store.last_run(id, s.options.account.as_deref())?
        }
        Target::Pipeline(name) => store
            .pipeline_runs(Some(name.get_ref()), None, Some(1))?
            .pop()
            .map(|r| {
                (
                    r.pipeline_run_id,
                    r.status.as_str().to_owned(),
                    r.started_at,
                )
            }),
    };
    Ok(json!({
            "job": s.target.job().map(|j| j.get_ref()),
            "pipeline": matches!(s.target, Target::Pipeline(_)).then(|| s.target.name()),
            "account": s.options.account,
            "cron": s.cron.get_ref(),
            "timezone": entry.zone.name(),
            "catch_up": s.catch_up,
            "last_fire": last.map(utc),
            "last_run": last_run.map(|(run_id, status, started_at)| json!({"run_id": run_id, "status": status, "started_at": started_at})),
            "next_fire": next.map(utc),
            "next_fire_local": next.map(|n| n.with_timezone(&entry.zone).to_rfc3339_opts(SecondsFormat::Secs, false)),
            "missed": due.missed.iter().copied().map(utc).collect::<Vec<_>>(),
            "due": due.run.iter().copied().map(utc).collect::<Vec<_>>(),
    }))
}

/// `lorch tick [--watch]`: runs what every entry is owed now; with `--watch`, again at every
/// next fire time until a signal.
/// How `tick` goes about it.
pub struct Ticking {
    /// `--watch`.
    pub watch: bool,
    /// `--submit [--nats URL]`: queue the runs of jobs for the fleet (docs/fleet.md) on this
    /// server (`None`: the default one) instead of running them.
    pub submit: Option<Option<String>>,
}

pub fn tick(passed: &Passed, ticking: &Ticking) -> Result<Exit> {
    let watch = ticking.watch;
    let signals = Signals::install()
        .map_err(|e| Error::Environment(anyhow::anyhow!("cannot catch signals: {e}")))?;
    loop {
        let (exit, next) = match tick_once(passed, ticking, &signals) {
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
    passed: &Passed,
    ticking: &Ticking,
    signals: &Signals,
) -> Result<(Exit, Option<DateTime<Utc>>)> {
    let (config, mut broken) = read_config(passed.config)?;
    let now = timearg::now().map_err(Error::Usage)?;
    let (home, store) = super::open_home()?;
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
            true => owe(&entry, (passed, ticking), &home, &store, now, signals)?,
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
    how: (&Passed, &Ticking),
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
    (passed, ticking): (&Passed, &Ticking),
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
    let command = match (&s.target, submit) {
        (Target::Job(id), Some(nats)) => {
            let mut command = passed.submit(id.get_ref(), &options, nats.as_deref());
            // The same fire time submitted again (a tick that died before recording it) is
            // stored once.
            let key = crate::paths::fnv1a(entry.key().as_bytes());
            let request_id = format!("schedule-{key:016x}-{}", fire.timestamp());
            if let Ok(command) = &mut command {
                command.args(["--request-id", &request_id]);
            }
            command
        }
        (Target::Job(id), None) => passed.run_job(id.get_ref(), &options),
        (Target::Pipeline(name), _) => passed.run_pipeline(name.get_ref()).map(|mut command| {
            command.args(child::args(&options));
            command
        }),
    };
    let status = super::run_child(command.map_err(Error::Environment)?, signals)?;
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

/// `lorch schedule install --cron | --systemd`: the lines that call `tick`, printed with how to
/// install them (nothing is installed). Every path is made absolute (cron runs from `$HOME`,
/// systemd from `/`) and quoted for where it goes: the shell of a cron line (where `%` ends
/// the command unless escaped), or a unit file (where `%` and `$` are specifiers).
pub fn install(passed: &Passed, systemd: bool) -> Result<Exit> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Environment(anyhow::anyhow!("cannot find lorch's own binary: {e}")))?;
    let quote = |text: &str| match systemd {
        true => unit_quote(text),
        false => cron_quote(text),
    };
    let path = |p: &Path| quote(&absolute(p).display().to_string());
    // What this command was told, the installed tick is told too.
    let mut exe = path(&exe);
    if let Some(file) = passed.config {
        exe.push_str(&format!(" --config {}", path(file)));
    }
    for dir in passed.plugin_path {
        exe.push_str(&format!(" --plugin-path {}", path(dir)));
    }
    if passed.allow_insecure_plugins {
        exe.push_str(" --allow-insecure-plugins");
    }
    let vars: Vec<(&str, String)> = ["LORCH_HOME", "LORCH_CONFIG", "LORCH_PLUGIN_PATH"]
        .into_iter()
        .filter_map(|name| std::env::var_os(name).map(|v| (name, v)))
        .map(|(name, value)| {
            let paths = std::env::split_paths(&value).map(|p| absolute(&p));
            let value = std::env::join_paths(paths).unwrap_or(value);
            (name, value.to_string_lossy().into_owned())
        })
        .collect();
    // The shell takes `NAME='a b'` as an assignment, systemd `"NAME=a b"`.
    let cron_vars: String = vars
        .iter()
        .map(|(name, value)| format!("{name}={} ", cron_quote(value)))
        .collect();
    let unit_vars: String = vars
        .iter()
        .map(|(name, value)| format!("Environment={}\n", unit_quote(&format!("{name}={value}"))))
        .collect();
    let text = if systemd {
        format!(
            "# ~/.config/systemd/user/lorch-tick.service
[Unit]
Description=lorch: run the schedules of lorch.toml that are due

[Service]
Type=oneshot
{unit_vars}ExecStart={exe} tick --quiet

# ~/.config/systemd/user/lorch-tick.timer
[Unit]
Description=lorch tick every minute

[Timer]
OnCalendar=*-*-* *:*:00
Persistent=true

[Install]
WantedBy=timers.target

# Install: save the two files above, then
#   systemctl --user daemon-reload && systemctl --user enable --now lorch-tick.timer
# (loginctl enable-linger $USER keeps it running while you are logged out.)
"
        )
    } else {
        format!(
            "# Add with `crontab -e`: every minute, tick runs the schedules of lorch.toml that are
# due, and catches up on those missed while the machine was off or asleep.
* * * * * {cron_vars}{exe} tick --quiet
"
        )
    };
    output::print(&text)?;
    Ok(Exit::Success)
}

/// `path` from the root: as given when it is, else from the current directory (not resolved
/// further: a link the user named stays the link).
fn absolute(path: &Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// One word for the shell of a crontab line: single-quoted unless it is plain, with `%` escaped
/// (cron turns an unescaped one into a newline and the end of the command).
fn cron_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-=:+,@".contains(c);
    let word = match text.chars().all(plain) && !text.is_empty() {
        true => text.to_owned(),
        false => format!("'{}'", text.replace('\'', r"'\''")),
    };
    word.replace('%', r"\%")
}

/// One word of a systemd unit's `ExecStart=` or `Environment=`: double-quoted unless it is
/// plain, with `%` and `$` doubled (systemd reads them as specifiers and variables).
fn unit_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-=:+,@".contains(c);
    let escaped = text
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    match text.chars().all(plain) && !text.is_empty() {
        true => escaped,
        false => format!("\"{escaped}\""),
    }
}
