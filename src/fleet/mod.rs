//! Fleet mode (docs/fleet.md): run requests travel through NATS JetStream, from `lorch submit`
//! to `lorch worker`s on any machine. This module holds what they share: the request, the
//! names of the streams and the consumer, and a connection that checks those streams are
//! lorch's.
//!
//! The jobs stream has work-queue retention (a request is removed once a worker acks it) and
//! deduplicates by request id (`Nats-Msg-Id`), so a request published twice within its
//! duplicate window (2 minutes) is stored once. A request a worker could not complete in
//! `max_deliver` deliveries goes to the dead-letter stream, with the reason.

mod lock;
pub mod publish;
pub mod queue;
pub mod submit;
pub mod worker;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::{self, consumer, stream};
use serde::{Deserialize, Serialize};

/// `--nats`'s variable, and its default.
pub use crate::paths::NATS_URL_VAR as URL_VAR;
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// The stream of run requests: `lorch.jobs.PACKAGE.JOB`.
pub const JOBS_STREAM: &str = "LORCH_JOBS";
const JOBS_SUBJECTS: &str = "lorch.jobs.>";
/// The stream of requests that will not run: `lorch.dead.PACKAGE.JOB`.
pub const DEAD_STREAM: &str = "LORCH_DEAD";
const DEAD_SUBJECTS: &str = "lorch.dead.>";
/// The stream of the events workers record: `lorch.events.EVENT_TYPE`, each once (its
/// `event_id` is its `Nats-Msg-Id`), kept 7 days.
pub const EVENTS_STREAM: &str = "LORCH_EVENTS";
const EVENTS_SUBJECTS: &str = "lorch.events.>";
const EVENTS_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The stream of the workers' heartbeats: `lorch.workers.HOST.PID`, the last of each kept a
/// minute, so a worker that died leaves `queue status` within a minute.
pub const WORKERS_STREAM: &str = "LORCH_WORKERS";
const WORKERS_SUBJECTS: &str = "lorch.workers.>";
/// The durable consumer every worker pulls from.
pub const WORKERS: &str = "lorch-workers";

/// The stream of the fleet-wide job locks: `lorch.locks.KEY`, one message a subject, which is
/// the lock's holder. Taken by publishing when the subject has no message (expected last
/// subject sequence 0), renewed by publishing after its own message, let go by deleting it; a
/// message lives [`LOCK_TTL`], so the lock of a worker that died frees itself. (What a
/// JetStream key-value bucket does, without the bucket API, which Debian's server 2.9 and
/// this client do not agree on.)
pub const LOCKS_STREAM: &str = "LORCH_LOCKS";
const LOCKS_SUBJECTS: &str = "lorch.locks.>";
/// How long a lock outlives its last renewal: the time a dead worker's lock takes to free.
pub const LOCK_TTL: Duration = Duration::from_secs(30);

/// The headers of a dead letter.
pub const REASON_HEADER: &str = "Lorch-Reason";
pub const DELIVERIES_HEADER: &str = "Lorch-Deliveries";
pub const REQUEST_HEADER: &str = "Lorch-Request-Id";

/// What to do when no server answers (docs/fleet.md).
const START_ONE: &str = "is the server running? Start one with `nats-server -js -sd ~/.local/share/lorch-nats`, or name another with --nats or LORCH_NATS_URL (docs/fleet.md)";

/// How long connecting may take before lorch says the server is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One run request: what `run-job` would be given, its window already resolved (or
/// `last-success`, which the worker resolves from its own store).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    pub request_id: String,
    pub package: String,
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_since: Option<String>,
    /// `KEY=VALUE`, as `--param` takes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    pub submitted_at: String,
    pub submitted_from: String,
}

impl Request {
    /// `lorch.jobs.PACKAGE.JOB`.
    pub fn subject(&self) -> String {
        format!("lorch.jobs.{}.{}", self.package, self.job)
    }

