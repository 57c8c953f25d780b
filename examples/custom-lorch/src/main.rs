//! A team's own `lorch`: the stock command line, with the `canonizer` jobs linked in.
//!
//! `custom-lorch jobs list` shows `canonizer/canonicalize_email` as a built-in job, with no
//! plugin directory at all. Add one dependency and one `use` line per job crate.

// Naming the crate keeps the linker from dropping it, and with it its job registrations.
use canonizer as _;

fn main() -> std::process::ExitCode {
    lorch::main()
}
