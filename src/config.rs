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

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::timearg;

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
        for (name, table) in raw.jobs {
            let key = format!("[jobs.\"{}\"]", name.get_ref());
            let mut fields = Fields::new(&config, &key, table);
            if let Err(why) = check_job_id(name.get_ref()) {
                fields
                    .problems
                    .push(config.problem(name.span(), format!("{key}: {why}")));
            }
            let defaults = fields.run_options();
            let mut problems = fields.finish(&[]);
            for problem in &mut problems {
                problem.in_defaults_of = Some(name.get_ref().clone());
            }
            if problems.is_empty() {
                config.jobs.insert(name, defaults);
            }
            config.problems.extend(problems);
        }
        let mut schedules = Vec::new();
        let mut crons = HashMap::new();
        for (i, table) in raw.schedule.into_iter().enumerate() {
            let key = format!("schedule {}", i + 1);
            let mut fields = Fields::new(&config, &key, table);
            let schedule = fields.schedule(&mut crons);
            let problems = fields.finish(SCHEDULE_KEYS);
            match schedule {
                Some(schedule) if problems.is_empty() => schedules.push((i + 1, schedule)),
                _ => config.problems.extend(problems),
            }
        }
        for (name, raw) in raw.pipeline {
            match config.pipeline(&name, raw) {
                Ok(mut pipeline) => {
                    for step in &mut pipeline.steps {
                        if let Some(defaults) = config.defaults_of(step.job.get_ref()) {
                            step.options.fill_from(defaults);
                        }
                    }
                    config.pipelines.insert(name.into_inner(), pipeline);
                }
                Err(mut problems) => {
                    for problem in &mut problems {
                        problem.in_pipeline = Some(name.get_ref().clone());
                    }
                    config.problems.extend(problems);
                }
            }
        }
        // What an entry does not say, its job's [jobs] entry does: tick then knows the account
        // and start each run really has (its lock, its watermark).
        for (i, mut schedule) in schedules {
            if let Target::Pipeline(name) = &schedule.target
                && !config.pipelines.contains_key(name.get_ref())
            {
                let broken = config
                    .problems
                    .iter()
                    .any(|p| p.in_pipeline.as_deref() == Some(name.get_ref()));
                let known: Vec<&str> = config.pipelines.keys().map(String::as_str).collect();
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
                config.problems.push(config.problem(name.span(), message));
                continue;
            }
            if let Some(defaults) = schedule
                .target
                .job()
                .and_then(|job| config.defaults_of(job.get_ref()))
            {
                schedule.options.fill_from(defaults);
            }
            config.schedules.push(schedule);
        }
        if let Some(table) = raw.metrics {
            let mut fields = Fields::new(&config, "[metrics]", table);
            let dir = fields.required("dir", "\"/var/lib/node_exporter/textfile\"");
            let mut problems = fields.problems;
            for (name, value) in fields.table {
                let message = format!("[metrics]: unknown key `{name}`; accepted: dir");
                problems.push(config.problem(value.span(), message));
            }
            if let Some(empty) = dir.as_ref().filter(|d| d.get_ref().trim().is_empty()) {
                let message =
                    "[metrics]: dir is empty: name the directory to write lorch.prom into";
                problems.push(config.problem(empty.span(), message.to_owned()));
            }
            match dir {
                Some(dir) if problems.is_empty() => {
                    config.metrics = Some(Metrics {
                        dir: PathBuf::from(dir.into_inner()),
                    })
                }
                _ => config.problems.extend(problems),
            }
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

    /// The `[notify]` table.
    fn notify(&self, table: Spanned<RawTable>) -> Result<Notify, Vec<Problem>> {
        let mut fields = Fields::new(self, "[notify]", table);
        let mut hook = |name| {
            let value = fields.string(name)?;
            match Hook::parse(value.get_ref()) {
                Ok(hook) => Some(hook),
                Err(why) => {
                    fields.problem(value.span(), format!("{name}: {why}"));
                    None
                }
            }
        };
        let on_failure = hook("on_failure");
        let on_recovery = hook("on_recovery");
        let notify_after = fields.whole("notify_after", 1);
        let positive = |text: &str| timearg::positive_duration(text).map(drop);
        let timeout = fields.checked("timeout", positive);
        let mut problems = fields.problems;
        for (name, value) in fields.table {
            let hint = crate::suggest::hint(&name, NOTIFY_KEYS.iter().copied());
            let message = format!(
                "[notify]: unknown key `{name}`{hint}; accepted: {}",
                NOTIFY_KEYS.join(", ")
            );
            problems.push(self.problem(value.span(), message));
        }
        if !problems.is_empty() {
            for problem in &mut problems {
                problem.in_notify = true;
            }
            return Err(problems);
        }
        Ok(Notify {
            on_failure,
            on_recovery,
            notify_after: notify_after.unwrap_or(1),
            timeout: timeout
                .and_then(|t| timearg::positive_duration(t.get_ref()).ok())
                .unwrap_or(HOOK_TIMEOUT),
        })
    }

    /// A `[pipeline.NAME]` entry, its steps checked one by one and then together: unique names,
    /// `needs` that name steps, no cycle.
    fn pipeline(
        &self,
        name: &Spanned<String>,
        raw: Spanned<RawPipeline>,
    ) -> Result<Pipeline, Vec<Problem>> {
        let key = format!("pipeline {}", name.get_ref());
        let mut problems = Vec::new();
        if let Err(why) = check_pipeline_name(name.get_ref()) {
            problems.push(self.problem(name.span(), format!("{key}: {why}")));
        }
        let span = raw.span();
        let raw = raw.into_inner();
        if raw.steps.is_empty() {
            problems.push(self.problem(
                span.clone(),
                format!(
                    "{key}: no steps; add one with [[pipeline.{}.steps]] and job = \"PACKAGE/JOB\"",
                    name.get_ref()
                ),
            ));
        }
        // Every step's name, a step with a mistake included: what needs it is not named again.
        let declared: Vec<String> = raw.steps.iter().map(declared_name).collect();
        let mut steps = Vec::new();
        for (i, table) in raw.steps.into_iter().enumerate() {
            let step_key = format!("{key}: step {}", i + 1);
            let mut fields = Fields::new(self, &step_key, table);
            let step = fields.step();
            let step_problems = fields.finish(STEP_KEYS);
            if step_problems.is_empty()
                && let Some(step) = step
            {
                steps.push((i, step));
            }
            problems.extend(step_problems);
        }
        for (i, step) in &steps {
            if let Some(first) = declared[..*i].iter().position(|n| *n == step.name) {
                problems.push(self.problem(
                    step.name_at.clone(),
                    format!(
                        "{key}: step {}: the name '{}' is taken by step {}; give one of them another with name = \"...\"",
                        i + 1,
                        step.name,
                        first + 1
                    ),
                ));
            }
            for need in step.needs.iter().filter(|n| !declared.contains(n)) {
                let hint = crate::suggest::hint(need, declared.iter().map(String::as_str));
                problems.push(self.problem(
                    step.needs_at.clone(),
                    format!(
                        "{key}: step '{}': needs '{need}', which is not a step of this pipeline{hint}; its steps: {}",
                        step.name,
                        declared.join(", ")
                    ),
                ));
            }
        }
        let steps = steps.into_iter().map(|(_, step)| step).collect();
        let pipeline = Pipeline {
            defined_at: format!(
                "{}:{}",
                self.path.as_deref().unwrap_or(Path::new("")).display(),
                line_column(&self.text, name.span().start).0
            ),
            steps,
        };
        if problems.is_empty()
            && let Err(cycle) = pipeline.order()
        {
            problems.push(self.problem(
                name.span(),
                format!("{key}: its steps form a cycle: {}", cycle.join(" → ")),
            ));
        }
        match problems.is_empty() {
            true => Ok(pipeline),
            false => Err(problems),
        }
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

/// The file as TOML gives it: each entry's keys with their places, typed by [`Fields`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    jobs: BTreeMap<Spanned<String>, Spanned<RawTable>>,
    #[serde(default)]
    schedule: Vec<Spanned<RawTable>>,
    #[serde(default)]
    pipeline: BTreeMap<Spanned<String>, Spanned<RawPipeline>>,
    metrics: Option<Spanned<RawTable>>,
    notify: Option<Spanned<RawTable>>,
}

/// A `[pipeline.NAME]` table: its steps, each typed by [`Fields`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    #[serde(default)]
    steps: Vec<Spanned<RawTable>>,
}

