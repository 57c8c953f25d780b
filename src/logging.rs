//! Logs (lorch's and the jobs') go to stderr: as text for people, or with `--log-format json`
//! (`LORCH_LOG_FORMAT=json`) one JSON object a line for machines, a job's lines carrying its
//! run id, package, job and account (README, "Configuration").

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::output::stderr;

/// The variable a worker process learns the format from.
pub const FORMAT_VAR: &str = "LORCH_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::Text, Format::Json];

    pub fn parse(text: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Whether lines are JSON: then a job's span carries every field of its run.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// `LORCH_LOG` sets the level (error, warn, info, debug, trace, off; default info). Text is
/// coloured only on a terminal, and not with `NO_COLOR` set (no-color.org) or `TERM=dumb`.
pub fn init() {
    use tracing_subscriber::filter::LevelFilter;
    let given = std::env::var("LORCH_LOG").ok().filter(|v| !v.is_empty());
    let level = given.as_deref().map(str::parse::<LevelFilter>);
    let max = match level {
        Some(Ok(level)) => level,
        _ => LevelFilter::INFO,
    };
    let format = std::env::var(FORMAT_VAR).ok().filter(|v| !v.is_empty());
    let json = format.as_deref() == Some("json");
    JSON.store(json, Ordering::Relaxed);
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // The NATS client says "connected" for every connection, and logs what lorch reports
    // itself (a refused password): shown only when debugging.
    let nats = match max >= LevelFilter::DEBUG {
        true => max,
        false => LevelFilter::OFF,
    };
    let quiet = tracing_subscriber::filter::Targets::new()
        .with_default(max)
        .with_target("async_nats", nats);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_max_level(max);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .with(quiet)
            .init();
    } else {
        let colour = crate::output::colours(std::io::stderr().is_terminal());
        builder.with_ansi(colour).finish().with(quiet).init();
    }
    // Said once: the processes lorch starts (a job's worker, tick's runs) get the value used.
    if let (Some(given), Some(Err(_))) = (given, level) {
        stderr!(
            "warning: invalid LORCH_LOG '{given}': expected error, warn, info, debug, trace or off; logging at info"
        );
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("LORCH_LOG", "info") };
    }
    if let Some(format) = format.filter(|f| f != "json" && f != "text") {
        stderr!("warning: invalid {FORMAT_VAR} '{format}': expected text or json; logging as text");
        // SAFETY: as above.
        unsafe { std::env::set_var(FORMAT_VAR, "text") };
    }
}

/// The span a job's log lines are written in: `job{id=PACKAGE/JOB}` as text; in JSON, its run
/// id, package, job and account.
pub fn job_span(request: &lorch_plugin_api::abi::RunRequest) -> tracing::Span {
    match json() {
        true => tracing::info_span!(
            "job",
            run_id = %request.run_id,
            package = %request.package,
            job = %request.job,
            account = request.account.as_deref().unwrap_or(""),
        ),
        false => tracing::info_span!("job", id = %format!("{}/{}", request.package, request.job)),
    }
}
