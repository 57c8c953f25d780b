//! `[[schedule]]` (docs/schedules.md): an entry read and checked, its cron expression and time
//! zone parsed once.

use crate::timearg;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::fields::*;
use super::*;

impl Fields<'_> {
    /// A `[[schedule]]` entry; `None` when a key it needs is missing or wrong.
    /// `crons` holds the expressions parsed so far: entries often share one, and a parse is
    /// most of what reading a schedule costs.
    pub(super) fn schedule(
        &mut self,
        crons: &mut HashMap<String, Result<Arc<croner::Cron>, String>>,
    ) -> Option<Schedule> {
        let target = self.target();
        let cron = self.required("cron", "\"0 6 * * *\"");
        let parsed = cron.as_ref().and_then(|cron| {
            match crons
                .entry(cron.get_ref().clone())
                .or_insert_with(|| parse_cron(cron.get_ref()).map(Arc::new))
                .clone()
            {
                Ok(parsed) => Some(parsed),
                Err(why) => {
                    self.problem(cron.span(), format!("cron: {why}"));
                    None
                }
            }
        });
        let timezone = self.checked("timezone", |zone| parse_zone(zone).map(drop));
        let zone = timezone
            .as_ref()
            .and_then(|z| parse_zone(z.get_ref()).ok())
            .unwrap_or(chrono_tz::Tz::UTC);
        let catch_up = match self.string("catch_up") {
            None => CatchUp::default(),
            Some(text) => match text.get_ref().as_str() {
                "skip" => CatchUp::Skip,
                "latest" => CatchUp::Latest,
                "all" => CatchUp::All,
                other => {
                    self.problem(
                        text.span(),
                        format!("catch_up: '{other}' is not one of skip, latest, all"),
                    );
                    CatchUp::default()
                }
            },
        };
        let duration = |text: &str| timearg::duration(text).map(drop);
        let a_minute_or_more = |text: &str| match timearg::duration(text)? {
            d if d < Duration::from_secs(60) => Err(format!(
                "'{text}' is shorter than a minute: tick comes once a minute, so a fire time would be dropped before any tick saw it; give 1m or more"
            )),
            _ => Ok(()),
        };
        let max_catch_up = self.checked("max_catch_up", a_minute_or_more);
        let jitter = self.checked("jitter", duration);
        let options = self.run_options();
        // A relative start (`-1d`) would be read at the moment tick runs, not at the fire time:
        // a caught-up run would get a window that ends before it starts.
        if let Some(since) = &options.since
            && since.get_ref() != crate::lifecycle::LAST_SUCCESS
            && timearg::resolve(since.get_ref(), chrono::DateTime::UNIX_EPOCH)
                != timearg::resolve(since.get_ref(), chrono::Utc::now())
        {
            self.problem(
                since.span(),
                "since: a schedule's runs start at last-success (the default) or at a fixed time such as 2026-01-01; a relative time would be read when tick runs, not at the fire time".to_owned(),
            );
        }
        if let Some(Target::Pipeline(_)) = &target {
            let per_step = [
                ("timeout", options.timeout.is_some()),
                ("kill_after", options.kill_after.is_some()),
                ("retries", options.retries.is_some()),
                ("retry_backoff", options.retry_backoff.is_some()),
                ("params", !options.params.is_empty()),
            ];
            for (key, _) in per_step.iter().filter(|(_, given)| *given) {
                let span = self.span.clone();
                self.problem(
                    span,
                    format!("{key}: a pipeline's steps take it from their own entries in [pipeline.NAME]; a schedule of a pipeline takes account, since and initial_since"),
                );
            }
        }
        Some(Schedule {
            target: target?,
            cron: cron?,
            parsed: (parsed?, zone),
            options,
            timezone,
            catch_up,
            max_catch_up,
            jitter,
        })
    }

    /// `job = "PACKAGE/JOB"` or `pipeline = "NAME"`: one of them.
    pub(super) fn target(&mut self) -> Option<Target> {
        let job = self.string("job");
        let pipeline = self.string("pipeline");
        match (job, pipeline) {
            (Some(job), None) => match check_job_id(job.get_ref()) {
                Ok(()) => Some(Target::Job(job)),
                Err(why) => {
                    self.problem(job.span(), format!("job: {why}"));
                    None
                }
            },
            (None, Some(name)) => Some(Target::Pipeline(name)),
            (Some(_), Some(name)) => {
                self.problem(
                    name.span(),
                    "pipeline: an entry runs a job or a pipeline; give job or pipeline, not both"
                        .to_owned(),
                );
                None
            }
            (None, None) => {
                let span = self.span.clone();
                self.problem(
                    span,
                    "job is missing, e.g. job = \"ingester/extract_gmail\" (or pipeline = \"daily\")"
                        .to_owned(),
                );
                None
            }
        }
    }
}

/// A cron expression: 5 fields, or a `@daily`-style name.
///
/// croner is handed the 5 fields between a seconds field of `0` and a year field of
/// [`CRON_YEARS`]: left to itself it fills the year with `*`, one bit per year 1-5000, and that
/// was 55 µs a parse, a third of a `tick` with 60 distinct expressions (docs/performance.md).
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds, Year};
    let accepted = "accepted: 5 fields (minute hour day-of-month month day-of-week, e.g. \"30 6 * * 1-5\") or @hourly, @daily, @weekly, @monthly, @yearly";
    let fields = cron_fields(text);
    let count = fields.split_whitespace().count();
    if count != 5 {
        return Err(format!(
            "'{text}' is not a cron expression ({count} fields); {accepted}"
        ));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        .build();
    let cron = parser
        .parse(&format!("0 {fields} {CRON_YEARS}"))
        .map_err(|e| format!("'{text}' is not a cron expression ({e}); {accepted}"))?;
    // `0 0 30 2 *` parses, and never fires.
    let now = chrono::Utc::now();
    match cron.find_next_occurrence(&now, false) {
        Ok(next) if next - now < chrono::Duration::days(5 * 366) => Ok(cron),
        _ => Err(format!(
            "'{text}' never fires (no date matches it in the next 5 years); {accepted}"
        )),
    }
}

/// The 5 fields of a cron expression, `@daily`-style names written out.
pub fn cron_fields(text: &str) -> &str {
    let trimmed = text.trim();
    match trimmed.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => trimmed,
    }
}

/// The years a schedule fires in.
const CRON_YEARS: &str = "1970-2199";

/// An IANA time zone name.
pub fn parse_zone(text: &str) -> Result<chrono_tz::Tz, String> {
    text.parse::<chrono_tz::Tz>().map_err(|_| {
        let hint = crate::suggest::hint(text, chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()));
        format!(
            "'{text}' is not an IANA time zone{hint}; accepted: names such as UTC, Europe/Berlin, America/New_York"
        )
    })
}