type RawTable = BTreeMap<String, Spanned<toml::Value>>;

/// The run options a `[jobs."PACKAGE/JOB"]` table takes; a schedule takes them too.
const RUN_KEYS: &[&str] = &[
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
const SCHEDULE_KEYS: &[&str] = &[
    "job",
    "pipeline",
    "cron",
    "timezone",
    "catch_up",
    "max_catch_up",
    "jitter",
];

/// The keys of `[notify]`.
const NOTIFY_KEYS: &[&str] = &["on_failure", "on_recovery", "notify_after", "timeout"];

/// The keys of a pipeline step besides the run options.
const STEP_KEYS: &[&str] = &["job", "name", "needs", "continue_on_failure"];

/// One entry's keys, taken one by one with their types checked; each mistake is a problem at
/// its place, and the keys nobody took are unknown.
struct Fields<'a> {
    config: &'a Config,
    key: &'a str,
    /// Where the entry starts, for what has no place of its own (a missing key).
    span: Range<usize>,
    table: RawTable,
    problems: Vec<Problem>,
}

impl<'a> Fields<'a> {
    fn new(config: &'a Config, key: &'a str, table: Spanned<RawTable>) -> Fields<'a> {
        Fields {
            config,
            key,
            span: table.span(),
            table: table.into_inner(),
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, span: Range<usize>, message: String) {
        let problem = self
            .config
            .problem(span, format!("{}: {message}", self.key));
        self.problems.push(problem);
    }

