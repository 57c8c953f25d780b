//! Like ssh's StrictModes: a plugin is code that runs as you, so lorch loads it only when no
//! other user could have changed it or put it there (README, "Everywhere").
//!
//! The plugin file is opened once, by its real path (every symbolic link resolved), and what is
//! checked is the open file: regular, owned by you or root, writable by nobody else. Then its
//! directory and every directory above it, up to `/`, and the same for the directory that
//! holds the link when the file was reached through one: owned by you or root, and not group-
//! or world-writable (a directory above the plugin's own may be world-writable when its sticky
//! bit is set, as `/tmp` is: others cannot rename or remove what they do not own there). The
//! library is then loaded from the open descriptor, in lorch and in the worker it hands the
//! descriptor to, so the file that runs is exactly the file that was checked, even if another
//! user swaps files on the path in between.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::sys;

/// A plugin file, open, with what was checked.
pub struct Checked {
    pub file: File,
    pub meta: Metadata,
}

/// Remembers the verdict on each directory, so a thousand plugins in one directory cost one
/// walk up to `/`.
#[derive(Default)]
pub struct DirChecks(HashMap<PathBuf, Result<(), String>>);

/// Opens the plugin at `path` and, unless `allow_insecure`, checks it and the directories that
/// lead to it.
pub fn open(path: &Path, allow_insecure: bool, dirs: &mut DirChecks) -> Result<Checked, String> {
    let real = path
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    // The real path has no link left; O_NOFOLLOW refuses one swapped in since.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&real)
        .map_err(|e| format!("cannot open {}: {e}", real.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot inspect {}: {e}", real.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", real.display()));
    }
    if !allow_insecure {
        check(&real, "plugin file", &meta, false)?;
        dirs.check_chain(real.parent())?;
        if let Some(link_dir) = path.parent().and_then(|d| d.canonicalize().ok())
            && Some(link_dir.as_path()) != real.parent()
        {
            dirs.check_chain(Some(&link_dir))?;
        }
    }
    Ok(Checked { file, meta })
}

impl DirChecks {
    /// Checks `dir` (strictly: it holds the plugin) and every directory above it.
    fn check_chain(&mut self, dir: Option<&Path>) -> Result<(), String> {
        let mut strict = true;
        let mut next = dir;
        while let Some(dir) = next {
            let verdict =
                self.0
                    .entry(dir.to_owned())
                    .or_insert_with(|| match std::fs::metadata(dir) {
                        Ok(meta) if strict => check(dir, "plugin directory", &meta, false),
                        Ok(meta) => check(dir, "directory", &meta, true),
                        Err(e) => Err(format!("cannot inspect directory {}: {e}", dir.display())),
                    });
            verdict.clone()?;
            strict = false;
            next = dir.parent();
        }
        Ok(())
    }
}

/// Checks one file or directory (`what` it is to the plugin): owned by root or by the user
/// running lorch, neither group- nor world-writable (unless `sticky_ok` and its sticky bit is
/// set).
fn check(path: &Path, what: &str, meta: &Metadata, sticky_ok: bool) -> Result<(), String> {
    let fix = |how: String| {
        format!(
            "refusing to load it: the {what} {} {how}, so another user could change the code lorch runs; \
             pass --allow-insecure-plugins to load it anyway",
            path.display()
        )
    };
    let sticky = meta.mode() & 0o1000 != 0;
    let writable = match meta.mode() & 0o022 {
        _ if sticky_ok && sticky => None,
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

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    }

    fn open_plugin(file: &Path) -> Result<Checked, String> {
        open(file, false, &mut DirChecks::default())
    }

    #[test]
    fn refuses_group_or_world_writable_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("libx.so");
        std::fs::write(&file, "").unwrap();
        chmod(dir.path(), 0o755);
        chmod(&file, 0o755);
        assert!(open_plugin(&file).is_ok());

        chmod(&file, 0o757);
        let err = open_plugin(&file).err().unwrap();
        assert!(
            err.contains(&format!(
                "plugin file {} is world-writable (fix: chmod go-w",
                file.display()
            )),
            "{err}"
        );
        chmod(&file, 0o775);
        assert!(
            open_plugin(&file)
                .err()
                .unwrap()
                .contains("is group-writable")
        );

        chmod(&file, 0o755);
        chmod(dir.path(), 0o777);
        let err = open_plugin(&file).err().unwrap();
        assert!(
            err.contains(&format!(
                "plugin directory {} is group- and world-writable",
                dir.path().display()
            )),
            "{err}"
        );
        assert!(err.contains("--allow-insecure-plugins"), "{err}");
        // The plugin's own directory may not be world-writable even with the sticky bit.
        chmod(dir.path(), 0o1777);
        assert!(open_plugin(&file).is_err());
        assert!(open(&file, true, &mut DirChecks::default()).is_ok());
    }

    #[test]
    fn every_directory_above_counts_and_a_sticky_one_is_safe() {
        let top = tempfile::tempdir().unwrap();
        let parent = top.path().join("shared");
        let dir = parent.join("plugins");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("libx.so");
        std::fs::write(&file, "").unwrap();
        chmod(&dir, 0o755);
        chmod(top.path(), 0o755);
        // Anyone may rename `plugins` away and put their own in its place.
        chmod(&parent, 0o777);
        let err = open_plugin(&file).err().unwrap();
        assert!(
            err.contains(&format!(
                "directory {} is group- and world-writable",
                parent.display()
            )),
            "{err}"
        );
        // Like /tmp: nobody may rename what is not theirs.
        chmod(&parent, 0o1777);
        assert!(open_plugin(&file).is_ok());
    }

    #[test]
    fn a_link_is_judged_by_where_it_leads_and_where_it_stands() {
        let top = tempfile::tempdir().unwrap();
        chmod(top.path(), 0o755);
        let mine = top.path().join("mine");
        let open_dir = top.path().join("open");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::create_dir_all(&open_dir).unwrap();
        chmod(&mine, 0o755);
        chmod(&open_dir, 0o777);
        let target = open_dir.join("libtestkit.so");
        std::fs::write(&target, "").unwrap();
        chmod(&target, 0o644);
        let link = mine.join("libtestkit.so");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // The link's directory is fine; the file's is writable by anyone, who could swap it.
        let err = open_plugin(&link).err().unwrap();
        assert!(
            err.contains(&format!(
                "plugin directory {} is group- and world-writable",
                open_dir.display()
            )),
            "{err}"
        );
        chmod(&open_dir, 0o755);
        assert!(open_plugin(&link).is_ok());
        // And the other way round: a safe file reached through a link anyone can replace.
        chmod(&mine, 0o777);
        assert!(open_plugin(&link).is_err());
    }
}
