//! The plugin metadata cache: what each plugin file declared, keyed by the file's identity, so
//! `jobs list`, `jobs show` and the supervisor need not `dlopen` every plugin on every run.
//!
//! A file is only trusted from the cache while its size, modification and change times (in
//! nanoseconds), inode and device are all unchanged ([`Stamp`]); replacing, rewriting, touching
//! or chmod-ing it invalidates the entry. Only plugins that loaded and validated are cached, so a
//! broken file is retried (and reported) every time. The cache is derived data in
//! `$XDG_CACHE_HOME/lorch/plugins` (`~/.cache/lorch/plugins`): deleting it is always safe.
//!
//! One file per plugin directory, named after the directory's real path, so a command reads
//! the entries of its own search path and nothing else: with one shared file, listing a
//! 1-plugin directory after 1,611 other plugins had been listed took 23.9 ms instead of 2.7 ms.
//! Each file holds only what its directory held when last listed. The encoding is postcard (a
//! compact binary serde format). Each file holds first every job's id and summary, which is all
//! a listing reads, then the full metadata, read only for the job shown or run ([`Declared`]).
//!
//! What the cache says reaches a run (a parameter's default, whether it is required), so it is
//! kept as private as the plugins are checked: the directory is made `0700` and must be yours and
//! writable by nobody else, each file `0600`, yours, a regular file (a link is not followed);
//! otherwise the cache is not used. postcard is not self-describing, so each header also carries
//! a probe, a known job's metadata encoded: a lorch whose metadata types encode differently
//! decodes it differently and ignores the file.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use lorch_plugin_api::ParamKind;
use lorch_plugin_api::abi::{JobMetadata, ParamMetadata};

use super::declared::{Declared, Head, Stored};
use super::safety::Stamp;
use crate::{paths, sys};

/// Bumped when the file format or what lorch validates changes.
const FORMAT: u32 = 2;

/// The probe's job: every field set, so a change to any field's encoding shows.
fn probe() -> JobMetadata {
    JobMetadata {
        package: "probe-package".into(),
        name: "probe".into(),
        description: "A probe.\n\nSecond paragraph.".into(),
        params: vec![ParamMetadata {
            name: "limit".into(),
            kind: ParamKind::Float,
            required: true,
            default: Some("1.5".into()),
            help: "Help.".into(),
        }],
    }
}

/// A cache file is a little-endian `u64` (the header's length), the header (postcard), then
/// each plugin's full metadata (postcard) at the offset its entry names, counted from the end
/// of the header. Listing reads the header alone.
#[derive(Serialize)]
struct Header<'a> {
    format: u32,
    lorch_version: &'a str,
    /// The directory's real path: a check against the (unlikely) collision of two names.
    dir: &'a [u8],
    /// [`probe`], encoded by the lorch that wrote the file.
    probe: &'a [u8],
    plugins: Vec<Entry<'a>>,
}

/// Names as bytes: a path need not be UTF-8.
#[derive(Serialize)]
struct Entry<'a> {
    name: &'a [u8],
    stamp: &'a Stamp,
    heads: &'a [Head<'static>],
    offset: u64,
    len: u32,
}

/// [`Header`] as read back, its text borrowed from the header's bytes (kept for the rest of
/// the process: `'a` is `'static`).
#[derive(Deserialize)]
struct HeaderIn<'a> {
    format: u32,
    lorch_version: &'a str,
    dir: &'a [u8],
    probe: &'a [u8],
    #[serde(borrow)]
    plugins: Vec<EntryIn<'a>>,
}

#[derive(Deserialize)]
struct EntryIn<'a> {
    name: &'a [u8],
    stamp: Stamp,
    #[serde(borrow)]
    heads: Vec<Head<'a>>,
    offset: u64,
    len: u32,
}

/// One directory: its cache file as read, and what this command found in it.
#[derive(Default)]
struct Dir {
    /// Entries of the file not asked for yet.
    unseen: HashMap<&'static OsStr, EntryIn<'static>>,
    file: Option<CacheFile>,
    /// Every plugin found this time: what the file is rewritten with.
    seen: Vec<(OsString, Stamp, Arc<Declared>)>,
    changed: bool,
}

/// A cache file as read: the full metadata is read from it when needed.
#[derive(Clone)]
struct CacheFile {
    file: Arc<File>,
    /// Where the full metadata starts: the end of the header.
    base: u64,
    len: u64,
}

pub struct MetadataCache {
    root: Option<PathBuf>,
    dirs: HashMap<PathBuf, Dir>,
}

impl MetadataCache {
    /// The user's cache; nothing is read until a directory is asked for. A cache directory that
    /// is not private is not used (and said so).
    pub fn open() -> MetadataCache {
        let root = paths::cache_dir()
            .map(|d| d.join("plugins"))
            .filter(|root| match private(root) {
                Ok(()) => true,
                Err(why) => {
                    tracing::warn!(
                        "not using the plugin metadata cache {}: {why}",
                        root.display()
                    );
                    false
                }
            });
        MetadataCache {
            root,
            dirs: HashMap::new(),
        }
    }

    /// The jobs of plugin `name` in directory `dir` (a real path), if that exact version of the
    /// file was seen before.
    pub fn get(&mut self, dir: &Path, name: &OsStr, stamp: &Stamp) -> Option<Arc<Declared>> {
        let root = self.root.as_deref()?;
        if !self.dirs.contains_key(dir) {
            self.dirs.insert(dir.to_owned(), Dir::read(root, dir));
        }
        let dir = self.dirs.get_mut(dir)?;
        let entry = dir.unseen.remove(name)?;
        if entry.stamp != *stamp {
            // A new version of the file: its entry goes when the file is rewritten.
            dir.changed = true;
            return None;
        }
        let cache = dir.file.as_ref()?;
        let offset = cache.base.checked_add(entry.offset)?;
        // A file cut short (by hand: lorch writes it whole) is a miss, not jobs without metadata.
        if offset.checked_add(u64::from(entry.len))? > cache.len {
            return None;
        }
        let stored = Stored {
            file: Arc::clone(&cache.file),
            offset,
            len: entry.len,
        };
        let declared = Arc::new(Declared::cached(entry.heads, stored));
        dir.seen
            .push((name.to_owned(), entry.stamp, Arc::clone(&declared)));
        Some(declared)
    }

