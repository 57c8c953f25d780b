//! One contract for running a job as a child `lorch run-job`, as `tick`, `backfill` and the
//! fleet worker do: the command (the parent's global flags, then the run's options as flags,
//! the inverse of `cli::RequestArgs`), the summary `run-job --json` prints ([`RunSummary`], one
//! serde struct for writing and reading it), and what became of the run ([`ChildOutcome`]),
//! decided from those two in one place instead of from raw exit codes in each caller.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use serde::{Deserialize, Serialize};

use crate::error::Exit;
use crate::lifecycle::{ObjectCounts, Reason, RunStatus};
use crate::plan::RunOptions;

/// The parent's global flags, given again to every child lorch it starts.
pub struct Lorch<'a> {
    pub config: Option<&'a Path>,
    pub plugin_path: &'a [PathBuf],
    pub allow_insecure_plugins: bool,
    /// Pass `--quiet`: nothing printed when a run completes.
    pub quiet: bool,
}

impl Lorch<'_> {
    /// `lorch [global flags] run-job PACKAGE JOB [--quiet] [the run's options]`. Each run is a
    /// process of its own, as a cron line would start it.
    pub fn run_job(&self, id: &str, options: &RunOptions) -> anyhow::Result<Command> {
        let (package, job) = id.split_once('/').unwrap_or((id, ""));
        let mut command = self.command(&["run-job", package, job])?;
        command.args(args(options));
        Ok(command)
    }

    /// `lorch [global flags] run-pipeline NAME [--quiet] [the window's options]`.
    pub fn run_pipeline(&self, name: &str, options: &RunOptions) -> anyhow::Result<Command> {
        let mut command = self.command(&["run-pipeline", name])?;
        command.args(args(options));
        Ok(command)
    }

    /// `lorch [global flags] submit PACKAGE/JOB [--quiet] [the run's options]`, to the server
    /// `nats` (`None`: the default one).
    pub fn submit(
        &self,
        id: &str,
        options: &RunOptions,
        nats: Option<&str>,
    ) -> anyhow::Result<Command> {
        let mut command = self.command(&["submit", id])?;
        command.args(args(options));
        // In its environment, not its arguments, where `ps` would show a password.
        if let Some(url) = nats {
            command.env(crate::paths::NATS_URL_VAR, url);
        }
        Ok(command)
    }

    /// `lorch [global flags] ARGS [--quiet]`.
    fn command(&self, words: &[&str]) -> anyhow::Result<Command> {
        let exe = std::env::current_exe()
            .map_err(|e| anyhow::anyhow!("cannot find lorch's own binary: {e}"))?;
        let mut command = Command::new(exe);
        if let Some(file) = self.config {
            command.arg("--config").arg(file);
        }
        for dir in self.plugin_path {
            command.arg("--plugin-path").arg(dir);
        }
        if self.allow_insecure_plugins {
            command.arg("--allow-insecure-plugins");
        }
        command.args(words);
        if self.quiet {
            command.arg("--quiet");
        }
        Ok(command)
    }
}

/// The flags that ask `run-job` (or `submit`) for `options`: what `cli::RequestArgs` and
/// `cli::RunArgs` read back into the same options.
pub fn args(options: &RunOptions) -> Vec<String> {
    let mut args = Vec::new();
    let mut add = |flag: &str, value: Option<String>| {
        if let Some(value) = value {
            args.push(format!("--{flag}={value}"));
        }
    };
    let duration = |d: Option<std::time::Duration>| d.map(|d| format!("{}ms", d.as_millis()));
    add("account", options.account.clone());
    add("since", options.since.clone());
    add("until", options.until.clone());
    add("initial-since", options.initial_since.clone());
    add("timeout", duration(options.timeout));
    add("kill-after", duration(options.kill_after));
    add("retries", options.retries.map(|n| n.to_string()));
    add("retry-backoff", duration(options.retry_backoff));
    add("trace-id", options.trace_id.clone());
    add("wait-lock", duration(options.wait_lock));
    add("backfill-id", options.backfill_id.clone());
    for param in &options.params {
        args.push(format!("--param={param}"));
    }
    for (flag, on) in [
        ("--in-process", options.in_process),
        ("--no-lock", options.no_lock),
        ("--dry-run", options.dry_run),
    ] {
        if on {
            args.push(flag.to_owned());
        }
    }
    args
}

