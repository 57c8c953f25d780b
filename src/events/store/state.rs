//! Watermarks (docs/windows.md): where each job and account's completed windows end, read by
//! `--since last-success` and `lorch state`. They are written only where the events that move
//! them are recorded (`job.completed`, `state.set`, `state.reset`), in the same transaction.
//! And the last fire time `lorch tick` handled for each schedule entry (docs/schedules.md).

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::LocalStore;

/// One job and account's watermark.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Watermark {
    pub package: String,
    pub job: String,
    pub account: Option<String>,
    /// The end of the newest completed window (UTC, RFC 3339, microseconds).
    pub until: String,
    /// The run that completed it; `None` when it was set by hand.
    pub run_id: Option<String>,
    pub updated_at: String,
}

impl LocalStore {
    /// The watermark of one job and account.
    pub fn watermark(
        &self,
        package: &str,
        job: &str,
        account: Option<&str>,
    ) -> Result<Option<Watermark>> {
        Ok(self
            .watermarks(Some((package, job)), account.or(Some("")))?
            .pop())
    }

    /// The watermarks, by job and account; only those of `job` and of `account` (`""`: no
    /// account) when given.
    pub fn watermarks(
        &self,
        job: Option<(&str, &str)>,
        account: Option<&str>,
    ) -> Result<Vec<Watermark>> {
        let conn = self.conn();
        let (package, name) = job.unzip();
        let mut stmt = conn.prepare(
            "SELECT package, job, account, until, run_id, updated_at FROM watermarks
             WHERE (?1 IS NULL OR package = ?1) AND (?2 IS NULL OR job = ?2)
               AND (?3 IS NULL OR account = ?3)
             ORDER BY package, job, account",
        )?;
        let rows = stmt.query_map(params![package, name, account], |r| {
            Ok(Watermark {
                package: r.get(0)?,
                job: r.get(1)?,
                account: Some(r.get::<_, String>(2)?).filter(|a| !a.is_empty()),
                until: r.get(3)?,
                run_id: r.get(4)?,
                updated_at: r.get(5)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| format!("cannot read the watermarks of {}", self.path.display()))
    }

    /// The last fire time handled for the schedule entry `key`.
    pub fn last_fire(&self, key: &str) -> Result<Option<DateTime<Utc>>> {
        let conn = self.conn();
        let text: Option<String> = conn
            .prepare_cached("SELECT last_fire FROM schedules WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        Ok(text.and_then(|t| t.parse().ok()))
    }

    /// The last fire time handled of every schedule entry, by key: one read for all of them.
    pub fn last_fires(&self) -> Result<std::collections::HashMap<String, DateTime<Utc>>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT key, last_fire FROM schedules")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut fires = std::collections::HashMap::new();
        for row in rows {
            let (key, fire) = row?;
            if let Ok(fire) = fire.parse() {
                fires.insert(key, fire);
            }
        }
        Ok(fires)
    }

    /// Runs `reads` in one read transaction: one lock of the store for many small reads
    /// (`schedule list` reads each entry's last run).
    pub fn reading<T>(&self, reads: impl FnOnce() -> Result<T>) -> Result<T> {
        self.conn().execute_batch("BEGIN")?;
        let result = reads();
        self.conn().execute_batch("COMMIT")?;
        result
    }

    /// Records `fire` as handled for the schedule entry `key` (never moving it back).
    pub fn set_last_fire(&self, key: &str, fire: DateTime<Utc>) -> Result<()> {
        self.write(|conn| {
            conn.execute(
                "INSERT INTO schedules (key, last_fire, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET last_fire = excluded.last_fire,
                     updated_at = excluded.updated_at
                 WHERE excluded.last_fire > schedules.last_fire",
                params![key, super::timestamp(&fire), super::timestamp(&Utc::now())],
            )?;
            Ok(())
        })
        .with_context(|| {
            format!(
                "cannot record a schedule's progress in {}",
                self.path.display()
            )
        })
    }

    /// The run of `package/job` for `account` that completed the window `[since, until)`
    /// (bounds in the store's form, [`super::timestamp`]), if one did.
    pub fn window_completed(
        &self,
        (package, job): (&str, &str),
        account: Option<&str>,
        since: &str,
        until: &str,
    ) -> Result<Option<String>> {
        let conn = self.conn();
        let found = conn
            .prepare_cached(&format!(
                "SELECT run_id FROM runs WHERE package = ?1 AND job = ?2 AND account IS ?3
                       AND window_since = ?4 AND window_until = ?5 AND {}
                 ORDER BY started_at LIMIT 1",
                super::COUNTS
            ))?
            .query_row(params![package, job, account, since, until], |r| r.get(0))
            .optional()?;
        Ok(found)
    }

    /// The newest run of `package/job` for `account`: `(run_id, status, started_at)`.
    pub fn last_run(
        &self,
        (package, job): (&str, &str),
        account: Option<&str>,
    ) -> Result<Option<(String, String, String)>> {
        let conn = self.conn();
        let found = conn
            .prepare_cached(
                "SELECT run_id, status, started_at FROM runs
                 WHERE package = ?1 AND job = ?2 AND account IS ?3
                 ORDER BY started_at DESC LIMIT 1",
            )?
            .query_row(params![package, job, account], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        Ok(found)
    }
}
