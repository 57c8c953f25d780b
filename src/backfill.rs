//! `lorch backfill` (docs/windows.md, "Backfill"): a range of time split into windows, each run
//! as its own `lorch run-job`, oldest first. A window that already completed (same job, account
//! and window) is skipped, so the same command run again resumes with the missing and failed
//! windows only.

use std::io::IsTerminal;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::child::{ChildOutcome, Lorch};
use crate::error::{Error, Exit, Result};
use crate::lifecycle::Reason;
use crate::output::{self, stderr};
use crate::plan::RunOptions;
use crate::plugins::Job;
use crate::signals::Signals;
use crate::timearg;

use crate::events::LocalStore;

/// The range and how it is cut.
pub struct Range<'a> {
    pub since: &'a str,
    pub until: Option<&'a str>,
    pub step: Duration,
}

/// What every window's run gets.
pub struct Options<'a> {
    pub account: Option<&'a str>,
    pub params: &'a [String],
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub keep_going: bool,
}

/// The most windows one backfill makes: a typo such as `--step 1s` over a year is refused.
const MAX_WINDOWS: usize = 100_000;

/// What became of the windows.
#[derive(Default)]
struct Tally {
    completed: usize,
    failed: usize,
    done_before: usize,
}

/// How one window went.
enum Ran {
    /// Completed before this backfill came to it, or by another run meanwhile.
    DoneBefore,
    Completed,
    /// Not completed: how its run exited.
    NotCompleted(String),
    /// Cancelled by a signal (Ctrl-C): not a failure of the window; it stays to run.
    Interrupted,
}

/// One backfill under way: what each window's run shares.
struct Backfill<'a> {
    lorch: &'a Lorch<'a>,
    job: &'a Job,
    options: &'a Options<'a>,
    /// `--account`, else the job's default in the configuration file.
    account: Option<String>,
    store: LocalStore,
    signals: Signals,
    id: String,
}

pub fn run(lorch: &Lorch, job: &Job, range: &Range, options: &Options) -> Result<Exit> {
    let windows = windows(range)?;
    // What the runs will really have from the configuration file, as run-job applies it: the
    // job's default account when --account is not given, its default parameters.
    let config = crate::config::Config::read_file(lorch.config).map_err(crate::config::problems)?;
    let defaults = config.defaults_of(&job.id());
    let account = options
        .account
        .map(str::to_owned)
        .or_else(|| defaults.and_then(|d| d.account.clone()));
    // A bad --param is a usage error now, not a failure of every window.
    let params = match defaults {
        Some(defaults) => defaults.params_with(options.params),
        None => options.params.to_vec(),
    };
    crate::params::resolve(job.meta(), &params).map_err(Error::Usage)?;
    let backfill = Backfill {
        lorch,
        job,
        options,
        account,
        store: crate::history::open_home()?.1,
        signals: Signals::install()
            .map_err(|e| Error::Environment(anyhow::anyhow!("cannot catch signals: {e}")))?,
        id: uuid::Uuid::now_v7().to_string(),
    };
    let tally = backfill.each(&windows)?;
    backfill.finish(windows.len(), &tally)
}

