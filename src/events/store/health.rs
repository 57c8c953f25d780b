//! What `lorch status` reads (docs/status.md): for each job and account, its last result, its
//! last success and its consecutive failures, kept in `job_status` by each run's terminal event
//! in its own transaction (one row a job to read, however many runs), and its runs in progress.

use anyhow::{Context as _, Result};
use rusqlite::{Connection, OptionalExtension as _, Transaction, params};
use serde::Serialize;

use super::LocalStore;
use crate::lifecycle::{Reason, RunStatus};

/// One job and account, as its runs have it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobRuns {
    pub package: String,
    pub job: String,
    pub account: Option<String>,
    /// The newest run that completed or failed: its id, status, reason, start and end.
    pub last_run_id: Option<String>,
    pub last_status: Option<RunStatus>,
    pub last_reason: Option<Reason>,
    pub last_started_at: Option<String>,
    pub last_ended_at: Option<String>,
    /// The end of the newest run that completed and counts (its events all recorded).
    pub last_success_at: Option<String>,
    /// Runs that failed since that success (all of them, with none).
    pub consecutive_failures: u32,
    /// The start of the oldest run in progress, if one is.
    pub running_since: Option<String>,
    /// Attempts that ended completed, and failed (each once: the counts only grow).
    pub runs_completed: u32,
    pub runs_failed: u32,
}

/// What makes a run a success for its job: it counts for its window (a test run is not one).
use super::COUNTS as SUCCESS;

/// Takes the run `run`, whose attempt just ended, into its job's row: it becomes the last run
/// unless a newer one ended first (a run found abandoned late); the newest success stays the
/// last success; the attempt is counted by how it ended (each attempt once, so the counts only
/// grow); and the failures since the last success are counted again from `runs` (one row a
/// run, however many attempts: a run waiting to retry counts as failed until its retry starts).
pub(super) fn record_end(tx: &Transaction<'_>, run: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO job_status (package, job, account, last_run_id, last_status, last_reason,
             last_started_at, last_ended_at, last_success_at, last_success_started_at,
             consecutive_failures, runs_completed, runs_failed)
         SELECT package, job, coalesce(account, ''), run_id, status, reason, started_at,
             ended_at, ok, ok_started, 0, status = 'completed', status = 'failed'
         FROM (SELECT *, CASE WHEN {SUCCESS} THEN ended_at END AS ok,
                   CASE WHEN {SUCCESS} THEN started_at END AS ok_started
               FROM runs WHERE run_id = ?1 AND status IN ('completed', 'failed'))
         WHERE true
         ON CONFLICT (package, job, account) DO UPDATE SET
             runs_completed = job_status.runs_completed + excluded.runs_completed,
             runs_failed = job_status.runs_failed + excluded.runs_failed,
             (last_success_at, last_success_started_at) = (
                 SELECT CASE WHEN newer THEN excluded.last_success_at
                             ELSE job_status.last_success_at END,
                        CASE WHEN newer THEN excluded.last_success_started_at
                             ELSE job_status.last_success_started_at END
                 FROM (SELECT excluded.last_success_started_at
                              >= coalesce(job_status.last_success_started_at, '') AS newer)),
             (last_run_id, last_status, last_reason, last_started_at, last_ended_at) = (
                 SELECT CASE WHEN newer THEN excluded.last_run_id ELSE job_status.last_run_id END,
                        CASE WHEN newer THEN excluded.last_status ELSE job_status.last_status END,
                        CASE WHEN newer THEN excluded.last_reason ELSE job_status.last_reason END,
                        CASE WHEN newer THEN excluded.last_started_at
                             ELSE job_status.last_started_at END,
                        CASE WHEN newer THEN excluded.last_ended_at
                             ELSE job_status.last_ended_at END
                 FROM (SELECT excluded.last_started_at >= job_status.last_started_at AS newer))"
    ))?
    .execute([run])?;
    tx.prepare_cached(FAILURES)?.execute([run])?;
    Ok(())
}

/// The failed runs of the run `?1`'s job and account since its last success: a range of the
/// `runs_by_job` index, usually a few rows.
const FAILURES: &str = "UPDATE job_status SET consecutive_failures = (
        SELECT count(*) FROM runs r
        WHERE r.package = job_status.package AND r.job = job_status.job
          AND coalesce(r.account, '') = job_status.account AND r.status = 'failed'
          AND r.started_at > coalesce(job_status.last_success_started_at, ''))
    WHERE (package, job, account) = (SELECT package, job, coalesce(account, '') FROM runs
                                     WHERE run_id = ?1)";

