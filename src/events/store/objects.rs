//! The objects side of the store (docs/objects.md): one row per `idem_key`, upserted in the
//! transaction that stores the run's events, and the object outbox that BigQuery delivery reads.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, Transaction, params};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{LocalStore, Outbox, timestamp};
use crate::events::Object;
use crate::lifecycle::ObjectCounts;

/// Which objects `objects` returns.
#[derive(Debug, Default)]
pub struct ObjectFilter {
    pub object_type: Option<String>,
    /// Only objects of this connection (a run's `--account`).
    pub connection: Option<String>,
    /// Only objects seen (upserted) at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only the N most recently seen (still returned oldest first).
    pub limit: Option<usize>,
}

/// An object waiting for BigQuery, as it is now.
#[derive(Debug)]
pub struct PendingObject {
    pub seq: i64,
    /// Which write of the key this is: delivering it settles the outbox row only if no upsert
    /// came since.
    pub version: i64,
    /// The run's own events table (`--events-table`), if it chose one.
    pub target: Option<String>,
    pub object: Object,
}

/// The number of objects of one type, for `lorch objects count`.
#[derive(Debug, Serialize)]
pub struct TypeCount {
    pub object_type: String,
    pub count: u64,
}

/// Upserts `objects` in the transaction `tx`, queueing each for BigQuery when `outbox` says
/// so, and counts what happened. A key given twice is counted twice: inserted, then updated or
/// unchanged.
pub(super) fn upsert(
    tx: &Transaction<'_>,
    objects: &[Object],
    outbox: Option<&Outbox>,
) -> rusqlite::Result<ObjectCounts> {
    let mut counts = ObjectCounts::default();
    let mut stored = tx.prepare_cached(
        "SELECT source_system IS ?2 AND connection_name IS ?3 AND object_type IS ?4
                AND schema_ref IS ?5 AND external_id IS ?6 AND payload IS ?7
         FROM objects WHERE idem_key = ?1",
    )?;
    let mut write = tx.prepare_cached(
        "INSERT INTO objects (idem_key, source_system, connection_name, object_type, schema_ref,
             external_id, payload, first_seen, last_seen, correlation_id, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1)
         ON CONFLICT (idem_key) DO UPDATE SET source_system = excluded.source_system,
             connection_name = excluded.connection_name, object_type = excluded.object_type,
             schema_ref = excluded.schema_ref, external_id = excluded.external_id,
             payload = excluded.payload, last_seen = excluded.last_seen,
             correlation_id = excluded.correlation_id, version = version + 1",
    )?;
    // The object as this upsert left it (its first_seen kept), for the run's table.
    let mut queue = tx.prepare_cached(&format!(
        "INSERT INTO object_outbox (target, version, {COLUMNS})
         SELECT ?2, version, {COLUMNS} FROM objects WHERE idem_key = ?1
         ON CONFLICT (target, idem_key) DO UPDATE SET version = excluded.version,
             source_system = excluded.source_system, connection_name = excluded.connection_name,
             object_type = excluded.object_type, schema_ref = excluded.schema_ref,
             external_id = excluded.external_id, payload = excluded.payload,
             first_seen = excluded.first_seen, last_seen = excluded.last_seen,
             correlation_id = excluded.correlation_id"
    ))?;
    for o in objects {
        // ?1 to ?7 of both statements: the key and the columns the job gives.
        let (first_seen, last_seen) = (timestamp(&o.first_seen), timestamp(&o.last_seen));
        let columns = params![
            o.idem_key,
            o.source_system,
            o.connection_name,
            o.object_type,
            o.schema_ref,
            o.external_id,
            o.payload.get(),
            first_seen,
            last_seen,
            o.correlation_id,
        ];
        let same: Option<bool> = stored.query_row(&columns[..7], |r| r.get(0)).optional()?;
        match same {
            None => counts.inserted += 1,
            Some(true) => counts.unchanged += 1,
            Some(false) => counts.updated += 1,
        }
        write.execute(columns)?;
        if let Some(outbox) = outbox {
            let target = outbox.table.as_deref().unwrap_or_default();
            queue.execute(params![o.idem_key, target])?;
        }
    }
    Ok(counts)
}

const COLUMNS: &str = "idem_key, source_system, connection_name, object_type, schema_ref,
    external_id, payload, first_seen, last_seen, correlation_id";

