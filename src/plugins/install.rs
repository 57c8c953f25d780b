//! `lorch plugins install`: puts plugin files into a plugin directory the way lorch needs them.
//!
//! - Checked first: a file that is not a lorch plugin of this ABI, or whose metadata lorch
//!   refuses, is not installed (nothing is half-installed: files are checked before any is
//!   copied).
//! - Atomic: the file is written under a temporary name, then renamed over the old one. A job
//!   running from the old file keeps its mapping (copying over it in place, as `cp` does,
//!   killed running jobs with SIGBUS).
//! - Safe permissions whatever the umask: the file `0644`, a directory lorch creates `0755`, so
//!   the plugin passes lorch's own ownership and permission checks (`umask 002` used to make
//!   every copied plugin refused).

use std::fs::{File, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use lorch_plugin_api::abi::JobMetadata;

use super::library;

/// One plugin file checked and ready to install.
pub struct Checked {
    pub source: PathBuf,
    pub abi: u32,
    pub jobs: Vec<JobMetadata>,
}

/// Loads `source` as lorch would (ABI version, header, metadata) without running a job.
pub fn check(source: &Path) -> Result<Checked, String> {
    let file = File::open(source).map_err(|e| format!("{}: {e}", source.display()))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(format!("{} is not a file", source.display()));
    }
    let library = library::load(file, source)
        .map_err(|e| format!("{} is not a plugin lorch can load: {e}", source.display()))?;
    Ok(Checked {
        source: source.to_owned(),
        abi: library.header.abi_version,
        jobs: library.metadata.jobs,
    })
}

/// Why lorch would still refuse the installed file (a directory above it that another user
/// can write, say), if it would.
pub fn refused(installed: &Path) -> Option<String> {
    super::safety::open(installed, false, &mut super::safety::DirChecks::default()).err()
}

/// Copies a checked plugin into `dir` (created `0755` when missing) as `0644`, atomically;
/// returns where it went.
pub fn install(plugin: &Checked, dir: &Path) -> std::io::Result<PathBuf> {
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
        // The mode above is still filtered by the umask.
        std::fs::set_permissions(dir, Permissions::from_mode(0o755))?;
    }
    let name = plugin
        .source
        .file_name()
        .ok_or_else(|| std::io::Error::other("the plugin path has no file name"))?;
    let target = dir.join(name);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let bytes = std::fs::read(&plugin.source)?;
        let mut out = File::create_new(&tmp)?;
        out.write_all(&bytes)?;
        out.set_permissions(Permissions::from_mode(0o644))?;
        out.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| target)
}
