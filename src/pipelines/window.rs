//! The window every step of a pipeline run shares, and what `--resume` carries over.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::events::LocalStore;
use crate::lifecycle::{LAST_SUCCESS, RunStatus};
use crate::signals::Signals;
use crate::{locks, timearg};

use super::{Request, Shared};

/// The window of every step: `--since`/`--until` resolved once, `until` defaulting to the
/// instant the pipeline starts; or the window of the run `--resume` names.
pub fn window(store: &LocalStore, pipeline: &Pipeline, request: &Request) -> Result<Shared> {
    if let Some(resume) = request.resume {
        return resumed(store, pipeline, request.name, resume);
    }
    let now = timearg::now().map_err(Error::Usage)?;
    let since = request.since.map(str::trim).filter(|s| *s != LAST_SUCCESS);
    let (since, until) = timearg::run_window(since, request.until, now).map_err(Error::Usage)?;
    let micros = |t: &lorch_plugin_api::TimeArg| timearg::micros(&t.utc);
    Ok(Shared {
        now,
        since: match request.since.map(str::trim) {
            Some(LAST_SUCCESS) => Some(LAST_SUCCESS.to_owned()),
            _ => since.as_ref().map(micros),
        },
        initial_since: request.initial_since.map(str::to_owned),
        account: request.account.map(str::to_owned),
        until: until.as_ref().map_or_else(|| timearg::micros(&now), micros),
        carried: BTreeSet::new(),
        resumes: None,
    })
}

/// The lock of resuming the pipeline run `resumed`, held by the run `id` while it runs: whether
/// another run resumed it already is decided under it, so two `--resume` at once never both run.
pub fn resume_lock(home: &Path, resumed: &str, id: &str, signals: &Signals) -> Result<locks::Held> {
    let path = home.join("locks").join(format!("resume.{resumed}.lock"));
    match locks::acquire(&path, id, Duration::ZERO, signals)
        .with_context(|| format!("cannot take the lock {}", path.display()))
        .map_err(Error::Environment)?
    {
        locks::Acquired::Held(held) => Ok(held),
        locks::Acquired::Busy(holder) => Err(Error::Usage(format!(
            "--resume: the pipeline run {resumed} is being resumed already, by {} (pid {}); let that one finish, and resume it if it does not complete",
            holder.run_id.as_deref().unwrap_or("another run"),
            holder.pid.map_or("?".to_owned(), |p| p.to_string())
        ))),
    }
}

/// `--resume ID`: the window of that run, and the steps it and the runs it resumed completed.
/// Refused when it is still running, when nothing is left to run, and when another run already
/// resumed it (that one is the one to resume).
fn resumed(store: &LocalStore, pipeline: &Pipeline, name: &str, id: &str) -> Result<Shared> {
    let usage = |why: String| Err(Error::Usage(format!("--resume: {why}")));
    let Some(run) = store.pipeline_run(id)? else {
        return usage(format!(
            "no pipeline run {id}; see `lorch runs list --pipeline {name}`"
        ));
    };
    if run.pipeline != name {
        return usage(format!(
            "{id} is a run of the pipeline {}, not {name}",
            run.pipeline
        ));
    }
    if run.status == RunStatus::Running {
        return usage(format!(
            "the pipeline run {id} is still running (pid {})",
            run.pid.unwrap_or_default()
        ));
    }
    if let Some(later) = store
        .pipeline_runs(Some(name), None, None)?
        .into_iter()
        .rfind(|r| r.started.resumes.as_deref() == Some(id))
    {
        return usage(format!(
            "the pipeline run {id} was resumed already, by {} ({}); resume that one if it did not complete",
            later.pipeline_run_id,
            later.status.as_str()
        ));
    }
    let steps: BTreeSet<&str> = pipeline.steps.iter().map(|s| s.name.as_str()).collect();
    let mut carried: BTreeSet<String> = run.started.carried.iter().cloned().collect();
    for step in store.steps_of(id)? {
        if step.counts()
            && let Some(name) = step.step
        {
            carried.insert(name);
        }
    }
    carried.retain(|s| steps.contains(s.as_str()));
    if carried.len() == steps.len() {
        return usage(format!(
            "every step of the pipeline run {id} completed; nothing is left to run"
        ));
    }
    let started = &run.started;
    let now = started.now.as_deref().and_then(|t| t.parse().ok());
    Ok(Shared {
        now: now.unwrap_or(timearg::now().map_err(Error::Usage)?),
        since: started.since_input.clone(),
        initial_since: started.initial_since.clone(),
        account: started.account.clone(),
        until: started.window.until.clone(),
        carried,
        resumes: Some(id.to_owned()),
    })
}
