//! Notifications (docs/notifications.md): after a run, the `[notify]` hooks of `lorch.toml`
//! are told of a job that has failed `notify_after` times in a row, and of its recovery, by a
//! command or an HTTP POST of the run's summary as JSON. A hook that fails or hangs is stopped
//! at its timeout and reported on stderr; it never changes the run's outcome.

use std::io::Write as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Hook, Notify};
use crate::lifecycle::{Reason, RunStatus};

/// Why a hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Occasion {
    /// The job and account failed `notify_after` runs in a row (with this run).
    Failure,
    /// The job and account completed after a streak of failures that was notified.
    Recovery,
}

impl Occasion {
    /// The hook's key in `[notify]`.
    pub fn key(self) -> &'static str {
        match self {
            Occasion::Failure => "on_failure",
            Occasion::Recovery => "on_recovery",
        }
    }

    /// The occasion of a run that ended `status`, when the failures in a row of its job and
    /// account went from `before` to `after`: a failure when the streak reaches
    /// `notify_after` (once a streak), a recovery when a success ends a streak that reached it.
    pub fn of(status: RunStatus, before: u32, after: u32, notify_after: u32) -> Option<Occasion> {
        match status {
            RunStatus::Failed if after == notify_after && after > before => Some(Occasion::Failure),
            RunStatus::Completed if after == 0 && before >= notify_after => {
                Some(Occasion::Recovery)
            }
            _ => None,
        }
    }
}

/// What a hook is told: on stdin (a command) or as the request body (a webhook).
#[derive(Debug, Clone, Serialize)]
pub struct Note {
    pub occasion: Occasion,
    pub run_id: String,
    pub package: String,
    pub job: String,
    pub account: Option<String>,
    pub status: RunStatus,
    pub reason: Option<Reason>,
    /// The failure's message.
    pub error: Option<String>,
    pub attempts: u32,
    pub duration_seconds: f64,
    /// Failed runs in a row, this one included; on recovery, those of the streak it ended.
    pub consecutive_failures: u32,
    /// The failed attempt's last lines (docs/logs.md).
    pub log_tail: Vec<String>,
    pub host: String,
}

/// Calls the hook of `note`'s occasion, if `[notify]` has one; a hook that fails is said once
/// on stderr.
pub fn send(notify: &Notify, note: &Note) {
    let hook = match note.occasion {
        Occasion::Failure => notify.on_failure.as_ref(),
        Occasion::Recovery => notify.on_recovery.as_ref(),
    };
    let Some(hook) = hook else { return };
    if let Err(why) = call(hook, note, notify.timeout) {
        crate::output::stderr!(
            "warning: the {} hook ({}) of {}/{} failed: {why}; the run's outcome stands",
            note.occasion.key(),
            hook.describe(),
            note.package,
            note.job
        );
    }
}

fn call(hook: &Hook, note: &Note, timeout: Duration) -> Result<(), String> {
    let body = serde_json::to_vec(note).expect("a Note always serializes");
    match hook {
        Hook::Command(command) => run_command(command, note, &body, timeout),
        Hook::Url(url) => post(url, &body, timeout),
    }
}

/// `sh -c COMMAND`, in a process group of its own so that a timeout stops all it started, with
/// the note on stdin and in `LORCH_*` variables (not the NATS URL, which may hold a password);
/// its output is copied to lorch's stderr through a pipe lorch lets go of once the hook ended,
/// so that a child it left in the background does not keep lorch's stderr (and cron) waiting.
fn run_command(command: &str, note: &Note, body: &[u8], timeout: Duration) -> Result<(), String> {
    let (output, written) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
    let also_written = written
        .try_clone()
        .map_err(|e| format!("cannot make a pipe: {e}"))?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(variables(note))
        .env_remove(crate::paths::NATS_URL_VAR)
        .stdin(Stdio::piped())
        .stdout(written)
        .stderr(also_written)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    let copied = copy_to_stderr(output);
    let ended = wait_command(&mut child, body, timeout);
    // What the hook wrote before it ended is shown; a child it left behind is not waited for.
    let _ = copied.recv_timeout(Duration::from_millis(200));
    ended
}

/// Copies the hook's output to lorch's stderr from a thread, which says when the pipe closed.
fn copy_to_stderr(mut output: std::io::PipeReader) -> std::sync::mpsc::Receiver<()> {
    let (closed, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut output, &mut std::io::stderr());
        let _ = closed.send(());
    });
    said
}

/// Gives the hook its stdin and waits for it, killing its process group at the timeout.
fn wait_command(
    child: &mut std::process::Child,
    body: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let body = body.to_vec();
    // A hook that does not read its stdin must not hold lorch up: written from a thread.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(match (status.code(), status.signal()) {
                    (Some(code), _) => format!("it exited with code {code}"),
                    (_, Some(signal)) => {
                        format!("it was killed by {}", crate::sys::signal_name(signal))
                    }
                    _ => format!("it ended with {status}"),
                });
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = crate::sys::kill_group(child.id(), libc::SIGKILL);
                let _ = child.wait();
                return Err(format!(
                    "it was still running after {}, and was killed",
                    humantime::format_duration(timeout)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    }
}

