//! The queue's dead letters as `queue status` and `queue dead` print them.

use crate::fleet::queue::{Dead, QueueStatus};
use crate::output;

pub fn dead_table(dead: &[Dead]) -> String {
    if dead.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = dead
        .iter()
        .map(|d| {
            vec![
                d.request_id
                    .clone()
                    .unwrap_or_else(|| format!("#{}", d.sequence)),
                d.job.clone(),
                d.deliveries.clone().unwrap_or_default(),
                d.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(&["DEAD REQUEST", "JOB", "DELIVERIES", "REASON"], &rows)
}

/// `queue status` as text: a summary line, then the workers, the queued jobs and the dead
/// letters as tables.
pub fn status_text(status: &QueueStatus) -> String {
    let (workers, dead) = (&status.workers, &status.dead);
    let mut text = format!(
        "{}: {} queued, {} of them in progress ({} redelivered); {}; {}\n",
        status.server,
        output::count(status.queued.values().sum(), "request", "requests"),
        status.in_progress,
        status.redelivered,
        output::count(workers.len(), "worker", "workers"),
        output::count(dead.len(), "dead letter", "dead letters")
    );
    if !workers.is_empty() {
        let rows: Vec<Vec<String>> = workers
            .iter()
            .map(|w| {
                let running: Vec<String> = w
                    .running
                    .iter()
                    .map(|(id, r)| format!("{} ({id})", r.job))
                    .collect();
                vec![
                    w.worker.clone(),
                    if running.is_empty() {
                        "-".to_owned()
                    } else {
                        running.join(", ")
                    },
                    w.completed.to_string(),
                    w.failed.to_string(),
                    w.seen_at
                        .get(..19)
                        .map_or_else(String::new, |t| format!("{t}Z")),
                ]
            })
            .collect();
        text.push_str(&output::table(
            &["WORKER", "RUNNING", "COMPLETED", "FAILED", "SEEN"],
            &rows,
        ));
    }
    if !status.queued.is_empty() {
        let rows: Vec<Vec<String>> = status
            .queued
            .iter()
            .map(|(job, n)| vec![job.clone(), n.to_string()])
            .collect();
        text.push_str(&output::table(&["JOB", "QUEUED"], &rows));
    }
    text.push_str(&dead_table(dead));
    text
}
