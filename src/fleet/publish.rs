//! Telling the server what became of a request: published once, acked through a server
//! restart, put back at the end of the queue, or sent to the dead letters.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{AckKind, Message};

use super::lock::LOCK_WAIT;
use super::worker::Shared;
use crate::fleet::{self, Request};
use crate::output::stderr;

/// Publishes `holder` on `subject` if its last message is `after` (0: it has none); the new
/// message's sequence.
pub async fn publish_after(
    jetstream: &async_nats::jetstream::Context,
    subject: &str,
    holder: &[u8],
    after: u64,
) -> std::result::Result<u64, PublishError> {
    let message = PublishMessage::build()
        .payload(holder.to_vec().into())
        .expected_last_subject_sequence(after);
    let ack = jetstream
        .send_publish(subject.to_owned(), message)
        .await?
        .await?;
    Ok(ack.sequence)
}

/// Publishes `payload` on `subject` with these headers and `id` as its `Nats-Msg-Id`, and
/// waits for the server to store it (once: a repeated id within two minutes is stored once).
pub async fn publish_once(
    jetstream: &async_nats::jetstream::Context,
    subject: String,
    id: &str,
    mut headers: HeaderMap,
    payload: Vec<u8>,
) -> anyhow::Result<async_nats::jetstream::publish::PublishAck> {
    headers.insert("Nats-Msg-Id", id);
    Ok(jetstream
        .publish_with_headers(subject, headers, payload.into())
        .await?
        .await?)
}

/// Puts the request back at the end of the queue (a new message: the wait does not count as a
/// delivery), then acks this one.
pub async fn requeue(shared: &Shared, message: &Message, request: &Request, why: &str) {
    let sequence = message.info().map_or(0, |i| i.stream_sequence);
    let id = format!("{}.requeued.{sequence}", request.request_id);
    let payload = message.payload.to_vec();
    let published = publish_once(
        &shared.jetstream,
        request.subject(),
        &id,
        HeaderMap::new(),
        payload,
    );
    match published.await {
        Ok(_) => {
            stderr!(
                "- {}/{} request {}: {why}; queued again",
                request.package,
                request.job,
                request.request_id
            );
            settle(message, AckKind::Ack, &request.request_id).await;
        }
        Err(e) => {
            stderr!(
                "warning: cannot queue request {} again ({e:#}); it is delivered again later",
                request.request_id
            );
            let _ = message.ack_with(AckKind::Nak(Some(LOCK_WAIT))).await;
        }
    }
}

/// How long a worker keeps trying to tell the server a request is done, through a server
/// restart: a request whose ack is lost runs again once its ack wait is over.
const SETTLE_FOR: Duration = Duration::from_secs(60);

/// Acks (or terminates) the message and waits for the server to confirm it, trying again while
/// the server is unreachable; said on stderr when it cannot.
pub async fn settle(message: &Message, kind: AckKind, request_id: &str) {
    let deadline = tokio::time::Instant::now() + SETTLE_FOR;
    let mut attempt = 1;
    loop {
        match message.double_ack_with(kind).await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                stderr!(
                    "warning: the server did not confirm that request {request_id} is done ({e}); it may run again"
                );
                return;
            }
            Err(_) => {
                tokio::time::sleep(crate::backoff::delay(Duration::from_millis(200), attempt))
                    .await;
                attempt += 1;
            }
        }
    }
}

/// Terminates the message and publishes it to the dead letters with the reason.
pub async fn dead_letter(
    shared: &Shared,
    message: &Message,
    request: Option<&Request>,
    delivered: i64,
    reason: &str,
) {
    let subject = request.map_or_else(
        || "lorch.dead.unknown.unknown".to_owned(),
        Request::dead_subject,
    );
    let mut headers = HeaderMap::new();
    headers.insert(fleet::REASON_HEADER, reason);
    headers.insert(fleet::DELIVERIES_HEADER, delivered.to_string().as_str());
    // Its message's sequence: the same request dead again (after `queue dead --retry`) is a new
    // dead letter, not a duplicate.
    let sequence = message.info().map_or(0, |i| i.stream_sequence);
    let request_id = request.map_or("", |r| r.request_id.as_str());
    if request.is_some() {
        headers.insert(fleet::REQUEST_HEADER, request_id);
    }
    let id = format!("{request_id}.dead.{sequence}");
    let payload = message.payload.to_vec();
    match publish_once(&shared.jetstream, subject, &id, headers, payload).await {
        // Only once it is a dead letter does the request leave the queue.
        Ok(_) => settle(message, AckKind::Term, request_id).await,
        Err(e) => {
            stderr!("warning: cannot publish a dead letter ({e:#}); the request stays queued");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
        }
    }
}
