//! Run logs: every line a job's attempt wrote to stdout or stderr or logged through its
//! context, kept with the run under `LORCH_HOME/logs/RUN_ID/` (docs/logs.md), so that the
//! morning after a failure `lorch runs logs` shows what the job said.
//!
//! One file per attempt, `N.log`, JSON lines, appended as the lines arrive: a crash of the job,
//! or of lorch, keeps what was written. The cap drops the oldest lines a block at a time: when
//! the file holds a block it is renamed `N.old.log`, replacing the block before, so an attempt
//! keeps between one and two blocks of its newest lines. Each line carries its number in the
//! attempt, so a reader knows how many were dropped before the first it sees, and a reader that
//! follows the file knows where it left off across a rename.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Lines per block: an attempt keeps its newest 5,000 to 10,000 lines (docs/logs.md).
pub const BLOCK_LINES: u64 = 5_000;
/// Bytes per block, so that long lines cannot fill the disk: at most 8 MiB per attempt.
pub const BLOCK_BYTES: u64 = 4 << 20;
/// A longer line is kept as several lines of at most this many bytes.
pub const MAX_LINE: usize = 16 << 10;
/// The lines `job.failed` carries in `log_tail`.
pub const TAIL_LINES: usize = 20;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// The job's context (`ctx.log`, `LorchHost.log`), with a level.
    Log,
}

/// The level of a logged line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    /// The level of the plugin ABI's `log` callback: 1 error, 2 warn, 3 info, 4 debug, 5 trace
    /// (docs/plugin-abi.md).
    pub fn from_abi(level: i32) -> Level {
        match level {
            ..=1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            _ => Level::Trace,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }

    /// Whether a line of this level is kept: error to info always, debug and trace when
    /// `LORCH_LOG` shows them (a `--quiet` run shows only warnings, and still keeps its info).
    pub fn kept(self) -> bool {
        match self {
            Level::Error | Level::Warn | Level::Info => true,
            Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            Level::Trace => tracing::enabled!(tracing::Level::TRACE),
        }
    }

    /// Writes `message` as one of lorch's log lines, in the current span.
    pub fn show(self, message: &str) {
        match self {
            Level::Error => tracing::error!("{message}"),
            Level::Warn => tracing::warn!("{message}"),
            Level::Info => tracing::info!("{message}"),
            Level::Debug => tracing::debug!("{message}"),
            Level::Trace => tracing::trace!("{message}"),
        }
    }
}

/// One kept line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    /// How many lines the attempt wrote before this one.
    pub n: u64,
    pub time: DateTime<Utc>,
    pub stream: Stream,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    pub text: String,
}

impl Line {
    /// The line as `log_tail` has it: its text, led by its level when it was logged.
    pub fn plain(&self) -> String {
        match self.level {
            Some(level) => format!("{} {}", level.as_str(), self.text),
            None => self.text.clone(),
        }
    }
}

/// The directory of every run's logs.
pub fn root(home: &Path) -> PathBuf {
    home.join("logs")
}

/// The directory of one run's logs; `None` for a string that is not a run id, so that no
/// argument reaches outside the logs directory.
fn run_dir(home: &Path, run_id: &str) -> Option<PathBuf> {
    let plausible =
        !run_id.is_empty() && run_id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    plausible.then(|| root(home).join(run_id))
}

fn current(dir: &Path, attempt: u32) -> PathBuf {
    dir.join(format!("{attempt}.log"))
}

fn older(dir: &Path, attempt: u32) -> PathBuf {
    dir.join(format!("{attempt}.old.log"))
}

/// What an attempt wrote, once it ended.
#[derive(Debug, Default)]
pub struct Written {
    /// Every line, kept or dropped.
    pub lines: u64,
    /// The last [`TAIL_LINES`], as [`Line::plain`].
    pub tail: Vec<String>,
}

