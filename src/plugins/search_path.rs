//! The plugin search path: `--plugin-path` flags, then `LORCH_PLUGIN_PATH`, then the default
//! directory.

use std::collections::HashSet;
use std::env;
use std::ffi::OsString;
use std::fs::DirEntry;
use std::path::{Path, PathBuf};

use super::Problem;
use crate::paths;

/// The directories searched for plugin files, in order.
#[derive(Debug, Clone)]
pub struct SearchPath {
    dirs: Vec<(PathBuf, Origin)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Flag,
    Env,
    Default,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Flag => "--plugin-path",
            Origin::Env => "LORCH_PLUGIN_PATH",
            Origin::Default => "default",
        }
    }
}

impl SearchPath {
    /// Every `--plugin-path DIR`, then `LORCH_PLUGIN_PATH` (colon-separated), then
    /// `$XDG_DATA_HOME/lorch/plugins`.
    pub fn from_env(flags: &[PathBuf]) -> SearchPath {
        let mut dirs: Vec<_> = flags.iter().map(|d| (d.clone(), Origin::Flag)).collect();
        if let Some(list) = env::var_os("LORCH_PLUGIN_PATH") {
            dirs.extend(
                env::split_paths(&list)
                    .filter(|d| !d.as_os_str().is_empty())
                    .map(|d| (d, Origin::Env)),
            );
        }
        dirs.extend(paths::default_plugin_dir().map(|d| (d, Origin::Default)));
        SearchPath { dirs }
    }

    /// Each directory with where it came from (`--plugin-path`, `LORCH_PLUGIN_PATH`, `default`).
    pub fn dirs(&self) -> impl Iterator<Item = (&Path, &'static str)> {
        self.dirs
            .iter()
            .map(|(dir, origin)| (dir.as_path(), origin.as_str()))
    }

    /// The plugin files (`*.so`, `*.dylib` on macOS) of every directory, each directory's
    /// sorted by name, each file once even when two entries of the path reach it. A directory
    /// the user named that cannot be read is a problem; a missing default directory is not.
    pub fn plugin_files(&self, problems: &mut Vec<Problem>) -> Vec<PathBuf> {
        let mut seen = HashSet::new();
        let mut files = Vec::new();
        for (dir, origin) in &self.dirs {
            // A directory reached twice (listed twice, or through a symlink) is read once.
            let shown = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            if !seen.insert(dir.canonicalize().unwrap_or_else(|_| shown.clone())) {
                continue;
            }
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound && *origin == Origin::Default =>
                {
                    continue;
                }
                Err(e) => {
                    let from = origin.as_str();
                    problems.push(Problem::new(
                        dir,
                        format!("cannot read plugin directory (from {from}): {e}"),
                    ));
                    continue;
                }
            };
            let mut found: Vec<OsString> = entries
                .filter_map(Result::ok)
                .filter(is_plugin_file)
                .map(|e| e.file_name())
                .collect();
            found.sort();
            files.extend(found.iter().map(|name| shown.join(name)));
        }
        files
    }
}

/// A `*.so` (`*.dylib`) regular file, or a symlink to one. The directory listing already knows
/// the file type, so only symlinks cost a `stat`.
fn is_plugin_file(entry: &DirEntry) -> bool {
    let suffix = std::env::consts::DLL_SUFFIX;
    let name = entry.file_name();
    let named = name
        .to_str()
        .is_some_and(|n| n.ends_with(suffix) && n.len() > suffix.len());
    named
        && match entry.file_type() {
            Ok(kind) if kind.is_symlink() => entry.path().is_file(),
            Ok(kind) => kind.is_file(),
            Err(_) => false,
        }
}