    /// A text value.
    fn string(&mut self, name: &str) -> Option<Spanned<String>> {
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
    fn required(&mut self, name: &str, example: &str) -> Option<Spanned<String>> {
        let found = self.table.contains_key(name);
        let value = self.string(name);
        if !found {
            let span = self.span.clone();
            self.problem(span, format!("{name} is missing, e.g. {name} = {example}"));
        }
        value
    }

    /// A text value checked by `check` (a duration, a time).
    fn checked(
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
    fn whole(&mut self, name: &str, min: u32) -> Option<u32> {
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
    fn run_options(&mut self) -> RunDefaults {
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

    /// A `[[schedule]]` entry; `None` when a key it needs is missing or wrong.
    /// `crons` holds the expressions parsed so far: entries often share one, and a parse is
    /// most of what reading a schedule costs.
    fn schedule(
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
    fn target(&mut self) -> Option<Target> {
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

    /// A pipeline step; `None` when a key it needs is missing or wrong.
    fn step(&mut self) -> Option<Step> {
        let job = self.required("job", "\"ingester/extract_gmail\"");
        if let Some(job) = &job
            && let Err(why) = check_job_id(job.get_ref())
        {
            self.problem(job.span(), format!("job: {why}"));
        }
        let name = self.checked("name", check_pipeline_name);
        let needs_at = self
            .table
            .get("needs")
            .map_or(self.span.clone(), |v| v.span());
        let needs = self.table.remove("needs").and_then(|value| {
            let span = value.span();
            let names = match value.into_inner() {
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>(),
                _ => None,
            };
            if names.is_none() {
                self.problem(
                    span,
                    "needs: expected a list of step names such as [\"extract\"]".to_owned(),
                );
            }
            names
        });
        let continue_on_failure = self.table.remove("continue_on_failure").and_then(|value| {
            let span = value.span();
            let flag = value.get_ref().as_bool();
            if flag.is_none() {
                self.problem(
                    span,
                    format!(
                        "continue_on_failure: expected true or false, found {}",
                        value.get_ref()
                    ),
                );
            }
            flag
        });
        let options = self.run_options();
        let job = job?;
        let default_name = job
            .get_ref()
            .split_once('/')
            .map_or("", |(_, j)| j)
            .to_owned();
        let name_at = name.as_ref().map_or(job.span(), |n| n.span());
        Some(Step {
            name: name.map_or(default_name, Spanned::into_inner),
            name_at,
            needs_at,
            job,
            needs: needs.unwrap_or_default(),
            continue_on_failure: continue_on_failure.unwrap_or(false),
            options,
        })
    }

    /// The problems, with one for each key nobody took (`extra` are the keys besides the run
    /// options that the entry accepts).
    fn finish(mut self, extra: &[&str]) -> Vec<Problem> {
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

/// The name a step table declares: its `name`, else its job's name.
fn declared_name(table: &Spanned<RawTable>) -> String {
    let text = |key: &str| table.get_ref().get(key).and_then(|v| v.get_ref().as_str());
    match (text("name"), text("job")) {
        (Some(name), _) => name.to_owned(),
        (None, Some(job)) => job.split_once('/').map_or(job, |(_, j)| j).to_owned(),
        (None, None) => String::new(),
    }
}

/// A pipeline or step name: lowercase letters, digits, `_` and `-`.
fn check_pipeline_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    match ok {
        true => Ok(()),
        false => Err(format!(
            "'{name}' is not a name lorch accepts: lowercase letters, digits, _ and -"
        )),
    }
}

impl Pipeline {
    /// The indexes of the steps in an order where each comes after every step it needs (each
    /// step in file order, preceded by what it needs that is not listed yet), or the steps of a
    /// cycle, its first step again at the end.
    pub fn order(&self) -> Result<Vec<usize>, Vec<String>> {
        let index = |name: &str| self.steps.iter().position(|s| s.name == name);
        // 0: not visited, 1: on the current path, 2: done.
        let mut state = vec![0u8; self.steps.len()];
        let mut order = Vec::with_capacity(self.steps.len());
        let mut path = Vec::new();
        fn visit(
            pipeline: &Pipeline,
            i: usize,
            state: &mut [u8],
            path: &mut Vec<usize>,
            order: &mut Vec<usize>,
            index: &dyn Fn(&str) -> Option<usize>,
        ) -> Result<(), Vec<String>> {
            match state[i] {
                2 => return Ok(()),
                1 => {
                    let from = path.iter().position(|&p| p == i).unwrap_or(0);
                    let mut cycle: Vec<String> = path[from..]
                        .iter()
                        .map(|&p| pipeline.steps[p].name.clone())
                        .collect();
                    cycle.push(pipeline.steps[i].name.clone());
                    return Err(cycle);
                }
                _ => {}
            }
            state[i] = 1;
            path.push(i);
            for need in &pipeline.steps[i].needs {
                if let Some(n) = index(need) {
                    visit(pipeline, n, state, path, order, index)?;
                }
            }
            path.pop();
            state[i] = 2;
            order.push(i);
            Ok(())
        }
        for i in 0..self.steps.len() {
            visit(self, i, &mut state, &mut path, &mut order, &index)?;
        }
        Ok(order)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(Path::new("lorch.toml"), text.to_owned()) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn each_mistake_is_named_at_its_place() {
        let good = r#"
[jobs."ingester/extract_gmail"]
account = "acct1"
timeout = "30m"
params = { limit = 100, label = "x" }

[[schedule]]
job = "ingester/extract_gmail"
cron = "0 6 * * *"
timezone = "Europe/Berlin"
catch_up = "all"
"#;
        assert_eq!(problems(good), Vec::<String>::new());
        let cases = [
            (
                "[[schedule]]\njob = \"a/b\"\ncron = \"61 * * * *\"\n",
                "lorch.toml:3:8: schedule 1: cron: '61 * * * *' is not a cron expression",
            ),
            (
                "[[schedule]]\njob = \"a/b\"\ncron = \"@daily\"\ntimezone = \"Europe/Berln\"\n",
                "lorch.toml:4:12: schedule 1: timezone: 'Europe/Berln' is not an IANA time zone (did you mean `Europe/Berlin`?)",
            ),
            (
                "[jobs.\"a/b\"]\nbogus = 1\n",
                "lorch.toml:2:9: [jobs.\"a/b\"]: unknown key `bogus`; accepted: account, since,",
            ),
            (
                "[jobs.\"a/b\"]\nretries = \"two\"\n",
                "lorch.toml:2:11: [jobs.\"a/b\"]: retries: expected a whole number from 0, found \"two\"",
            ),
            (
                "[jobs.\"a/b\"]\ntimeout = \"0s\"\n",
                "lorch.toml:2:11: [jobs.\"a/b\"]: timeout: '0s' is zero",
            ),
            (
                "[jobs.\"A b\"]\n",
                "lorch.toml:1:7: [jobs.\"A b\"]: 'A b' is not a job",
            ),
            (
                "[[schedule]]\njob = \"a/b\"\ncron = \"@daily\"\ncatch_up = \"some\"\n",
                "lorch.toml:4:12: schedule 1: catch_up: 'some' is not one of skip, latest, all",
            ),
            (
                "[[schedule]]\njob = \"a/b\"\n",
                "lorch.toml:1:1: schedule 1: cron is missing, e.g. cron = \"0 6 * * *\"",
            ),
            (
                "[[schedule]]\njob = \"a/b\"\ncron = \"@daily\"\ncatchup = \"all\"\n",
                "lorch.toml:4:11: schedule 1: unknown key `catchup` (did you mean `catch_up`?)",
            ),
            (
                "[metrics]\ndirr = \"x\"\n",
                "lorch.toml:1:1: [metrics]: dir is missing",
            ),
            (
                "[metrics]\ndirr = \"x\"\n",
                "lorch.toml:2:8: [metrics]: unknown key `dirr`; accepted: dir",
            ),
            (
                "[notify]\nnotify_after = 0\n",
                "lorch.toml:2:16: [notify]: notify_after: expected a whole number from 1, found 0",
            ),
            (
                "[notify]\non_failure = \"https://\"\n",
                "lorch.toml:2:14: [notify]: on_failure: 'https://' is not a URL",
            ),
            (
                "[notify]\non_failure = \"https:///hook\"\n",
                "lorch.toml:2:14: [notify]: on_failure: 'https:///hook' is not a URL with a host",
            ),
            (
                "[notify]\non_recovery = 3\n",
                "lorch.toml:2:15: [notify]: on_recovery: expected a string, found integer",
            ),
            (
                "[notify]\ntimout = \"5s\"\n",
                "lorch.toml:2:10: [notify]: unknown key `timout` (did you mean `timeout`?); accepted: on_failure,",
            ),
            (
                "[shedule]\n",
                "lorch.toml:1:2: unknown field `shedule`, expected one of `jobs`, `schedule`, `pipeline`",
            ),
        ];
        for (text, expected) in cases {
            let found = problems(text);
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "{text:?}: {found:?}"
            );
        }
    }

    #[test]
    fn cron_takes_five_fields_or_a_name_and_fires_as_written() {
        let fire = |text: &str, after: &str| {
            let after: chrono::DateTime<chrono::Utc> = after.parse().unwrap();
            parse_cron(text)
                .unwrap()
                .find_next_occurrence(&after, false)
                .unwrap()
                .to_rfc3339()
        };
        let at = "2026-11-25T12:00:00+00:00";
        assert_eq!(fire("30 6 * * 1-5", at), "2026-11-26T06:30:00+00:00");
        assert_eq!(fire(" @Daily ", at), "2026-11-26T00:00:00+00:00");
        assert_eq!(fire("@weekly", at), "2026-11-29T00:00:00+00:00");
        assert_eq!(fire("@yearly", at), "2027-01-01T00:00:00+00:00");
        assert_eq!(fire("0 0 L * *", at), "2026-11-30T00:00:00+00:00");
        for wrong in ["0 6 * * * *", "6 * *", "", "@often", "0 6 * * 8"] {
            let message = parse_cron(wrong).map(|_| ()).unwrap_err();
            assert!(
                message.contains("accepted: 5 fields"),
                "{wrong:?}: {message}"
            );
        }
    }

    #[test]
    fn a_pipelines_steps_are_checked_and_ordered() {
        let text = "[[pipeline.p.steps]]\njob = \"a/load\"\nneeds = [\"extract\"]\n\n[[pipeline.p.steps]]\njob = \"a/extract\"\n";
        let config = Config::parse(Path::new("lorch.toml"), text.to_owned()).unwrap();
        let pipeline = &config.pipelines["p"];
        let names: Vec<&str> = pipeline.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["load", "extract"], "a step is named after its job");
        assert_eq!(
            pipeline.order(),
            Ok(vec![1, 0]),
            "what a step needs comes first"
        );
        assert_eq!(pipeline.defined_at, "lorch.toml:1");
        let cases = [
            ("[pipeline.p]\n", "lorch.toml:1:1: pipeline p: no steps"),
            (
                "[[pipeline.P.steps]]\njob = \"a/b\"\n",
                "lorch.toml:1:12: pipeline P: 'P' is not a name lorch accepts",
            ),
            (
                "[[pipeline.p.steps]]\njob = \"a/b\"\nneeds = \"x\"\n",
                "lorch.toml:3:9: pipeline p: step 1: needs: expected a list of step names",
            ),
            (
                "[[pipeline.p.steps]]\njob = \"a/b\"\ncontinue_on_failure = \"yes\"\n",
                "lorch.toml:3:23: pipeline p: step 1: continue_on_failure: expected true or false",
            ),
            (
                "[[pipeline.p.steps]]\njob = \"a/b\"\nneeds = [\"b\"]\n",
                "lorch.toml:1:12: pipeline p: its steps form a cycle: b → b",
            ),
            (
                "[[pipeline.p.steps]]\njobs = \"a/b\"\n",
                "lorch.toml:2:8: pipeline p: step 1: unknown key `jobs` (did you mean `job`?)",
            ),
        ];
        for (text, expected) in cases {
            let found = problems(text);
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "{text:?}: {found:?}"
            );
        }
    }
}