/// Appends an attempt's lines to its file; shared by the threads that read the job's pipes and
/// its logged lines. The file is created with the first line: a run that writes nothing leaves
/// nothing behind.
pub struct Writer {
    dir: Option<PathBuf>,
    attempt: u32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    file: Option<BufWriter<File>>,
    /// Lines so far: the next line's number.
    lines: u64,
    block_lines: u64,
    block_bytes: u64,
    tail: VecDeque<String>,
    /// Set once writing failed (a full disk): said once, then lines are only shown.
    broken: bool,
    encoded: Vec<u8>,
}

impl Writer {
    pub fn new(home: &Path, run_id: &str, attempt: u32) -> Writer {
        Writer {
            dir: run_dir(home, run_id),
            attempt,
            state: Mutex::default(),
        }
    }

    /// Keeps one line.
    pub fn push(&self, stream: Stream, level: Option<Level>, text: &str, time: DateTime<Utc>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let line = Line {
            n: state.lines,
            time,
            stream,
            level,
            text: text.to_owned(),
        };
        state.lines += 1;
        if state.tail.len() == TAIL_LINES {
            state.tail.pop_front();
        }
        state.tail.push_back(line.plain());
        if state.broken {
            return;
        }
        if let Err(e) = self.append(&mut state, &line) {
            state.broken = true;
            state.file = None;
            tracing::warn!(
                "cannot keep the job's output in its run log {}: {e}; it is still shown here",
                self.dir
                    .as_deref()
                    .map_or("?".into(), |d| d.display().to_string())
            );
        }
    }

    fn append(&self, state: &mut State, line: &Line) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Err(io::Error::other("not a run id"));
        };
        if state.file.is_none() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(current(dir, self.attempt))?;
            state.file = Some(BufWriter::with_capacity(64 << 10, file));
        }
        let mut encoded = std::mem::take(&mut state.encoded);
        encoded.clear();
        serde_json::to_writer(&mut encoded, line)?;
        encoded.push(b'\n');
        let file = state.file.as_mut().expect("opened above");
        let written = file.write_all(&encoded);
        state.block_lines += 1;
        state.block_bytes += encoded.len() as u64;
        state.encoded = encoded;
        written?;
        if state.block_lines >= BLOCK_LINES || state.block_bytes >= BLOCK_BYTES {
            // The block is full: it becomes the older block, and the next line starts a file.
            state.file.take().expect("opened above").flush()?;
            fs::rename(current(dir, self.attempt), older(dir, self.attempt))?;
            state.block_lines = 0;
            state.block_bytes = 0;
        }
        Ok(())
    }

    /// Writes what is buffered, so that readers (`runs logs --follow`) and a crash see it.
    pub fn flush(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = state.file.as_mut()
            && let Err(e) = file.flush()
        {
            state.broken = true;
            state.file = None;
            tracing::warn!("cannot keep the job's output in its run log: {e}");
        }
    }

    /// Flushes, and says what the attempt wrote.
    pub fn finish(&self) -> Written {
        self.flush();
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Written {
            lines: state.lines,
            tail: state.tail.iter().cloned().collect(),
        }
    }
}

/// The attempts of a run that kept lines, in order.
pub fn attempts(home: &Path, run_id: &str) -> io::Result<Vec<u32>> {
    let Some(dir) = run_dir(home, run_id) else {
        return Ok(Vec::new());
    };
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut attempts = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let number = name
            .strip_suffix(".old.log")
            .or_else(|| name.strip_suffix(".log"));
        if let Some(attempt) = number.and_then(|n| n.parse().ok()) {
            attempts.push(attempt);
        }
    }
    attempts.sort_unstable();
    attempts.dedup();
    Ok(attempts)
}

/// What is kept of one attempt.
#[derive(Debug, Default)]
pub struct Kept {
    /// Lines dropped before the first kept one.
    pub dropped: u64,
    pub lines: Vec<Line>,
}

