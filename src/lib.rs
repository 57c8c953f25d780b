//! lorch: a plugin job runner for the command line.
//!
//! The `lorch` binary is [`main`]. A team that wants its jobs compiled in builds its own binary
//! that depends on this crate and on its job crates, and calls [`main`] too (see
//! `examples/custom-lorch`).

mod backoff;
mod bigquery;
mod cli;
mod commands;
mod config;
mod error;
pub mod events;
mod health;
mod history;
mod host;
mod lifecycle;
mod locks;
mod metrics;
mod output;
mod params;
mod paths;
mod plan;
pub mod plugins;
mod runner;
mod schedule;
mod signals;
mod suggest;
mod sys;
pub mod timearg;

/// How events travel from a job's worker process to lorch, for `benches/micro.rs`; not an API.
#[doc(hidden)]
pub use runner::protocol as worker_protocol;

use std::io::IsTerminal;
use std::process::ExitCode;

use crate::output::stderr;
use clap::Parser;

/// Runs the lorch command line with this process's arguments and environment.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let cli::Command::RunJob { options, .. } | cli::Command::Run { options, .. } = &cli.command
        && options.quiet
        && std::env::var_os("LORCH_LOG").is_none()
    {
        // SAFETY: no other thread exists yet. Set in the environment so that the job's worker
        // process logs at `warn` too.
        unsafe { std::env::set_var("LORCH_LOG", "warn") };
    }
    init_logging();
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

/// Logs (lorch's and the jobs') go to stderr; `LORCH_LOG` sets the level (error, warn, info,
/// debug, trace, off; default info). Colours only on a terminal, and not with `NO_COLOR` set
/// (no-color.org) or `TERM=dumb`.
fn init_logging() {
    use tracing_subscriber::filter::LevelFilter;
    let given = std::env::var("LORCH_LOG").ok().filter(|v| !v.is_empty());
    let level = given.as_deref().map(str::parse::<LevelFilter>);
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false)
        .with_max_level(match level {
            Some(Ok(level)) => level,
            _ => LevelFilter::INFO,
        })
        .init();
    if let (Some(given), Some(Err(_))) = (given, level) {
        stderr!(
            "warning: invalid LORCH_LOG '{given}': expected error, warn, info, debug, trace or off; logging at info"
        );
    }
}
