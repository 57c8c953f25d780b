//! File locks held with `flock`, which the kernel releases when the holder dies: no lock file
//! left behind by a crash or a reboot can block a job.
//!
//! Two kinds: the overlap lock of a job and account (a second run is skipped while it is held),
//! and the lock each running lorch holds on its own run id, which tells a later lorch whether a
//! run that shows "running" still has a process behind it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::runner::Signals;

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

/// `<home>/locks/<package>.<job>.<account>.lock`; the account is escaped to a file name, and
/// no account is a lone `%`, which no escaped account can be.
pub fn job_lock_path(home: &Path, package: &str, job: &str, account: Option<&str>) -> PathBuf {
    let account = match account {
        None => "%".to_owned(),
        Some(account) => account
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect(),
    };
    home.join("locks")
        .join(format!("{package}.{job}.{account}.lock"))
}

fn open(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
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
    let give_up = Instant::now() + wait;
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
                let mut text = String::new();
                file.read_to_string(&mut text)?;
                let mut words = text.split_whitespace();
                let run_id = words.next().map(str::to_owned);
                let pid = words.next().and_then(|p| p.parse().ok());
                return Ok(Acquired::Busy(Holder { run_id, pid }));
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
}

fn run_lock_path(home: &Path, run_id: &str) -> PathBuf {
    home.join("runs").join(format!("{run_id}.lock"))
}

/// The lock a running lorch holds on its run for the run's whole life.
pub fn hold_run(home: &Path, run_id: &str) -> io::Result<Held> {
    let path = run_lock_path(home, run_id);
    let file = open(&path)?;
    file.lock()?;
    Ok(Held {
        file,
        path,
        remove_on_drop: true,
    })
}

/// The lock of a run whose lorch process is gone, or `None` while a process still holds it.
pub fn take_orphaned_run(home: &Path, run_id: &str) -> io::Result<Option<Held>> {
    let path = run_lock_path(home, run_id);
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

    #[test]
    fn a_run_lock_tells_live_runs_from_orphans() {
        let home = tempfile::tempdir().unwrap();
        let live = hold_run(home.path(), "r1").unwrap();
        assert!(take_orphaned_run(home.path(), "r1").unwrap().is_none());
        drop(live);
        assert!(
            !run_lock_path(home.path(), "r1").exists(),
            "a finished run removes its lock file"
        );
        assert!(take_orphaned_run(home.path(), "r1").unwrap().is_some());
    }
}
