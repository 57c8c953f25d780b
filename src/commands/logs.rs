//! `lorch runs logs` and `lorch runs prune`: what a run's job wrote and logged, kept with the
//! run (docs/logs.md), and the deletion of old logs and events.

use std::time::Duration;

use chrono::SecondsFormat;

use crate::error::{Error, Exit, Result};
use crate::events::{LocalStore, RunRow};
use crate::lifecycle::RunStatus;
use crate::output::{self, stderr};
use crate::runlog::{self};
use crate::views::logs::{Printer, bytes, say_why_nothing};
use crate::{history, locks};

/// What `runs logs` was asked for.
pub struct Request<'a> {
    pub run_id: &'a str,
    pub attempt: Option<u32>,
    pub follow: bool,
    pub json: bool,
}

/// How often `--follow` looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

pub fn logs(request: &Request) -> Result<Exit> {
    let (home, store) = super::open_home()?;
    super::reap_all(&store, &home)?;
    let run = find_run(&store, request.run_id)?;
    if let Some(n) = request.attempt
        && n > run.attempt
    {
        return Err(Error::Usage(format!(
            "--attempt {n}: run {} has {} attempt{}",
            run.run_id,
            run.attempt,
            if run.attempt == 1 { "" } else { "s" }
        )));
    }
    // What became of the run, first (on stderr: stdout is the log): why it failed, without a
    // second command.
    if !request.json && run.status != RunStatus::Running {
        stderr!("{}", crate::views::runs::headline(&run));
    }
    let mut printer = Printer {
        out: output::Stream::new(request.json),
        json: request.json,
        run: &run,
        printed: 0,
    };
    let mut attempt = request.attempt.unwrap_or(1);
    // The number of the next line to print.
    let mut next = 0;
    let mut now = run.clone();
    // Following ends once the run has ended (its lorch let go of it: between attempts it
    // holds on) and its last lines were printed.
    let mut ended = !request.follow;
    loop {
        if !printer.attempt_from(&home, attempt, &mut next)? {
            return Ok(Exit::Success);
        }
        if attempt < request.attempt.unwrap_or(now.attempt) {
            attempt += 1;
            next = 0;
            continue;
        }
        if ended {
            break;
        }
        std::thread::sleep(FOLLOW_EVERY);
        // A run whose lorch was killed would look running for ever.
        super::report_reaped(history::reap(
            &store,
            &home,
            Some((run.package.clone(), run.job.clone())),
        )?);
        now = store.run(&run.run_id)?.unwrap_or(now);
        ended = now.status != RunStatus::Running && !locks::run_is_held(&home, &run.run_id);
    }
    if printer.printed == 0 && !request.json {
        say_why_nothing(&store, &now, request.follow)?;
    }
    printer.out.finish()?;
    Ok(Exit::Success)
}

/// The run `id` names: a job run's id, or `last` for the newest.
fn find_run(store: &LocalStore, id: &str) -> Result<RunRow> {
    let path = store.path().display();
    let run_id = match id {
        "last" => store
            .newest_job_run_id()?
            .ok_or_else(|| Error::Usage(format!("no runs recorded in {path} yet")))?,
        id => id.to_owned(),
    };
    if store.pipeline_run(&run_id)?.is_some() {
        return Err(Error::Usage(format!(
            "{run_id} is a pipeline run; its steps have the logs: `lorch runs show {run_id}` lists their run ids"
        )));
    }
    store.run(&run_id)?.ok_or_else(|| {
        Error::Usage(format!(
            "no run {run_id} in {path}; `lorch runs list` shows the recorded runs"
        ))
    })
}

/// `runs prune --older-than D [--events]`.
pub fn prune(older_than: Duration, events: bool) -> Result<Exit> {
    let (home, store) = super::open_home()?;
    super::reap_all(&store, &home)?;
    let now = crate::timearg::now().map_err(Error::Usage)?;
    let cutoff = chrono::Duration::from_std(older_than)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| {
            Error::Usage(format!(
                "--older-than {}: too far back",
                humantime::format_duration(older_than)
            ))
        })?;
    let running: Vec<String> = store.running(None)?.into_iter().map(|r| r.run_id).collect();
    let pruned = runlog::prune(&home, cutoff, &|id| running.iter().any(|r| r == id))
        .map_err(|e| Error::Environment(anyhow::Error::new(e).context("cannot prune run logs")))?;
    let since = cutoff.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut text = format!(
        "deleted the logs of {} runs started before {since} ({})\n",
        pruned.runs,
        bytes(pruned.bytes)
    );
    if events {
        let deleted = store.prune_events(&cutoff)?;
        text.push_str(&format!(
            "deleted {} events created before {since}; kept {} of them still pending for BigQuery\n",
            deleted.deleted, deleted.pending
        ));
    }
    output::print(&text)?;
    Ok(Exit::Success)
}
