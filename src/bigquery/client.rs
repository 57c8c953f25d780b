//! A blocking face on BigQuery: one current-thread runtime, built only when something is
//! delivered, and errors sorted into "try again" and "fix something first".
//!
//! Datasets and tables go through `gcp-bigquery-client`; `insertAll` is sent here, with the
//! same credentials, so that every answer's HTTP status and body are seen: the client library
//! turns a proxy's HTML error page into "expected value at line 1 column 1", which hid a 403
//! and had it retried as an outage.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::{BQError, ResponseError};
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::table_data_insert_all_response::TableDataInsertAllResponse;
use gcp_bigquery_client::yup_oauth2;
use serde_json::Value;
use tokio::runtime::Runtime;

use super::config::{Config, Credentials, Table};
use super::schema;

/// How a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth retrying: the network, 5xx, 408, 429. Nothing was stored.
    Transient(String),
    /// Sent, but no answer came (time-out, connection cut): BigQuery may have stored the rows.
    /// Worth sending again at once, with the same insertIds, while BigQuery still drops
    /// repeated ones (about a minute).
    Unanswered(String),
    /// Retrying will not help until someone changes something: a refused credential, a bad
    /// request.
    Fatal(String),
    /// The table (or dataset) does not exist.
    NotFound(String),
}

impl Failure {
    /// Worth trying again later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, Failure::Transient(_) | Failure::Unanswered(_))
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Transient(m)
            | Failure::Unanswered(m)
            | Failure::Fatal(m)
            | Failure::NotFound(m) => m,
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
    auth: Arc<dyn Authenticator>,
    http: reqwest::Client,
    /// The REST base URL, up to `/bigquery/v2`.
    base: String,
    /// Where requests go, for messages.
    endpoint: String,
}

/// Google's REST base URL.
const GOOGLE: &str = "https://bigquery.googleapis.com/bigquery/v2";
/// What lorch asks a token for.
const SCOPES: [&str; 1] = ["https://www.googleapis.com/auth/bigquery"];

/// What `ensure` found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    Created,
    Existed,
    /// The table exists, but rows lorch sends would not fit it: how it differs.
    Differs(Vec<String>),
}

