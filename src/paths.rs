//! Where lorch keeps things, from the environment (XDG base directories).

use std::env;
use std::path::PathBuf;

/// `$NAME` when set and non-empty.
fn var(name: &str) -> Option<PathBuf> {
    env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `$XDG_<kind>_HOME`, else `~/<fallback>`.
fn xdg(kind: &str, fallback: &str) -> Option<PathBuf> {
    var(&format!("XDG_{kind}_HOME")).or_else(|| var("HOME").map(|home| home.join(fallback)))
}

/// `LORCH_HOME`, else `$XDG_STATE_HOME/lorch`, else `~/.local/state/lorch`.
pub fn lorch_home() -> Option<PathBuf> {
    var("LORCH_HOME").or_else(|| xdg("STATE", ".local/state").map(|d| d.join("lorch")))
}

/// `$XDG_DATA_HOME/lorch/plugins`, else `~/.local/share/lorch/plugins`.
pub fn default_plugin_dir() -> Option<PathBuf> {
    xdg("DATA", ".local/share").map(|d| d.join("lorch").join("plugins"))
}

/// `$XDG_CACHE_HOME/lorch`, else `~/.cache/lorch`.
pub fn cache_dir() -> Option<PathBuf> {
    xdg("CACHE", ".cache").map(|d| d.join("lorch"))
}
