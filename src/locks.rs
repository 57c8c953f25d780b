//! File locks held with `flock`, which the kernel releases when the holder dies: no lock file
//! left behind by a crash or a reboot can block a job.
//!
//! Two kinds: the overlap lock of a job and account (a second run is skipped while it is held),
//! and the lock each running lorch holds on its own run id, which tells a later lorch whether a
//! run that shows "running" still has a process behind it.
//!
//! Nothing under `LORCH_HOME` is trusted blindly: lock files are opened without following
//! symbolic links and must be regular files, and a run id read from the store must be one lorch
//! could have made (a UUID) before it becomes part of a path.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek as _, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::paths;
use crate::signals::Signals;

/// A lock this process holds until it is dropped.
#[derive(Debug)]
pub struct Held {
    file: File,
    path: PathBuf,
    remove_on_drop: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Removing before unlocking: a reader that opened the old file finds it unlocked and
        // re-checks; nobody can lock a file that then disappears under a live holder.
        if self.remove_on_drop {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

impl Held {
    /// Releases the lock but leaves its file in place.
    pub fn keep_file(mut self) {
        self.remove_on_drop = false;
    }
}

/// Who holds a job's overlap lock, as it wrote itself into the lock file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holder {
    pub run_id: Option<String>,
    pub pid: Option<u32>,
}

pub enum Acquired {
    Held(Held),
    Busy(Holder),
}

/// The longest escaped account kept whole in a lock file name: with the package and job names
/// the name stays far below the 255 bytes a file name may have.
const MAX_ACCOUNT_NAME: usize = 64;

/// `<home>/locks/<package>.<job>.<account>.lock`; the account is escaped to a file name, and
/// no account is a lone `%`, which no escaped account can be. An account whose escaped form is
/// longer than [`MAX_ACCOUNT_NAME`] bytes keeps a readable start and ends in `~` and a hash of
/// the whole account (`~` is never part of an escaped account, so the forms cannot meet).
pub fn job_lock_path(home: &Path, package: &str, job: &str, account: Option<&str>) -> PathBuf {
    let account = match account {
        None => "%".to_owned(),
        Some(account) => {
            let escaped: String = account
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            if escaped.len() <= MAX_ACCOUNT_NAME {
                escaped
            } else {
                // Cut before an escape's `%`, never inside one.
                let mut cut = 40;
                while escaped.as_bytes()[cut - 1] == b'%' || escaped.as_bytes()[cut - 2] == b'%' {
                    cut -= 1;
                }
                format!(
                    "{}~{:016x}",
                    &escaped[..cut],
                    paths::fnv1a(account.as_bytes())
                )
            }
        }
    };
    home.join("locks")
        .join(format!("{package}.{job}.{account}.lock"))
}

fn not_a_file() -> io::Error {
    io::Error::other("it is not a regular file; remove it and lorch makes a new one")
}

/// Opens (creating) a lock file: never through a symbolic link, and only a regular file.
fn open(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::new(
                e.kind(),
                "it is a symbolic link, which lorch does not follow in its own directory; remove it",
            ),
            Some(libc::EISDIR) => not_a_file(),
            _ => e,
        })?;
    if !file.metadata()?.is_file() {
        return Err(not_a_file());
    }
    Ok(file)
}

/// Takes the overlap lock at `path` for `run_id`, waiting up to `wait` (and no longer once a
/// signal arrives) while another run holds it.
pub fn acquire(
    path: &Path,
    run_id: &str,
    wait: Duration,
    signals: &Signals,
) -> io::Result<Acquired> {
    let mut file = open(path)?;
    let give_up = crate::timearg::after(wait);
    loop {
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                writeln!(file, "{run_id} {}", std::process::id())?;
                return Ok(Acquired::Held(Held {
                    file,
                    path: path.to_owned(),
                    remove_on_drop: false,
                }));
            }
            Err(TryLockError::WouldBlock)
                if Instant::now() < give_up && signals.received().is_none() =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(TryLockError::WouldBlock) => {
                // The holder writes itself in just after taking the lock: give it 100 ms.
                let mut text = String::new();
                for _ in 0..20 {
                    text.clear();
                    file.seek(io::SeekFrom::Start(0))?;
                    file.read_to_string(&mut text)?;
                    if !text.trim().is_empty() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let mut words = text.split_whitespace();
                let run_id = words.next().map(str::to_owned);
                let pid = words.next().and_then(|p| p.parse().ok());
                return Ok(Acquired::Busy(Holder { run_id, pid }));
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// A run id lorch made: a UUID in its usual text form, nothing that could name another path.
pub fn valid_run_id(run_id: &str) -> bool {
    run_id.len() == 36 && uuid::Uuid::try_parse(run_id).is_ok()
}

fn run_lock_path(home: &Path, run_id: &str) -> io::Result<PathBuf> {
    if !valid_run_id(run_id) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{run_id:?} is not a run id lorch made (a UUID)"),
        ));
    }
    Ok(home.join("runs").join(format!("{run_id}.lock")))
}

/// The lock a running lorch holds on its run for the run's whole life.
pub fn hold_run(home: &Path, run_id: &str) -> io::Result<Held> {
    let path = run_lock_path(home, run_id)?;
    loop {
        let file = open(&path)?;
        file.lock()?;
        // A reaper may have removed the file between our open and our lock (it cleans up the
        // lock files of runs that never started): then the lock guards nothing; take it again.
        if same_file(&file, &path)? {
            return Ok(Held {
                file,
                path,
                remove_on_drop: true,
            });
        }
    }
}