/// What `run-job --json` prints (README, "Options of run-job"), and what a parent reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: String,
    pub package: String,
    pub job: String,
    pub status: RunStatus,
    pub reason: Option<Reason>,
    /// The failure's message.
    pub message: Option<String>,
    pub attempts: u32,
    pub duration_ms: u64,
    pub events_not_recorded: usize,
    pub objects: ObjectCounts,
    pub exit_code: u8,
    /// A failure worth another attempt (not cancelled, not marked permanent by the job).
    pub retryable: bool,
}

impl RunSummary {
    /// The summary a child printed on its stdout, if it printed one.
    pub fn read(stdout: &[u8]) -> Option<RunSummary> {
        serde_json::from_slice(stdout).ok()
    }
}

/// What became of a child `run-job`, from its exit status and its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildOutcome {
    /// Completed (also when it exited 3, not all recorded: its window is done, it must not run
    /// again), or its window was completed meanwhile by another run.
    Done,
    /// Another run of the job and account held the lock (exit 75): not run.
    Locked,
    /// Failed; `retryable` unless the job marked the error permanent.
    Failed { retryable: bool },
    /// Cancelled by a signal: its own, or one passed on by its parent.
    Stopped,
    /// Refused as a usage error (exit 2): nothing ran, nothing was recorded.
    Refused,
    /// lorch could not run it (exit 3 before a run, a crash of lorch itself).
    Broken,
}

impl ChildOutcome {
    /// A completion in the summary wins over the exit code (a run that completed without
    /// recording everything exits 3, and is done); a signal wins over a failure (a run lorch was
    /// told to stop exits 130 or 143 whatever its job did).
    pub fn of(status: ExitStatus, summary: Option<&RunSummary>) -> ChildOutcome {
        let exit = status.code().and_then(Exit::from_code);
        let signalled = matches!(
            exit,
            Some(Exit::HungUp | Exit::Interrupted | Exit::Quit | Exit::Terminated)
        );
        match summary.map(|s| (s.status, s.reason, s.retryable)) {
            Some((RunStatus::Completed, _, _))
            | Some((RunStatus::Skipped, Some(Reason::AlreadyCompleted), _)) => {
                return ChildOutcome::Done;
            }
            Some((_, Some(Reason::Cancelled), _)) => return ChildOutcome::Stopped,
            _ if signalled => return ChildOutcome::Stopped,
            Some((RunStatus::Failed, _, retryable)) => return ChildOutcome::Failed { retryable },
            _ => {}
        }
        match exit {
            Some(Exit::Success) => ChildOutcome::Done,
            Some(Exit::Skipped) => ChildOutcome::Locked,
            Some(Exit::JobFailed) => ChildOutcome::Failed { retryable: true },
            Some(Exit::Usage) => ChildOutcome::Refused,
            Some(Exit::HungUp | Exit::Interrupted | Exit::Quit | Exit::Terminated) => {
                ChildOutcome::Stopped
            }
            Some(Exit::Environment) | None => ChildOutcome::Broken,
        }
    }
}

/// Runs a child `lorch run-job` to its end. A signal lorch receives meanwhile is passed on to
/// it once (a `docker stop` or `systemctl stop` signals lorch alone, not its process group), so
/// the run ends as a cancelled run, recorded; then it is waited for.
pub fn run(
    command: std::process::Command,
    signals: &crate::signals::Signals,
) -> crate::error::Result<std::process::ExitStatus> {
    wait(&mut spawn(command)?, signals)
}

