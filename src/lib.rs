//! lorch: a plugin job runner for the command line.
//!
//! The `lorch` binary is [`main`]. A team that wants its jobs compiled in builds its own binary
//! that depends on this crate and on its job crates, and calls [`main`] too (see
//! `examples/custom-lorch`).

mod bigquery;
mod cli;
mod commands;
mod error;
pub mod events;
mod history;
mod host;
mod locks;
mod output;
mod params;
mod paths;
pub mod plugins;
mod runner;
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
/// debug, trace, off; default info).
fn init_logging() {
    use tracing_subscriber::filter::LevelFilter;
    let level = std::env::var("LORCH_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_max_level(level)
        .init();
}
