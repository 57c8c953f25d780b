//! `lorch.toml` (docs/configuration.md): default run options per job, and schedules. Read with
//! `toml` and serde, every value kept with its place in the file, so each mistake is reported
//! as `FILE:LINE:COLUMN: KEY: what is wrong; what is accepted`.
//!
//! Reading it touches no plugin and no network: whether a job exists is checked by the commands
//! that have the catalog (`config check`), through [`Config::jobs_named`].

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use toml::Spanned;

use crate::timearg;

mod fields;
mod notify;
mod pipeline;
mod schedule;
#[cfg(test)]
mod tests;

use fields::{Fields, RawFile, RawPipeline, RawTable, SCHEDULE_KEYS};
pub use schedule::cron_fields;
#[cfg(test)]
use schedule::parse_cron;

/// The variable naming the file when `--config` does not.
pub const CONFIG_VAR: &str = "LORCH_CONFIG";

/// One mistake in the file, at its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The job whose `[jobs."PACKAGE/JOB"]` entry the mistake is in, if it is in one.
    #[serde(skip)]
    pub in_defaults_of: Option<String>,
    /// The pipeline whose `[pipeline.NAME]` entry the mistake is in, if it is in one.
    #[serde(skip)]
    pub in_pipeline: Option<String>,
    /// Whether the mistake is in `[notify]`, which every run reads.
    #[serde(skip)]
    pub in_notify: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file.display(), self.message),
            _ => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            ),
        }
    }
}

/// Options a run takes from the file unless its command line gives them; the names and forms
/// of `run-job`'s flags.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunDefaults {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_since: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_after: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<Spanned<String>>,
    /// `--param KEY=VALUE`, as TOML values (`limit = 100`, `label = "x"`, `dry = true`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, toml::Value>,
}

/// What a schedule does about the fire times it missed (the machine was asleep or off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Nothing: wait for the next fire time.
    Skip,
    /// One run, whose window covers everything missed.
    #[default]
    Latest,
    /// One run per missed fire time, oldest first.
    All,
}

/// What a `[[schedule]]` entry runs.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `job = "PACKAGE/JOB"`.
    Job(Spanned<String>),
    /// `pipeline = "NAME"`: a `[pipeline.NAME]` of the file.
    Pipeline(Spanned<String>),
}

impl Target {
    /// The job's `PACKAGE/JOB`, or the pipeline's name.
    pub fn name(&self) -> &str {
        match self {
            Target::Job(id) | Target::Pipeline(id) => id.get_ref(),
        }
    }

    /// `ingester/extract_gmail`, or `pipeline daily`.
    pub fn describe(&self) -> String {
        match self {
            Target::Job(id) => id.get_ref().clone(),
            Target::Pipeline(name) => format!("pipeline {}", name.get_ref()),
        }
    }

    /// The job, when it is one.
    pub fn job(&self) -> Option<&Spanned<String>> {
        match self {
            Target::Job(id) => Some(id),
            Target::Pipeline(_) => None,
        }
    }
}

/// A `[[schedule]]` entry.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    /// `job = "PACKAGE/JOB"` or `pipeline = "NAME"`.
    #[serde(flatten)]
    pub target: Target,
    /// 5 fields, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub cron: Spanned<String>,
    /// An IANA time zone name; UTC when not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Spanned<String>>,
    pub catch_up: CatchUp,
    /// How far back missed fire times are looked for (a duration); 7 days when not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_catch_up: Option<Spanned<String>>,
    /// A random delay up to this long before each run (a duration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Spanned<String>>,
    /// The run options, as a job's `[jobs]` entry has them; they win over that entry.
    #[serde(flatten)]
    pub options: RunDefaults,
    /// `cron`, parsed when the file was read (shared by the entries that have the same
    /// expression: croner's is 5 KB), and `timezone` (UTC when not given).
    #[serde(skip)]
    pub parsed: (Arc<croner::Cron>, chrono_tz::Tz),
}

