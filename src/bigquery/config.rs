//! Where events go in BigQuery and with which credentials, from the environment
//! (docs/events.md, "BigQuery").
//!
//! Reading the configuration touches no network: it reads environment variables and at most
//! one credentials file, so a bad configuration is reported before anything is sent.

use std::env;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The variables that ask for BigQuery delivery.
pub const DATASET_VAR: &str = "BQ_EVENTS_DATASET";
pub const TABLE_VAR: &str = "BQ_EVENTS_TABLE";
/// The objects table, in the events dataset (docs/objects.md).
pub const OBJECTS_TABLE_VAR: &str = "BQ_OBJECTS_TABLE";
pub const DEFAULT_OBJECTS_TABLE: &str = "raw_objects";
const PROJECT_VARS: [&str; 2] = ["BQ_PROJECT", "GOOGLE_CLOUD_PROJECT"];
const CREDENTIALS_VAR: &str = "GOOGLE_APPLICATION_CREDENTIALS";
const ENDPOINT_VAR: &str = "LORCH_BQ_ENDPOINT";

/// What a configuration problem is reported as: one sentence naming the variable or file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Problem {}

fn problem(message: impl Into<String>) -> Problem {
    Problem(message.into())
}

/// One BigQuery table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub project: String,
    pub dataset: String,
    pub table: String,
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.project, self.dataset, self.table)
    }
}

/// How lorch proves who it is to BigQuery.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A service-account key file (its `token_uri` is where tokens come from).
    ServiceAccount { path: PathBuf, key: Value },
    /// An authorized user, as `gcloud auth application-default login` writes it.
    AuthorizedUser { path: PathBuf },
    /// No token at all: only with `LORCH_BQ_ENDPOINT` (an emulator).
    None,
}

/// Everything delivery needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The table every event goes to unless its run chose another (`--events-table`).
    pub table: Table,
    /// The table objects are merged into: `BQ_OBJECTS_TABLE` (default `raw_objects`) in the
    /// events dataset.
    pub objects_table: Table,
    pub credentials: Credentials,
    /// The REST base URL up to `/bigquery/v2`, when not Google's.
    pub endpoint: Option<String>,
}

/// True when the environment asks for BigQuery delivery (either table variable is set), so
/// events are queued for it even if the rest of the configuration is still wrong.
pub fn requested() -> bool {
    var(DATASET_VAR).is_some() || var(TABLE_VAR).is_some()
}

/// `$NAME` when set and not empty.
fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    /// The configuration from the environment.
    pub fn from_env() -> Result<Config, Problem> {
        let dataset = var(DATASET_VAR).ok_or_else(|| missing(DATASET_VAR, TABLE_VAR))?;
        let table = var(TABLE_VAR).ok_or_else(|| missing(TABLE_VAR, DATASET_VAR))?;
        let endpoint = var(ENDPOINT_VAR).map(|e| endpoint_url(&e)).transpose()?;
        let (credentials, credentials_project) = credentials(endpoint.is_some())?;
        let project = PROJECT_VARS
            .iter()
            .find_map(|v| var(v))
            .or(credentials_project)
            .ok_or_else(|| {
                problem(
                    "no BigQuery project: set BQ_PROJECT (or GOOGLE_CLOUD_PROJECT), or use credentials that name one",
                )
            })?;
        let objects = var(OBJECTS_TABLE_VAR).unwrap_or_else(|| DEFAULT_OBJECTS_TABLE.to_owned());
        if !matches!(parse_table(&objects), Ok((None, None, _))) {
            return Err(problem(format!(
                "{OBJECTS_TABLE_VAR} '{objects}' is not a table name: letters, digits, _ and - only, no dots (the table is in {DATASET_VAR})"
            )));
        }
        Ok(Config {
            objects_table: Table {
                project: project.clone(),
                dataset: dataset.clone(),
                table: objects,
            },
            table: Table {
                project,
                dataset,
                table,
            },
            credentials,
            endpoint,
        })
    }

    /// The table a run's objects go to: with its own events table (`--events-table`, a test
    /// run), `test_` and the objects table's name in that table's dataset, as lorchestra's
    /// `--test-table` did; otherwise the configured objects table.
    pub fn objects_table_for(&self, events_table: Option<&str>) -> Result<Table, Problem> {
        match events_table {
            None => Ok(self.objects_table.clone()),
            Some(events_table) => Ok(Table {
                table: format!("test_{}", self.objects_table.table),
                ..self.table_for(Some(events_table))?
            }),
        }
    }

    /// The table a run's events go to: its own (`--events-table`) or the configured one.
    pub fn table_for(&self, table: Option<&str>) -> Result<Table, Problem> {
        let Some(table) = table else {
            return Ok(self.table.clone());
        };
        let (project, dataset, table) = parse_table(table)?;
        Ok(Table {
            project: project.unwrap_or_else(|| self.table.project.clone()),
            dataset: dataset.unwrap_or_else(|| self.table.dataset.clone()),
            table,
        })
    }
}

