//! The plugin metadata cache: what each plugin file declared, keyed by the file's identity, so
//! `jobs list`, `jobs show` and the supervisor need not `dlopen` every plugin on every run.
//!
//! A file is only trusted from the cache while its size, modification and change times (in
//! nanoseconds), inode and device are all unchanged; replacing, rewriting, touching or chmod-ing
//! it invalidates the entry. Only plugins that loaded and validated are cached, so a broken file
//! is retried (and reported) every time. The cache is derived data in `$XDG_CACHE_HOME/lorch`
//! (`~/.cache/lorch`): deleting it is always safe.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lorch_plugin_api::abi::JobMetadata;
use serde::{Deserialize, Serialize};

use crate::paths;

/// Bumped when the file format or what lorch validates changes.
const FORMAT: u32 = 1;

/// What identifies one version of a file.
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
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        Stamp {
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    stamp: Stamp,
    jobs: Vec<Arc<JobMetadata>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    lorch_version: String,
    plugins: BTreeMap<PathBuf, Cached>,
}

pub struct MetadataCache {
    path: Option<PathBuf>,
    file: CacheFile,
    dirty: bool,
}

impl MetadataCache {
    /// The user's cache; an unreadable or outdated one is treated as empty.
    pub fn open() -> MetadataCache {
        let path = paths::cache_dir().map(|d| d.join("plugin-metadata.json"));
        let file = path
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
            .filter(|f| f.format == FORMAT && f.lorch_version == env!("CARGO_PKG_VERSION"))
            .unwrap_or_default();
        MetadataCache {
            path,
            file,
            dirty: false,
        }
    }

    /// The jobs `path` declared, if that exact version of the file was seen before.
    pub fn get(&self, path: &Path, stamp: &Stamp) -> Option<&[Arc<JobMetadata>]> {
        self.file
            .plugins
            .get(path)
            .filter(|c| c.stamp == *stamp)
            .map(|c| c.jobs.as_slice())
    }

    pub fn insert(&mut self, path: &Path, stamp: Stamp, jobs: Vec<Arc<JobMetadata>>) {
        self.file
            .plugins
            .insert(path.to_owned(), Cached { stamp, jobs });
        self.dirty = true;
    }

    /// Writes the cache back if it changed, dropping files that no longer exist. Failing to
    /// write only costs speed next time, so it is logged, not reported.
    pub fn save(mut self) {
        let Some(path) = self.path.as_deref().filter(|_| self.dirty) else {
            return;
        };
        self.file.plugins.retain(|plugin, _| plugin.exists());
        self.file.format = FORMAT;
        self.file.lorch_version = env!("CARGO_PKG_VERSION").to_owned();
        // Write a private temporary file, then rename: readers never see half a cache.
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, serde_json::to_vec(&self.file).unwrap_or_default()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(
                "cannot write the plugin metadata cache {}: {e}",
                path.display()
            );
        }
    }
}
