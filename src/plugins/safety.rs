//! Like ssh's StrictModes: a plugin is code that runs as you, so a plugin file, or the directory
//! holding it, that another user can write to is refused.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::sys;

/// Checks the plugin file and its directory: neither group- nor world-writable, each owned by
/// root or by the user running lorch.
pub fn check(file: &Path) -> Result<(), String> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    for (what, path) in [("directory", dir), ("file", file)] {
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot inspect {what} {}: {e}", path.display()))?;
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
        assert_eq!(check(&file), Ok(()));

        chmod(&file, 0o757);
        let err = check(&file).unwrap_err();
        assert!(
            err.contains(&format!(
                "file {} is world-writable (fix: chmod go-w",
                file.display()
            )),
            "{err}"
        );
        chmod(&file, 0o775);
        assert!(check(&file).unwrap_err().contains("is group-writable"));

        chmod(&file, 0o755);
        chmod(dir.path(), 0o777);
        let err = check(&file).unwrap_err();
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
