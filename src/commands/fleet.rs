//! `lorch submit`, `lorch worker`, `lorch queue` and `lorch events follow` (docs/fleet.md):
//! their arguments to calls into `fleet`, and what they print.

use std::time::Duration;

use async_nats::HeaderMap;
use futures_util::StreamExt as _;
use serde_json::json;

use crate::error::{Error, Exit, Result};
use crate::fleet::publish::publish_once;
use crate::fleet::queue::dead_letters;
use crate::fleet::submit::request;
use crate::fleet::{self, Request};
use crate::output::{self, stderr};
use crate::plugins::Catalog;
use crate::views::queue::dead_table;

fn unreachable(e: anyhow::Error) -> Error {
    Error::Environment(e)
}

pub use crate::fleet::submit::Submit;
pub use crate::fleet::worker::{Work, worker};

pub fn submit(catalog: &Catalog, submit: &Submit) -> Result<Exit> {
    if let Some(id) = submit.request_id
        && (id.is_empty() || id.len() > 256 || id.chars().any(char::is_control))
    {
        return Err(Error::Usage(format!(
            "invalid --request-id {id:?}: expected 1 to 256 characters, no control characters"
        )));
    }
    let request = request(catalog, submit)?;
    let connection = fleet::connect(submit.nats).map_err(unreachable)?;
    let ack = connection.runtime.block_on(async {
        connection.jobs_stream().await?;
        let payload = serde_json::to_vec(&request)?;
        let (subject, id) = (request.subject(), &request.request_id);
        publish_once(
            &connection.jetstream,
            subject,
            id,
            HeaderMap::new(),
            payload,
        )
        .await
    });
    let ack = ack
        .map_err(|e| e.context(format!("cannot submit to {}", connection.url)))
        .map_err(unreachable)?;
    if submit.json {
        output::print_json(&json!({
            "request_id": request.request_id,
            "submitted_at": request.submitted_at,
            "subject": request.subject(),
            "stream_sequence": ack.sequence,
            "duplicate": ack.duplicate,
        }))?;
    } else if !submit.quiet {
        output::print(&format!("{}\n", request.request_id))?;
        if ack.duplicate {
            stderr!(
                "request {} was already submitted: stored once",
                request.request_id
            );
        }
    }
    Ok(Exit::Success)
}

/// `lorch queue status [--json]`: requests queued per job, in progress, redelivered, the
/// workers and what they run, and the dead letters.
pub fn status(nats: Option<&str>, json: bool) -> Result<Exit> {
    let connection = fleet::connect(nats).map_err(unreachable)?;
    let status = fleet::queue::status(&connection).map_err(unreachable)?;
    if json {
        output::print_json(&status)?;
        return Ok(Exit::Success);
    }
    for warning in &status.warnings {
        stderr!("warning: {warning}");
    }
    output::print(&crate::views::queue::status_text(&status))?;
    Ok(Exit::Success)
}

/// `lorch queue dead [--retry ID | --drop ID] [--json]`.
pub fn dead(
    nats: Option<&str>,
    retry: Option<&str>,
    drop: Option<&str>,
    json: bool,
) -> Result<Exit> {
    let connection = fleet::connect(nats).map_err(unreachable)?;
    let Some(id) = retry.or(drop) else {
        let dead = connection
            .runtime
            .block_on(dead_letters(&connection))
            .map_err(unreachable)?;
        match json {
            true => output::print_json(&json!({ "dead": dead }))?,
            false if dead.is_empty() => stderr!("no dead letters on {}", connection.url),
            false => output::print(&dead_table(&dead))?,
        }
        return Ok(Exit::Success);
    };
    let done = connection.runtime.block_on(async {
        let dead = dead_letters(&connection).await?;
        let Some(letter) = dead
            .iter()
            .find(|d| d.request_id.as_deref() == Some(id) || format!("#{}", d.sequence) == id)
        else {
            return Ok(None);
        };
        let stream = connection.dead_stream().await?;
        if retry.is_some() {
            let message = stream.get_raw_message(letter.sequence).await?;
            let request: Request = serde_json::from_slice(&message.payload).map_err(|_| {
                anyhow::anyhow!(
                    "dead letter {id} is not a lorch run request: it can only be dropped (--drop)"
                )
            })?;
            connection.jobs_stream().await?;
            let retry_id = format!("{}.retry.{}", request.request_id, letter.sequence);
            let payload = message.payload.to_vec();
            publish_once(
                &connection.jetstream,
                request.subject(),
                &retry_id,
                HeaderMap::new(),
                payload,
            )
            .await?;
        }
        stream.delete_message(letter.sequence).await?;
        anyhow::Ok(Some(letter.job.clone()))
    });
    match done.map_err(unreachable)? {
        None => Err(Error::Usage(format!(
            "no dead letter {id} on {}; `lorch queue dead` lists them",
            connection.url
        ))),
        Some(job) => {
            let what = if retry.is_some() {
                "queued again"
            } else {
                "dropped"
            };
            output::print(&format!("{id} ({job}): {what}\n"))?;
            Ok(Exit::Success)
        }
    }
}

/// `lorch events follow [--all] [--json]`: the fleet's events as workers publish them, one a
/// line, until Ctrl-C.
pub fn follow(nats: Option<&str>, all: bool, json: bool) -> Result<Exit> {
    let connection = fleet::connect(nats).map_err(unreachable)?;
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    let followed = connection.runtime.block_on(async {
        let stream = connection.events_stream().await?;
        let mut out = output::Stream::new(json);
        let mut from = match all {
            true => DeliverPolicy::All,
            false => DeliverPolicy::New,
        };
        // A server restart ends the consumer: a new one goes on after the last event printed.
        loop {
            let consumer = stream.create_consumer(OrderedConfig {
                deliver_policy: from,
                ..Default::default()
            });
            let messages = match consumer.await {
                Ok(consumer) => consumer.messages().await.map_err(anyhow::Error::new),
                Err(e) => Err(anyhow::Error::new(e)),
            };
            let Ok(mut messages) = messages else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            while let Some(Ok(message)) = messages.next().await {
                if let Ok(info) = message.info() {
                    from = DeliverPolicy::ByStartSequence {
                        start_sequence: info.stream_sequence + 1,
                    };
                }
                let Ok(event) = serde_json::from_slice::<crate::events::Event>(&message.payload)
                else {
                    continue;
                };
                let line = match json {
                    true => format!("{}\n", serde_json::to_string(&event)?),
                    false => crate::views::events::format_event(&event, 14),
                };
                if !out.write(&line)? || !out.flush()? {
                    return anyhow::Ok(());
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    followed.map_err(unreachable)?;
    Ok(Exit::Success)
}