/// The kept lines of an attempt numbered `from` or later, oldest first. A block renamed while
/// it is read shows as a gap in the numbers: then it is read again.
pub fn read(home: &Path, run_id: &str, attempt: u32, from: u64) -> io::Result<Kept> {
    let Some(dir) = run_dir(home, run_id) else {
        return Ok(Kept::default());
    };
    let mut tries = 0;
    loop {
        let mut lines = read_file(&older(&dir, attempt), from)?;
        lines.extend(read_file(&current(&dir, attempt), from)?);
        lines.sort_by_key(|l| l.n);
        lines.dedup_by_key(|l| l.n);
        let whole = lines.windows(2).all(|w| w[1].n == w[0].n + 1);
        tries += 1;
        if whole || tries == 3 {
            let dropped = lines.first().map_or(0, |l| l.n.saturating_sub(from));
            return Ok(Kept { dropped, lines });
        }
    }
}

/// The lines of one file numbered `from` or later; a line cut short (lorch killed while writing
/// it) is skipped.
fn read_file(path: &Path, from: u64) -> io::Result<Vec<Line>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut lines = Vec::new();
    for text in BufReader::new(file).split(b'\n') {
        if let Ok(line) = serde_json::from_slice::<Line>(&text?)
            && line.n >= from
        {
            lines.push(line);
        }
    }
    Ok(lines)
}

/// What `runs prune` deleted.
#[derive(Debug, Default)]
pub struct Pruned {
    pub runs: usize,
    pub bytes: u64,
}

/// Deletes the logs of runs started before `cutoff` (a run id is a UUIDv7: it begins with its
/// start time), except those `keep` names (runs still running).
pub fn prune(
    home: &Path,
    cutoff: DateTime<Utc>,
    keep: &dyn Fn(&str) -> bool,
) -> io::Result<Pruned> {
    let mut pruned = Pruned::default();
    let entries = match fs::read_dir(root(home)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(pruned),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(started) = started_at(&name) else {
            continue;
        };
        if started >= cutoff || keep(&name) {
            continue;
        }
        let dir = entry.path();
        pruned.bytes += fs::read_dir(&dir)?
            .filter_map(|f| f.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum::<u64>();
        fs::remove_dir_all(&dir)?;
        pruned.runs += 1;
    }
    Ok(pruned)
}

/// The start of the run whose id is `run_id`, when it is a UUIDv7.
fn started_at(run_id: &str) -> Option<DateTime<Utc>> {
    let (seconds, nanos) = uuid::Uuid::parse_str(run_id)
        .ok()?
        .get_timestamp()?
        .to_unix();
    DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_keeps_its_newest_blocks_and_numbers_every_line() {
        let home = tempfile::tempdir().unwrap();
        let run = "0192f0c2-0000-7000-8000-000000000000";
        let writer = Writer::new(home.path(), run, 1);
        let total = BLOCK_LINES * 3 + 7;
        for i in 0..total {
            writer.push(Stream::Stdout, None, &format!("line {i}"), Utc::now());
        }
        writer.push(Stream::Log, Some(Level::Error), "it broke", Utc::now());
        let written = writer.finish();
        assert_eq!(written.lines, total + 1);
        assert_eq!(written.tail.len(), TAIL_LINES);
        assert_eq!(written.tail.last().unwrap(), "ERROR it broke");

        let kept = read(home.path(), run, 1, 0).unwrap();
        assert_eq!(kept.dropped, BLOCK_LINES * 2);
        assert_eq!(kept.lines.len() as u64, BLOCK_LINES + 8);
        assert_eq!(kept.lines[0].text, format!("line {}", BLOCK_LINES * 2));
        assert_eq!(kept.lines.last().unwrap().level, Some(Level::Error));
        let later = read(home.path(), run, 1, total - 2).unwrap();
        assert_eq!(later.dropped, 0);
        assert_eq!(later.lines.len(), 3);
        assert_eq!(attempts(home.path(), run).unwrap(), [1]);
    }

    #[test]
    fn nothing_outside_the_logs_directory_is_read_or_pruned() {
        let home = tempfile::tempdir().unwrap();
        assert!(run_dir(home.path(), "../store").is_none());
        assert!(attempts(home.path(), "../..").unwrap().is_empty());
        fs::create_dir_all(root(home.path()).join("not-a-run")).unwrap();
        let pruned = prune(home.path(), Utc::now(), &|_| false).unwrap();
        assert_eq!(pruned.runs, 0);
        assert!(root(home.path()).join("not-a-run").exists());
    }
}
