//! A run request for the queue (`lorch submit`, `tick --submit`), checked and with its window
//! resolved where it is submitted.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::fleet::{self, Request};
use crate::output::stderr;

use crate::plan::RunOptions;
use crate::plugins::Catalog;

/// `lorch submit PACKAGE/JOB [run options] [--request-id ID] [--nats URL] [--json]`.
pub struct Submit<'a> {
    pub job: &'a str,
    pub options: &'a RunOptions,
    pub request_id: Option<&'a str>,
    pub nats: Option<&'a str>,
    pub json: bool,
    pub quiet: bool,
}

/// The request, checked as `run-job` would check it when this machine knows the job, with its
/// window resolved now: the worker runs the window the submitter meant, whenever it runs.
pub fn request(catalog: &Catalog, submit: &Submit) -> Result<Request> {
    let Some((package, job)) = submit
        .job
        .split_once('/')
        .filter(|(p, j)| fleet::valid_name(p) && fleet::valid_name(j))
    else {
        return Err(Error::Usage(format!(
            "invalid job '{}': expected PACKAGE/JOB, each of letters, digits, _ and -",
            submit.job
        )));
    };
    let options = submit.options;
    let now = crate::timearg::now().map_err(Error::Usage)?;
    match catalog.find(package, job) {
        Ok(found) => {
            let home = crate::paths::home()?;
            crate::plan::plan(found, options, home, now)?;
        }
        Err(_) => stderr!(
            "warning: {package}/{job} is not among this machine's jobs; the worker that takes the request checks it"
        ),
    }
    let last_success = |t: &str| t.trim() == crate::lifecycle::LAST_SUCCESS;
    let since = options.since.as_deref().filter(|t| !last_success(t));
    let (since_at, until_at) =
        crate::timearg::run_window(since, options.until.as_deref(), now).map_err(Error::Usage)?;
    let instant = |t: lorch_plugin_api::TimeArg| crate::timearg::micros(&t.utc);
    let until = until_at.map(instant).or_else(|| {
        options
            .since
            .is_some()
            .then(|| crate::timearg::micros(&now))
    });
    let since = match options.since.as_deref() {
        Some(t) if last_success(t) => Some(crate::lifecycle::LAST_SUCCESS.to_owned()),
        _ => since_at.map(instant),
    };
    let duration = |d: Option<Duration>| d.map(|d| humantime::format_duration(d).to_string());
    Ok(Request {
        request_id: submit
            .request_id
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned),
        package: package.to_owned(),
        job: job.to_owned(),
        account: options.account.clone(),
        since,
        until,
        initial_since: match options.initial_since.as_deref() {
            Some(t) => Some(crate::timearg::micros(
                &crate::timearg::resolve(t, now).map_err(Error::Usage)?,
            )),
            None => None,
        },
        params: options.params.clone(),
        timeout: duration(options.timeout),
        kill_after: duration(options.kill_after),
        retries: options.retries,
        retry_backoff: duration(options.retry_backoff),
        trace_id: options.trace_id.clone(),
        submitted_at: crate::timearg::micros(&now),
        submitted_from: gethostname::gethostname().to_string_lossy().into_owned(),
    })
}
