//! `lorch status`: one row per job and account that has a schedule or has run, with a verdict
//! (docs/status.md), and an exit code a dead-man check can use: 0 when every row is ok, 1
//! otherwise. It reads the configuration file and the store only: no plugin, no network.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Target;
use crate::error::{Error, Exit, Result};
use crate::events::JobRuns;
use crate::health::{self, Facts, Verdict};
use crate::lifecycle::RunStatus;
use crate::output::stderr;
use crate::schedule::Entry;
use crate::timearg;
use crate::views::status::{Row, print_json, print_table, row};

pub fn status(flag: Option<&Path>, json: bool, max_age: Option<Duration>) -> Result<Exit> {
    let config = super::read_config_reporting(flag)?;
    let now = timearg::now().map_err(Error::Usage)?;
    let (home, store) = super::open_home()?;
    super::reap_all(&store, &home)?;
    let mut rows: BTreeMap<(String, String, Option<String>), Row> = BTreeMap::new();
    for runs in store.job_runs()? {
        let key = (runs.package.clone(), runs.job.clone(), runs.account.clone());
        rows.insert(key, row(runs));
    }
    let mut periods = BTreeMap::new();
    for schedule in &config.schedules {
        let Target::Job(id) = &schedule.target else {
            continue;
        };
        let (package, job) = id.get_ref().split_once('/').unwrap_or_default();
        let account = schedule.options.account.clone();
        let key = (package.to_owned(), job.to_owned(), account.clone());
        let entry = Entry::new(schedule);
        let next = entry.next_after(now);
        let row = rows.entry(key.clone()).or_insert_with(|| {
            row(JobRuns {
                package: package.to_owned(),
                job: job.to_owned(),
                account,
                ..JobRuns::default()
            })
        });
        row.next_due = row.next_due.min(next).or(next);
        if let (Some(last), Some(next)) = (entry.last_at_or_before(now), next) {
            let period = (next - last).to_std().unwrap_or_default();
            let (shortest, fire) = periods.entry(key).or_insert((period, last));
            *shortest = (*shortest).min(period);
            *fire = (*fire).max(last);
        }
    }
    for (key, row) in &mut rows {
        let facts = facts(&store, &row.runs, periods.get(key).copied(), max_age)?;
        (row.verdict, row.why) = health::verdict(&facts, now);
        // Why it failed, in the same line: the last run's error (`runs show` has all of it).
        if row.verdict == Verdict::Failing
            && let Some(id) = &row.runs.last_run_id
            && let Some(error) = store.run(id)?.and_then(|r| r.error_message)
        {
            row.why = format!("{}: {}", row.why, crate::views::runs::one_line(&error));
        }
    }
    let rows: Vec<Row> = rows.into_values().collect();
    let healthy = config.problems.is_empty() && rows.iter().all(|r| r.verdict == Verdict::Ok);
    if json {
        print_json(&rows, now, healthy)?;
    } else if rows.is_empty() {
        stderr!("no jobs: nothing has run, and the configuration file has no schedules");
    } else {
        print_table(&rows, now)?;
    }
    Ok(match healthy {
        true => Exit::Success,
        false => Exit::JobFailed,
    })
}

/// What the verdict is made of; the usual duration is read only for a run in progress.
fn facts(
    store: &crate::events::LocalStore,
    runs: &JobRuns,
    schedule: Option<(Duration, DateTime<Utc>)>,
    max_age: Option<Duration>,
) -> anyhow::Result<Facts> {
    let time = |t: &Option<String>| t.as_deref().and_then(|t| t.parse().ok());
    let usual = match &runs.running_since {
        None => None,
        Some(_) => {
            let id = (runs.package.as_str(), runs.job.as_str());
            let mut recent =
                store.recent_durations(id, runs.account.as_deref(), health::USUAL_OF)?;
            health::median(&mut recent)
        }
    };
    Ok(Facts {
        last_failed: runs.last_status == Some(RunStatus::Failed),
        consecutive_failures: runs.consecutive_failures,
        last_success: time(&runs.last_success_at),
        running_since: time(&runs.running_since),
        usual,
        period: schedule.map(|(period, _)| period),
        last_fire: schedule.map(|(_, fire)| fire),
        max_age,
    })
}