/// Makes `job_status` again from the runs: when a store is upgraded, which is also when a run
/// recorded by an earlier lorch (which does not keep it) may be missing from it.
pub(super) fn rebuild(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "DELETE FROM job_status;
         INSERT INTO job_status
         SELECT g.package, g.job, g.acct, l.run_id, l.status, l.reason, l.started_at, l.ended_at,
             g.ok_ended, nullif(g.ok_started, ''),
             (SELECT count(*) FROM runs f
              WHERE f.package = g.package AND f.job = g.job AND coalesce(f.account, '') = g.acct
                AND f.status = 'failed' AND f.started_at > g.ok_started),
             g.completed, g.failed
         FROM (SELECT package, job, coalesce(account, '') AS acct,
                   sum(status = 'completed') AS completed, sum(status = 'failed') AS failed,
                   max(CASE WHEN status IN ('completed', 'failed') THEN started_at END) AS last,
                   coalesce(max(CASE WHEN {SUCCESS} THEN started_at END), '') AS ok_started,
                   max(CASE WHEN {SUCCESS} THEN ended_at END) AS ok_ended
               FROM runs GROUP BY package, job, coalesce(account, '')) g
         JOIN runs l ON l.package = g.package AND l.job = g.job
             AND coalesce(l.account, '') = g.acct AND l.started_at = g.last
             AND l.status IN ('completed', 'failed')
         WHERE true
         ON CONFLICT DO NOTHING;"
    ))
}

impl LocalStore {
    /// Every job and account with a run that ended or one in progress, sorted.
    pub fn job_runs(&self) -> Result<Vec<JobRuns>> {
        let conn = self.conn();
        let mut jobs: Vec<JobRuns> = conn
            .prepare_cached(
                "SELECT package, job, nullif(account, ''), last_run_id, last_status, last_reason,
                     last_started_at, last_ended_at, last_success_at, consecutive_failures,
                     runs_completed, runs_failed
                 FROM job_status ORDER BY package, job, account",
            )?
            .query_map([], |r| {
                Ok(JobRuns {
                    package: r.get(0)?,
                    job: r.get(1)?,
                    account: r.get(2)?,
                    last_run_id: r.get(3)?,
                    last_status: r.get(4)?,
                    last_reason: r.get(5)?,
                    last_started_at: r.get(6)?,
                    last_ended_at: r.get(7)?,
                    last_success_at: r.get(8)?,
                    consecutive_failures: r.get(9)?,
                    running_since: None,
                    runs_completed: r.get(10)?,
                    runs_failed: r.get(11)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()
            .with_context(|| format!("cannot read the event store {}", self.path.display()))?;
        // Few runs are in progress: found through `runs_by_status`.
        let running: Vec<(String, String, Option<String>, String)> = conn
            .prepare_cached(
                "SELECT package, job, nullif(coalesce(account, ''), ''), min(started_at) FROM runs
                 WHERE status = 'running' GROUP BY package, job, coalesce(account, '')",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (package, job, account, since) in running {
            let found = jobs
                .iter_mut()
                .find(|j| j.package == package && j.job == job && j.account == account);
            match found {
                Some(j) => j.running_since = Some(since),
                None => jobs.push(JobRuns {
                    package,
                    job,
                    account,
                    running_since: Some(since),
                    ..JobRuns::default()
                }),
            }
        }
        Ok(jobs)
    }

    /// The failed runs in a row of a job and account, since its last success.
    pub fn consecutive_failures(
        &self,
        (package, job): (&str, &str),
        account: Option<&str>,
    ) -> Result<u32> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT consecutive_failures FROM job_status
             WHERE package = ?1 AND job = ?2 AND account = coalesce(?3, '')",
        )?;
        Ok(stmt
            .query_row(params![package, job, account], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    /// How many events wait for BigQuery.
    pub fn events_pending(&self) -> Result<i64> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT count(*) FROM outbox WHERE state = 'pending'")?;
        Ok(stmt.query_row([], |r| r.get(0))?)
    }

    /// How long the newest `n` completed runs of a job and account took, in seconds.
    pub fn recent_durations(
        &self,
        (package, job): (&str, &str),
        account: Option<&str>,
        n: usize,
    ) -> Result<Vec<f64>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT (julianday(ended_at) - julianday(started_at)) * 86400.0 FROM runs
             WHERE package = ?1 AND job = ?2 AND account IS ?3 AND status = 'completed'
             ORDER BY started_at DESC LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![package, job, account, n as i64], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<f64>>>()?)
    }
}
