//! `lorch status` as a table and as its JSON document.

use std::io::IsTerminal as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::events::JobRuns;
use crate::health::{self, Verdict};
use crate::output;

/// One row: a job and account, what its runs say, its schedule's next fire time, its verdict.
pub struct Row {
    pub runs: JobRuns,
    pub next_due: Option<DateTime<Utc>>,
    pub verdict: Verdict,
    pub why: String,
}

pub fn row(runs: JobRuns) -> Row {
    Row {
        runs,
        next_due: None,
        verdict: Verdict::Ok,
        why: String::new(),
    }
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

pub fn print_table(rows: &[Row], now: DateTime<Utc>) -> anyhow::Result<()> {
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

pub fn print_json(rows: &[Row], now: DateTime<Utc>, ok: bool) -> anyhow::Result<()> {
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
