//! What the queue holds, as `lorch queue` shows it: the dead letters and the workers'
//! heartbeats.

use futures_util::StreamExt as _;

use std::collections::BTreeMap;

use super::worker::Activity;
use crate::fleet::{self, Connection};

/// A dead letter, as `queue status` and `queue dead` show it.
#[derive(serde::Serialize)]
pub struct Dead {
    pub sequence: u64,
    pub request_id: Option<String>,
    pub job: String,
    pub deliveries: Option<String>,
    pub reason: Option<String>,
    pub dead_at: String,
}

/// Every dead letter, oldest first.
pub async fn dead_letters(connection: &Connection) -> anyhow::Result<Vec<Dead>> {
    let mut stream = connection.dead_stream().await?;
    let state = stream.info().await?.state.clone();
    let mut dead = Vec::new();
    if state.messages == 0 {
        return Ok(dead);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue; // deleted
        };
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
        let job = message
            .subject
            .strip_prefix("lorch.dead.")
            .unwrap_or(&message.subject)
            .replacen('.', "/", 1);
        dead.push(Dead {
            sequence,
            request_id: header(fleet::REQUEST_HEADER),
            job,
            deliveries: header(fleet::DELIVERIES_HEADER),
            reason: header(fleet::REASON_HEADER),
            dead_at: chrono::DateTime::from_timestamp_nanos(
                i64::try_from(message.time.unix_timestamp_nanos()).unwrap_or_default(),
            )
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
    }
    Ok(dead)
}

/// Every live worker's last heartbeat.
async fn workers(connection: &Connection) -> anyhow::Result<Vec<Activity>> {
    let stream = connection.workers_stream().await?;
    let subjects = stream.info_with_subjects("lorch.workers.>").await?;
    futures_util::pin_mut!(subjects);
    let mut workers = Vec::new();
    while let Some(entry) = subjects.next().await {
        let (subject, _) = entry?;
        if let Ok(message) = stream.get_last_raw_message_by_subject(&subject).await
            && let Ok(activity) = serde_json::from_slice::<Activity>(&message.payload)
        {
            workers.push(activity);
        }
    }
    workers.sort_by(|a, b| a.worker.cmp(&b.worker));
    Ok(workers)
}

/// What the queue holds now (`lorch queue status --json`, docs/fleet.md).
#[derive(serde::Serialize)]
pub struct QueueStatus {
    pub server: String,
    /// What the server cannot keep (docs/fleet.md, "Durability").
    pub warnings: Vec<String>,
    /// Requests waiting or in progress, by job.
    pub queued: BTreeMap<String, usize>,
    pub in_progress: u64,
    pub redelivered: u64,
    pub workers: Vec<Activity>,
    pub dead: Vec<Dead>,
}

/// The queue as the server has it: the requests per job, the consumers' counts, the dead
/// letters and the workers' heartbeats.
pub fn status(connection: &Connection) -> anyhow::Result<QueueStatus> {
    connection.runtime.block_on(async {
        let stream = connection.jobs_stream().await?;
        let subjects = stream.info_with_subjects("lorch.jobs.>").await?;
        // A request stays in the stream until it is acknowledged: waiting or in progress.
        let mut queued = BTreeMap::new();
        futures_util::pin_mut!(subjects);
        while let Some(entry) = subjects.next().await {
            let (subject, count) = entry?;
            let job = subject
                .strip_prefix("lorch.jobs.")
                .unwrap_or(&subject)
                .replacen('.', "/", 1);
            queued.insert(job, count);
        }
        // Every group of workers' consumer (`worker --jobs`).
        let (mut in_progress, mut redelivered) = (0, 0);
        let consumers = stream.consumers();
        futures_util::pin_mut!(consumers);
        while let Some(info) = consumers.next().await {
            let info = info?;
            in_progress += info.num_ack_pending;
            redelivered += info.num_redelivered;
        }
        let version = connection.jetstream.client().server_info().version;
        let storage = stream.cached_info().config.storage;
        Ok(QueueStatus {
            server: connection.url.clone(),
            warnings: fleet::durability_warnings(&version, storage),
            queued,
            in_progress: in_progress as u64,
            redelivered: redelivered as u64,
            workers: workers(connection).await?,
            dead: dead_letters(connection).await?,
        })
    })
}