    pub fn insert(&mut self, dir: &Path, name: &OsStr, stamp: Stamp, declared: Arc<Declared>) {
        let dir = self.dirs.entry(dir.to_owned()).or_default();
        dir.seen.push((name.to_owned(), stamp, declared));
        dir.changed = true;
    }

    /// Rewrites each directory's file whose plugins changed (new, changed, removed or broken
    /// ones) with what it holds now. Failing to write only costs speed next time, so it is
    /// logged, not reported.
    pub fn save(self) {
        let Some(root) = self.root.as_deref() else {
            return;
        };
        for (dir, entry) in &self.dirs {
            if entry.changed || !entry.unseen.is_empty() {
                let path = file_name(root, dir);
                if let Err(e) = write(&path, dir, &entry.seen) {
                    tracing::debug!(
                        "cannot write the plugin metadata cache {}: {e}",
                        path.display()
                    );
                }
            }
        }
    }
}

impl Dir {
    /// A directory's cache file; an unreadable or outdated one is treated as empty.
    fn read(root: &Path, dir: &Path) -> Dir {
        let read = || -> std::io::Result<(HeaderIn<'static>, CacheFile)> {
            // Not a link, and no waiting on a FIFO someone put there.
            let mut file = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(file_name(root, dir))?;
            let meta = file.metadata()?;
            if !meta.is_file() || meta.uid() != sys::euid() || meta.mode() & 0o022 != 0 {
                return Err(std::io::Error::other("not a private regular file"));
            }
            let file_len = meta.len();
            let mut len = [0; 8];
            file.read_exact(&mut len)?;
            let len = u64::from_le_bytes(len);
            // A damaged length must not become an absurd allocation.
            if len > file_len {
                return Err(std::io::Error::other("truncated"));
            }
            let mut header = vec![0; usize::try_from(len).map_err(std::io::Error::other)?];
            file.read_exact(&mut header)?;
            // Kept for the rest of the process: the jobs' ids and summaries point into it.
            let header: &'static [u8] = header.leak();
            let header = postcard::from_bytes(header).map_err(std::io::Error::other)?;
            let file = CacheFile {
                file: Arc::new(file),
                base: 8 + len,
                len: file_len,
            };
            Ok((header, file))
        };
        match read() {
            Ok((header, file))
                if header.format == FORMAT
                    && header.lorch_version == env!("CARGO_PKG_VERSION")
                    && header.dir == dir.as_os_str().as_bytes()
                    && postcard::from_bytes::<JobMetadata>(header.probe).ok() == Some(probe()) =>
            {
                Dir {
                    unseen: header
                        .plugins
                        .into_iter()
                        .map(|e| (OsStr::from_bytes(e.name), e))
                        .collect(),
                    file: Some(file),
                    ..Dir::default()
                }
            }
            _ => Dir::default(),
        }
    }
}

/// `ROOT/<last component>-<hash of the real path>`: readable, and distinct for distinct
/// directories.
fn file_name(root: &Path, dir: &Path) -> PathBuf {
    let hash = paths::fnv1a(dir.as_os_str().as_bytes());
    let last: String = dir
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    root.join(format!("{last}-{hash:016x}.postcard"))
}

/// Writes a private temporary file, then renames it: readers never see half a cache.
fn write(
    path: &Path,
    dir: &Path,
    plugins: &[(OsString, Stamp, Arc<Declared>)],
) -> std::io::Result<()> {
    let mut blobs = Vec::new();
    let mut entries = Vec::with_capacity(plugins.len());
    for (name, stamp, declared) in plugins {
        let blob = declared.encoded()?;
        entries.push(Entry {
            name: name.as_bytes(),
            stamp,
            heads: declared.heads(),
            offset: blobs.len() as u64,
            len: u32::try_from(blob.len()).map_err(std::io::Error::other)?,
        });
        blobs.extend_from_slice(&blob);
    }
    let probe = postcard::to_stdvec(&probe()).map_err(std::io::Error::other)?;
    let header = Header {
        format: FORMAT,
        lorch_version: env!("CARGO_PKG_VERSION"),
        dir: dir.as_os_str().as_bytes(),
        probe: &probe,
        plugins: entries,
    };
    let header = postcard::to_stdvec(&header).map_err(std::io::Error::other)?;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&blobs);

    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let written = path
        .parent()
        .map_or(Ok(()), make_private_dir)
        .and_then(|()| {
            // A new file of our own (never one planted under this name), then renamed.
            let mut file = File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            file.write_all(&bytes)
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Creates the cache directory `0700` (whatever the umask) when it is missing.
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    private(dir).map_err(std::io::Error::other)
}

/// A missing directory is fine (it is made private); an existing one must be yours and
/// writable by nobody else, or another user could swap its files.
fn private(dir: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
        Ok(meta) => meta,
    };
    if !meta.is_dir() {
        return Err("it is not a directory".to_owned());
    }
    if meta.uid() != sys::euid() {
        return Err(format!("it is owned by uid {}, not you", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "others can write to it (fix: chmod go-w {})",
            dir.display()
        ));
    }
    Ok(())
}
