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
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::sys;

/// What identifies one version of a file: replacing, rewriting, touching or chmod-ing it
/// changes at least one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

impl Stamp {
    pub fn of(meta: &Metadata) -> Stamp {
        Facts::from(meta).stamp
    }
}

/// What lorch checks of a file or directory, from `std`'s metadata or from a `stat` of its own.
struct Facts {
    mode: u32,
    uid: u32,
    stamp: Stamp,
}

fn nanos(secs: i64, nanos: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nanos)
}

impl From<&Metadata> for Facts {
    fn from(meta: &Metadata) -> Facts {
        Facts {
            mode: meta.mode(),
            uid: meta.uid(),
            stamp: Stamp {
                size: meta.size(),
                mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
                ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
                ino: meta.ino(),
                dev: meta.dev(),
            },
        }
    }
}

impl From<&libc::stat> for Facts {
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    fn from(st: &libc::stat) -> Facts {
        Facts {
            mode: st.st_mode as u32,
            uid: st.st_uid as u32,
            stamp: Stamp {
                size: st.st_size as u64,
                mtime_ns: nanos(st.st_mtime as i64, st.st_mtime_nsec as i64),
                ctime_ns: nanos(st.st_ctime as i64, st.st_ctime_nsec as i64),
                ino: st.st_ino as u64,
                dev: st.st_dev as u64,
            },
        }
    }
}

impl Facts {
    /// Whether the file type bits are `kind` (`libc::S_IFREG`, ...).
    #[allow(clippy::unnecessary_cast)] // `mode_t` is u16 on macOS
    fn is(&self, kind: libc::mode_t) -> bool {
        self.mode & libc::S_IFMT as u32 == kind as u32
    }
}

/// A plugin file, found and checked but not opened: enough to serve its jobs from the metadata
/// cache, which costs one `stat` per file (a directory of 1,000 plugins lists in a few
/// milliseconds, see docs/performance.md).
pub struct Inspected {
    /// The real path of the directory the file was listed in (the metadata cache's key).
    pub dir: Arc<Path>,
    /// The file's real path: no symbolic link left in it.
    pub real: PathBuf,
    pub stamp: Stamp,
}

/// A plugin file, open, and still the file that was inspected.
pub struct Checked {
    pub file: File,
    pub stamp: Stamp,
}

/// Remembers each directory's real path (and keeps it open), and the verdict on the directories
/// from each plugin directory up to `/`, so a thousand plugins in one directory cost one walk.
#[derive(Default)]
pub struct DirChecks {
    chains: HashMap<PathBuf, Result<(), String>>,
    verdicts: HashMap<(PathBuf, bool), Result<(), String>>,
    real: HashMap<PathBuf, (Arc<Path>, File)>,
}

/// Finds the plugin at `path` and, unless `allow_insecure`, checks it and the directories that
/// lead to it.
pub fn inspect(
    path: &Path,
    allow_insecure: bool,
    dirs: &mut DirChecks,
) -> Result<Inspected, String> {
    let cannot_resolve = |e: std::io::Error| format!("cannot resolve {}: {e}", path.display());
    let (Some(listed_in), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{} is not a file", path.display()));
    };
    let (dir, facts) = dirs.lstat_in(listed_in, name).map_err(cannot_resolve)?;
    let (real, facts) = if facts.is(libc::S_IFLNK) {
        let real = path.canonicalize().map_err(cannot_resolve)?;
        let meta = real.symlink_metadata().map_err(cannot_resolve)?;
        (real, Facts::from(&meta))
    } else {
        (dir.join(name), facts)
    };
    if !facts.is(libc::S_IFREG) {
        return Err(format!("{} is not a regular file", real.display()));
    }
    if !allow_insecure {
        check(&real, "plugin file", &facts, false)?;
        dirs.check_chain(real.parent())?;
        if Some(&*dir) != real.parent() {
            // Reached through a link: whoever can replace the link chooses the file.
            dirs.check_chain(Some(&dir))?;
        }
    }
    Ok(Inspected {
        dir,
        real,
        stamp: facts.stamp,
    })
}

/// [`inspect`], then [`Inspected::open`].
pub fn open(path: &Path, allow_insecure: bool, dirs: &mut DirChecks) -> Result<Checked, String> {
    inspect(path, allow_insecure, dirs)?.open()
}

