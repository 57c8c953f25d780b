//! Where lorch keeps things, from the environment (XDG base directories).

use std::env;
use std::path::PathBuf;

/// The NATS server of fleet mode (docs/fleet.md); here, not in `fleet`, because what runs a
/// job keeps it from the job (it may hold a password) without knowing the fleet.
pub const NATS_URL_VAR: &str = "LORCH_NATS_URL";

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

/// [`lorch_home`], or the error that says how to give one.
pub fn home() -> anyhow::Result<PathBuf> {
    lorch_home()
        .ok_or_else(|| anyhow::anyhow!("no place for the event store: set LORCH_HOME (or HOME)"))
}

/// `$XDG_DATA_HOME/lorch/plugins`, else `~/.local/share/lorch/plugins`.
pub fn default_plugin_dir() -> Option<PathBuf> {
    xdg("DATA", ".local/share").map(|d| d.join("lorch").join("plugins"))
}

/// `$XDG_CACHE_HOME/lorch`, else `~/.cache/lorch`.
pub fn cache_dir() -> Option<PathBuf> {
    xdg("CACHE", ".cache").map(|d| d.join("lorch"))
}

/// FNV-1a, 64 bits: a hash that is the same in every lorch build (std's hasher promises no
/// such thing), for file names made from names of any length (lock files, cache files).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
