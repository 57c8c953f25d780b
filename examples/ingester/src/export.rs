//! Reading a JSON Lines export and selecting the records of a run.

use chrono::{DateTime, Duration, Utc};
use lorch_plugin_api::{Args, JobError, Value};

/// The records of one export, each with its parsed timestamp.
pub struct Export {
    /// The file read, or `bundled sample`.
    pub source: String,
    records: Vec<Record>,
}

pub struct Record {
    pub at: DateTime<Utc>,
    pub record: Value,
}

impl Export {
    /// Reads `path`, or the bundled `sample` when no path is given. The sample's dates are
    /// shifted so that its newest record is one hour old, which keeps the example meaningful
    /// whatever day it runs.
    pub fn load(path: Option<&str>, sample: &str, date_field: &str) -> Result<Export, JobError> {
        let (source, text) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    JobError::from(e)
                        .context(format!("cannot read {path}"))
                        .permanent()
                })?;
                (path.to_owned(), text)
            }
            None => ("bundled sample".to_owned(), sample.to_owned()),
        };
        let mut records = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let bad = |why: String| JobError::new(format!("{source}:{}: {why}", n + 1)).permanent();
            let record: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            let at = record[date_field]
                .as_str()
                .and_then(|s| s.parse::<DateTime<Utc>>().ok())
                .ok_or_else(|| bad(format!("`{date_field}` is not an RFC 3339 date-time")))?;
            records.push(Record { at, record });
        }
        if let (None, Some(newest)) = (path, records.iter().map(|r| r.at).max()) {
            let shift = (Utc::now() - Duration::hours(1)) - newest;
            records.iter_mut().for_each(|r| r.at += shift);
        }
        Ok(Export { source, records })
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// The records of `--account` (all when not given) inside `--since`/`--until`, oldest
    /// first.
    pub fn select<'a>(&'a self, args: &'a Args) -> impl Iterator<Item = &'a Record> + 'a {
        let mut selected: Vec<&Record> = self
            .records
            .iter()
            .filter(|r| {
                args.account
                    .as_deref()
                    .is_none_or(|a| r.record["account"].as_str() == Some(a))
                    && args.in_window(r.at)
            })
            .collect();
        selected.sort_by_key(|r| r.at);
        selected.into_iter()
    }
}