fn variables(note: &Note) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        (
            "LORCH_EVENT",
            note.occasion.key().trim_start_matches("on_").to_owned(),
        ),
        ("LORCH_RUN_ID", note.run_id.clone()),
        ("LORCH_JOB", format!("{}/{}", note.package, note.job)),
        ("LORCH_PACKAGE", note.package.clone()),
        ("LORCH_STATUS", note.status.as_str().to_owned()),
        ("LORCH_ATTEMPTS", note.attempts.to_string()),
        (
            "LORCH_CONSECUTIVE_FAILURES",
            note.consecutive_failures.to_string(),
        ),
    ];
    vars.extend(note.account.clone().map(|a| ("LORCH_ACCOUNT", a)));
    vars.extend(note.reason.map(|r| ("LORCH_REASON", r.as_str().to_owned())));
    vars.extend(note.error.clone().map(|e| ("LORCH_ERROR", e)));
    vars
}

/// POSTs `body` to `url`: tried again on a network error, a 5xx or a 429, until `timeout` is
/// spent. A redirect is not followed (a client following a 302 sends a GET without the
/// summary): it is a failure naming where it leads.
fn post(url: &str, body: &[u8], timeout: Duration) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start an HTTP client: {e}"))?;
    let client = reqwest::Client::builder()
        .user_agent(concat!("lorch/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot start an HTTP client: {e}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    runtime.block_on(async {
        let mut attempt = 1;
        loop {
            let request = client
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_vec())
                .timeout(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .send();
            let why = match request.await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) if response.status().is_redirection() => {
                    let to = response
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .unwrap_or("nowhere");
                    return Err(format!(
                        "the server answered {} (a redirect to {to}), which lorch does not follow: give the webhook's final URL",
                        response.status()
                    ));
                }
                Ok(response) => {
                    let status = response.status();
                    if !status.is_server_error() && status.as_u16() != 429 {
                        return Err(format!("the server answered {status}"));
                    }
                    format!("the server answered {status}")
                }
                Err(e) if e.is_timeout() => {
                    format!("no answer within {}", humantime::format_duration(timeout))
                }
                Err(e) => crate::error::describe(&e),
            };
            let wait = crate::backoff::delay(Duration::from_millis(500), attempt);
            if tokio::time::Instant::now() + wait >= deadline {
                let tries = if attempt == 1 { "try" } else { "tries" };
                return Err(format!("{why} (after {attempt} {tries})"));
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    })
}

/// `[notify]` around one run (docs/notifications.md): the failures in a row of its job and
/// account before it, then the hook its outcome calls for.
pub struct Notifier<'a> {
    notify: &'a crate::config::Notify,
    before: u32,
}

impl<'a> Notifier<'a> {
    pub fn before(
        notify: Option<&'a crate::config::Notify>,
        store: &crate::events::LocalStore,
        job: &crate::plugins::Job,
        account: Option<&str>,
    ) -> anyhow::Result<Option<Notifier<'a>>> {
        let Some(notify) = notify else {
            return Ok(None);
        };
        let before = store.consecutive_failures((job.package(), job.name()), account)?;
        Ok(Some(Notifier { notify, before }))
    }

    /// Calls the hook the run's outcome calls for; a hook's failure, or a store that cannot
    /// say, is a warning: the run's exit code stays.
    pub fn after(
        &self,
        store: &crate::events::LocalStore,
        job: &crate::plugins::Job,
        account: Option<&str>,
        report: &crate::runner::RunReport,
    ) {
        use crate::lifecycle::RunStatus;
        use crate::runner::Outcome;
        let (status, failed) = match &report.outcome {
            Outcome::Completed => (RunStatus::Completed, None),
            Outcome::Failed(failed) => (RunStatus::Failed, Some(failed)),
            Outcome::Skipped(_) | Outcome::AlreadyCompleted(_) => return,
        };
        let after = match store.consecutive_failures((job.package(), job.name()), account) {
            Ok(after) => after,
            Err(e) => {
                crate::output::stderr!(
                    "warning: no notification: cannot read the failures of {}: {e:#}",
                    job.id()
                );
                return;
            }
        };
        let Some(occasion) =
            crate::notify::Occasion::of(status, self.before, after, self.notify.notify_after)
        else {
            return;
        };
        let note = crate::notify::Note {
            occasion,
            run_id: report.run_id.clone(),
            package: job.package().to_owned(),
            job: job.name().to_owned(),
            account: account.map(str::to_owned),
            status,
            reason: failed.map(|f| f.reason),
            error: failed.map(|f| f.message.clone()),
            attempts: report.attempts,
            duration_seconds: report.duration.as_secs_f64(),
            consecutive_failures: match occasion {
                crate::notify::Occasion::Failure => after,
                crate::notify::Occasion::Recovery => self.before,
            },
            log_tail: report.log_tail.clone(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
        };
        crate::notify::send(self.notify, &note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_is_notified_once_when_it_reaches_notify_after_and_once_when_it_ends() {
        let occasions = |notify_after| {
            // fail, fail, fail, fail, ok, fail, ok
            let runs = [
                (RunStatus::Failed, 0, 1),
                (RunStatus::Failed, 1, 2),
                (RunStatus::Failed, 2, 3),
                (RunStatus::Failed, 3, 4),
                (RunStatus::Completed, 4, 0),
                (RunStatus::Failed, 0, 1),
                (RunStatus::Completed, 1, 0),
            ];
            runs.iter()
                .map(|&(status, before, after)| Occasion::of(status, before, after, notify_after))
                .collect::<Vec<_>>()
        };
        let (f, r) = (Some(Occasion::Failure), Some(Occasion::Recovery));
        assert_eq!(occasions(3), [None, None, f, None, r, None, None]);
        assert_eq!(occasions(1), [f, None, None, None, r, f, r]);
        // A run whose failure was not counted (a skipped run) is no new failure.
        assert_eq!(Occasion::of(RunStatus::Failed, 3, 3, 3), None);
    }
}
