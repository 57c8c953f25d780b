//! The plugin search path: `--plugin-path` flags, then `LORCH_PLUGIN_PATH`, then the default
//! directory.

use std::collections::HashSet;
use std::env;
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
            let mut found: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| is_plugin_file(path))
                .collect();
            found.sort();
            for path in found {
                let path = std::path::absolute(&path).unwrap_or(path);
                if seen.insert(path.canonicalize().unwrap_or_else(|_| path.clone())) {
                    files.push(path);
                }
            }
        }
        files
    }
}

fn is_plugin_file(path: &Path) -> bool {
    let suffix = std::env::consts::DLL_SUFFIX;
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(suffix) && n.len() > suffix.len())
        && path.is_file()
}