impl Backfill<'_> {
    /// Runs the windows in order, until one does not complete (unless `--keep-going`) or a
    /// signal.
    fn each(&self, windows: &[(DateTime<Utc>, DateTime<Utc>)]) -> Result<Tally> {
        let bar = progress(windows.len());
        let say = |line: String| match &bar {
            Some(bar) => bar.println(line),
            None => stderr!("{line}"),
        };
        let mut tally = Tally::default();
        for (i, &(since, until)) in windows.iter().enumerate() {
            let label = format!("{} to {}", short(since), short(until));
            if let Some(bar) = &bar {
                bar.set_message(label.clone());
            }
            let place = format!("window {}/{}: {label}", i + 1, windows.len());
            match self.window(since, until)? {
                Ran::DoneBefore => tally.done_before += 1,
                Ran::Completed => {
                    tally.completed += 1;
                    if bar.is_none() {
                        say(format!("{place}: completed"));
                    }
                }
                Ran::Interrupted => {
                    say(format!("{place}: interrupted; it stays to run"));
                    break;
                }
                Ran::NotCompleted(exit) => {
                    tally.failed += 1;
                    say(format!("{place}: not completed ({exit})"));
                    if self.signals.received().is_some() || !self.options.keep_going {
                        break;
                    }
                }
            }
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        Ok(tally)
    }

    /// One window: skipped when it completed already, else its own `lorch run-job`.
    fn window(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<Ran> {
        let (since, until) = (timearg::micros(&since), timearg::micros(&until));
        let id = (self.job.package(), self.job.name());
        let account = self.account.as_deref();
        if self
            .store
            .window_completed(id, account, &since, &until)?
            .is_some()
        {
            return Ok(Ran::DoneBefore);
        }
        let run = RunOptions {
            account: self.account.clone(),
            since: Some(since),
            until: Some(until),
            params: self.options.params.to_vec(),
            timeout: self.options.timeout,
            retries: self.options.retries,
            backfill_id: Some(self.id.clone()),
            ..RunOptions::default()
        };
        let mut command = self
            .lorch
            .run_job(&self.job.id(), &run)
            .map_err(Error::Environment)?;
        // The run's summary tells a window it ran from one another run completed meanwhile.
        command.arg("--json");
        let (status, summary) = crate::child::run_json(command, &self.signals)?;
        let meanwhile = summary
            .as_ref()
            .is_some_and(|s| s.reason == Some(Reason::AlreadyCompleted));
        Ok(match ChildOutcome::of(status, summary.as_ref()) {
            ChildOutcome::Done if meanwhile => Ran::DoneBefore,
            ChildOutcome::Done => Ran::Completed,
            ChildOutcome::Stopped => Ran::Interrupted,
            _ => Ran::NotCompleted(match status.code() {
                Some(code) => format!("exit {code}"),
                None => "exit by a signal".to_owned(),
            }),
        })
    }

    /// The summary line, and the exit code.
    fn finish(&self, windows: usize, tally: &Tally) -> Result<Exit> {
        let left = windows - tally.completed - tally.failed - tally.done_before;
        let mut summary = format!(
            "{} completed, {} failed, {} skipped (already done)",
            tally.completed, tally.failed, tally.done_before
        );
        if left > 0 {
            summary.push_str(&format!(", {left} not run"));
        }
        let id = &self.id;
        let complete = tally.failed == 0 && left == 0;
        match complete {
            true => output::print(&format!("✓ {summary} (backfill {id})\n"))?,
            false => stderr!("✗ {summary} (backfill {id}); run the same command again to resume"),
        }
        Ok(match (self.signals.received(), complete) {
            (Some(signal), _) => Exit::cancelled_by(signal),
            (None, true) => Exit::Success,
            (None, false) => Exit::JobFailed,
        })
    }
}

/// `[since, until)` cut into windows of `step`, oldest first; the last one may be shorter.
fn windows(range: &Range) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>> {
    let now = timearg::now().map_err(Error::Usage)?;
    let (since, until) =
        timearg::window(Some(range.since), Some(range.until.unwrap_or("now")), now)
            .map_err(Error::Usage)?;
    let (since, until) = (since.expect("given").utc, until.expect("given").utc);
    let step = chrono::Duration::from_std(range.step).map_err(|_| {
        Error::Usage(format!(
            "--step {} is too long",
            humantime::format_duration(range.step)
        ))
    })?;
    let mut windows = Vec::new();
    let mut start = since;
    while start < until {
        if windows.len() == MAX_WINDOWS {
            return Err(Error::Usage(format!(
                "--step {} cuts the range into more than {MAX_WINDOWS} windows; use a longer step",
                humantime::format_duration(range.step)
            )));
        }
        let end = start
            .checked_add_signed(step)
            .map_or(until, |e| e.min(until));
        windows.push((start, end));
        start = end;
    }
    if windows.is_empty() {
        return Err(Error::Usage(format!(
            "--since '{}' and --until '{}' leave no time to backfill",
            range.since,
            range.until.unwrap_or("now")
        )));
    }
    Ok(windows)
}

/// A window bound for messages: to the second, to the day when at midnight.
fn short(at: DateTime<Utc>) -> String {
    match at.format("%H:%M:%S%.f").to_string().as_str() {
        "00:00:00" => at.format("%Y-%m-%d").to_string(),
        _ => at.to_rfc3339_opts(SecondsFormat::Secs, true),
    }
}

/// A progress bar on stderr when it is a terminal; plain lines otherwise.
fn progress(len: usize) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    let style = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} windows  {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}