impl Client {
    /// Builds the runtime and the authenticator. No request is sent yet.
    pub fn connect(config: &Config) -> Result<Client, Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::Fatal(format!("cannot start the BigQuery client: {e}")))?;
        let base = config.endpoint.clone().unwrap_or_else(|| GOOGLE.to_owned());
        let mut builder = ClientBuilder::new();
        builder.with_v2_base_url(base.clone());
        let built = runtime.block_on(async {
            let auth = authenticator(&config.credentials).await?;
            let api = builder.build_from_authenticator(Arc::clone(&auth)).await?;
            Ok::<_, BQError>((auth, api))
        });
        let (auth, api) = built.map_err(|e| {
            Failure::Fatal(format!(
                "cannot set up BigQuery credentials: {}",
                crate::error::describe(&e)
            ))
        })?;
        Ok(Client {
            runtime,
            api,
            auth,
            http: reqwest::Client::new(),
            base,
            endpoint: config
                .endpoint
                .clone()
                .unwrap_or_else(|| "BigQuery".to_owned()),
        })
    }

    /// Sends rows with `tabledata.insertAll`, each with its `insertId`. Valid rows are stored
    /// even when others are invalid (`skipInvalidRows`), so a row is either accepted or named
    /// in the answer: nothing is ambiguous except a request that gets no answer at all
    /// ([`Failure::Unanswered`]). A request gets the whole `timeout` to answer.
    pub fn insert(
        &self,
        table: &Table,
        rows: &[(String, Value)],
        timeout: Duration,
    ) -> Result<Vec<RowError>, Failure> {
        let body = InsertAll {
            skip_invalid_rows: true,
            rows: rows
                .iter()
                .map(|(insert_id, json)| InsertRow { insert_id, json })
                .collect(),
        };
        let url = format!(
            "{}/projects/{}/datasets/{}/tables/{}/insertAll",
            self.base, table.project, table.dataset, table.table
        );
        let answer: TableDataInsertAllResponse = self.post(&url, &body, table, timeout)?;
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

    /// Upserts `objects` (one per key) into `table` with one MERGE statement
    /// ([`schema::merge_statement`]), sent with `jobs.query`. The statement is idempotent, so
    /// an answer that was lost ([`Failure::Unanswered`]) only means sending it again; so does
    /// a statement still running when `timeout` is up. `request_id` makes a repeated request
    /// the same job for BigQuery.
    pub fn merge(
        &self,
        table: &Table,
        objects: &[crate::events::Object],
        request_id: &str,
        timeout: Duration,
    ) -> Result<(), Failure> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Query<'a> {
            query: String,
            use_legacy_sql: bool,
            parameter_mode: &'static str,
            query_parameters: [schema::MergeRows<'a>; 1],
            timeout_ms: u64,
            request_id: &'a str,
        }
        let body = Query {
            query: schema::merge_statement(table),
            use_legacy_sql: false,
            parameter_mode: "NAMED",
            query_parameters: [schema::MergeRows(objects)],
            timeout_ms: timeout.as_millis() as u64,
            request_id,
        };
        let url = format!("{}/projects/{}/queries", self.base, table.project);
        let answer: Value = self.post(&url, &body, table, timeout)?;
        // The emulator answers 200 with the errors of a statement that failed.
        let error = answer["errors"].get(0).or(answer["status"]["errorResult"]
            .as_object()
            .map(|_| &answer["status"]["errorResult"]));
        if let Some(error) = error {
            let reason = error["reason"].as_str().unwrap_or("");
            let message = format!(
                "{} refused the MERGE into {table}: {reason}: {}",
                self.endpoint,
                error["message"].as_str().unwrap_or("")
            );
            return Err(match reason {
                "backendError" | "internalError" | "rateLimitExceeded" | "jobRateLimitExceeded" => {
                    Failure::Transient(message)
                }
                "notFound" => {
                    Failure::NotFound(format!("{message} (`lorch events init` creates {table})"))
                }
                _ => Failure::Fatal(message),
            });
        }
        if answer["jobComplete"] != Value::Bool(true) {
            return Err(Failure::Unanswered(format!(
                "the MERGE into {table} did not finish within {}",
                crate::output::round_duration(timeout)
            )));
        }
        Ok(())
    }

    /// POSTs `body` with a token, giving the request (and the token endpoint) `timeout`, and
    /// reads BigQuery's JSON answer; an error status, or an answer that is not BigQuery's JSON
    /// (a proxy's page), is a [`Failure`] saying which.
    fn post<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        body: &impl serde::Serialize,
        table: &Table,
        timeout: Duration,
    ) -> Result<T, Failure> {
        let (status, bytes) = self.runtime.block_on(async {
            // The token endpoint gets the same time as the request: it may hang just the same.
            let token = tokio::time::timeout(timeout, self.auth.access_token())
                .await
                .map_err(|_| {
                    Failure::Transient(format!(
                        "the token endpoint did not answer within {}",
                        crate::output::round_duration(timeout)
                    ))
                })?
                .map_err(|e| classify(&e, table, &self.endpoint))?;
            let mut request = self.http.post(url).json(body).timeout(timeout);
            // An emulator takes no credentials: then no Authorization header at all.
            if !token.is_empty() {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|e| self.unsent(&e, timeout))?;
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| self.unsent(&e, timeout))?;
            Ok::<_, Failure>((status, bytes))
        })?;
        if !status.is_success() {
            return Err(answered(status, &bytes, table, &self.endpoint));
        }
        serde_json::from_slice(&bytes).map_err(|_| {
            Failure::Fatal(format!(
                "{} answered {status} with something that is not BigQuery's JSON: {}",
                self.endpoint,
                first_bytes(&bytes)
            ))
        })
    }

    /// A request that failed on the way: never connected (nothing was sent), or sent and left
    /// without an answer (BigQuery may have stored it).
    fn unsent(&self, error: &reqwest::Error, timeout: Duration) -> Failure {
        if error.is_connect() {
            return Failure::Transient(format!(
                "cannot reach {}: {}",
                self.endpoint,
                root_cause(error)
            ));
        }
        if error.is_timeout() {
            return Failure::Unanswered(format!(
                "{} did not answer within {}",
                self.endpoint,
                crate::output::round_duration(timeout)
            ));
        }
        Failure::Unanswered(format!(
            "{} did not answer: {}",
            self.endpoint,
            root_cause(error)
        ))
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

    /// Creates the table of `layout` when it does not exist; says how an existing one differs
    /// from what lorch writes.
    pub fn ensure_table(
        &self,
        table: &Table,
        layout: &schema::Layout,
        timeout: Duration,
    ) -> Result<Ensured, Failure> {
        let found = self.call(timeout, table, async {
            self.api
                .table()
                .get(&table.project, &table.dataset, &table.table, None)
                .await
        });
        match found {
            Ok(existing) => match schema::differences(layout, &existing.schema) {
                differences if differences.is_empty() => Ok(Ensured::Existed),
                differences => Ok(Ensured::Differs(differences)),
            },
            Err(Failure::NotFound(_)) => {
                self.call(timeout, table, async {
                    self.api
                        .table()
                        .create(schema::definition(layout, table))
                        .await
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
            Err(_) => Err(Failure::Unanswered(format!(
                "{} did not answer within {}",
                self.endpoint,
                crate::output::round_duration(timeout)
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

/// The authenticator for `credentials`, shared by the client library and lorch's own requests.
async fn authenticator(credentials: &Credentials) -> Result<Arc<dyn Authenticator>, BQError> {
    let auth = match credentials {
        Credentials::None => return Ok(Arc::new(NoToken)),
        Credentials::ServiceAccount { path, key } => {
            let key = yup_oauth2::parse_service_account_key(key.to_string())
                .map_err(|e| bad_credentials(path, e))?;
            yup_oauth2::ServiceAccountAuthenticator::builder(key)
                .build()
                .await
                .map_err(|e| bad_credentials(path, e))?
        }
        Credentials::AuthorizedUser { path } => {
            let secret = yup_oauth2::read_authorized_user_secret(path)
                .await
                .map_err(|e| bad_credentials(path, e))?;
            yup_oauth2::AuthorizedUserAuthenticator::builder(secret)
                .build()
                .await
                .map_err(|e| bad_credentials(path, e))?
        }
    };
    Ok(Arc::new(OAuth(auth)))
}

/// A Google OAuth token source (service account or authorized user).
#[derive(Clone)]
struct OAuth(yup_oauth2::authenticator::DefaultAuthenticator);

#[async_trait]
impl Authenticator for OAuth {
    async fn access_token(&self) -> Result<String, BQError> {
        let token = self.0.token(&SCOPES).await?;
        token.token().map(str::to_owned).ok_or(BQError::NoToken)
    }
}

/// The body of `tabledata.insertAll`, serialized from the batch without copying its rows.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct InsertAll<'a> {
    skip_invalid_rows: bool,
    rows: Vec<InsertRow<'a>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct InsertRow<'a> {
    insert_id: &'a str,
    json: &'a Value,
}

/// An error answer, with the status and BigQuery's reason, or the start of a body that is not
/// BigQuery's (a proxy's error page).
fn answered(status: reqwest::StatusCode, body: &[u8], table: &Table, endpoint: &str) -> Failure {
    let error: Option<ResponseError> = serde_json::from_slice(body).ok();
    let Some(error) = error.map(|e| e.error) else {
        let message = format!("{endpoint} answered {status}: {}", first_bytes(body));
        return by_status(status.as_u16(), "", message, table);
    };
    let reason = error
        .errors
        .first()
        .and_then(|e| e.get("reason"))
        .map_or("", String::as_str);
    let message = format!("{endpoint} answered {status} {reason}: {}", error.message);
    by_status(status.as_u16(), reason, message, table)
}

/// Whether trying again may help, by HTTP status and BigQuery's reason: 408, 429, 5xx, and
/// the 403s BigQuery gives for its rate limits and quotas; a 404 names `lorch events init`.
fn by_status(code: u16, reason: &str, message: String, table: &Table) -> Failure {
    match (code, reason) {
        (408 | 429 | 500..=599, _) => Failure::Transient(message),
        (403, "rateLimitExceeded" | "quotaExceeded") => Failure::Transient(message),
        (404, _) => Failure::NotFound(format!("{message} (`lorch events init` creates {table})")),
        _ => Failure::Fatal(message),
    }
}

/// The first 200 bytes of a body, as text on one line.
fn first_bytes(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match body.len() {
        0 => "(an empty body)".to_owned(),
        n if n > 200 => format!("{line}..."),
        _ => line,
    }
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
            by_status(e.code as u16, reason, message, table)
        }
        // Connection refused or reset, or a timeout: the network's fault, worth another try.
        // An answer that is not BigQuery's JSON (a proxy's error page) is not.
        BQError::RequestError(e) => match e.status() {
            Some(status) if status.is_client_error() && ![408, 429].contains(&status.as_u16()) => {
                Failure::Fatal(format!("{endpoint} answered {status}"))
            }
            _ if e.is_decode() => Failure::Fatal(format!(
                "{endpoint} answered with something that is not BigQuery's JSON ({}); is LORCH_BQ_ENDPOINT right?",
                root_cause(e)
            )),
            _ if e.is_timeout() => Failure::Transient(format!("{endpoint} timed out")),
            _ => Failure::Transient(format!("cannot reach {endpoint}: {}", root_cause(e))),
        },
        BQError::YupAuthError(yup_oauth2::Error::HttpError(_))
        | BQError::YupAuthError(yup_oauth2::Error::LowLevelError(_)) => {
            Failure::Transient(format!(
                "cannot reach the token endpoint: {}",
                crate::error::describe(error)
            ))
        }
        BQError::YupAuthError(_) | BQError::AuthError(_) | BQError::NoToken => Failure::Fatal(
            format!("cannot get a token: {}", crate::error::describe(error)),
        ),
        _ => Failure::Fatal(crate::error::describe(error)),
    }
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