    /// `lorch.dead.PACKAGE.JOB`.
    pub fn dead_subject(&self) -> String {
        format!("lorch.dead.{}.{}", self.package, self.job)
    }

    /// The options of the `lorch run-job` that runs it (its trace id is the request id unless
    /// it names one); a duration it cannot read makes it no request lorch runs.
    pub fn options(&self) -> Result<crate::plan::RunOptions> {
        let duration = |name: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| {
                    crate::timearg::duration(v).map_err(|why| anyhow::anyhow!("{name}: {why}"))
                })
                .transpose()
        };
        Ok(crate::plan::RunOptions {
            account: self.account.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            initial_since: self.initial_since.clone(),
            params: self.params.clone(),
            timeout: duration("timeout", &self.timeout)?,
            kill_after: duration("kill_after", &self.kill_after)?,
            retries: self.retries,
            retry_backoff: duration("retry_backoff", &self.retry_backoff)?,
            trace_id: Some(
                self.trace_id
                    .clone()
                    .unwrap_or_else(|| self.request_id.clone()),
            ),
            ..crate::plan::RunOptions::default()
        })
    }
}

/// A connection to the server, and its JetStream context.
pub struct Connection {
    pub runtime: tokio::runtime::Runtime,
    pub jetstream: jetstream::Context,
    pub url: String,
}

