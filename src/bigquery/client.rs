//! A blocking face on `gcp-bigquery-client`: one current-thread runtime, built only when
//! something is delivered, and errors sorted into "try again" and "fix something first".

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_data_insert_all_request_rows::TableDataInsertAllRequestRows;
use gcp_bigquery_client::yup_oauth2;
use serde_json::Value;
use tokio::runtime::Runtime;

use super::config::{Config, Credentials, Table};
use super::schema;

/// How a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth retrying: the network, a timeout, 5xx, 429.
    Transient(String),
    /// Retrying will not help until someone changes something: a refused credential, a bad
    /// request.
    Fatal(String),
    /// The table (or dataset) does not exist.
    NotFound(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Transient(m) | Failure::Fatal(m) | Failure::NotFound(m) => m,
        }
    }
}

/// BigQuery's verdict on one row of an accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The row's index in the request.
    pub index: usize,
    /// BigQuery's reason (`invalid`, `stopped`, `timeout`, ...).
    pub reason: String,
    pub message: String,
}

impl RowError {
    /// The row itself is wrong; sending it again cannot succeed.
    pub fn is_permanent(&self) -> bool {
        self.reason == "invalid"
    }
}

pub struct Client {
    runtime: Runtime,
    api: gcp_bigquery_client::Client,
    /// Where requests go, for messages.
    endpoint: String,
}

/// What `ensure` found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Created,
    Existed,
}

impl Client {
    /// Builds the runtime and the authenticator. No request is sent yet.
    pub fn connect(config: &Config) -> Result<Client, Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::Fatal(format!("cannot start the BigQuery client: {e}")))?;
        let mut builder = ClientBuilder::new();
        if let Some(endpoint) = &config.endpoint {
            builder.with_v2_base_url(endpoint.clone());
        }
        let api = runtime.block_on(async {
            match &config.credentials {
                Credentials::ServiceAccount { path, key } => {
                    let key = yup_oauth2::parse_service_account_key(key.to_string())
                        .map_err(|e| bad_credentials(path, e))?;
                    builder.build_from_service_account_key(key, false).await
                }
                Credentials::AuthorizedUser { path } => {
                    builder.build_from_authorized_user_authenticator(path).await
                }
                Credentials::None => builder.build_from_authenticator(Arc::new(NoToken)).await,
            }
        });
        let api = api.map_err(|e| {
            Failure::Fatal(format!(
                "cannot set up BigQuery credentials: {}",
                describe(&e)
            ))
        })?;
        Ok(Client {
            runtime,
            api,
            endpoint: config
                .endpoint
                .clone()
                .unwrap_or_else(|| "BigQuery".to_owned()),
        })
    }

    /// Sends rows with `tabledata.insertAll`, each with its `insertId`. Valid rows are stored
    /// even when others are invalid (`skipInvalidRows`), so a row is either accepted or named
    /// in the answer: nothing is ambiguous except a request that gets no answer at all.
    pub fn insert(
        &self,
        table: &Table,
        rows: Vec<(String, Value)>,
        timeout: Duration,
    ) -> Result<Vec<RowError>, Failure> {
        let mut request = TableDataInsertAllRequest::new();
        request.skip_invalid_rows();
        request
            .add_rows(
                rows.into_iter()
                    .map(|(insert_id, json)| TableDataInsertAllRequestRows {
                        insert_id: Some(insert_id),
                        json,
                    })
                    .collect(),
            )
            .map_err(|e| Failure::Fatal(describe(&e)))?;
        let answer = self.call(timeout, table, async {
            self.api
                .tabledata()
                .insert_all(&table.project, &table.dataset, &table.table, request)
                .await
        })?;
        Ok(answer
            .insert_errors
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                let first = e
                    .errors
                    .unwrap_or_default()
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                RowError {
                    index: e.index.unwrap_or(-1).max(0) as usize,
                    reason: first.reason.unwrap_or_else(|| "unknown".to_owned()),
                    message: first.message.unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Creates the dataset when it does not exist.
    pub fn ensure_dataset(&self, table: &Table, timeout: Duration) -> Result<Ensured, Failure> {
        let found = self.call(timeout, table, async {
            self.api.dataset().get(&table.project, &table.dataset).await
        });
        match found {
            Ok(_) => Ok(Ensured::Existed),
            Err(Failure::NotFound(_)) => {
                self.call(timeout, table, async {
                    self.api
                        .dataset()
                        .create(Dataset::new(&table.project, &table.dataset))
                        .await
                })?;
                Ok(Ensured::Created)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates the events table when it does not exist.
    pub fn ensure_table(&self, table: &Table, timeout: Duration) -> Result<Ensured, Failure> {
        let found = self.call(timeout, table, async {
            self.api
                .table()
                .get(&table.project, &table.dataset, &table.table, None)
                .await
        });
        match found {
            Ok(_) => Ok(Ensured::Existed),
            Err(Failure::NotFound(_)) => {
                self.call(timeout, table, async {
                    self.api.table().create(schema::definition(table)).await
                })?;
                Ok(Ensured::Created)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs one request to its end or its timeout, and sorts its failure.
    fn call<T>(
        &self,
        timeout: Duration,
        table: &Table,
        request: impl Future<Output = Result<T, BQError>>,
    ) -> Result<T, Failure> {
        match self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, request).await })
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(classify(&error, table, &self.endpoint)),
            Err(_) => Err(Failure::Transient(format!(
                "{} did not answer within {}",
                self.endpoint,
                humantime::format_duration(timeout)
            ))),
        }
    }
}

fn bad_credentials(path: &std::path::Path, e: std::io::Error) -> BQError {
    BQError::InvalidServiceAccountKey(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

/// Sorts an error into transient or fatal, with a message that says what to do.
fn classify(error: &BQError, table: &Table, endpoint: &str) -> Failure {
    match error {
        BQError::ResponseError { error } => {
            let e = &error.error;
            let reason = e
                .errors
                .first()
                .and_then(|e| e.get("reason"))
                .map_or("", String::as_str);
            let message = format!("{endpoint} answered {} {reason}: {}", e.code, e.message);
            match e.code {
                429 | 500..=599 => Failure::Transient(message),
                404 => {
                    Failure::NotFound(format!("{message} (`lorch events init` creates {table})"))
                }
                _ => Failure::Fatal(message),
            }
        }
        // Connection refused or reset, a timeout, or an answer that was not BigQuery's JSON
        // (a proxy's error page): the network's fault, worth another try.
        BQError::RequestError(e) => match e.status() {
            Some(status) if status.is_client_error() && status.as_u16() != 429 => {
                Failure::Fatal(format!("{endpoint} answered {status}"))
            }
            _ if e.is_timeout() => Failure::Transient(format!("{endpoint} timed out")),
            _ => Failure::Transient(format!("cannot reach {endpoint}: {}", root_cause(e))),
        },
        BQError::YupAuthError(yup_oauth2::Error::HttpError(_))
        | BQError::YupAuthError(yup_oauth2::Error::LowLevelError(_)) => Failure::Transient(
            format!("cannot reach the token endpoint: {}", describe(error)),
        ),
        BQError::YupAuthError(_) | BQError::AuthError(_) | BQError::NoToken => {
            Failure::Fatal(format!("cannot get a token: {}", describe(error)))
        }
        _ => Failure::Fatal(describe(error)),
    }
}

/// The error and its causes on one line.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// The innermost cause: "Connection refused (os error 111)" rather than every layer above it.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// No credentials, for an emulator: an empty bearer token.
#[derive(Clone)]
struct NoToken;

#[async_trait]
impl Authenticator for NoToken {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok(String::new())
    }
}
