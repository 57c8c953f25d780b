//! Prometheus metrics (docs/metrics.md): the exposition of what the store knows of each job and
//! account, for `lorch metrics` and for a textfile-collector file that every run rewrites
//! atomically (a temporary file in the same directory, then a rename), so a reader never sees
//! it half-written.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::error::Exit;
use crate::events::JobRuns;
use crate::lifecycle::{Completion, Reason, RunStatus};

/// The variable naming the directory of the metrics file (it wins over the configuration's).
pub const DIR_VAR: &str = "LORCH_METRICS_DIR";

/// The file's name in that directory.
pub const FILE: &str = "lorch.prom";

/// The directory: `LORCH_METRICS_DIR`, else the configuration's `[metrics] dir`.
pub fn dir(configured: Option<&Path>) -> Option<PathBuf> {
    std::env::var_os(DIR_VAR)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| configured.map(Path::to_owned))
}

/// The exit code a run with this status and reason ended with (README, "Exit codes"):
/// 0 completed (a dry run too), 3 completed without all its events recorded, 130 cancelled
/// (by any signal), 1 failed.
fn exit_code(status: RunStatus, reason: Option<Reason>) -> Exit {
    match (status, reason) {
        (RunStatus::Completed, reason) => Completion::from_reason(reason).exit(),
        (_, Some(Reason::Cancelled)) => Exit::Interrupted,
        _ => Exit::JobFailed,
    }
}

/// The exposition text.
pub fn exposition(jobs: &[JobRuns], events_pending: i64) -> String {
    let mut text = String::new();
    let seconds = |t: &Option<String>| -> Option<f64> {
        let t: DateTime<Utc> = t.as_deref()?.parse().ok()?;
        Some(t.timestamp_micros() as f64 / 1e6)
    };
    let mut family =
        |name: &str, kind: &str, help: &str, value: &dyn Fn(&JobRuns) -> Vec<(String, f64)>| {
            writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}").unwrap();
            for job in jobs {
                for (extra, v) in value(job) {
                    writeln!(text, "{name}{{{}{extra}}} {v}", labels(job)).unwrap();
                }
            }
        };
    family(
        "lorch_job_last_success_timestamp_seconds",
        "gauge",
        "When the job's last run that completed (and counts for its window) ended, Unix time.",
        &|j| {
            seconds(&j.last_success_at)
                .map(|v| (String::new(), v))
                .into_iter()
                .collect()
        },
    );
    family(
        "lorch_job_last_run_timestamp_seconds",
        "gauge",
        "When the job's last run that completed or failed ended, Unix time.",
        &|j| {
            seconds(&j.last_ended_at)
                .map(|v| (String::new(), v))
                .into_iter()
                .collect()
        },
    );
    family(
        "lorch_job_last_duration_seconds",
        "gauge",
        "How long the job's last run that completed or failed took, its retries included.",
        &|j| match (seconds(&j.last_started_at), seconds(&j.last_ended_at)) {
            (Some(start), Some(end)) => vec![(String::new(), (end - start).max(0.0))],
            _ => Vec::new(),
        },
    );
    family(
        "lorch_job_last_exit_code",
        "gauge",
        "The exit code of the job's last run that completed or failed (0, 1, 3, 130).",
        &|j| match j.last_status {
            Some(status) => vec![(
                String::new(),
                f64::from(exit_code(status, j.last_reason) as u8),
            )],
            None => Vec::new(),
        },
    );
    family(
        "lorch_job_runs_total",
        "counter",
        "Runs of the job that ended, by how (each run once, however many attempts it took).",
        &|j| {
            vec![
                (
                    ",status=\"completed\"".to_owned(),
                    f64::from(j.runs_completed),
                ),
                (",status=\"failed\"".to_owned(), f64::from(j.runs_failed)),
            ]
        },
    );
    writeln!(
        text,
        "# HELP lorch_events_pending Events recorded but not yet delivered to BigQuery.\n# TYPE lorch_events_pending gauge\nlorch_events_pending {events_pending}"
    )
    .unwrap();
    text
}

/// `package="...",job="...",account="..."` (account `""` for none), escaped as the format asks.
fn labels(job: &JobRuns) -> String {
    let escape = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    format!(
        "package=\"{}\",job=\"{}\",account=\"{}\"",
        escape(&job.package),
        escape(&job.job),
        escape(job.account.as_deref().unwrap_or(""))
    )
}

/// Writes the text `exposition` makes to `dir/lorch.prom` atomically: a reader sees the old
/// file or the new one. The temporary file is this process's own (`create_new`), named so the
/// collector skips it (it reads `*.prom` only), and removed when anything fails. Runs ending at
/// once take turns (a lock file beside it), so the file never goes back to an older snapshot.
pub fn write(
    dir: &Path,
    exposition: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(dir.join(format!(".{FILE}.lock")))?;
    lock.lock()?;
    let text = exposition()?;
    let temp = dir.join(format!(
        ".{FILE}.{}.{:08x}.tmp",
        std::process::id(),
        fastrand::u32(..)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_data()
        })
        .and_then(|()| std::fs::rename(&temp, dir.join(FILE)));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    Ok(written?)
}

/// The Prometheus exposition of what the store knows of every job (docs/metrics.md).
pub fn text(store: &crate::events::LocalStore) -> anyhow::Result<String> {
    Ok(exposition(&store.job_runs()?, store.events_pending()?))
}

/// After a run: the metrics file rewritten, when a directory is set. A failure is a warning:
/// it never changes the run's exit code.
pub fn write_after_run(dir: Option<&std::path::Path>, store: &crate::events::LocalStore) {
    let Some(dir) = dir else { return };
    let written = write(dir, || text(store));
    if let Err(e) = written {
        crate::output::stderr!(
            "warning: cannot write the metrics file {}: {e:#}",
            dir.join(FILE).display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_labels_and_escapes() {
        let job = JobRuns {
            package: "p".into(),
            job: "j".into(),
            account: Some("a\"b".into()),
            last_status: Some(RunStatus::Failed),
            last_reason: Some(Reason::Cancelled),
            last_started_at: Some("2026-11-26T06:00:00Z".into()),
            last_ended_at: Some("2026-11-26T06:00:02.5Z".into()),
            runs_completed: 4,
            runs_failed: 1,
            ..JobRuns::default()
        };
        let text = exposition(&[job], 7);
        let labels = "package=\"p\",job=\"j\",account=\"a\\\"b\"";
        for line in [
            format!("lorch_job_last_run_timestamp_seconds{{{labels}}} 1795672802.5"),
            format!("lorch_job_last_duration_seconds{{{labels}}} 2.5"),
            format!("lorch_job_last_exit_code{{{labels}}} 130"),
            format!("lorch_job_runs_total{{{labels},status=\"completed\"}} 4"),
            format!("lorch_job_runs_total{{{labels},status=\"failed\"}} 1"),
            "lorch_events_pending 7".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(
            !text.contains("lorch_job_last_success_timestamp_seconds{"),
            "no success, no sample"
        );
    }
}
