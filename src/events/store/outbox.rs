//! The outbox side of the store: which queued events still wait for BigQuery, and what became
//! of the others. Delivery itself lives in [`crate::bigquery`]; this is only bookkeeping, each
//! change one transaction.

use anyhow::{Context as _, Result};
use chrono::Utc;
use rusqlite::{Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::{Event, LocalStore, event_from_row, timestamp};

/// A queued event not delivered yet.
#[derive(Debug)]
pub struct Pending {
    pub seq: i64,
    /// The run's own table (`--events-table`), if it chose one.
    pub target: Option<String>,
    pub event: Event,
}

/// An event BigQuery refused, with its reason; kept, and not retried unless asked.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    pub event_id: String,
    pub event_type: String,
    pub correlation_id: String,
    pub created_at: String,
    pub target: Option<String>,
    pub reason: String,
}

/// Counts of the outbox, for `lorch events status`.
#[derive(Debug, Default, Serialize)]
pub struct DeliveryStatus {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    /// `created_at` of the oldest pending event.
    pub oldest_pending: Option<String>,
    /// The last error a pending event met.
    pub last_error: Option<String>,
    /// Objects waiting for BigQuery (one per key and table, however often it was upserted).
    pub objects_pending: u64,
    /// The last error a pending object met.
    pub objects_last_error: Option<String>,
}

impl LocalStore {
    /// Up to `limit` pending events with `seq` above `after`, oldest first.
    pub fn pending(&self, after: i64, limit: usize) -> Result<Vec<Pending>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT o.seq, o.target, e.*
             FROM outbox o JOIN events e ON e.seq = o.seq
             WHERE o.state = 'pending' AND o.seq > ?1
             ORDER BY o.seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |row| {
            Ok(Pending {
                seq: row.get(0)?,
                target: row.get(1)?,
                event: event_from_row(row)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| format!("cannot read the outbox of {}", self.path.display()))
    }

    /// The newest `seq` in the store: events recorded later have a larger one.
    pub fn last_seq(&self) -> Result<i64> {
        Ok(super::max_seq(&self.conn())?)
    }

    /// Counts a try for events about to be sent. Written before the request, so that a store
    /// that cannot record anything (a full disk) stops delivery before BigQuery accepts rows
    /// whose acceptance could not be recorded, which would send them again, and again.
    pub fn note_sending(&self, seqs: &[i64]) -> Result<()> {
        self.outbox_write(|tx, now| {
            let mut note = tx.prepare_cached(
                "UPDATE outbox SET tries = tries + 1, updated_at = ?2
                 WHERE state = 'pending' AND seq = ?1",
            )?;
            for seq in seqs {
                note.execute(params![seq, now])?;
            }
            Ok(())
        })
    }

    /// Marks pending events delivered (BigQuery accepted them) and others dead (BigQuery
    /// refused them, with its reason), in one transaction.
    pub fn settle(&self, delivered: &[i64], dead: &[(i64, String)]) -> Result<()> {
        self.outbox_write(|tx, now| {
            let mut ok = tx.prepare_cached(
                "UPDATE outbox SET state = 'delivered', error = NULL, updated_at = ?2
                 WHERE state = 'pending' AND seq = ?1",
            )?;
            for seq in delivered {
                ok.execute(params![seq, now])?;
            }
            let mut refused = tx.prepare_cached(
                "UPDATE outbox SET state = 'dead', error = ?2, updated_at = ?3
                 WHERE state = 'pending' AND seq = ?1",
            )?;
            for (seq, reason) in dead {
                refused.execute(params![seq, reason, now])?;
            }
            Ok(())
        })
    }

    /// Notes an attempt that failed for these still-pending events.
    pub fn note_failure(&self, seqs: &[i64], error: &str) -> Result<()> {
        self.outbox_write(|tx, now| {
            let mut note = tx.prepare_cached(
                "UPDATE outbox SET error = ?2, updated_at = ?3
                 WHERE state = 'pending' AND seq = ?1",
            )?;
            for seq in seqs {
                note.execute(params![seq, error, now])?;
            }
            Ok(())
        })
    }

    /// Puts every dead letter back in the queue (after the table was fixed); returns how many.
    pub fn requeue_dead(&self) -> Result<usize> {
        let mut count = 0;
        self.outbox_write(|tx, now| {
            count = tx.execute(
                "UPDATE outbox SET state = 'pending', updated_at = ?1 WHERE state = 'dead'",
                [now],
            )?;
            Ok(())
        })?;
        Ok(count)
    }

    pub(super) fn outbox_write(
        &self,
        mut write: impl FnMut(&Transaction<'_>, &str) -> rusqlite::Result<()>,
    ) -> Result<()> {
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            write(&tx, &timestamp(&Utc::now()))?;
            Ok(tx.commit()?)
        })
        .with_context(|| format!("cannot update the outbox of {}", self.path.display()))
    }