/// Whether `path` still names the file `file` has open.
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    let open = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The lock of a run whose lorch process is gone, or `None` while a process still holds it.
pub fn take_orphaned_run(home: &Path, run_id: &str) -> io::Result<Option<Held>> {
    let path = run_lock_path(home, run_id)?;
    let file = open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Held {
            file,
            path,
            remove_on_drop: true,
        })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Whether a lorch process holds the lock of the run `run_id` (it is running, or waiting
/// between attempts).
pub fn run_is_held(home: &Path, run_id: &str) -> bool {
    let Ok(path) = run_lock_path(home, run_id) else {
        return false;
    };
    match File::open(path) {
        Ok(file) => matches!(file.try_lock(), Err(TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// The run ids of the lock files in `<home>/runs` (only names that are run ids).
pub fn run_lock_ids(home: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(home.join("runs")) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".lock")?;
            valid_run_id(id).then(|| id.to_owned())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_become_safe_distinct_file_names() {
        let home = Path::new("/h");
        assert_eq!(
            job_lock_path(home, "p", "j", None),
            Path::new("/h/locks/p.j.%.lock")
        );
        assert_eq!(
            job_lock_path(home, "p", "j", Some("acct1-personal")),
            Path::new("/h/locks/p.j.acct1-personal.lock")
        );
        assert_eq!(
            job_lock_path(home, "p", "j", Some("a/b c")),
            Path::new("/h/locks/p.j.a%2Fb%20c.lock")
        );
        assert_ne!(
            job_lock_path(home, "p", "j", Some("-")),
            job_lock_path(home, "p", "j", None)
        );
    }

    #[test]
    fn a_held_lock_is_busy_for_others_and_names_its_holder() {
        let home = tempfile::tempdir().unwrap();
        let path = job_lock_path(home.path(), "p", "j", None);
        let signals = Signals::default();
        let Acquired::Held(held) = acquire(&path, "run-1", Duration::ZERO, &signals).unwrap()
        else {
            panic!()
        };
        // flock locks belong to the open file, so a second open in this process contends too.
        let Acquired::Busy(holder) =
            acquire(&path, "run-2", Duration::from_millis(120), &signals).unwrap()
        else {
            panic!("acquired a held lock")
        };
        assert_eq!(
            holder,
            Holder {
                run_id: Some("run-1".into()),
                pid: Some(std::process::id())
            }
        );
        drop(held);
        assert!(matches!(
            acquire(&path, "run-3", Duration::ZERO, &signals).unwrap(),
            Acquired::Held(_)
        ));
    }

    const RUN: &str = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

    #[test]
    fn a_run_lock_tells_live_runs_from_orphans() {
        let home = tempfile::tempdir().unwrap();
        let live = hold_run(home.path(), RUN).unwrap();
        assert!(take_orphaned_run(home.path(), RUN).unwrap().is_none());
        assert_eq!(run_lock_ids(home.path()).unwrap(), [RUN]);
        drop(live);
        assert!(
            !run_lock_path(home.path(), RUN).unwrap().exists(),
            "a finished run removes its lock file"
        );
        assert!(take_orphaned_run(home.path(), RUN).unwrap().is_some());
    }

    #[test]
    fn run_ids_that_are_not_lorchs_never_become_paths() {
        let home = tempfile::tempdir().unwrap();
        for bad in ["../../x", "r1", "", "0193a1b2c3d47e5f8a9b0c1d2e3f4a5b"] {
            let err = take_orphaned_run(home.path(), bad).unwrap_err();
            assert!(
                err.to_string().contains("not a run id lorch made"),
                "{bad}: {err}"
            );
        }
        assert!(valid_run_id(RUN));
        // A stray file in runs/ is not taken for a run.
        std::fs::create_dir_all(home.path().join("runs")).unwrap();
        std::fs::write(home.path().join("runs/..%2Fx.lock"), "").unwrap();
        assert!(run_lock_ids(home.path()).unwrap().is_empty());
    }

    #[test]
    fn a_lock_file_replaced_by_a_link_or_a_directory_is_refused_not_followed() {
        let home = tempfile::tempdir().unwrap();
        let path = job_lock_path(home.path(), "p", "j", None);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let victim = home.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let signals = Signals::default();
        let Err(err) = acquire(&path, RUN, Duration::ZERO, &signals) else {
            panic!("a symbolic link was followed")
        };
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let Err(err) = acquire(&path, RUN, Duration::ZERO, &signals) else {
            panic!("a directory was taken for a lock file")
        };
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn long_accounts_make_bounded_distinct_names() {
        let home = Path::new("/h");
        let cjk = "絵".repeat(33);
        let name = |account: &str| {
            job_lock_path(home, "ingester", "extract_gmail", Some(account))
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        let long = name(&cjk);
        assert!(long.len() < 120, "{long}");
        assert!(
            long.starts_with("ingester.extract_gmail.%E7%B5%B5"),
            "{long}"
        );
        assert_ne!(long, name(&"絵".repeat(34)));
        let a = "a".repeat(300);
        let b = format!("{}b", "a".repeat(299));
        assert_ne!(name(&a), name(&b));
        assert!(name(&a).len() < 120);
        // Short accounts keep the names earlier versions used.
        assert_eq!(
            name("acct1-personal"),
            "ingester.extract_gmail.acct1-personal.lock"
        );
        // A lock can be taken under the long name.
        let dir = tempfile::tempdir().unwrap();
        let path = job_lock_path(dir.path(), "p", "j", Some(&cjk));
        assert!(matches!(
            acquire(&path, RUN, Duration::ZERO, &Signals::default()).unwrap(),
            Acquired::Held(_)
        ));
    }
}
