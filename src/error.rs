//! The errors that decide lorch's exit code, and the exit codes themselves (README, "Exit codes").

use std::fmt;
use std::process::ExitCode;

/// How a lorch process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// The job ran and failed.
    JobFailed = 1,
    /// A bad flag or value, an unknown package or job, an invalid parameter.
    Usage = 2,
    /// Something around the job is broken: a plugin that failed to load, the event store.
    Environment = 3,
    /// Another run holds the job's lock.
    Skipped = 75,
    /// Cancelled by SIGHUP.
    HungUp = 129,
    /// Cancelled by SIGINT.
    Interrupted = 130,
    /// Cancelled by SIGQUIT.
    Quit = 131,
    /// Cancelled by SIGTERM.
    Terminated = 143,
}

impl Exit {
    pub const ALL: [Exit; 9] = [
        Exit::Success,
        Exit::JobFailed,
        Exit::Usage,
        Exit::Environment,
        Exit::Skipped,
        Exit::HungUp,
        Exit::Interrupted,
        Exit::Quit,
        Exit::Terminated,
    ];

    /// The exit code of a child lorch as the [`Exit`] it means; `None` for a code lorch never
    /// exits with (101: a panic).
    pub fn from_code(code: i32) -> Option<Exit> {
        Exit::ALL.into_iter().find(|exit| *exit as i32 == code)
    }

    /// The exit code of a run cancelled by `signal` (one of `Signals::CAUGHT`): 128 + its number,
    /// as a shell reports a process killed by it.
    pub fn cancelled_by(signal: i32) -> Exit {
        match signal {
            libc::SIGHUP => Exit::HungUp,
            libc::SIGINT => Exit::Interrupted,
            libc::SIGQUIT => Exit::Quit,
            _ => Exit::Terminated,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Why a command stopped before (or instead of) doing its work.
#[derive(Debug)]
pub enum Error {
    /// The user asked for something lorch cannot do as asked; the message says what is
    /// accepted.
    Usage(String),
    /// The environment is broken: a plugin, the event store, the file system.
    Environment(anyhow::Error),
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage(_) => Exit::Usage,
            Error::Environment(_) => Exit::Environment,
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(error: anyhow::Error) -> Error {
        Error::Environment(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) => f.write_str(message),
            // `{:#}` prints anyhow's whole context chain on one line.
            Error::Environment(error) => write!(f, "{error:#}"),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line, each cause once (`error sending request: …: Connection
/// refused (os error 111)`): for BigQuery's answers and the webhooks of notifications.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}
