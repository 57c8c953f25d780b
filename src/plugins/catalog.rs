//! Every job lorch can see, with where it came from and what went wrong on the way.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lorch_plugin_api::abi::{self, Host, JobMetadata, PluginHeader, Str};

use super::cache::MetadataCache;
use super::declared::{Declared, Head};
use super::safety::{DirChecks, Stamp};
use super::{SearchPath, library, metadata, safety};
use crate::output::stderr;
use crate::{suggest, sys};

/// Where a job comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Linked into this lorch binary.
    BuiltIn,
    /// A plugin file.
    File(PathBuf),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::BuiltIn => f.write_str("built-in"),
            Location::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One runnable job: which of its source's jobs it is. Two words, so that sorting 10,000 of
/// them moves little memory.
pub struct Job {
    source: Arc<Source>,
    index: usize,
}

/// A plugin file (or this binary) and what it declared: shared by its jobs.
struct Source {
    declared: Arc<Declared>,
    location: Location,
    entry: Entry,
    /// For a plugin file: the file as it was checked when discovered.
    vetted: Option<Vetted>,
}

impl Source {
    fn jobs(self) -> impl Iterator<Item = Job> {
        let source = Arc::new(self);
        (0..source.declared.heads().len()).map(move |index| Job {
            source: Arc::clone(&source),
            index,
        })
    }
}

/// What discovery checked of a plugin file, so that running one of its jobs opens exactly that
/// file again, checked the same way.
struct Vetted {
    stamp: Stamp,
    allow_insecure: bool,
}

#[derive(Clone, Copy)]
enum Entry {
    BuiltIn,
    /// A loaded plugin library.
    Plugin(&'static PluginHeader),
    /// A plugin known from the metadata cache, loaded on first call.
    NotLoaded,
}

impl Job {
    /// Loads one job by itself, from its plugin file, open, and the path it was found at
    /// (`None`: built into this binary). This is what a worker process does with the file the
    /// supervisor checked and handed it.
    pub fn load(plugin: Option<(File, &Path)>, package: &str, name: &str) -> Result<Job, String> {
        let (jobs, location, entry) = match plugin {
            None => (
                abi::registered_jobs().map(|spec| spec.metadata()).collect(),
                Location::BuiltIn,
                Entry::BuiltIn,
            ),
            Some((file, path)) => {
                let library =
                    library::load(file, path).map_err(|e| format!("{}: {e}", path.display()))?;
                (
                    library.metadata.jobs,
                    Location::File(path.to_owned()),
                    Entry::Plugin(library.header),
                )
            }
        };
        let declared = Declared::new(jobs);
        let index = declared
            .heads()
            .iter()
            .position(|head| head.package == package && head.name == name)
            .ok_or_else(|| format!("{location} has no job {package}/{name}"))?;
        let source = Source {
            declared: Arc::new(declared),
            location,
            entry,
            vetted: None,
        };
        Ok(Job {
            source: Arc::new(source),
            index,
        })
    }

    /// Opens the job's plugin file again, checked as when it was discovered, and only if it is
    /// still that very file; `None` for a built-in job.
    pub fn open_plugin(&self) -> Result<Option<File>, String> {
        let (Location::File(path), Some(vetted)) = (&self.source.location, &self.source.vetted)
        else {
            return Ok(None);
        };
        let checked = safety::open(path, vetted.allow_insecure, &mut DirChecks::default())?;
        if checked.stamp != vetted.stamp {
            return Err(format!(
                "{} changed since lorch read it (a new version being installed?); run the job again",
                path.display()
            ));
        }
        Ok(Some(checked.file))
    }

    /// The plugin file, or `None` for a built-in job.
    pub fn plugin_file(&self) -> Option<&Path> {
        match &self.source.location {
            Location::BuiltIn => None,
            Location::File(path) => Some(path),
        }
    }

    /// Where the job comes from.
    pub fn location(&self) -> &Location {
        &self.source.location
    }

    fn head(&self) -> &Head<'static> {
        &self.source.declared.heads()[self.index]
    }

    pub fn package(&self) -> &str {
        self.head().package
    }

    pub fn name(&self) -> &str {
        self.head().name
    }