/// A `[pipeline.NAME]` entry: steps that run in the order their `needs` give (docs/pipelines.md).
#[derive(Debug, Clone, Serialize)]
pub struct Pipeline {
    /// Where it is defined: `FILE:LINE`.
    #[serde(skip)]
    pub defined_at: String,
    /// In the file's order, which is also an order where every step comes after its `needs`
    /// once [`Pipeline::order`] sorted them.
    pub steps: Vec<Step>,
}

/// One step of a pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Unique in its pipeline; the job's name (`JOB` of `PACKAGE/JOB`) when not given.
    pub name: String,
    /// `PACKAGE/JOB`.
    pub job: Spanned<String>,
    /// The steps that must complete before this one starts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// When it fails, the steps that need it run anyway, and the pipeline does not fail for it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_failure: bool,
    /// Its run options; its job's `[jobs]` entry applies for what they do not say.
    #[serde(flatten)]
    pub options: RunDefaults,
    /// Where its name is (its job's when it has none), and its `needs`, in the file.
    #[serde(skip)]
    pub name_at: Range<usize>,
    #[serde(skip)]
    pub needs_at: Range<usize>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// The directory of `lorch.prom` (a node_exporter textfile-collector directory).
    pub dir: PathBuf,
}

/// `[notify]` (docs/notifications.md).
#[derive(Debug, Clone, Serialize)]
pub struct Notify {
    pub on_failure: Option<Hook>,
    pub on_recovery: Option<Hook>,
    /// Failed runs in a row of a job and account before `on_failure` is called.
    pub notify_after: u32,
    /// How long a hook may take.
    #[serde(serialize_with = "humantime_text")]
    pub timeout: Duration,
}

/// The default `[notify] timeout`.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// A hook: a shell command, or the URL of a webhook; written back as the string it was read
/// from (`config show`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Hook {
    Command(String),
    Url(String),
}

impl Hook {
    /// A hook's value: a URL when it starts with `http://` or `https://`, else a command.
    fn parse(text: &str) -> Result<Hook, String> {
        if text.trim().is_empty() {
            return Err(
                "expected a command or an http:// or https:// URL, found an empty string".into(),
            );
        }
        if !(text.starts_with("http://") || text.starts_with("https://")) {
            return Ok(Hook::Command(text.to_owned()));
        }
        let after_scheme = text.split_once("://").map_or("", |(_, rest)| rest);
        match url::Url::parse(text) {
            Ok(url) if url.host().is_some() && !after_scheme.starts_with('/') => {
                Ok(Hook::Url(text.to_owned()))
            }
            Ok(_) => Err(format!("'{text}' is not a URL with a host")),
            Err(e) => Err(format!("'{text}' is not a URL ({e})")),
        }
    }

    /// `command 'notify-send …'`, `webhook https://…` (for messages).
    pub fn describe(&self) -> String {
        match self {
            Hook::Command(command) => format!("command '{command}'"),
            Hook::Url(url) => format!("webhook {url}"),
        }
    }
}

fn humantime_text<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// The file, as read: the entries without mistakes (an entry with one is left out, and named
/// in [`Config::problems`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Config {
    /// Default run options by `PACKAGE/JOB`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<Spanned<String>, RunDefaults>,
    #[serde(rename = "schedule", skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Schedule>,
    /// Pipelines by name (docs/pipelines.md).
    #[serde(rename = "pipeline", skip_serializing_if = "BTreeMap::is_empty")]
    pub pipelines: BTreeMap<String, Pipeline>,
    /// `[metrics] dir`: where every run writes the Prometheus file (docs/metrics.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// `[notify]`: hooks called when a job fails, and recovers (docs/notifications.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// The mistakes, each at its place.
    #[serde(skip)]
    pub problems: Vec<Problem>,
    /// Where it was read from; `None`: there is no file.
    #[serde(skip)]
    pub path: Option<PathBuf>,
    #[serde(skip)]
    text: String,
}