fn object_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<Object> {
    let time = |i: usize| -> rusqlite::Result<DateTime<Utc>> {
        Ok(row.get::<_, String>(at + i)?.parse().unwrap_or_default())
    };
    let payload: String = row.get(at + 6)?;
    Ok(Object {
        idem_key: row.get(at)?,
        source_system: row.get(at + 1)?,
        connection_name: row.get(at + 2)?,
        object_type: row.get(at + 3)?,
        schema_ref: row.get(at + 4)?,
        external_id: row.get(at + 5)?,
        payload: RawValue::from_string(payload)
            .unwrap_or_else(|_| RawValue::from_string("null".to_owned()).expect("null is JSON")),
        first_seen: time(7)?,
        last_seen: time(8)?,
        correlation_id: row.get(at + 9)?,
    })
}

impl LocalStore {
    /// The objects of `filter`, least recently seen first.
    pub fn objects(&self, filter: &ObjectFilter) -> Result<Vec<Object>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT * FROM (SELECT {COLUMNS} FROM objects
                 WHERE (?1 IS NULL OR object_type = ?1) AND (?2 IS NULL OR connection_name = ?2)
                   AND (?3 IS NULL OR last_seen >= ?3)
                 ORDER BY last_seen DESC, idem_key DESC LIMIT ?4)
             ORDER BY last_seen, idem_key"
        ))?;
        let limit = filter.limit.map_or(-1, |n| n.min(i64::MAX as usize) as i64);
        let since = filter.since.as_ref().map(timestamp);
        let rows = stmt.query_map(
            params![filter.object_type, filter.connection, since, limit],
            |row| object_from_row(row, 0),
        )?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| format!("cannot read the objects of {}", self.path.display()))
    }

    /// The objects whose last write was the run `run_id`'s, by key.
    pub fn objects_of_run(&self, run_id: &str) -> Result<Vec<Object>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM objects WHERE correlation_id = ?1 ORDER BY idem_key"
        ))?;
        let rows = stmt.query_map([run_id], |row| object_from_row(row, 0))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| format!("cannot read the objects of {}", self.path.display()))
    }

    /// The object stored under `idem_key`.
    pub fn object(&self, idem_key: &str) -> Result<Option<Object>> {
        let conn = self.conn();
        let found = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM objects WHERE idem_key = ?1"),
                [idem_key],
                |row| object_from_row(row, 0),
            )
            .optional();
        found.with_context(|| format!("cannot read the objects of {}", self.path.display()))
    }

    /// How many objects of each type, by type.
    pub fn count_objects(&self) -> Result<Vec<TypeCount>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT object_type, count(*) FROM objects GROUP BY object_type ORDER BY object_type",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TypeCount {
                object_type: r.get(0)?,
                count: r.get::<_, i64>(1)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Up to `limit` objects waiting for BigQuery, in the order they were first queued.
    pub fn pending_objects(&self, limit: usize) -> Result<Vec<PendingObject>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT seq, version, target, {COLUMNS} FROM object_outbox ORDER BY seq LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], |row| {
            Ok(PendingObject {
                seq: row.get(0)?,
                version: row.get(1)?,
                target: row
                    .get::<_, String>(2)
                    .map(|t| Some(t).filter(|t| !t.is_empty()))?,
                object: object_from_row(row, 3)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| format!("cannot read the outbox of {}", self.path.display()))
    }

    /// Counts a try for objects about to be sent (see [`LocalStore::note_sending`]).
    pub fn note_sending_objects(&self, seqs: &[i64]) -> Result<()> {
        self.outbox_write(|tx, now| {
            let mut note = tx.prepare_cached(
                "UPDATE object_outbox SET tries = tries + 1, updated_at = ?2 WHERE seq = ?1",
            )?;
            for seq in seqs {
                note.execute(params![seq, now])?;
            }
            Ok(())
        })
    }

    /// Takes delivered objects out of the outbox: each `(seq, version)` only if no upsert of
    /// its key came while it was sent (that newer version is sent next).
    pub fn settle_objects(&self, delivered: &[(i64, i64)]) -> Result<()> {
        self.outbox_write(|tx, _| {
            let mut done =
                tx.prepare_cached("DELETE FROM object_outbox WHERE seq = ?1 AND version = ?2")?;
            for (seq, version) in delivered {
                done.execute(params![seq, version])?;
            }
            Ok(())
        })
    }

    /// Notes a delivery attempt that failed for these objects.
    pub fn note_object_failure(&self, seqs: &[i64], error: &str) -> Result<()> {
        self.outbox_write(|tx, now| {
            let mut note = tx.prepare_cached(
                "UPDATE object_outbox SET error = ?2, updated_at = ?3 WHERE seq = ?1",
            )?;
            for seq in seqs {
                note.execute(params![seq, error, now])?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EventSink};

    fn object(key: &str, payload: &str, run: &str) -> Object {
        let now = Utc::now();
        Object {
            idem_key: key.into(),
            source_system: "ingester".into(),
            connection_name: Some("acct1".into()),
            object_type: "gmail_message".into(),
            schema_ref: None,
            external_id: None,
            payload: RawValue::from_string(payload.into()).unwrap(),
            first_seen: now,
            last_seen: now,
            correlation_id: run.into(),
        }
    }

    #[test]
    fn one_row_per_key_first_seen_kept_and_counts_say_what_happened() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open_in(dir.path()).unwrap();
        let first = [object("a", "1", "r1"), object("b", "2", "r1")];
        let counts = store
            .store(&[Event::new("x.y", "p/j", "r1")], &first)
            .unwrap();
        assert_eq!(
            (counts.inserted, counts.updated, counts.unchanged),
            (2, 0, 0)
        );

        let again = [
            object("a", "1", "r2"),
            object("b", "3", "r2"),
            object("b", "3", "r2"),
        ];
        let counts = store.store(&[], &again).unwrap();
        assert_eq!(
            (counts.inserted, counts.updated, counts.unchanged),
            (0, 1, 2)
        );

        let a = store.object("a").unwrap().unwrap();
        assert_eq!(
            a.first_seen.timestamp_micros(),
            first[0].first_seen.timestamp_micros()
        );
        assert_eq!(
            a.last_seen.timestamp_micros(),
            again[0].last_seen.timestamp_micros()
        );
        assert_eq!(a.correlation_id, "r2");
        let b = store.object("b").unwrap().unwrap();
        assert_eq!(b.payload.get(), "3");
        assert_eq!(store.objects(&ObjectFilter::default()).unwrap().len(), 2);
        assert!(store.pending_objects(10).unwrap().is_empty(), "not queued");
    }

    #[test]
    fn a_test_runs_upsert_of_a_key_never_reaches_the_configured_table() {
        let dir = tempfile::tempdir().unwrap();
        let production = LocalStore::open_in(dir.path())
            .unwrap()
            .queue_for_delivery(Outbox { table: None });
        production.store(&[], &[object("a", "1", "r1")]).unwrap();
        let test = LocalStore::open_in(dir.path())
            .unwrap()
            .queue_for_delivery(Outbox {
                table: Some("test_events".into()),
            });
        test.store(&[], &[object("a", "2", "t1")]).unwrap();
        let pending = production.pending_objects(10).unwrap();
        let sent: Vec<_> = pending
            .iter()
            .map(|p| (p.target.clone(), p.object.payload.get().to_owned()))
            .collect();
        assert_eq!(
            sent,
            [
                (None, "1".to_owned()),
                (Some("test_events".to_owned()), "2".to_owned())
            ]
        );
    }

    #[test]
    fn the_outbox_holds_one_row_per_key_and_settles_only_the_version_sent() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open_in(dir.path())
            .unwrap()
            .queue_for_delivery(Outbox { table: None });
        store
            .store(&[], &[object("a", "1", "r1"), object("a", "2", "r1")])
            .unwrap();
        let pending = store.pending_objects(10).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].object.payload.get(), "2");
        // Upserted again while being sent: the newer version stays pending.
        store.store(&[], &[object("a", "3", "r2")]).unwrap();
        store
            .settle_objects(&[(pending[0].seq, pending[0].version)])
            .unwrap();
        let pending = store.pending_objects(10).unwrap();
        assert_eq!(pending[0].object.payload.get(), "3");
        store
            .settle_objects(&[(pending[0].seq, pending[0].version)])
            .unwrap();
        assert!(store.pending_objects(10).unwrap().is_empty());
    }
}
