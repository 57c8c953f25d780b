//! Finding jobs: those linked into this binary and those in plugin files on the search path
//! (README, "Everywhere"; docs/plugin-abi.md). Nothing here runs job code; loading a plugin
//! reads its header and metadata.

mod cache;
mod catalog;
mod declared;
pub mod install;
mod library;
mod metadata;
mod safety;
mod search_path;

pub use catalog::{Catalog, Job, Location, Lookup, PluginFile, Problem};
pub use declared::Declared;
pub use search_path::SearchPath;

/// The job `PACKAGE/JOB` (or `JOB` when no other package has a job of that name), after
/// reporting the plugins that failed to load.
pub fn find_job<'a>(
    catalog: &'a Catalog,
    search_path: &SearchPath,
    id: &str,
) -> crate::error::Result<&'a Job> {
    catalog.report_problems();
    let job = match id.split_once('/') {
        Some((package, name)) => catalog.find(package, name),
        None => catalog.find_unique(id),
    };
    job.map_err(|e| nowhere(search_path, e))
}

/// An unknown job when lorch had nowhere to look (no `HOME`, no plugin path): the environment is
/// the problem, not the name.
pub fn nowhere(search_path: &SearchPath, lookup: Lookup) -> crate::error::Error {
    match lookup {
        Lookup::Unknown(why) if search_path.dirs().next().is_none() => {
            crate::error::Error::Environment(anyhow::anyhow!(
                "{why}: lorch had no plugin directory to look in (HOME is not set, nor XDG_DATA_HOME, LORCH_PLUGIN_PATH or --plugin-path); set HOME, or name the directory with --plugin-path or LORCH_PLUGIN_PATH"
            ))
        }
        lookup => lookup.into(),
    }
}

/// A name that is not there is the user's mistake; a plugin that failed to load is the
/// environment's (README, "Exit codes").
impl From<Lookup> for crate::error::Error {
    fn from(lookup: Lookup) -> crate::error::Error {
        match lookup {
            Lookup::Unknown(why) => crate::error::Error::Usage(why),
            Lookup::Unavailable(why) => crate::error::Error::Environment(anyhow::anyhow!(why)),
        }
    }
}