    /// Pending, delivered and dead counts.
    pub fn delivery_status(&self) -> Result<DeliveryStatus> {
        let conn = self.conn();
        let mut status = DeliveryStatus::default();
        let mut counts = conn.prepare("SELECT state, count(*) FROM outbox GROUP BY state")?;
        for row in counts.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })? {
            let (state, n) = row?;
            match state.as_str() {
                "pending" => status.pending = n,
                "delivered" => status.delivered = n,
                _ => status.dead += n,
            }
        }
        (status.oldest_pending, status.last_error) = conn.query_row(
            "SELECT (SELECT e.created_at FROM outbox o JOIN events e ON e.seq = o.seq
                     WHERE o.state = 'pending' ORDER BY o.seq LIMIT 1),
                    (SELECT error FROM outbox WHERE state = 'pending' AND error IS NOT NULL
                     ORDER BY updated_at DESC LIMIT 1)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        (status.objects_pending, status.objects_last_error) = conn.query_row(
            "SELECT (SELECT count(*) FROM object_outbox),
                    (SELECT error FROM object_outbox WHERE error IS NOT NULL
                     ORDER BY updated_at DESC LIMIT 1)",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )?;
        Ok(status)
    }

    /// The dead letters, newest last; `since` keeps only those with `seq` above it.
    pub fn dead_letters(&self, since: i64) -> Result<Vec<DeadLetter>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT e.event_id, e.event_type, e.correlation_id, e.created_at, o.target, o.error
             FROM outbox o JOIN events e ON e.seq = o.seq
             WHERE o.state = 'dead' AND o.seq > ?1 ORDER BY o.seq",
        )?;
        let rows = stmt.query_map([since], |r| {
            Ok(DeadLetter {
                event_id: r.get(0)?,
                event_type: r.get(1)?,
                correlation_id: r.get(2)?,
                created_at: r.get(3)?,
                target: r.get(4)?,
                reason: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Outbox;
    use super::*;
    use crate::events::EventSink;

    #[test]
    fn queued_events_move_from_pending_to_delivered_or_dead() {
        let dir = tempfile::tempdir().unwrap();
        let plain = LocalStore::open_in(dir.path()).unwrap();
        plain
            .record(&Event::new("not.queued", "lorch", "r0"))
            .unwrap();
        let mark = plain.last_seq().unwrap();
        let store = LocalStore::open_in(dir.path())
            .unwrap()
            .queue_for_delivery(Outbox {
                table: Some("test_events".into()),
            });
        let events: Vec<Event> = (0..3)
            .map(|i| Event::new(&format!("e{i}"), "p/j", "r1"))
            .collect();
        store.record_batch(&events).unwrap();

        let pending = store.pending(0, 10).unwrap();
        assert_eq!(
            pending
                .iter()
                .map(|p| p.event.event_type.as_str())
                .collect::<Vec<_>>(),
            ["e0", "e1", "e2"],
            "only events recorded with the outbox on are queued, in order"
        );
        assert!(
            pending
                .iter()
                .all(|p| p.target.as_deref() == Some("test_events"))
        );
        assert_eq!(store.pending(pending[1].seq, 10).unwrap().len(), 1);

        store
            .note_failure(&[pending[2].seq], "connection refused")
            .unwrap();
        store
            .settle(
                &[pending[0].seq],
                &[(pending[1].seq, "invalid: bad row".into())],
            )
            .unwrap();
        let status = store.delivery_status().unwrap();
        assert_eq!((status.pending, status.delivered, status.dead), (1, 1, 1));
        assert_eq!(status.last_error.as_deref(), Some("connection refused"));
        assert_eq!(
            status.oldest_pending.as_deref(),
            Some(timestamp(&events[2].created_at).as_str())
        );
        let dead = store.dead_letters(mark).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].event_type.as_str(), dead[0].reason.as_str()),
            ("e1", "invalid: bad row")
        );

        assert_eq!(store.requeue_dead().unwrap(), 1);
        assert_eq!(store.pending(0, 10).unwrap().len(), 2);
    }

    #[test]
    fn an_outbox_in_the_earlier_layout_keeps_every_row_through_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let queued = || {
            LocalStore::open_in(dir.path())
                .unwrap()
                .queue_for_delivery(Outbox { table: None })
        };
        {
            let store = queued();
            let events: Vec<Event> = (0..3)
                .map(|i| Event::new(&format!("e{i}"), "p/j", "r1"))
                .collect();
            store.record_batch(&events).unwrap();
            let pending = store.pending(0, 10).unwrap();
            store
                .settle(&[pending[0].seq], &[(pending[1].seq, "invalid".into())])
                .unwrap();
            // Back to the earlier layout: keyed by seq, with an index by state.
            store
                .conn()
                .execute_batch(
                    "CREATE TABLE earlier (seq INTEGER PRIMARY KEY, target TEXT,
                         state TEXT NOT NULL DEFAULT 'pending', tries INTEGER NOT NULL DEFAULT 0,
                         error TEXT, updated_at TEXT);
                     INSERT INTO earlier SELECT seq, target, state, tries, error, updated_at
                         FROM outbox;
                     DROP TABLE outbox;
                     ALTER TABLE earlier RENAME TO outbox;
                     CREATE INDEX outbox_by_state ON outbox (state, seq);
                     PRAGMA user_version = 0;",
                )
                .unwrap();
        }
        let store = queued();
        let status = store.delivery_status().unwrap();
        assert_eq!((status.pending, status.delivered, status.dead), (1, 1, 1));
        assert_eq!(store.pending(0, 10).unwrap()[0].event.event_type, "e2");
        assert_eq!(store.dead_letters(0).unwrap()[0].reason, "invalid");
        let outdated: i64 = store
            .conn()
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('outbox_by_state', 'outbox_before')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(outdated, 0);
        // And it goes on queueing.
        store.record(&Event::new("e3", "p/j", "r2")).unwrap();
        assert_eq!(store.pending(0, 10).unwrap().len(), 2);
    }
}
