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
