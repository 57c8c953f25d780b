//! The fleet-wide lock of a job and account (docs/fleet.md): a message in the stream
//! `LORCH_LOCKS`, taken only when there is none, renewed while the run goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{AckKind, Message, stream};

use super::publish::publish_after;
use super::worker::Shared;
use crate::fleet::{self, Request};
use crate::output::stderr;

/// How long a worker waits for a job lock another worker holds before it puts the request back
/// at the end of the queue, for any worker to take again.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// A job and account's fleet-wide lock, renewed while held (docs/fleet.md).
pub struct FleetLock {
    pub locks: stream::Stream,
    /// The sequence of the lock's message: the newest renewal's.
    pub sequence: Arc<AtomicU64>,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub renewing: tokio::task::JoinHandle<()>,
}

pub enum Taken {
    /// Held; `None` when the fleet has no lock stream.
    Held(Option<Box<FleetLock>>),
    /// Held by an earlier delivery of this same request, still running.
    Ours,
    /// Held by another worker, said as its holder.
    Busy(String),
}

/// Who holds a lock: the lock message's payload.
#[derive(serde::Serialize, serde::Deserialize)]
struct Holder {
    pub request_id: String,
    pub host: String,
    pub pid: u32,
}

impl FleetLock {
    /// Takes the request's job lock, waiting up to [`LOCK_WAIT`] for another worker's run.
    pub async fn take(shared: &Shared, message: &Message, request: &Request) -> Taken {
        let Some(locks) = &shared.locks else {
            return Taken::Held(None);
        };
        let subject = fleet::lock_key(&request.package, &request.job, request.account.as_deref());
        let holder = serde_json::to_vec(&Holder {
            request_id: request.request_id.clone(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
        })
        .expect("JSON");
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match publish_after(&shared.jetstream, &subject, &holder, 0).await {
                Ok(sequence) => {
                    let lock = FleetLock::renewed(shared, locks, subject, holder, sequence);
                    return Taken::Held(Some(Box::new(lock)));
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {}
                Err(e) => {
                    stderr!(
                        "warning: cannot take the fleet-wide lock {subject} ({e}); request {} runs with this machine's lock only",
                        request.request_id
                    );
                    return Taken::Held(None);
                }
            }
            let held = locks.get_last_raw_message_by_subject(&subject).await;
            let held = held
                .ok()
                .and_then(|m| serde_json::from_slice::<Holder>(&m.payload).ok());
            if held
                .as_ref()
                .is_some_and(|h| h.request_id == request.request_id)
            {
                return Taken::Ours;
            }
            if tokio::time::Instant::now() >= deadline {
                let holder = held.map_or_else(
                    || "?".to_owned(),
                    |h| format!("request {} on {}, pid {}", h.request_id, h.host, h.pid),
                );
                return Taken::Busy(holder);
            }
            let _ = message.ack_with(AckKind::Progress).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Renews the lock every third of its lifetime while the run goes on. A renewal that finds
    /// the lock gone (the server was away longer than its lifetime) takes it again if it is
    /// free, and says so loudly if another worker took it.
    fn renewed(
        shared: &Shared,
        locks: &stream::Stream,
        subject: String,
        holder: Vec<u8>,
        sequence: u64,
    ) -> FleetLock {
        let sequence = Arc::new(AtomicU64::new(sequence));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let renewing = {
            let (jetstream, sequence) = (shared.jetstream.clone(), Arc::clone(&sequence));
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        () = tokio::time::sleep(fleet::LOCK_TTL / 3) => {}
                    }
                    let last = sequence.load(Ordering::SeqCst);
                    let renewed = match publish_after(&jetstream, &subject, &holder, last).await {
                        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                            publish_after(&jetstream, &subject, &holder, 0).await
                        }
                        renewed => renewed,
                    };
                    match renewed {
                        Ok(next) => sequence.store(next, Ordering::SeqCst),
                        Err(e) => stderr!(
                            "warning: cannot renew the fleet-wide lock {subject} ({e}): another worker may run the same job and account meanwhile"
                        ),
                    }
                }
            })
        };
        FleetLock {
            locks: locks.clone(),
            sequence,
            stop,
            renewing,
        }
    }

    /// Lets go, once no renewal is under way: deletes its message (gone already when it
    /// expired and another worker took it).
    pub async fn release(self) {
        let _ = self.stop.send(());
        let _ = self.renewing.await;
        let _ = self
            .locks
            .delete_message(self.sequence.load(Ordering::SeqCst))
            .await;
    }
}