fn missing(name: &str, other: &str) -> Problem {
    let other = match var(other) {
        Some(_) => format!(" ({other} is)"),
        None => String::new(),
    };
    problem(format!(
        "{name} is not set{other}: set both {DATASET_VAR} and {TABLE_VAR} to deliver events to BigQuery"
    ))
}

/// `[[PROJECT.]DATASET.]TABLE`.
pub fn parse_table(text: &str) -> Result<(Option<String>, Option<String>, String), Problem> {
    let parts: Vec<&str> = text.split('.').collect();
    let valid = |part: &&str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if parts.len() > 3 || !parts.iter().all(valid) {
        return Err(problem(format!(
            "invalid BigQuery table '{text}': expected TABLE, DATASET.TABLE or PROJECT.DATASET.TABLE \
             (letters, digits, '_' and '-')"
        )));
    }
    let owned = |i: usize| parts.get(i).map(|p| (*p).to_owned());
    Ok(match parts.len() {
        1 => (None, None, text.to_owned()),
        2 => (None, owned(0), parts[1].to_owned()),
        _ => (owned(0), owned(1), parts[2].to_owned()),
    })
}

/// `http://127.0.0.1:9050` and `http://127.0.0.1:9050/bigquery/v2` both mean the latter. A URL
/// that cannot be one (`:4308O`, a port above 65535, no host) is a configuration problem
/// named at once, not an outage retried for the whole flush time-out.
fn endpoint_url(text: &str) -> Result<String, Problem> {
    let invalid = |why: &str| {
        problem(format!(
            "invalid {ENDPOINT_VAR} '{text}': {why}; expected an http:// or https:// URL such as http://127.0.0.1:9050"
        ))
    };
    let url = text.trim().trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid("it does not start with http:// or https://"));
    }
    let parsed = url::Url::parse(url).map_err(|e| match e {
        url::ParseError::InvalidPort => {
            let port = url.rsplit(':').next().unwrap_or_default();
            let port = port.split('/').next().unwrap_or_default();
            invalid(&format!(
                "the port '{port}' is not a number from 1 to 65535"
            ))
        }
        e => invalid(&e.to_string()),
    })?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it names no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("it has a query or a fragment"));
    }
    Ok(if url.ends_with("/bigquery/v2") {
        url.to_owned()
    } else {
        format!("{url}/bigquery/v2")
    })
}

/// `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's application default credentials, else
/// none when an endpoint is set; with the project the credentials name, if any.
fn credentials(have_endpoint: bool) -> Result<(Credentials, Option<String>), Problem> {
    if let Some(path) = var(CREDENTIALS_VAR) {
        return read_credentials(Path::new(&path), CREDENTIALS_VAR);
    }
    if let Some(path) = default_credentials_path().filter(|p| p.exists()) {
        return read_credentials(&path, "application default credentials");
    }
    if have_endpoint {
        return Ok((Credentials::None, None));
    }
    Err(problem(format!(
        "no Google credentials: set {CREDENTIALS_VAR} to a service-account key file, or run \
         `gcloud auth application-default login`"
    )))
}

