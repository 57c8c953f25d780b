//! The arguments of one run, as lorch resolved them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The arguments every job receives.
///
/// lorch resolves `--since`/`--until` once, before the job starts, so every job of a run sees
/// the same instants, and checks `--param` values against the job's declared parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    /// `--account`, when given.
    pub account: Option<String>,
    /// `--since`, when given.
    pub since: Option<TimeArg>,
    /// `--until`, when given.
    pub until: Option<TimeArg>,
    /// The declared extra parameters, typed, with defaults filled in.
    pub params: Params,
}

impl Args {
    /// True when `at` is inside the requested window: at or after `--since` and before
    /// `--until`; a bound that was not given does not limit.
    pub fn in_window(&self, at: DateTime<Utc>) -> bool {
        self.since.as_ref().is_none_or(|since| at >= since.utc)
            && self.until.as_ref().is_none_or(|until| at < until.utc)
    }
}

/// A time argument: the instant lorch resolved and the text the user typed (`-7d`, `today`,
/// `2024-01-01`, ...), kept so a job can log or record what was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeArg {
    /// The text as typed: `-7d`, `today`, `2024-01-01T06:00:00+02:00`.
    pub raw: String,
    /// The instant lorch resolved it to, once per run.
    pub utc: DateTime<Utc>,
}

/// The declared extra parameters of a run, already parsed to their declared type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Params(BTreeMap<String, Value>);

impl Params {
    /// Adds or replaces a value; handy in a job's unit tests.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.0.insert(name.to_owned(), value.into());
        self
    }
    /// The raw JSON value of a parameter.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }
    /// A `string` parameter.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.get(name)?.as_str()
    }
    /// An `int` parameter.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name)?.as_i64()
    }
    /// A `float` parameter (an `int` value reads as a float too).
    pub fn float(&self, name: &str) -> Option<f64> {
        self.get(name)?.as_f64()
    }
    /// A `bool` parameter.
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.get(name)?.as_bool()
    }
    /// Every parameter, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn window_is_since_inclusive_until_exclusive() {
        let args = Args {
            since: Some(TimeArg {
                raw: "2024-01-01".into(),
                utc: at("2024-01-01T00:00:00Z"),
            }),
            until: Some(TimeArg {
                raw: "2024-01-02".into(),
                utc: at("2024-01-02T00:00:00Z"),
            }),
            ..Args::default()
        };
        assert!(args.in_window(at("2024-01-01T00:00:00Z")));
        assert!(args.in_window(at("2024-01-01T23:59:59Z")));
        assert!(!args.in_window(at("2024-01-02T00:00:00Z")));
        assert!(!args.in_window(at("2023-12-31T23:59:59Z")));
        assert!(Args::default().in_window(at("1970-01-01T00:00:00Z")));
    }

    #[test]
    fn params_read_typed_values() {
        let params = Params::default()
            .with("n", 3)
            .with("x", 1.5)
            .with("s", "a")
            .with("b", true);
        assert_eq!(params.int("n"), Some(3));
        assert_eq!(params.float("n"), Some(3.0));
        assert_eq!(params.float("x"), Some(1.5));
        assert_eq!(params.string("s"), Some("a"));
        assert_eq!(params.bool("b"), Some(true));
        assert_eq!(params.int("s"), None);
        assert_eq!(params.get("missing"), None);
    }
}
