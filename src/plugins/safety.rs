//! Like ssh's StrictModes: a plugin is code that runs as you, so a plugin file, or the directory
//! holding it, that another user can write to is refused.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::sys;

/// Checks one plugin file or directory (`what`): neither group- nor world-writable, owned by
/// root or by the user running lorch. `meta` saves a `stat` when the caller has it.
pub fn check(path: &Path, what: &str, meta: Option<&Metadata>) -> Result<(), String> {
    let fetched;
    let meta = match meta {
        Some(meta) => meta,
        None => {
            fetched = std::fs::metadata(path)
                .map_err(|e| format!("cannot inspect {what} {}: {e}", path.display()))?;
            &fetched
        }
    };
    let fix = |how: String| {
        format!(
            "refusing to load it: the plugin {what} {} {how}, so another user could change the code lorch runs; \
             pass --allow-insecure-plugins to load it anyway",
            path.display()
        )
    };
    let writable = match meta.mode() & 0o022 {
        0 => None,
        0o002 => Some("world"),
        0o020 => Some("group"),
        _ => Some("group- and world"),
    };
    if let Some(who) = writable {
        return Err(fix(format!(
            "is {who}-writable (fix: chmod go-w {})",
            path.display()
        )));
    }
    if meta.uid() != 0 && meta.uid() != sys::euid() {
        return Err(fix(format!(
            "is owned by another user (uid {}; fix: chown it to yourself or root)",
            meta.uid()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The file, then its directory, as lorch checks a plugin.
    fn check_plugin(file: &Path) -> Result<(), String> {
        check(file, "file", None).and_then(|()| check(file.parent().unwrap(), "directory", None))
    }

    #[test]
    fn refuses_group_or_world_writable_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("libx.so");
        std::fs::write(&file, "").unwrap();
        let chmod = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        chmod(dir.path(), 0o755);
        chmod(&file, 0o755);
        assert_eq!(check_plugin(&file), Ok(()));

        chmod(&file, 0o757);
        let err = check_plugin(&file).unwrap_err();
        assert!(
            err.contains(&format!(
                "file {} is world-writable (fix: chmod go-w",
                file.display()
            )),
            "{err}"
        );
        chmod(&file, 0o775);
        assert!(
            check_plugin(&file)
                .unwrap_err()
                .contains("is group-writable")
        );

        chmod(&file, 0o755);
        chmod(dir.path(), 0o777);
        let err = check_plugin(&file).unwrap_err();
        assert!(
            err.contains(&format!(
                "directory {} is group- and world-writable",
                dir.path().display()
            )),
            "{err}"
        );
        assert!(err.contains("--allow-insecure-plugins"), "{err}");
    }
}
