//! lorch: a plugin job runner for the command line.
//!
//! The `lorch` binary is [`main`]. A team that wants its jobs compiled in builds its own binary
//! that depends on this crate and on its job crates, and calls [`main`] too (see
//! `examples/custom-lorch`).

mod backfill;
mod backoff;
mod bigquery;
mod child;
mod cli;
mod commands;
mod config;
mod error;
pub mod events;
mod fleet;
mod health;
mod history;
mod host;
mod lifecycle;
mod locks;
mod logging;
mod metrics;
mod notify;
mod output;
mod params;
mod paths;
mod pipelines;
mod plan;
pub mod plugins;
mod runlog;
mod runner;
mod schedule;
mod signals;
mod suggest;
mod sys;
pub mod timearg;
mod views;

/// How events travel from a job's worker process to lorch, for `benches/micro.rs`; not an API.
#[doc(hidden)]
pub use runner::protocol as worker_protocol;

use std::process::ExitCode;

use crate::output::stderr;

/// Runs the lorch command line with this process's arguments and environment.
pub fn main() -> ExitCode {
    let cli = cli::parse();
    if let cli::Command::RunJob { options, .. } | cli::Command::Run { options, .. } = &cli.command
        && options.quiet
        && std::env::var_os("LORCH_LOG").is_none()
    {
        // SAFETY: no other thread exists yet. Set in the environment so that the job's worker
        // process logs at `warn` too.
        unsafe { std::env::set_var("LORCH_LOG", "warn") };
    }
    if let Some(format) = cli.log_format {
        // SAFETY: as above; the job's worker process logs in this format too.
        unsafe { std::env::set_var(logging::FORMAT_VAR, format.as_str()) };
    }
    logging::init();
    if let cli::Command::Worker = cli.command {
        return runner::worker::main();
    }
    match commands::dispatch(cli) {
        Ok(exit) => exit.into(),
        Err(error) => {
            stderr!("error: {error}");
            error.exit().into()
        }
    }
}