    /// `PACKAGE/JOB`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.package(), self.name())
    }

    /// The first line of the description.
    pub fn summary(&self) -> &str {
        self.head().summary
    }

    /// Everything the job declared: description, parameters.
    pub fn meta(&self) -> &JobMetadata {
        self.source.declared.job(self.index)
    }

    /// Runs the job through the plugin ABI with a `RunRequest` JSON; returns an `abi::RUN_*`
    /// code, or why the plugin could not be loaded. Built-in and plugin jobs take the same path.
    pub fn call(&self, host: &Host, request: &str) -> Result<i32, String> {
        let id = self.id();
        let header = match (self.source.entry, &self.source.location) {
            (Entry::BuiltIn, _) => {
                return Ok(abi::run_registered(host, id.as_bytes(), request.as_bytes()));
            }
            (Entry::Plugin(header), _) => header,
            (Entry::NotLoaded, Location::File(path)) => {
                let file = self.open_plugin()?.ok_or("no plugin file")?;
                library::load(file, path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .header
            }
            (Entry::NotLoaded, Location::BuiltIn) => {
                unreachable!("built-in jobs are never NotLoaded")
            }
        };
        let run = header.run.expect("checked when the plugin was loaded");
        // SAFETY: `host` and both strings outlive the call, as the ABI requires.
        Ok(unsafe { run(host, Str::from(id.as_str()), Str::from(request)) })
    }
}

/// The jobs a plugin file declares: from the cache when this exact file was seen before (the
/// library is then loaded only if one of its jobs runs in this process), else by loading it.
/// The file is opened and checked first (unless `allow_insecure`, then only opened).
fn plugin_metadata(
    path: &Path,
    allow_insecure: bool,
    dir_checks: &mut DirChecks,
    cache: &mut MetadataCache,
) -> Result<(Arc<Declared>, Entry, Vetted), String> {
    let inspected = safety::inspect(path, allow_insecure, dir_checks)?;
    let name = path.file_name().unwrap_or_default();
    let vetted = Vetted {
        stamp: inspected.stamp.clone(),
        allow_insecure,
    };
    if let Some(declared) = cache.get(&inspected.dir, name, &vetted.stamp) {
        return Ok((declared, Entry::NotLoaded, vetted));
    }
    let dir = inspected.dir.clone();
    let checked = inspected.open()?;
    // Each plugin loaded keeps a descriptor (see `library::load`): allow as many as may be. Only
    // here, on a cache miss: a warm listing loads nothing.
    sys::raise_open_files_limit();
    let library = library::load(checked.file, path).map_err(|e| e.to_string())?;
    let declared = Arc::new(Declared::new(library.metadata.jobs));
    cache.insert(&dir, name, checked.stamp, Arc::clone(&declared));
    Ok((declared, Entry::Plugin(library.header), vetted))
}

/// A plugin file and what loading it gave.
pub struct PluginFile {
    pub path: PathBuf,
    /// The ABI version and the jobs it provides, or why it is unusable.
    pub status: Result<(u32, Arc<Declared>), String>,
}

/// Something the user should know about: a broken plugin file, a duplicate job, an unreadable
/// plugin directory. Each is reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: String,
    pub message: String,
}

impl Problem {
    pub fn new(location: impl AsRef<Path>, message: impl Into<String>) -> Problem {
        Problem {
            location: location.as_ref().display().to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Why a package or job the user named cannot be had.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No such package or job (a typo?); the message names the closest and the known ones.
    Unknown(String),
    /// The plugin file that provides the package failed to load, or was refused.
    Unavailable(String),
}

/// Every job found, by package then name.
pub struct Catalog {
    /// Sorted by `(package, name)`, one job per id.
    jobs: Vec<Job>,
    pub files: Vec<PluginFile>,
    pub problems: Vec<Problem>,
}

fn key(job: &Job) -> (&str, &str) {
    (job.package(), job.name())
}

impl Catalog {
    /// The built-in jobs, then every plugin file on the search path, in order. The first
    /// provider of a `PACKAGE/JOB` wins; a later one is reported with both locations. A broken
    /// file is recorded and skipped: it never hides the others. Unless `allow_insecure`, a file
    /// that another user could have written is refused before it is opened.
    pub fn discover(search_path: &SearchPath, allow_insecure: bool) -> Catalog {
        let mut jobs = Vec::new();
        let mut files = Vec::new();
        let mut problems = Vec::new();

        let builtin = abi::PluginMetadata {
            jobs: abi::registered_jobs().map(|spec| spec.metadata()).collect(),
        };
        match metadata::check(&builtin) {
            Ok(()) => {
                let source = Source {
                    declared: Arc::new(Declared::new(builtin.jobs)),
                    location: Location::BuiltIn,
                    entry: Entry::BuiltIn,
                    vetted: None,
                };
                jobs.extend(source.jobs());
            }
            Err(why) => problems.push(Problem::new(
                "built-in jobs",
                format!("invalid metadata: {why}"),
            )),
        }

        let mut cache = MetadataCache::open();
        let mut dir_checks = DirChecks::default();
        for path in search_path.plugin_files(&mut problems) {
            let status = match plugin_metadata(&path, allow_insecure, &mut dir_checks, &mut cache) {
                Ok((declared, entry, vetted)) => {
                    let source = Source {
                        declared: Arc::clone(&declared),
                        location: Location::File(path.clone()),
                        entry,
                        vetted: Some(vetted),
                    };
                    jobs.extend(source.jobs());
                    Ok((abi::ABI_VERSION, declared))
                }
                Err(error) => {
                    problems.push(Problem::new(&path, error.clone()));
                    Err(error)
                }
            };
            files.push(PluginFile { path, status });
        }
        cache.save();

        // A stable sort keeps discovery order among equal ids: the first of each is the one
        // that wins, the others are duplicates.
        jobs.sort_by(|a, b| key(a).cmp(&key(b)));
        let mut kept: Vec<Job> = Vec::with_capacity(jobs.len());
        for job in jobs {
            match kept.last() {
                Some(first) if key(first) == key(&job) => {
                    let message = format!(
                        "duplicate job {}: ignored here, already provided by {}",
                        job.id(),
                        first.location()
                    );
                    problems.push(Problem::new(job.location().to_string(), message));
                }
                _ => kept.push(job),
            }
        }
        Catalog {
            jobs: kept,
            files,
            problems,
        }
    }

    /// Every job, sorted by package then name.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter()
    }

    /// The package names, sorted.
    pub fn packages(&self) -> Vec<&str> {
        let mut packages: Vec<&str> = self.jobs.iter().map(|job| job.package()).collect();
        packages.dedup();
        packages
    }

    /// The jobs of one package, sorted.
    pub fn package_jobs<'a>(&'a self, package: &'a str) -> impl Iterator<Item = &'a Job> + 'a {
        let start = self.jobs.partition_point(|job| job.package() < package);
        self.jobs[start..]
            .iter()
            .take_while(move |job| job.package() == package)
    }

