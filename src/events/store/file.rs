//! The store as a file among others: made whole or not at all, refused when it is not a lorch
//! store, and watched for another program removing the file SQLite shares between processes.
//!
//! - A new store is built under a temporary name and linked into place, so `events.db` is
//!   never seen half made. An empty `events.db` is therefore never lorch's own: it is refused
//!   like any damaged store, with the way out, instead of being silently started afresh.
//! - In WAL mode every connection maps `events.db-shm`. A program that deletes it while lorch
//!   has the store open (a clean-up script, a careless `rm`) splits the processes onto two
//!   copies, and writing then damages the store. Each write first checks the file is the one
//!   this connection mapped, and refuses to write if not (README, "What lorch guarantees").

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use rusqlite::Connection;

/// The directory of the store: created when missing (private: `0700`, the store holds the
/// jobs' output and payloads), made private when it is yours and others can read it, and a
/// clear error when it cannot be made.
pub fn prepare_dir(path: &Path) -> Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    match made {
        Ok(()) => {
            make_private(dir, 0o700);
            Ok(())
        }
        Err(_) if dir.exists() && !dir.is_dir() => bail!(
            "{} is not a directory: LORCH_HOME must be a directory lorch can write (unset it, or point it at a directory)",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot create the directory {}", dir.display())),
    }
}

/// Creates the store at `path` with `init` (which sets WAL and the schema) when there is none:
/// built as a temporary file beside it, then linked into place, so that another process finds
/// either no store or a whole one. Two processes creating it at once are fine: one link wins.
pub fn create_if_missing(path: &Path, init: impl Fn(&Connection) -> Result<()>) -> Result<()> {
    if path.symlink_metadata().is_ok() {
        return Ok(());
    }
    let tmp = temporary_name(path);
    let made = (|| {
        // The plain file first, for the operating system's own words when the directory
        // cannot be written (SQLite's are "unable to open database file").
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| {
            let dir = path.parent().unwrap_or(Path::new("."));
            anyhow!(
                "cannot create a new event store in {}: {e}; lorch needs to write that directory (check its owner and permissions, or set LORCH_HOME to a directory you can write)",
                dir.display()
            )
        })?;
        let conn = Connection::open(&tmp)?;
        init(&conn)?;
        // Closing the only connection checkpoints and removes the temporary WAL files; the
        // file keeps WAL mode in its header.
        conn.close().map_err(|(_, e)| e)?;
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e.into()),
            _ => Ok(()),
        }
    })();
    for leftover in [
        tmp.clone(),
        with_suffix(&tmp, "-wal"),
        with_suffix(&tmp, "-shm"),
    ] {
        let _ = std::fs::remove_file(leftover);
    }
    made
}

fn temporary_name(path: &Path) -> PathBuf {
    with_suffix(
        path,
        &format!(".new-{}-{:08x}", std::process::id(), fastrand::u32(..)),
    )
}

/// `path` with `suffix` appended to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Refuses a file that cannot be a lorch store before SQLite sees it: an empty one (lorch
/// never leaves one), or something else than a regular file. A store of yours that others can
/// read is made private (`0600`, with its `-wal` and `-shm`, which SQLite creates with the
/// store's own mode).
pub fn check_existing(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    // Looked at further only when the store is open to others (its mode is at hand): its
    // `-wal` and `-shm` are made with its mode, so no other file costs a call on every open.
    if meta.mode() & 0o077 != 0 {
        for file in [
            path.to_owned(),
            with_suffix(path, "-wal"),
            with_suffix(path, "-shm"),
        ] {
            make_private(&file, 0o600);
        }
    }
    if meta.len() == 0 {
        return Err(anyhow!(
            "{} is empty (0 bytes), so it is not a lorch event store: lorch never leaves an empty one. {}",
            path.display(),
            move_aside(path)
        ));
    }
    Ok(())
}

/// Takes the permissions of group and others off `path` when this user owns it and they have
/// any, saying so (then never again: the mode stays). Another user's file is left as it is.
fn make_private(path: &Path, mode: u32) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let was = meta.mode() & 0o7777;
    if was & 0o077 == 0 || meta.uid() != crate::sys::euid() || meta.file_type().is_symlink() {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        Ok(()) => tracing::warn!(
            "made {} private (mode {was:04o} -> {mode:04o}): it holds the jobs' output and payloads",
            path.display()
        ),
        Err(e) => tracing::warn!(
            "{} is readable by other users (mode {was:04o}) and cannot be made private: {e}",
            path.display()
        ),
    }
}

/// The hint for a store lorch cannot use.
pub fn move_aside(path: &Path) -> String {
    format!(
        "Move it aside (mv {0} {0}.broken) and lorch starts a new store; the old file keeps whatever it held",
        path.display()
    )
}

/// Says what a store SQLite could not open is, when that is the problem.
pub fn explain(path: &Path, error: rusqlite::Error) -> anyhow::Error {
    use rusqlite::ErrorCode::{CannotOpen, DatabaseCorrupt, NotADatabase, ReadOnly};
    let code = error.sqlite_error_code();
    let why = match code {
        Some(NotADatabase) => format!(
            "{} is not a SQLite database, so not a lorch event store",
            path.display()
        ),
        Some(DatabaseCorrupt) => format!("{} is damaged", path.display()),
        Some(ReadOnly) | Some(CannotOpen) => {
            return anyhow!(
                "cannot write the event store {} ({error}): lorch needs to write its directory and the files in it; check their owner and permissions, or set LORCH_HOME to a directory you can write",
                path.display()
            );
        }
        _ => return anyhow::Error::new(error),
    };
    anyhow!("{why}. {}", move_aside(path))
}

/// A store made by another program (tables lorch does not know, none of its own) is refused
/// instead of having lorch's tables added to it.
pub fn check_foreign(conn: &Connection, path: &Path) -> Result<()> {
    let (ours, theirs): (i64, i64) = conn.query_row(
        "SELECT count(*) FILTER (WHERE name IN ('events', 'runs', 'outbox')),
                count(*) FILTER (WHERE name NOT IN ('events', 'runs', 'outbox')
                                   AND name NOT LIKE 'sqlite_%')
         FROM sqlite_master WHERE type = 'table'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if ours == 0 && theirs > 0 {
        bail!(
            "{} is a SQLite database of another program (it has other tables and none of lorch's). {}",
            path.display(),
            move_aside(path)
        );
    }
    Ok(())
}

/// The identity of the shared-memory file a connection mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedMemory {
    dev: u64,
    ino: u64,
}

impl SharedMemory {
    /// The `-shm` file of the store at `path`, as it is now (`None` when there is none).
    pub fn of(path: &Path) -> Option<SharedMemory> {
        std::fs::metadata(with_suffix(path, "-shm"))
            .ok()
            .map(|m: Metadata| SharedMemory {
                dev: m.dev(),
                ino: m.ino(),
            })
    }

    /// An error when the store's `-shm` file is no longer this one.
    pub fn check(self, path: &Path) -> Result<()> {
        if SharedMemory::of(path) == Some(self) {
            return Ok(());
        }
        bail!(
            "{} was removed or replaced while lorch had the store open (another program deleted it?); \
             writing now could damage the store, so this was not written. Stop every lorch, then run any lorch command to recover",
            with_suffix(path, "-shm").display()
        )
    }
}