/// Starts a child lorch that ends, cancelled (SIGTERM: its run recorded as such), when this
/// lorch dies: a killed tick or backfill leaves no run going on unsupervised.
pub fn spawn(mut command: std::process::Command) -> crate::error::Result<std::process::Child> {
    crate::sys::signal_when_parent_dies(&mut command, libc::SIGTERM);
    command
        .spawn()
        .map_err(|e| crate::error::Error::Environment(anyhow::anyhow!("cannot start lorch: {e}")))
}

/// Waits for a child lorch, passing on the first signal this lorch receives.
pub fn wait(
    child: &mut std::process::Child,
    signals: &crate::signals::Signals,
) -> crate::error::Result<std::process::ExitStatus> {
    let mut passed_on = false;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => {
                return Err(crate::error::Error::Environment(anyhow::anyhow!(
                    "cannot wait for the lorch it started: {e}"
                )));
            }
        }
        if let (Some(signal), false) = (signals.received(), passed_on) {
            let _ = crate::sys::kill(child.id(), signal);
            passed_on = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// [`run`] for a `run-job --json`: its exit status and the summary it printed, when it
/// printed one (a run-job refused as a usage error prints none).
pub fn run_json(
    mut command: std::process::Command,
    signals: &crate::signals::Signals,
) -> crate::error::Result<(std::process::ExitStatus, Option<RunSummary>)> {
    // One summary of a few hundred bytes: the pipe holds it until the child has ended.
    command.stdout(std::process::Stdio::piped());
    let mut child = spawn(command)?;
    let status = wait(&mut child, signals)?;
    let mut text = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = std::io::Read::read_to_end(&mut out, &mut text);
    }
    Ok((status, RunSummary::read(&text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn summary(status: RunStatus, reason: Option<Reason>, retryable: bool) -> RunSummary {
        RunSummary {
            run_id: "r".into(),
            package: "p".into(),
            job: "j".into(),
            status,
            reason,
            message: None,
            attempts: 1,
            duration_ms: 1,
            events_not_recorded: 0,
            objects: ObjectCounts::default(),
            exit_code: 0,
            retryable,
        }
    }

    #[test]
    fn the_summary_wins_over_the_exit_code_and_the_code_speaks_without_one() {
        use ChildOutcome::*;
        let done = summary(RunStatus::Completed, Some(Reason::EventsNotRecorded), false);
        assert_eq!(ChildOutcome::of(exited(3), Some(&done)), Done);
        let permanent = summary(RunStatus::Failed, Some(Reason::Error), false);
        assert_eq!(
            ChildOutcome::of(exited(1), Some(&permanent)),
            Failed { retryable: false }
        );
        let cancelled = summary(RunStatus::Failed, Some(Reason::Cancelled), false);
        assert_eq!(ChildOutcome::of(exited(143), Some(&cancelled)), Stopped);
        let meanwhile = summary(RunStatus::Skipped, Some(Reason::AlreadyCompleted), false);
        assert_eq!(ChildOutcome::of(exited(0), Some(&meanwhile)), Done);
        for (code, outcome) in [
            (0, Done),
            (75, Locked),
            (1, Failed { retryable: true }),
            (2, Refused),
            (3, Broken),
            (130, Stopped),
            (143, Stopped),
            (101, Broken),
        ] {
            assert_eq!(ChildOutcome::of(exited(code), None), outcome, "exit {code}");
        }
        assert_eq!(ChildOutcome::of(ExitStatus::from_raw(9), None), Broken);
    }

    #[test]
    fn options_become_the_flags_that_read_back_into_them() {
        let options = RunOptions {
            account: Some("a b".into()),
            since: Some("last-success".into()),
            until: Some("2026-01-01T00:00:00Z".into()),
            params: vec!["k=v".into()],
            timeout: Some(std::time::Duration::from_secs(90)),
            retries: Some(2),
            backfill_id: Some("b".into()),
            no_lock: true,
            ..RunOptions::default()
        };
        assert_eq!(
            args(&options),
            [
                "--account=a b",
                "--since=last-success",
                "--until=2026-01-01T00:00:00Z",
                "--timeout=90000ms",
                "--retries=2",
                "--backfill-id=b",
                "--param=k=v",
                "--no-lock",
            ]
        );
    }
}
