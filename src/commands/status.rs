//! `lorch status`: one row per job and account that has a schedule or has run, with a verdict
//! (docs/status.md), and an exit code a dead-man check can use: 0 when every row is ok, 1
//! otherwise. It reads the configuration file and the store only: no plugin, no network.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::config::Target;
use crate::error::{Error, Exit, Result};
use crate::events::JobRuns;
use crate::health::{self, Facts, Verdict};
use crate::lifecycle::RunStatus;
use crate::output::{self, stderr};
use crate::schedule::Entry;
use crate::timearg;

/// One row: a job and account, what its runs say, its schedule's next fire time, its verdict.
struct Row {
    runs: JobRuns,
    next_due: Option<DateTime<Utc>>,
    verdict: Verdict,
    why: String,
}

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
            let shortest = periods.entry(key).or_insert(period);
            *shortest = (*shortest).min(period);
        }
    }
    for (key, row) in &mut rows {
        let facts = facts(&store, &row.runs, periods.get(key).copied(), max_age)?;
        (row.verdict, row.why) = health::verdict(&facts, now);
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

fn row(runs: JobRuns) -> Row {
    Row {
        runs,
        next_due: None,
        verdict: Verdict::Ok,
        why: String::new(),
    }
}

/// What the verdict is made of; the usual duration is read only for a run in progress.
fn facts(
    store: &crate::events::LocalStore,
    runs: &JobRuns,
    period: Option<Duration>,
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
        period,
        max_age,
    })
}

fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// How long ago `at` (a stored time) was, or `-`.
fn ago(at: &Option<String>, now: DateTime<Utc>) -> String {
    match at.as_deref().and_then(|t| t.parse::<DateTime<Utc>>().ok()) {
        Some(t) => format!(
            "{} ago",
            health::short((now - t).to_std().unwrap_or_default())
        ),
        None => "-".to_owned(),
    }
}

fn print_table(rows: &[Row], now: DateTime<Utc>) -> anyhow::Result<()> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let r = &row.runs;
            let last = match (&r.last_status, &r.last_reason) {
                (Some(status), Some(reason)) => {
                    format!("{status} ({reason}), {}", ago(&r.last_ended_at, now))
                }
                (Some(status), None) => format!("{status}, {}", ago(&r.last_ended_at, now)),
                _ => "-".to_owned(),
            };
            let running = r.running_since.as_ref().map_or("-".to_owned(), |_| {
                format!("since {}", ago(&r.running_since, now))
            });
            vec![
                row.verdict.as_str().to_owned(),
                format!("{}/{}", r.package, r.job),
                r.account.clone().unwrap_or_else(|| "-".to_owned()),
                last,
                ago(&r.last_success_at, now),
                r.consecutive_failures.to_string(),
                running,
                row.next_due.map_or("-".to_owned(), utc),
                row.why.clone(),
            ]
        })
        .collect();
    let header = [
        "VERDICT",
        "JOB",
        "ACCOUNT",
        "LAST RUN",
        "LAST SUCCESS",
        "FAILURES",
        "RUNNING",
        "NEXT DUE",
        "WHY",
    ];
    let text = output::table(&header, &cells);
    if !output::colours(std::io::stdout().is_terminal()) {
        return output::print(&text);
    }
    // Only the verdict, which lorch wrote, is coloured; the rest is printed as it always is.
    let mut lines = text.lines();
    let mut coloured = format!("{}\n", lines.next().unwrap_or_default());
    for (line, row) in lines.zip(rows) {
        let word = row.verdict.as_str();
        let code = match row.verdict {
            Verdict::Ok => "32",
            Verdict::Failing => "31",
            Verdict::Stale | Verdict::RunningLong => "33",
        };
        let rest = output::clean(&line[word.len()..], output::Style::Text);
        coloured.push_str(&format!("\x1b[{code}m{word}\x1b[0m{rest}\n"));
    }
    output::print_raw(&coloured)
}

fn print_json(rows: &[Row], now: DateTime<Utc>, ok: bool) -> anyhow::Result<()> {
    let jobs: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let r = &row.runs;
            let age = r
                .last_success_at
                .as_deref()
                .and_then(|t| t.parse::<DateTime<Utc>>().ok())
                .map(|t| (now - t).num_seconds());
            json!({
                "package": r.package,
                "job": r.job,
                "account": r.account,
                "verdict": row.verdict,
                "why": row.why,
                "last_run": r.last_run_id.as_ref().map(|id| json!({
                    "run_id": id,
                    "status": r.last_status,
                    "reason": r.last_reason,
                    "started_at": r.last_started_at,
                    "ended_at": r.last_ended_at,
                })),
                "last_success_at": r.last_success_at,
                "last_success_age_seconds": age,
                "consecutive_failures": r.consecutive_failures,
                "running_since": r.running_since,
                "next_due": row.next_due.map(utc),
            })
        })
        .collect();
    output::print_json(&json!({ "ok": ok, "jobs": jobs }))
}
