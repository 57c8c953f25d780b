//! `lorch state show|set|reset`: the watermarks `--since last-success` starts from
//! (docs/windows.md). A change by hand is recorded as an event (`state.set`, `state.reset`),
//! which the store applies in the same transaction.

use serde_json::json;

use crate::error::{Error, Exit, Result};
use crate::events::{Event, EventSink};
use crate::lifecycle::{self, StateChange, WatermarkPayload};
use crate::output::{self, stderr};
use crate::plugins::Job;
use crate::timearg;

pub fn show(job: Option<&str>, account: Option<&str>, json: bool) -> Result<Exit> {
    let job = match job {
        None => None,
        Some(id) => Some(
            id.split_once('/')
                .filter(|(p, j)| !p.is_empty() && !j.is_empty())
                .ok_or_else(|| Error::Usage(format!("invalid job '{id}': expected PACKAGE/JOB")))?,
        ),
    };
    let (_, store) = super::open_home()?;
    let marks = store.watermarks(job, account)?;
    if json {
        output::print_json(&json!({ "watermarks": marks }))?;
    } else if marks.is_empty() {
        let of = match (job, account) {
            (None, None) => String::new(),
            (Some((package, name)), None) => format!(" of {package}/{name}"),
            (None, Some(account)) => format!(" for account {account}"),
            (Some((package, name)), Some(account)) => {
                format!(" of {package}/{name} for account {account}")
            }
        };
        stderr!(
            "no watermarks{of} in {}: a run records one when it completes a window with a start (docs/windows.md)",
            store.path().display()
        );
    } else {
        let rows: Vec<Vec<String>> = marks
            .iter()
            .map(|m| {
                vec![
                    format!("{}/{}", m.package, m.job),
                    m.account.clone().unwrap_or_else(|| "-".to_owned()),
                    m.until.clone(),
                    m.run_id.clone().unwrap_or_else(|| "set by hand".to_owned()),
                ]
            })
            .collect();
        let header = ["JOB", "ACCOUNT", "UNTIL", "BY"];
        output::print(&output::table(&header, &rows))?;
    }
    Ok(Exit::Success)
}

/// `state set` (`to` given) and `state reset` (`to` = `None`).
pub fn set(job: &Job, account: Option<&str>, to: Option<&str>) -> Result<Exit> {
    let until = match to {
        None => None,
        Some(text) => {
            let (to, _) = timearg::window(Some(text), None, timearg::now().map_err(Error::Usage)?)
                .map_err(|e| Error::Usage(e.replace("for --since", "for --to")))?;
            to.map(|t| timearg::micros(&t.utc))
        }
    };
    let (_, store) = super::open_home()?;
    let previous = store.watermark(job.package(), job.name(), account)?;
    if until.is_none() && previous.is_none() {
        output::print(&format!(
            "no watermark of {} to reset: nothing changed\n",
            match account {
                Some(account) => format!("{} (account {account})", job.id()),
                None => job.id(),
            }
        ))?;
        return Ok(Exit::Success);
    }
    let change = match until {
        Some(_) => StateChange::Set,
        None => StateChange::Reset,
    };
    let payload = WatermarkPayload {
        package: job.package().to_owned(),
        job: job.name().to_owned(),
        account: account.map(str::to_owned),
        until: until.clone(),
        previous: previous.as_ref().map(|p| p.until.clone()),
    };
    let mut event = Event::new(
        change.as_str(),
        lifecycle::SOURCE,
        &uuid::Uuid::now_v7().to_string(),
    );
    event.object_type = Some(lifecycle::WATERMARK_OBJECT.to_owned());
    event.set_payload(&json!(payload));
    store.record(&event)?;
    let of = match account {
        Some(account) => format!("{} (account {account})", job.id()),
        None => job.id(),
    };
    let was = previous.map_or("none".to_owned(), |p| p.until);
    let now = until.unwrap_or_else(|| {
        "none: the next --since last-success run needs --initial-since".to_owned()
    });
    output::print(&format!("watermark of {of}: {now} (was {was})\n"))?;
    Ok(Exit::Success)
}