/// Where `gcloud auth application-default login` writes its file.
fn default_credentials_path() -> Option<PathBuf> {
    let config = var("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".config/gcloud")))?;
    Some(config.join("application_default_credentials.json"))
}

/// The credentials in a file, and the project they name: a service-account key's
/// `project_id`, or the `quota_project_id` of application default credentials.
fn read_credentials(path: &Path, what: &str) -> Result<(Credentials, Option<String>), Problem> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| problem(format!("cannot read {what} {}: {e}", path.display())))?;
    let key: Value = serde_json::from_str(&text).map_err(|e| {
        problem(format!(
            "{what} {} is not a JSON credentials file: {e}",
            path.display()
        ))
    })?;
    let project = |field: &str| key[field].as_str().map(str::to_owned);
    match key["type"].as_str() {
        Some("service_account") => {
            let project = project("project_id");
            let path = path.to_owned();
            Ok((Credentials::ServiceAccount { path, key }, project))
        }
        Some("authorized_user") => Ok((
            Credentials::AuthorizedUser {
                path: path.to_owned(),
            },
            project("quota_project_id"),
        )),
        other => Err(problem(format!(
            "{what} {} has type {}: lorch accepts a service-account key (\"service_account\") or \
             application default credentials (\"authorized_user\")",
            path.display(),
            other.map_or("(none)".to_owned(), |t| format!("\"{t}\""))
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_take_one_to_three_parts() {
        assert_eq!(parse_table("t").unwrap(), (None, None, "t".into()));
        assert_eq!(
            parse_table("d.t").unwrap(),
            (None, Some("d".into()), "t".into())
        );
        assert_eq!(
            parse_table("my-proj.d_1.t").unwrap(),
            (Some("my-proj".into()), Some("d_1".into()), "t".into())
        );
        for bad in ["", "a..b", "a.b.c.d", "a b", "t;drop"] {
            let err = parse_table(bad).unwrap_err().0;
            assert!(
                err.contains("expected TABLE, DATASET.TABLE"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn an_endpoint_may_omit_the_api_path() {
        assert_eq!(
            endpoint_url("http://127.0.0.1:9050/").unwrap(),
            "http://127.0.0.1:9050/bigquery/v2"
        );
        assert_eq!(
            endpoint_url("https://x/bigquery/v2").unwrap(),
            "https://x/bigquery/v2"
        );
        assert!(
            endpoint_url("127.0.0.1:9050")
                .unwrap_err()
                .0
                .contains("http://")
        );
        for (typo, says) in [
            (
                "http://127.0.0.1:4308O",
                "the port '4308O' is not a number from 1 to 65535",
            ),
            (
                "http://127.0.0.1:430830",
                "the port '430830' is not a number from 1 to 65535",
            ),
            ("http://:9050", "empty host"),
            ("http://127.0.0.1:9050?x=1", "query"),
        ] {
            let err = endpoint_url(typo).unwrap_err().0;
            assert!(
                err.starts_with(&format!("invalid LORCH_BQ_ENDPOINT '{typo}': "))
                    && err.contains(says),
                "{typo}: {err}"
            );
        }
    }

    #[test]
    fn a_run_table_replaces_only_what_it_names() {
        let config = Config {
            table: Table {
                project: "p".into(),
                dataset: "d".into(),
                table: "t".into(),
            },
            objects_table: Table {
                project: "p".into(),
                dataset: "d".into(),
                table: "raw_objects".into(),
            },
            credentials: Credentials::None,
            endpoint: None,
        };
        assert_eq!(config.table_for(None).unwrap().to_string(), "p.d.t");
        assert_eq!(config.table_for(Some("x")).unwrap().to_string(), "p.d.x");
        assert_eq!(config.table_for(Some("e.x")).unwrap().to_string(), "p.e.x");
        assert_eq!(
            config.table_for(Some("q.e.x")).unwrap().to_string(),
            "q.e.x"
        );
        // A test run's objects go beside its events, in test_raw_objects.
        let objects = |t| config.objects_table_for(t).unwrap().to_string();
        assert_eq!(objects(None), "p.d.raw_objects");
        assert_eq!(objects(Some("test_events")), "p.d.test_raw_objects");
        assert_eq!(objects(Some("q.e.x")), "q.e.test_raw_objects");
    }

    #[test]
    fn credentials_files_are_checked_for_their_type() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.json");
        std::fs::write(
            &key,
            r#"{"type": "service_account", "project_id": "from-key"}"#,
        )
        .unwrap();
        let (_, project) = read_credentials(&key, CREDENTIALS_VAR).unwrap();
        assert_eq!(project.as_deref(), Some("from-key"));

        std::fs::write(&key, r#"{"type": "external_account"}"#).unwrap();
        let err = read_credentials(&key, CREDENTIALS_VAR).unwrap_err().0;
        assert!(
            err.contains("\"external_account\"") && err.contains("service_account"),
            "{err}"
        );

        let gone = dir.path().join("gone.json");
        let err = read_credentials(&gone, CREDENTIALS_VAR).unwrap_err().0;
        assert!(
            err.starts_with("cannot read GOOGLE_APPLICATION_CREDENTIALS")
                && err.contains("gone.json"),
            "{err}"
        );
    }
}