/// Where the file is: `--config`, else `LORCH_CONFIG`, else `$XDG_CONFIG_HOME/lorch/lorch.toml`
/// (`~/.config/lorch/lorch.toml`); whether it must exist (it must when named).
pub fn locate(flag: Option<&Path>) -> Option<(PathBuf, bool)> {
    if let Some(path) = flag {
        return Some((path.to_owned(), true));
    }
    if let Some(path) = std::env::var_os(CONFIG_VAR).filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(path), true));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some((base.join("lorch").join("lorch.toml"), false))
}

impl Config {
    /// The configuration at `flag`'s place (see [`locate`]), empty when there is no file and
    /// none was named: its good entries, and the mistakes of the others in
    /// [`Config::problems`]. Only a file that cannot be read or parsed is an error.
    pub fn read_file(flag: Option<&Path>) -> Result<Config, Vec<Problem>> {
        let Some((path, named)) = locate(flag) else {
            return Ok(Config::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::read(&path, text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => Ok(Config::default()),
            Err(e) => Err(vec![Problem {
                file: path,
                line: 0,
                column: 0,
                message: format!("cannot read the configuration file: {e}"),
                in_defaults_of: None,
                in_pipeline: None,
                in_notify: false,
            }]),
        }
    }

    /// Parses `text`, read from `path`: every mistake, or the configuration (for tests).
    #[cfg(test)]
    pub fn parse(path: &Path, text: String) -> Result<Config, Vec<Problem>> {
        let config = Config::read(path, text)?;
        match config.problems.is_empty() {
            true => Ok(config),
            false => Err(config.problems),
        }
    }

    /// Parses `text`, read from `path`, and checks every value lorch can check without the
    /// plugins. A file that is not TOML, or has a key lorch does not know at its top, is one
    /// problem (an error); otherwise each entry is checked on its own, the good ones are kept
    /// and the mistakes of the others are in [`Config::problems`].
    pub fn read(path: &Path, text: String) -> Result<Config, Vec<Problem>> {
        let raw: RawFile = toml::from_str(&text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let (line, column) = line_column(&text, at);
            // toml's own message, without its position and source excerpt: ours is in front.
            vec![Problem {
                file: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
                in_defaults_of: None,
                in_pipeline: None,
                in_notify: false,
            }]
        })?;
        let mut config = Config {
            path: Some(path.to_owned()),
            text,
            ..Config::default()
        };
        config.read_jobs(raw.jobs);
        let schedules = config.read_schedules(raw.schedule);
        config.read_pipelines(raw.pipeline);
        config.add_schedules(schedules);
        if let Some(table) = raw.metrics {
            config.read_metrics(table);
        }
        if let Some(table) = raw.notify {
            match config.notify(table) {
                Ok(notify) => config.notify = Some(notify),
                Err(problems) => config.problems.extend(problems),
            }
        }
        // In file order, whichever check found them.
        config.problems.sort_by_key(|p| (p.line, p.column));
        Ok(config)
    }

    /// A problem at `span` of the file.
    pub fn problem(&self, span: Range<usize>, message: String) -> Problem {
        let (line, column) = line_column(&self.text, span.start);
        Problem {
            file: self.path.clone().unwrap_or_default(),
            line,
            column,
            message,
            in_defaults_of: None,
            in_pipeline: None,
            in_notify: false,
        }
    }

    /// The default run options of `PACKAGE/JOB`.
    pub fn defaults_of(&self, id: &str) -> Option<&RunDefaults> {
        self.jobs
            .iter()
            .find(|(name, _)| name.get_ref() == id)
            .map(|(_, defaults)| defaults)
    }

    /// Every job the file names, with where and as what (`jobs` key or `schedule` entry), and
    /// the parameters it gives it (as `--param` flags).
    pub fn jobs_named(&self) -> Vec<(&Spanned<String>, String, Vec<String>)> {
        let mut named: Vec<_> = self
            .jobs
            .iter()
            .map(|(name, defaults)| {
                let key = format!("[jobs.\"{}\"]", name.get_ref());
                (name, key, defaults.param_flags())
            })
            .collect();
        for (i, schedule) in self.schedules.iter().enumerate() {
            if let Some(job) = schedule.target.job() {
                let key = format!("schedule {}: job", i + 1);
                named.push((job, key, schedule.options.param_flags()));
            }
        }
        for (name, pipeline) in &self.pipelines {
            for step in &pipeline.steps {
                let key = format!("pipeline {name}: step '{}': job", step.name);
                named.push((&step.job, key, step.options.param_flags()));
            }
        }
        named
    }
}

impl Config {
    /// The `[jobs."PACKAGE/JOB"]` entries.
    fn read_jobs(&mut self, jobs: BTreeMap<Spanned<String>, Spanned<RawTable>>) {
        for (name, table) in jobs {
            let key = format!("[jobs.\"{}\"]", name.get_ref());
            let mut fields = Fields::new(self, &key, table);
            if let Err(why) = check_job_id(name.get_ref()) {
                fields
                    .problems
                    .push(self.problem(name.span(), format!("{key}: {why}")));
            }
            let defaults = fields.run_options();
            let mut problems = fields.finish(&[]);
            for problem in &mut problems {
                problem.in_defaults_of = Some(name.get_ref().clone());
            }
            if problems.is_empty() {
                self.jobs.insert(name, defaults);
            }
            self.problems.extend(problems);
        }
    }

