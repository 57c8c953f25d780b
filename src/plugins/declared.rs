//! What one plugin file (or this binary) declared: each job's id and summary, which listing
//! needs, and the full metadata (description, parameters), which only `jobs show` and running a
//! job need, read and decoded on first use.
//!
//! Split so that a warm `jobs list` of a 1,000-plugin directory reads and allocates only ids and
//! summaries: decoding every job's full metadata from the cache was 35% of that listing's time,
//! and reading it (3 MB for 10,000 jobs) another 15% (docs/performance.md).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};

use lorch_plugin_api::abi::{JobMetadata, PluginMetadata};

use super::metadata;
use serde::{Deserialize, Serialize};

/// A job's id and the first line of its description. The text lives as long as the process:
/// read from the cache, it points into the cache's header, kept whole (no allocation per job);
/// from a plugin loaded now, it is allocated once and kept.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Head<'a> {
    pub package: &'a str,
    pub name: &'a str,
    pub summary: &'a str,
}

#[derive(Debug)]
pub struct Declared {
    /// Sorted by package, then name.
    heads: Vec<Head<'static>>,
    full: OnceLock<Vec<JobMetadata>>,
    /// Where the full metadata is when not decoded yet.
    stored: Option<Stored>,
}

/// The full metadata's place in a cache file: `len` bytes of postcard at `offset`. The file is
/// the one that was read (kept open), so a cache rewritten since by another lorch does not
/// matter.
#[derive(Debug, Clone)]
pub struct Stored {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u32,
}

impl Declared {
    /// From validated metadata, in any order.
    pub fn new(mut jobs: Vec<JobMetadata>) -> Declared {
        // Registration order is the linker's; everything lorch shows is sorted.
        jobs.sort_by(|a, b| (&a.package, &a.name).cmp(&(&b.package, &b.name)));
        let heads = jobs
            .iter()
            .map(|job| Head {
                package: keep(&job.package),
                name: keep(&job.name),
                summary: keep(job.description.lines().next().unwrap_or("")),
            })
            .collect();
        Declared {
            heads,
            full: OnceLock::from(jobs),
            stored: None,
        }
    }

    /// Ids and summaries from a cache, the rest left where it is.
    pub fn cached(heads: Vec<Head<'static>>, stored: Stored) -> Declared {
        Declared {
            heads,
            full: OnceLock::new(),
            stored: Some(stored),
        }
    }

    pub fn heads(&self) -> &[Head<'static>] {
        &self.heads
    }

    /// The full metadata of job `index` (of [`Declared::heads`]).
    pub fn job(&self, index: usize) -> &JobMetadata {
        &self.full.get_or_init(|| self.read())[index]
    }

    /// The full metadata, encoded for a cache file: copied as it is from the cache it came
    /// from (never what `read` made of a damaged one), or encoded from a plugin loaded now.
    pub fn encoded(&self) -> std::io::Result<Vec<u8>> {
        match (&self.stored, self.full.get()) {
            (Some(stored), _) => read_stored(stored),
            (None, Some(jobs)) => postcard::to_stdvec(jobs).map_err(std::io::Error::other),
            (None, None) => Err(std::io::Error::other("no metadata")),
        }
    }

    fn read(&self) -> Vec<JobMetadata> {
        let decoded = self
            .stored
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no metadata"))
            .and_then(read_stored)
            .and_then(|bytes| {
                postcard::from_bytes::<Vec<JobMetadata>>(&bytes).map_err(std::io::Error::other)
            })
            // Checked again as when the plugin was loaded: it reaches the run.
            .and_then(|jobs| {
                let metadata = PluginMetadata { jobs };
                metadata::check(&metadata).map_err(std::io::Error::other)?;
                Ok(metadata.jobs)
            });
        match decoded {
            Ok(jobs)
                if jobs.len() == self.heads.len()
                    && jobs.iter().zip(&self.heads).all(|(job, head)| {
                        job.package == head.package && job.name == head.name
                    }) =>
            {
                jobs
            }
            // Only a cache file damaged by hand gets here: lorch wrote it itself, atomically.
            // The ids are still known; what is lost is named, and deleting the cache restores it.
            _ => {
                tracing::warn!(
                    "the plugin metadata cache is damaged; delete ~/.cache/lorch/plugins (it is rebuilt)"
                );
                self.heads
                    .iter()
                    .map(|head| JobMetadata {
                        package: head.package.to_owned(),
                        name: head.name.to_owned(),
                        description: head.summary.to_owned(),
                        params: Vec::new(),
                    })
                    .collect()
            }
        }
    }
}

/// A copy of `text` for the rest of the process (see [`Head`]).
fn keep(text: &str) -> &'static str {
    Box::leak(text.into())
}

fn read_stored(stored: &Stored) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0; stored.len as usize];
    stored.file.read_exact_at(&mut bytes, stored.offset)?;
    Ok(bytes)
}
