//! A run's kept log as `runs logs` prints it, text or JSON lines.

use chrono::SecondsFormat;

use crate::error::{Error, Result};
use crate::events::{LocalStore, RunRow};
use crate::lifecycle::RunStatus;
use crate::output::{self, stderr};
use crate::runlog::{self, Line, Stream};

/// Prints kept lines: `TIME  STREAM  TEXT`, or one JSON object each.
pub struct Printer<'a> {
    pub out: output::Stream,
    pub json: bool,
    pub run: &'a RunRow,
    pub printed: usize,
}

impl Printer<'_> {
    /// Prints the lines of `attempt` numbered `next` or later, and moves `next` past them;
    /// `false` once stdout is closed.
    pub fn attempt_from(
        &mut self,
        home: &std::path::Path,
        attempt: u32,
        next: &mut u64,
    ) -> Result<bool> {
        let kept = runlog::read(home, &self.run.run_id, attempt, *next).map_err(|e| {
            Error::Environment(anyhow::Error::new(e).context("cannot read the run's log"))
        })?;
        // The cap dropped lines before the first read, or while following fell behind.
        let heading = *next == 0 && !kept.lines.is_empty();
        if (heading || kept.dropped > 0) && !self.attempt(attempt, heading, kept.dropped)? {
            return Ok(false);
        }
        *next = kept.lines.last().map_or(*next, |l| l.n + 1);
        for line in &kept.lines {
            if !self.line(attempt, line)? {
                return Ok(false);
            }
        }
        Ok(self.out.flush()?)
    }

    /// Before an attempt's lines: its number when the run has several, and the lines the cap
    /// dropped.
    fn attempt(&mut self, attempt: u32, heading: bool, dropped: u64) -> Result<bool> {
        let mut text = String::new();
        if self.json {
            if dropped > 0 {
                let marker = serde_json::json!({
                    "run_id": self.run.run_id, "attempt": attempt, "dropped": dropped,
                });
                text = format!("{marker}\n");
            }
        } else {
            if heading && (attempt > 1 || self.run.attempt > 1) {
                text.push_str(&format!("── attempt {attempt} ──\n"));
            }
            if dropped > 0 {
                text.push_str(&format!(
                    "… {dropped} earlier lines dropped (an attempt keeps its newest {} to {} lines, docs/logs.md)\n",
                    runlog::BLOCK_LINES,
                    2 * runlog::BLOCK_LINES
                ));
            }
        }
        Ok(self.out.write(&text)?)
    }

    fn line(&mut self, attempt: u32, line: &Line) -> Result<bool> {
        self.printed += 1;
        let time = line.time.to_rfc3339_opts(SecondsFormat::Millis, true);
        let text = if self.json {
            let value = serde_json::json!({
                "run_id": self.run.run_id,
                "attempt": attempt,
                "n": line.n,
                "time": time,
                "stream": line.stream,
                "level": line.level,
                "text": line.text,
            });
            format!("{value}\n")
        } else {
            let stream = match (line.stream, line.level) {
                (Stream::Log, Some(level)) => level.as_str(),
                (Stream::Stderr, _) => "stderr",
                _ => "stdout",
            };
            format!("{time}  {stream:6}  {}\n", line.text)
        };
        Ok(self.out.write(&text)?)
    }
}

/// `1.2 MiB`.
pub fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} bytes"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// Why `runs logs` printed no line: the job wrote none (yet), or its log is gone.
pub fn say_why_nothing(store: &LocalStore, run: &RunRow, followed: bool) -> Result<()> {
    let events = store.list(&crate::events::EventFilter {
        run_id: Some(run.run_id.clone()),
        limit: None,
    })?;
    let written: u64 = events
        .iter()
        .filter_map(|e| e.payload_value()["log_lines"].as_u64())
        .sum();
    let id = &run.run_id;
    match (written, run.status) {
        (0, RunStatus::Running) if !followed => stderr!(
            "run {id} kept no output yet: its job has written nothing so far (follow it with --follow)"
        ),
        (0, _) => stderr!(
            "run {id} kept no output: its job wrote nothing to stdout or stderr and logged nothing"
        ),
        (n, _) => stderr!(
            "run {id} wrote {n} lines, but its log is gone: deleted by `lorch runs prune`, or never kept (lorch said why when it ran)"
        ),
    }
    Ok(())
}