    /// Writes each problem to stderr, once.
    pub fn report_problems(&self) {
        for problem in &self.problems {
            stderr!("warning: {problem}");
        }
    }

    /// A package the user named, or a usage error with the closest name.
    pub fn check_package(&self, package: &str) -> Result<(), Lookup> {
        if self.package_jobs(package).next().is_some() {
            return Ok(());
        }
        if let Some(file) = self.broken_file_for(package) {
            let why = file
                .status
                .as_ref()
                .err()
                .map(String::as_str)
                .unwrap_or_default();
            return Err(Lookup::Unavailable(format!(
                "package `{package}` is not available: its plugin {} failed to load: {why}",
                file.path.display()
            )));
        }
        let packages = self.packages();
        let hint = suggest::hint(package, packages.iter().copied());
        let known = if packages.is_empty() {
            " (no jobs found; see `lorch plugins list` for the search path)".to_owned()
        } else {
            format!("; known packages: {}", packages.join(", "))
        };
        Err(Lookup::Unknown(format!(
            "unknown package `{package}`{hint}{known}"
        )))
    }

    /// `PACKAGE/JOB`, or a usage error with the closest name.
    pub fn find(&self, package: &str, name: &str) -> Result<&Job, Lookup> {
        self.check_package(package)?;
        if let Ok(index) = self
            .jobs
            .binary_search_by(|job| key(job).cmp(&(package, name)))
        {
            return Ok(&self.jobs[index]);
        }
        let names: Vec<&str> = self.package_jobs(package).map(|j| j.name()).collect();
        let hint = suggest::hint(name, names.iter().copied());
        Err(Lookup::Unknown(format!(
            "unknown job `{name}` in package `{package}`{hint}; jobs in {package}: {}",
            names.join(", ")
        )))
    }

    /// `lorch run JOB`: the one job of that name in any package.
    pub fn find_unique(&self, name: &str) -> Result<&Job, Lookup> {
        let matches: Vec<&Job> = self.jobs().filter(|job| job.name() == name).collect();
        match matches.as_slice() {
            [job] => Ok(job),
            [] => {
                let hint = suggest::hint(name, self.jobs().map(|j| j.name()));
                Err(Lookup::Unknown(format!(
                    "no job named `{name}` in any package{hint}; use PACKAGE/JOB, see `lorch jobs list`"
                )))
            }
            several => {
                let ids: Vec<String> = several.iter().map(|j| j.id()).collect();
                Err(Lookup::Unknown(format!(
                    "job name `{name}` is ambiguous: {}; use PACKAGE/JOB",
                    ids.join(", ")
                )))
            }
        }
    }

    /// A broken plugin file that looks like it provides `package` (`libingester.so` for
    /// `ingester`): asking for that package is then an environment error, not a typo.
    fn broken_file_for(&self, package: &str) -> Option<&PluginFile> {
        let wanted = package.replace('-', "_");
        self.files
            .iter()
            .filter(|f| f.status.is_err())
            .find(|file| {
                let stem = file
                    .path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default();
                stem.strip_prefix("lib").unwrap_or(stem).replace('-', "_") == wanted
            })
    }
}
