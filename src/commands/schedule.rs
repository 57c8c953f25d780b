//! `lorch schedule list|install` and `lorch tick` (docs/schedules.md): the `[[schedule]]`
//! entries of the configuration file and what each is owed now; `tick` and `install` are in
//! `schedule`.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::config::Target;
use crate::error::{Error, Exit, Result};
use crate::events::LocalStore;
use crate::output::{self, stderr};
use crate::schedule::Entry;
use crate::timearg;

pub use crate::schedule::install::install;
pub use crate::schedule::tick::{Ticking, tick};
use crate::schedule::tick::{entries, read_config};

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