impl Inspected {
    /// Opens the file that was checked: by its real path, refusing a link swapped in since
    /// (`O_NOFOLLOW`), and only if it is still that very version of the file.
    pub fn open(self) -> Result<Checked, String> {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.real)
            .map_err(|e| format!("cannot open {}: {e}", self.real.display()))?;
        let stamp = file
            .metadata()
            .map(|meta| Stamp::of(&meta))
            .map_err(|e| format!("cannot inspect {}: {e}", self.real.display()))?;
        if stamp != self.stamp {
            return Err(format!(
                "{} changed since lorch checked it (a new version being installed?); try again",
                self.real.display()
            ));
        }
        Ok(Checked { file, stamp })
    }
}

impl DirChecks {
    /// The real path of directory `dir` (resolved and opened once), and what `lstat` says of
    /// `name` in it.
    fn lstat_in(&mut self, dir: &Path, name: &OsStr) -> std::io::Result<(Arc<Path>, Facts)> {
        if !self.real.contains_key(dir) {
            let shown = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let real = shown.canonicalize()?;
            // Only a handle to look names up in (O_PATH: not even read permission needed).
            #[cfg(target_os = "linux")]
            let flags = libc::O_PATH | libc::O_DIRECTORY;
            #[cfg(not(target_os = "linux"))]
            let flags = libc::O_DIRECTORY;
            let handle = File::options().read(true).custom_flags(flags).open(&real)?;
            self.real.insert(dir.to_owned(), (real.into(), handle));
        }
        let (real, handle) = &self.real[dir];
        Ok((real.clone(), Facts::from(&sys::lstat_at(handle, name)?)))
    }

    /// Checks `dir` (strictly: it holds the plugin) and every directory above it, once.
    fn check_chain(&mut self, dir: Option<&Path>) -> Result<(), String> {
        let Some(dir) = dir else { return Ok(()) };
        if let Some(verdict) = self.chains.get(dir) {
            return verdict.clone();
        }
        let verdict = self.walk_chain(dir);
        self.chains.insert(dir.to_owned(), verdict.clone());
        verdict
    }

    fn walk_chain(&mut self, dir: &Path) -> Result<(), String> {
        let mut strict = true;
        let mut next = Some(dir);
        while let Some(dir) = next {
            // Keyed by strictness too: `/tmp` passes as a parent (sticky), not as the plugin's own.
            let key = (dir.to_owned(), strict);
            let verdict = match self.verdicts.get(&key) {
                Some(verdict) => verdict,
                None => {
                    let verdict = match std::fs::metadata(dir).map(|meta| Facts::from(&meta)) {
                        Ok(facts) if strict => check(dir, "plugin directory", &facts, false),
                        Ok(facts) => check(dir, "directory", &facts, true),
                        Err(e) => Err(format!("cannot inspect directory {}: {e}", dir.display())),
                    };
                    self.verdicts.entry(key).or_insert(verdict)
                }
            };
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
fn check(path: &Path, what: &str, facts: &Facts, sticky_ok: bool) -> Result<(), String> {
    let fix = |how: String| {
        format!(
            "refusing to load it: the {what} {} {how}, so another user could change the code lorch runs; \
             pass --allow-insecure-plugins to load it anyway",
            path.display()
        )
    };
    let sticky = facts.mode & 0o1000 != 0;
    let writable = match facts.mode & 0o022 {
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
    if facts.uid != 0 && facts.uid != sys::euid() {
        return Err(fix(format!(
            "is owned by another user (uid {}; fix: chown it to yourself or root)",
            facts.uid
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
    fn a_sticky_directory_passes_as_a_parent_only_even_when_checked_first_as_one() {
        let top = tempfile::tempdir().unwrap();
        chmod(top.path(), 0o755);
        let shared = top.path().join("shared");
        let own = shared.join("own");
        std::fs::create_dir_all(&own).unwrap();
        chmod(&own, 0o755);
        chmod(&shared, 0o1777);
        for file in [own.join("liba.so"), shared.join("libb.so")] {
            std::fs::write(&file, "").unwrap();
            chmod(&file, 0o644);
        }
        // One DirChecks for both, as in a listing: `shared` is first judged as a parent (fine),
        // then as the directory holding libb.so itself (refused: anyone can add files there).
        let mut dirs = DirChecks::default();
        assert!(open(&own.join("liba.so"), false, &mut dirs).is_ok());
        let err = open(&shared.join("libb.so"), false, &mut dirs)
            .err()
            .unwrap();
        assert!(err.contains("plugin directory"), "{err}");
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