    /// The `[[schedule]]` entries without mistakes, numbered from 1, not yet taken in: what
    /// they name is checked once the pipelines are read.
    fn read_schedules(&mut self, tables: Vec<Spanned<RawTable>>) -> Vec<(usize, Schedule)> {
        let mut schedules = Vec::new();
        let mut crons = HashMap::new();
        for (i, table) in tables.into_iter().enumerate() {
            let key = format!("schedule {}", i + 1);
            let mut fields = Fields::new(self, &key, table);
            let schedule = fields.schedule(&mut crons);
            let problems = fields.finish(SCHEDULE_KEYS);
            match schedule {
                Some(schedule) if problems.is_empty() => schedules.push((i + 1, schedule)),
                _ => self.problems.extend(problems),
            }
        }
        schedules
    }

    /// The `[pipeline.NAME]` entries, each step with its job's `[jobs]` options.
    fn read_pipelines(&mut self, pipelines: BTreeMap<Spanned<String>, Spanned<RawPipeline>>) {
        for (name, raw) in pipelines {
            match self.pipeline(&name, raw) {
                Ok(mut pipeline) => {
                    for step in &mut pipeline.steps {
                        if let Some(defaults) = self.defaults_of(step.job.get_ref()) {
                            step.options.fill_from(defaults);
                        }
                    }
                    self.pipelines.insert(name.into_inner(), pipeline);
                }
                Err(mut problems) => {
                    for problem in &mut problems {
                        problem.in_pipeline = Some(name.get_ref().clone());
                    }
                    self.problems.extend(problems);
                }
            }
        }
    }

    /// Takes the schedules in: a pipeline's must name one of this file. What an entry does
    /// not say, its job's [jobs] entry does: tick then knows the account and start each run
    /// really has (its lock, its watermark).
    fn add_schedules(&mut self, schedules: Vec<(usize, Schedule)>) {
        for (i, mut schedule) in schedules {
            if let Target::Pipeline(name) = &schedule.target
                && !self.pipelines.contains_key(name.get_ref())
            {
                let broken = self
                    .problems
                    .iter()
                    .any(|p| p.in_pipeline.as_deref() == Some(name.get_ref()));
                let known: Vec<&str> = self.pipelines.keys().map(String::as_str).collect();
                let hint = crate::suggest::hint(name.get_ref(), known.iter().copied());
                let message = match broken {
                    true => format!(
                        "schedule {i}: pipeline: [pipeline.{}] has mistakes (see them above)",
                        name.get_ref()
                    ),
                    false => format!(
                        "schedule {i}: pipeline: no [pipeline.{}] in this file{hint}",
                        name.get_ref()
                    ),
                };
                self.problems.push(self.problem(name.span(), message));
                continue;
            }
            if let Some(defaults) = schedule
                .target
                .job()
                .and_then(|job| self.defaults_of(job.get_ref()))
            {
                schedule.options.fill_from(defaults);
            }
            self.schedules.push(schedule);
        }
    }

