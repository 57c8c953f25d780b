//! The file as TOML gives it, and `Fields`, which takes an entry's keys one by one and names
//! every mistake at its place.

use crate::timearg;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

use super::*;

/// The file as TOML gives it: each entry's keys with their places, typed by [`Fields`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) jobs: BTreeMap<Spanned<String>, Spanned<RawTable>>,
    #[serde(default)]
    pub(super) schedule: Vec<Spanned<RawTable>>,
    #[serde(default)]
    pub(super) pipeline: BTreeMap<Spanned<String>, Spanned<RawPipeline>>,
    pub(super) metrics: Option<Spanned<RawTable>>,
    pub(super) notify: Option<Spanned<RawTable>>,
}

/// A `[pipeline.NAME]` table: its steps, each typed by [`Fields`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPipeline {
    #[serde(default)]
    pub(super) steps: Vec<Spanned<RawTable>>,
}

pub(super) type RawTable = BTreeMap<String, Spanned<toml::Value>>;

/// The run options a `[jobs."PACKAGE/JOB"]` table takes; a schedule takes them too.
pub(super) const RUN_KEYS: &[&str] = &[
    "account",
    "since",
    "initial_since",
    "timeout",
    "kill_after",
    "retries",
    "retry_backoff",
    "params",
];

/// The keys of a schedule besides the run options.
pub(super) const SCHEDULE_KEYS: &[&str] = &[
    "job",
    "pipeline",
    "cron",
    "timezone",
    "catch_up",
    "max_catch_up",
    "jitter",
];

/// The keys of `[notify]`.
pub(super) const NOTIFY_KEYS: &[&str] = &["on_failure", "on_recovery", "notify_after", "timeout"];

/// The keys of a pipeline step besides the run options.
pub(super) const STEP_KEYS: &[&str] = &["job", "name", "needs", "continue_on_failure"];

/// One entry's keys, taken one by one with their types checked; each mistake is a problem at
/// its place, and the keys nobody took are unknown.
pub(super) struct Fields<'a> {
    pub(super) config: &'a Config,
    pub(super) key: &'a str,
    /// Where the entry starts, for what has no place of its own (a missing key).
    pub(super) span: Range<usize>,
    pub(super) table: RawTable,
    pub(super) problems: Vec<Problem>,
}

impl<'a> Fields<'a> {
    pub(super) fn new(config: &'a Config, key: &'a str, table: Spanned<RawTable>) -> Fields<'a> {
        Fields {
            config,
            key,
            span: table.span(),
            table: table.into_inner(),
            problems: Vec::new(),
        }
    }

    pub(super) fn problem(&mut self, span: Range<usize>, message: String) {
        let problem = self
            .config
            .problem(span, format!("{}: {message}", self.key));
        self.problems.push(problem);
    }

    /// A text value.
    pub(super) fn string(&mut self, name: &str) -> Option<Spanned<String>> {
        let value = self.table.remove(name)?;
        let span = value.span();
        match value.into_inner() {
            toml::Value::String(text) => Some(Spanned::new(span, text)),
            other => {
                let found = other.type_str();
                self.problem(span, format!("{name}: expected a string, found {found}"));
                None
            }
        }
    }

    /// A text value that must be there.
    pub(super) fn required(&mut self, name: &str, example: &str) -> Option<Spanned<String>> {
        let found = self.table.contains_key(name);
        let value = self.string(name);
        if !found {
            let span = self.span.clone();
            self.problem(span, format!("{name} is missing, e.g. {name} = {example}"));
        }
        value
    }

    /// A text value checked by `check` (a duration, a time).
    pub(super) fn checked(
        &mut self,
        name: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<Spanned<String>> {
        let value = self.string(name)?;
        match check(value.get_ref()) {
            Ok(()) => Some(value),
            Err(why) => {
                self.problem(value.span(), format!("{name}: {why}"));
                None
            }
        }
    }

    /// A whole number from `min`.
    pub(super) fn whole(&mut self, name: &str, min: u32) -> Option<u32> {
        let value = self.table.remove(name)?;
        match value.get_ref().as_integer().map(u32::try_from) {
            Some(Ok(n)) if n >= min => Some(n),
            _ => {
                let message = format!(
                    "{name}: expected a whole number from {min}, found {}",
                    value.get_ref()
                );
                self.problem(value.span(), message);
                None
            }
        }
    }

    /// The run options (`RUN_KEYS`).
    pub(super) fn run_options(&mut self) -> RunDefaults {
        let time = |text: &str| {
            if text == crate::lifecycle::LAST_SUCCESS {
                return Ok(());
            }
            let now = chrono::Utc::now();
            match timearg::resolve(text, now) {
                Ok(at) if at > now => Err(format!(
                    "'{text}' is in the future: a window starts at or before the moment it runs"
                )),
                Ok(_) => Ok(()),
                Err(why) => Err(format!("{why}; {}, or last-success", timearg::ACCEPTED)),
            }
        };
        let duration = |text: &str| timearg::duration(text).map(drop);
        let positive = |text: &str| timearg::positive_duration(text).map(drop);
        let retries = self.whole("retries", 0);
        let params = match self.table.remove("params") {
            None => BTreeMap::new(),
            Some(value) => {
                let span = value.span();
                match value.into_inner() {
                    toml::Value::Table(table) => table.into_iter().collect(),
                    other => {
                        let found = other.type_str();
                        self.problem(
                            span,
                            format!(
                                "params: expected a table such as {{ limit = 100 }}, found {found}"
                            ),
                        );
                        BTreeMap::new()
                    }
                }
            }
        };
        RunDefaults {
            account: self
                .checked("account", crate::params::check_account)
                .map(Spanned::into_inner),
            since: self.checked("since", time),
            initial_since: self.checked("initial_since", time),
            timeout: self.checked("timeout", positive),
            kill_after: self.checked("kill_after", duration),
            retries,
            retry_backoff: self.checked("retry_backoff", duration),
            params,
        }
    }

    /// The problems, with one for each key nobody took (`extra` are the keys besides the run
    /// options that the entry accepts).
    pub(super) fn finish(mut self, extra: &[&str]) -> Vec<Problem> {
        let unknown: Vec<(String, Range<usize>)> = std::mem::take(&mut self.table)
            .into_iter()
            .map(|(name, value)| (name, value.span()))
            .collect();
        for (name, span) in unknown {
            let known: Vec<&str> = extra.iter().chain(RUN_KEYS).copied().collect();
            let hint = crate::suggest::hint(&name, known.iter().copied());
            self.problem(
                span,
                format!("unknown key `{name}`{hint}; accepted: {}", known.join(", ")),
            );
        }
        self.problems
    }
}
