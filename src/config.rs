//! `lorch.toml` (docs/configuration.md): default run options per job, and schedules. Read with
//! `toml` and serde, every value kept with its place in the file, so each mistake is reported
//! as `FILE:LINE:COLUMN: KEY: what is wrong; what is accepted`.
//!
//! Reading it touches no plugin and no network: whether a job exists is checked by the commands
//! that have the catalog (`config check`), through [`Config::jobs_named`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
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
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Options a run takes from the file unless its command line gives them; the names and forms
/// of `run-job`'s flags.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, toml::Value>,
}

/// What a schedule does about the fire times it missed (the machine was asleep or off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
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

/// A `[[schedule]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// `PACKAGE/JOB`.
    pub job: Spanned<String>,
    /// 5 fields, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub cron: Spanned<String>,
    /// An IANA time zone name; UTC when not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Spanned<String>>,
    #[serde(default)]
    pub catch_up: CatchUp,
    /// How far back missed fire times are looked for (a duration); 7 days when not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_catch_up: Option<Spanned<String>>,
    /// A random delay up to this long before each run (a duration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Spanned<String>>,
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
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, toml::Value>,
}

/// The file, as read.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default run options by `PACKAGE/JOB`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<Spanned<String>, RunDefaults>,
    #[serde(default, rename = "schedule", skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Schedule>,
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
    /// The configuration at `flag`'s place (see [`locate`]): empty when there is no file and
    /// none was named. Every mistake the file holds, each at its place; a file that does not
    /// parse has one.
    pub fn load(flag: Option<&Path>) -> Result<Config, Vec<Problem>> {
        let Some((path, named)) = locate(flag) else {
            return Ok(Config::default());
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => {
                return Ok(Config::default());
            }
            Err(e) => {
                return Err(vec![Problem {
                    file: path,
                    line: 0,
                    column: 0,
                    message: format!("cannot read the configuration file: {e}"),
                }]);
            }
        };
        Config::parse(&path, text)
    }

    /// Parses `text`, read from `path`, and checks every value lorch can check without the
    /// plugins.
    pub fn parse(path: &Path, text: String) -> Result<Config, Vec<Problem>> {
        let mut config: Config = toml::from_str(&text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let (line, column) = line_column(&text, at);
            // toml's own message, without its position and source excerpt: ours is in front.
            vec![Problem {
                file: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }]
        })?;
        config.path = Some(path.to_owned());
        config.text = text;
        let problems = config.check_values();
        match problems.is_empty() {
            true => Ok(config),
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
        }
    }

    /// The default run options of `PACKAGE/JOB`.
    pub fn defaults_of(&self, id: &str) -> Option<&RunDefaults> {
        self.jobs
            .iter()
            .find(|(name, _)| name.get_ref() == id)
            .map(|(_, defaults)| defaults)
    }

    /// Every job the file names, with where and as what (`jobs` key or `schedule` entry).
    pub fn jobs_named(&self) -> Vec<(&Spanned<String>, String)> {
        let mut named: Vec<_> = self
            .jobs
            .keys()
            .map(|name| (name, format!("[jobs.\"{}\"]", name.get_ref())))
            .collect();
        for (i, schedule) in self.schedules.iter().enumerate() {
            named.push((&schedule.job, format!("schedule {}: job", i + 1)));
        }
        named
    }

    fn check_values(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (name, defaults) in &self.jobs {
            let key = format!("[jobs.\"{}\"]", name.get_ref());
            if let Err(why) = check_job_id(name.get_ref()) {
                problems.push(self.problem(name.span(), format!("{key}: {why}")));
            }
            self.check_run_options(&key, &defaults.as_options(), &mut problems);
        }
        for (i, schedule) in self.schedules.iter().enumerate() {
            let key = format!("schedule {}", i + 1);
            if let Err(why) = check_job_id(schedule.job.get_ref()) {
                problems.push(self.problem(schedule.job.span(), format!("{key}: job: {why}")));
            }
            if let Err(why) = parse_cron(schedule.cron.get_ref()) {
                problems.push(self.problem(schedule.cron.span(), format!("{key}: cron: {why}")));
            }
            if let Some(zone) = &schedule.timezone
                && let Err(why) = parse_zone(zone.get_ref())
            {
                problems.push(self.problem(zone.span(), format!("{key}: timezone: {why}")));
            }
            for (field, value) in [
                ("max_catch_up", &schedule.max_catch_up),
                ("jitter", &schedule.jitter),
            ] {
                if let Some(value) = value
                    && let Err(why) = timearg::duration(value.get_ref())
                {
                    problems.push(self.problem(value.span(), format!("{key}: {field}: {why}")));
                }
            }
            self.check_run_options(&key, &schedule.as_options(), &mut problems);
        }
        problems
    }

    fn check_run_options(&self, key: &str, options: &RunDefaults, problems: &mut Vec<Problem>) {
        let now = chrono::Utc::now();
        for (field, value) in [
            ("since", &options.since),
            ("initial_since", &options.initial_since),
        ] {
            if let Some(value) = value
                && value.get_ref() != crate::lifecycle::LAST_SUCCESS
                && let Err(why) = timearg::resolve(value.get_ref(), now)
            {
                problems.push(self.problem(
                    value.span(),
                    format!("{key}: {field}: {why}; {}", timearg::ACCEPTED),
                ));
            }
        }
        for (field, value, positive) in [
            ("timeout", &options.timeout, true),
            ("kill_after", &options.kill_after, false),
            ("retry_backoff", &options.retry_backoff, false),
        ] {
            let Some(value) = value else { continue };
            let parsed = match positive {
                true => timearg::positive_duration(value.get_ref()),
                false => timearg::duration(value.get_ref()),
            };
            if let Err(why) = parsed {
                problems.push(self.problem(value.span(), format!("{key}: {field}: {why}")));
            }
        }
    }
}

impl RunDefaults {
    fn as_options(&self) -> RunDefaults {
        self.clone()
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

impl Schedule {
    /// The run options of the entry, in the shape of a job's defaults.
    pub fn as_options(&self) -> RunDefaults {
        RunDefaults {
            account: self.account.clone(),
            since: self.since.clone(),
            initial_since: self.initial_since.clone(),
            timeout: self.timeout.clone(),
            kill_after: self.kill_after.clone(),
            retries: self.retries,
            retry_backoff: self.retry_backoff.clone(),
            params: self.params.clone(),
        }
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

/// A cron expression: 5 fields, or a `@daily`-style name.
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    croner::Cron::from_str(text.trim()).map_err(|e| {
        format!(
            "'{text}' is not a cron expression ({e}); accepted: 5 fields (minute hour day-of-month month day-of-week, e.g. \"30 6 * * 1-5\") or @hourly, @daily, @weekly, @monthly, @yearly"
        )
    })
}

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
                "lorch.toml:2:1: unknown field `bogus`, expected one of",
            ),
            (
                "[jobs.\"a/b\"]\nretries = \"two\"\n",
                "lorch.toml:2:11: invalid type: string \"two\", expected u32",
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
                "lorch.toml:4:12: unknown variant `some`, expected one of `skip`, `latest`, `all`",
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