    /// `[metrics]`.
    fn read_metrics(&mut self, table: Spanned<RawTable>) {
        let mut fields = Fields::new(self, "[metrics]", table);
        let dir = fields.required("dir", "\"/var/lib/node_exporter/textfile\"");
        let mut problems = fields.problems;
        for (name, value) in fields.table {
            let message = format!("[metrics]: unknown key `{name}`; accepted: dir");
            problems.push(self.problem(value.span(), message));
        }
        if let Some(empty) = dir.as_ref().filter(|d| d.get_ref().trim().is_empty()) {
            let message = "[metrics]: dir is empty: name the directory to write lorch.prom into";
            problems.push(self.problem(empty.span(), message.to_owned()));
        }
        match dir {
            Some(dir) if problems.is_empty() => {
                self.metrics = Some(Metrics {
                    dir: PathBuf::from(dir.into_inner()),
                })
            }
            _ => self.problems.extend(problems),
        }
    }
}

impl RunDefaults {
    /// Takes from `defaults` every option this one does not set.
    fn fill_from(&mut self, defaults: &RunDefaults) {
        let d = defaults.clone();
        self.account = self.account.take().or(d.account);
        self.since = self.since.take().or(d.since);
        self.initial_since = self.initial_since.take().or(d.initial_since);
        self.timeout = self.timeout.take().or(d.timeout);
        self.kill_after = self.kill_after.take().or(d.kill_after);
        self.retries = self.retries.or(d.retries);
        self.retry_backoff = self.retry_backoff.take().or(d.retry_backoff);
        for (key, value) in d.params {
            self.params.entry(key).or_insert(value);
        }
    }

    /// The `--param KEY=VALUE` flags of a run: these defaults for the keys `given` does not
    /// have, then `given` (the command line's).
    pub fn params_with(&self, given: &[String]) -> Vec<String> {
        let key = |flag: &String| flag.split_once('=').map(|(key, _)| key.trim().to_owned());
        let keys: Vec<String> = given.iter().filter_map(key).collect();
        let mut params: Vec<String> = self
            .param_flags()
            .into_iter()
            .filter(|flag| key(flag).is_some_and(|k| !keys.contains(&k)))
            .collect();
        params.extend(given.iter().cloned());
        params
    }

    /// `params` as `--param KEY=VALUE` strings.
    pub fn param_flags(&self) -> Vec<String> {
        self.params
            .iter()
            .map(|(key, value)| match value {
                toml::Value::String(text) => format!("{key}={text}"),
                other => format!("{key}={other}"),
            })
            .collect()
    }
}

/// `PACKAGE/JOB` in the names lorch accepts.
fn check_job_id(id: &str) -> Result<(), String> {
    let ok = |part: &str, extra: &str| {
        !part.is_empty()
            && part.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || extra.contains(c)
            })
    };
    match id.split_once('/') {
        Some((package, job)) if ok(package, "-") && ok(job, "") => Ok(()),
        _ => Err(format!(
            "'{id}' is not a job: expected PACKAGE/JOB (lowercase letters, digits, _; - in the package)"
        )),
    }
}

/// The 1-based line and column of byte `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Durations of the file, already checked by [`Config::parse`].
pub fn duration(value: &Option<Spanned<String>>) -> Option<Duration> {
    value
        .as_ref()
        .and_then(|v| timearg::duration(v.get_ref()).ok())
}

/// The configuration file for a command that reads every entry (`tick`, `schedule list`,
/// `status`, `pipelines list`): a file lorch cannot read or parse is a usage error; an entry with
/// a mistake is left out, and said so on stderr.
pub fn read_reporting(flag: Option<&std::path::Path>) -> crate::error::Result<Config> {
    let config = Config::read_file(flag).map_err(problems)?;
    for problem in &config.problems {
        crate::output::stderr!("error: {problem} (this entry is left out)");
    }
    Ok(config)
}

/// The mistakes of a configuration file, one a line, as a usage error.
pub fn problems(problems: Vec<Problem>) -> crate::error::Error {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    crate::error::Error::Usage(lines.join("\nerror: "))
}