/// `url` as lorch prints it: a password, or a token (`nats://TOKEN@host`), written `***`; each
/// of a comma-separated list, with or without its scheme.
pub fn shown(url: &str) -> String {
    url.split(',')
        .map(|one| match credentials(one) {
            (Some(_), Some(_)) | (Some(_), None) => {
                let (scheme, rest) = one.split_once("://").unwrap_or(("", one));
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                let user = match credentials(one) {
                    (Some(user), Some(_)) => format!("{user}:***"),
                    _ => "***".to_owned(),
                };
                match scheme {
                    "" => format!("{user}@{host}"),
                    scheme => format!("{scheme}://{user}@{host}"),
                }
            }
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `text` with its `%XX` escapes decoded (a URL's user and password).
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The user and password (or the token, as a user alone) in a server URL.
fn credentials(url: &str) -> (Option<String>, Option<String>) {
    let with_scheme = match url.contains("://") {
        true => url.to_owned(),
        false => format!("nats://{url}"),
    };
    match url::Url::parse(&with_scheme) {
        Ok(parsed) if !parsed.username().is_empty() => (
            Some(unescape(parsed.username())),
            parsed.password().map(unescape),
        ),
        _ => (None, None),
    }
}

/// Connects to `url` (default `LORCH_NATS_URL`, else [`DEFAULT_URL`]). Once connected, the
/// client reconnects by itself when the server restarts.
pub fn connect(url: Option<&str>) -> Result<Connection> {
    let real = url
        .map(str::to_owned)
        .or_else(|| std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let url = shown(&real);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the NATS client")?;
    if real.trim().is_empty() {
        bail!("the NATS server's URL is empty: give one, e.g. nats://127.0.0.1:4222");
    }
    // The client does not read credentials from the URL: they go in its options.
    let options = match credentials(real.split(',').next().unwrap_or_default()) {
        (Some(user), Some(password)) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        (Some(token), None) => async_nats::ConnectOptions::with_token(token),
        _ => async_nats::ConnectOptions::new(),
    };
    let client = runtime.block_on(async {
        let connecting = options
            .connection_timeout(CONNECT_TIMEOUT)
            .max_reconnects(None)
            .connect(real.as_str());
        tokio::time::timeout(CONNECT_TIMEOUT, connecting).await
    });
    let client = match client {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => bail!("cannot connect to NATS at {url}: {e}; {START_ONE}"),
        Err(_) => bail!(
            "cannot connect to NATS at {url}: no answer within {}s; {START_ONE}",
            CONNECT_TIMEOUT.as_secs()
        ),
    };
    // The context spawns its acknowledgement task on the runtime.
    let jetstream = {
        let _inside = runtime.enter();
        jetstream::new(client)
    };
    Ok(Connection {
        runtime,
        jetstream,
        url,
    })
}

impl Connection {
    /// The jobs stream, created when missing; an existing stream of that name with other
    /// settings is refused rather than used.
    pub async fn jobs_stream(&self) -> Result<stream::Stream> {
        let config = stream::Config {
            name: JOBS_STREAM.to_owned(),
            subjects: vec![JOBS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        self.stream(config).await
    }

    /// The dead-letter stream, created when missing.
    pub async fn dead_stream(&self) -> Result<stream::Stream> {
        let config = stream::Config {
            name: DEAD_STREAM.to_owned(),
            subjects: vec![DEAD_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        self.stream(config).await
    }

    async fn stream(&self, config: stream::Config) -> Result<stream::Stream> {
        let name = config.name.clone();
        let stream = self
            .jetstream
            .get_or_create_stream(config.clone())
            .await
            .with_context(|| format!("cannot open the stream {name} on {}", self.url))?;
        let settings = |c: &stream::Config| {
            format!(
                "subjects {:?}, retention {:?}, {} messages a subject, kept {}",
                c.subjects,
                c.retention,
                // The server says -1 for the default the client sends as 0: no limit.
                c.max_messages_per_subject.max(0),
                humantime::format_duration(c.max_age)
            )
        };
        let (found, wanted) = (settings(&stream.cached_info().config), settings(&config));
        if found != wanted {
            bail!(
                "the stream {name} on {} has other settings than lorch's ({found}; lorch's: {wanted}); remove it (nats stream rm {name}) or use another server",
                self.url
            );
        }
        Ok(stream)
    }

    /// The stream of the fleet's events ([`EVENTS_STREAM`]), created when missing.
    pub async fn events_stream(&self) -> Result<stream::Stream> {
        let config = stream::Config {
            name: EVENTS_STREAM.to_owned(),
            subjects: vec![EVENTS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            max_age: EVENTS_KEPT,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        self.stream(config).await
    }

    /// The stream of the workers' heartbeats ([`WORKERS_STREAM`]), created when missing.
    pub async fn workers_stream(&self) -> Result<stream::Stream> {
        let config = stream::Config {
            name: WORKERS_STREAM.to_owned(),
            subjects: vec![WORKERS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(60),
            storage: stream::StorageType::Memory,
            ..Default::default()
        };
        self.stream(config).await
    }

    /// The stream of fleet-wide job locks ([`LOCKS_STREAM`]), created when missing.
    pub async fn locks(&self) -> Result<stream::Stream> {
        let config = stream::Config {
            name: LOCKS_STREAM.to_owned(),
            subjects: vec![LOCKS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            max_messages_per_subject: 1,
            max_age: LOCK_TTL,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        self.stream(config).await
    }

    /// The durable consumer of the workers that take `jobs` (every job: [`WORKERS`]), created
    /// when missing with these settings. On a work queue each request belongs to one consumer,
    /// so the server refuses groups whose jobs overlap: said with what to do.
    ///
    /// The server delivers a request again and again (`max_deliver` unlimited): the workers
    /// count deliveries and send the request to the dead letters, so a request never stays
    /// stuck after its last delivery.
    pub async fn workers(
        &self,
        stream: &stream::Stream,
        jobs: &Jobs,
        ack_wait: Duration,
    ) -> Result<consumer::PullConsumer> {
        let name = jobs.consumer();
        let created = stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait,
                    max_deliver: -1,
                    filter_subject: jobs.filter(),
                    ..Default::default()
                },
            )
            .await;
        match created {
            Ok(consumer) => Ok(consumer),
            Err(e) if e.to_string().contains("workqueue stream") => bail!(
                "the workers already on {} take jobs that overlap {} ({e}): each request goes to one group of workers, so give every worker --jobs with patterns that do not overlap, or none",
                self.url,
                jobs.pattern()
            ),
            Err(e) => Err(anyhow::Error::new(e))
                .with_context(|| format!("cannot open the consumer {name} on {}", self.url)),
        }
    }
}

/// Whether `name` can be a package's or a job's in a subject: letters, digits, `_` and `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The jobs a worker takes (`--jobs`): every job, a package's, or one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jobs {
    All,
    Package(String),
    Job(String, String),
}

impl Jobs {
    /// `*`, `PACKAGE/*` or `PACKAGE/JOB`.
    pub fn parse(text: &str) -> Result<Jobs, String> {
        let name = valid_name;
        match text.split_once('/') {
            None if text == "*" => Ok(Jobs::All),
            Some((package, "*")) if name(package) => Ok(Jobs::Package(package.to_owned())),
            Some((package, job)) if name(package) && name(job) => {
                Ok(Jobs::Job(package.to_owned(), job.to_owned()))
            }
            _ => Err(format!(
                "'{text}' is not a job pattern; accepted: PACKAGE/JOB, PACKAGE/* or *"
            )),
        }
    }

    fn pattern(&self) -> String {
        match self {
            Jobs::All => "*".to_owned(),
            Jobs::Package(package) => format!("{package}/*"),
            Jobs::Job(package, job) => format!("{package}/{job}"),
        }
    }

    /// The subjects of its requests; empty for every job.
    fn filter(&self) -> String {
        match self {
            Jobs::All => String::new(),
            Jobs::Package(package) => format!("lorch.jobs.{package}.*"),
            Jobs::Job(package, job) => format!("lorch.jobs.{package}.{job}"),
        }
    }

    /// The consumer its workers share: named after the pattern, and its hash, so that `x-y/z`
    /// and `x/y-z` are two.
    fn consumer(&self) -> String {
        let hash = crate::paths::fnv1a(self.pattern().as_bytes()) as u32;
        match self {
            Jobs::All => WORKERS.to_owned(),
            Jobs::Package(package) => format!("{WORKERS}-{package}-{hash:08x}"),
            Jobs::Job(package, job) => format!("{WORKERS}-{package}-{job}-{hash:08x}"),
        }
    }
}

/// `lorch.events.EVENT_TYPE`, each token of the type kept to letters, digits, `_` and `-`.
pub fn event_subject(event_type: &str) -> String {
    let tokens: Vec<String> = event_type
        .split('.')
        .map(|token| {
            let token: String = token
                .chars()
                .map(|c| match c {
                    'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => c,
                    _ => '_',
                })
                .collect();
            if token.is_empty() {
                "_".to_owned()
            } else {
                token
            }
        })
        .collect();
    format!("lorch.events.{}", tokens.join("."))
}

/// `text` as one subject token: every byte but letters, digits, `-` and `_` written `=XX`.
pub fn token(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => out.push(byte as char),
            _ => out.push_str(&format!("={byte:02X}")),
        }
    }
    out
}

/// The lock subject of a job and account: `lorch.locks.PACKAGE.JOB.ACCOUNT` (`_` for none),
/// each a [`token`].
pub fn lock_key(package: &str, job: &str, account: Option<&str>) -> String {
    format!(
        "lorch.locks.{}.{}.{}",
        token(package),
        token(job),
        account.map_or_else(|| "_".to_owned(), |a| format!("a{}", token(a)))
    )
}

/// What can lose a request the server acknowledged (docs/fleet.md, "Durability"): the jobs
/// stream kept in memory (a restart loses it), or a server older than 2.10, which cannot sync
/// each write to disk (`sync_interval: always`), so a power loss can take what it
/// acknowledged in the last minutes. A newer server's own setting cannot be seen from a client:
/// the docs say what to set.
pub fn durability_warnings(version: &str, storage: stream::StorageType) -> Vec<String> {
    let mut warnings = Vec::new();
    if storage == stream::StorageType::Memory {
        warnings.push(format!(
            "the stream {JOBS_STREAM} is kept in memory: a restart of the server loses every queued request"
        ));
    }
    let mut numbers = version
        .trim_start_matches('v')
        .split('.')
        .map(str::parse::<u32>);
    let (major, minor) = (numbers.next(), numbers.next());
    if let (Some(Ok(major)), Some(Ok(minor))) = (major, minor)
        && (major, minor) < (2, 10)
    {
        warnings.push(format!(
            "NATS server {version} cannot sync each write to disk (sync_interval: always needs 2.10 or later): requests it acknowledged shortly before a power loss or a crash of its machine can be lost; submit with --request-id to send them again safely (docs/fleet.md, \"Durability\")"
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_stream_or_a_server_that_cannot_sync_each_write_is_warned_of() {
        use stream::StorageType::{File, Memory};
        assert!(durability_warnings("2.10.0", File).is_empty());
        assert!(durability_warnings("2.14.4", File).is_empty());
        let old = durability_warnings("2.9.10", File);
        assert_eq!(old.len(), 1);
        assert!(old[0].starts_with("NATS server 2.9.10 cannot sync each write"));
        assert_eq!(durability_warnings("2.11.0", Memory).len(), 1);
        assert_eq!(durability_warnings("garbage", Memory).len(), 1);
    }

    #[test]
    fn a_request_becomes_the_run_job_it_asks_for() {
        let request = Request {
            request_id: "r1".into(),
            package: "ingester".into(),
            job: "extract_gmail".into(),
            account: Some("acct1".into()),
            since: Some("2026-11-25T06:00:00Z".into()),
            until: None,
            initial_since: None,
            params: vec!["limit=5".into()],
            timeout: Some("30m".into()),
            kill_after: None,
            retries: Some(2),
            retry_backoff: None,
            trace_id: None,
            submitted_at: "2026-11-26T06:00:00Z".into(),
            submitted_from: "host".into(),
        };
        assert_eq!(request.subject(), "lorch.jobs.ingester.extract_gmail");
        assert_eq!(
            crate::child::args(&request.options().unwrap()),
            [
                "--account=acct1",
                "--since=2026-11-25T06:00:00Z",
                "--timeout=1800000ms",
                "--retries=2",
                "--trace-id=r1",
                "--param=limit=5"
            ]
        );
        assert_eq!(
            lock_key("ingester", "extract_gmail", None),
            "lorch.locks.ingester.extract_gmail._"
        );
        assert_eq!(
            lock_key("ingester", "extract_gmail", Some("me@x.org")),
            "lorch.locks.ingester.extract_gmail.ame=40x=2Eorg"
        );
        assert_eq!(Jobs::parse("*"), Ok(Jobs::All));
        assert_eq!(
            Jobs::parse("ingester/*").unwrap().filter(),
            "lorch.jobs.ingester.*"
        );
        assert!(
            Jobs::parse("ingester/extract_gmail")
                .unwrap()
                .consumer()
                .starts_with("lorch-workers-ingester-extract_gmail-")
        );
        assert_ne!(
            Jobs::parse("x-y/z").unwrap().consumer(),
            Jobs::parse("x/y-z").unwrap().consumer()
        );
        assert_eq!(shown("nats://u:secret@h:4222"), "nats://u:***@h:4222");
        assert_eq!(
            shown("u:secret@h:4222,nats://tok@g"),
            "u:***@h:4222,nats://***@g"
        );
        assert_eq!(shown("nats://h:4222"), "nats://h:4222");
        assert_eq!(
            credentials("nats://alice:a%2Fb+c@h"),
            (Some("alice".into()), Some("a/b+c".into()))
        );
        assert!(Jobs::parse("ingester").is_err() && Jobs::parse("a.b/*").is_err());
        assert_eq!(event_subject("job.started"), "lorch.events.job.started");
        assert_eq!(event_subject("a..b c*"), "lorch.events.a._.b_c_");
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
    }
}
