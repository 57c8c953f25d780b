//! Every job lorch can see, with where it came from and what went wrong on the way.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use lorch_plugin_api::abi::{self, Host, JobMetadata, PluginHeader, Str};

use super::{SearchPath, library, metadata, safety};
use crate::error::{Error, Result};
use crate::suggest;

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

/// One runnable job.
pub struct Job {
    pub meta: JobMetadata,
    pub location: Location,
    entry: Entry,
}

#[derive(Clone, Copy)]
enum Entry {
    BuiltIn,
    Plugin(&'static PluginHeader),
}

impl Job {
    /// Loads one job by itself, from its plugin file (`None`: built into this binary). This is
    /// what a worker process does; the supervisor already checked the file.
    pub fn load(plugin: Option<&Path>, package: &str, name: &str) -> Result<Job, String> {
        let (jobs, location, entry): (Vec<JobMetadata>, _, _) = match plugin {
            None => (
                abi::registered_jobs().map(|spec| spec.metadata()).collect(),
                Location::BuiltIn,
                Entry::BuiltIn,
            ),
            Some(path) => {
                let library =
                    library::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
                (
                    library.metadata.jobs,
                    Location::File(path.to_owned()),
                    Entry::Plugin(library.header),
                )
            }
        };
        let meta = jobs
            .into_iter()
            .find(|m| m.package == package && m.name == name)
            .ok_or_else(|| format!("{location} has no job {package}/{name}"))?;
        Ok(Job {
            meta,
            location,
            entry,
        })
    }

    /// The plugin file, or `None` for a built-in job.
    pub fn plugin_file(&self) -> Option<&Path> {
        match &self.location {
            Location::BuiltIn => None,
            Location::File(path) => Some(path),
        }
    }

    /// `PACKAGE/JOB`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.meta.package, self.meta.name)
    }

    /// The first line of the description.
    pub fn summary(&self) -> &str {
        self.meta.description.lines().next().unwrap_or("")
    }

    /// Runs the job through the plugin ABI with a `RunRequest` JSON; returns an `abi::RUN_*`
    /// code. Built-in and plugin jobs take the same path.
    pub fn call(&self, host: &Host, request: &str) -> i32 {
        let id = self.id();
        match self.entry {
            Entry::BuiltIn => abi::run_registered(host, id.as_bytes(), request.as_bytes()),
            Entry::Plugin(header) => {
                let run = header.run.expect("checked when the plugin was loaded");
                // SAFETY: `host` and both strings outlive the call, as the ABI requires.
                unsafe { run(host, Str::from(id.as_str()), Str::from(request)) }
            }
        }
    }
}

/// A plugin file and what loading it gave.
pub struct PluginFile {
    pub path: PathBuf,
    /// The ABI version and the job ids it provides, or why it is unusable.
    pub status: Result<(u32, Vec<String>), String>,
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

/// Every job found, by package then name.
pub struct Catalog {
    jobs: BTreeMap<(String, String), Job>,
    pub files: Vec<PluginFile>,
    pub problems: Vec<Problem>,
}

impl Catalog {
    /// The built-in jobs, then every plugin file on the search path, in order. The first
    /// provider of a `PACKAGE/JOB` wins; a later one is reported with both locations. A broken
    /// file is recorded and skipped: it never hides the others. Unless `allow_insecure`, a file
    /// that another user could have written is refused before it is opened.
    pub fn discover(search_path: &SearchPath, allow_insecure: bool) -> Catalog {
        let mut catalog = Catalog {
            jobs: BTreeMap::new(),
            files: Vec::new(),
            problems: Vec::new(),
        };

        let builtin: Vec<JobMetadata> =
            abi::registered_jobs().map(|spec| spec.metadata()).collect();
        let builtin = abi::PluginMetadata { jobs: builtin };
        match metadata::check(&builtin) {
            Ok(()) => {
                for meta in builtin.jobs {
                    catalog.add(Job {
                        meta,
                        location: Location::BuiltIn,
                        entry: Entry::BuiltIn,
                    });
                }
            }
            Err(why) => catalog.problems.push(Problem::new(
                "built-in jobs",
                format!("invalid metadata: {why}"),
            )),
        }

        for path in search_path.plugin_files(&mut catalog.problems) {
            let loaded = match allow_insecure {
                true => Ok(()),
                false => safety::check(&path),
            }
            .and_then(|()| library::load(&path).map_err(|e| e.to_string()));
            let status = match loaded {
                Ok(library) => {
                    let ids = library
                        .metadata
                        .jobs
                        .iter()
                        .map(|j| format!("{}/{}", j.package, j.name))
                        .collect();
                    for meta in library.metadata.jobs {
                        let location = Location::File(path.clone());
                        catalog.add(Job {
                            meta,
                            location,
                            entry: Entry::Plugin(library.header),
                        });
                    }
                    Ok((abi::ABI_VERSION, ids))
                }
                Err(error) => {
                    catalog
                        .problems
                        .push(Problem::new(&path, error.to_string()));
                    Err(error.to_string())
                }
            };
            catalog.files.push(PluginFile { path, status });
        }
        catalog
    }

    fn add(&mut self, job: Job) {
        let key = (job.meta.package.clone(), job.meta.name.clone());
        if let Some(kept) = self.jobs.get(&key) {
            let message = format!(
                "duplicate job {}: ignored here, already provided by {}",
                job.id(),
                kept.location
            );
            self.problems
                .push(Problem::new(job.location.to_string(), message));
        } else {
            self.jobs.insert(key, job);
        }
    }

    /// Every job, sorted by package then name.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// The package names, sorted.
    pub fn packages(&self) -> Vec<&str> {
        let mut packages: Vec<&str> = self.jobs.keys().map(|(p, _)| p.as_str()).collect();
        packages.dedup();
        packages
    }

    /// The jobs of one package, sorted.
    pub fn package_jobs<'a>(&'a self, package: &'a str) -> impl Iterator<Item = &'a Job> + 'a {
        self.jobs
            .values()
            .filter(move |job| job.meta.package == package)
    }

    /// Writes each problem to stderr, once.
    pub fn report_problems(&self) {
        for problem in &self.problems {
            eprintln!("warning: {problem}");
        }
    }

    /// A package the user named, or a usage error with the closest name.
    pub fn check_package(&self, package: &str) -> Result<()> {
        if self.packages().contains(&package) {
            return Ok(());
        }
        if let Some(file) = self.broken_file_for(package) {
            let why = file
                .status
                .as_ref()
                .err()
                .map(String::as_str)
                .unwrap_or_default();
            return Err(Error::Environment(anyhow!(
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
        Err(Error::Usage(format!(
            "unknown package `{package}`{hint}{known}"
        )))
    }

    /// `PACKAGE/JOB`, or a usage error with the closest name.
    pub fn find(&self, package: &str, name: &str) -> Result<&Job> {
        self.check_package(package)?;
        if let Some(job) = self.jobs.get(&(package.to_owned(), name.to_owned())) {
            return Ok(job);
        }
        let names: Vec<&str> = self
            .package_jobs(package)
            .map(|j| j.meta.name.as_str())
            .collect();
        let hint = suggest::hint(name, names.iter().copied());
        Err(Error::Usage(format!(
            "unknown job `{name}` in package `{package}`{hint}; jobs in {package}: {}",
            names.join(", ")
        )))
    }

    /// `lorch run JOB`: the one job of that name in any package.
    pub fn find_unique(&self, name: &str) -> Result<&Job> {
        let matches: Vec<&Job> = self.jobs().filter(|job| job.meta.name == name).collect();
        match matches.as_slice() {
            [job] => Ok(job),
            [] => {
                let hint = suggest::hint(name, self.jobs().map(|j| j.meta.name.as_str()));
                Err(Error::Usage(format!(
                    "no job named `{name}` in any package{hint}; use PACKAGE/JOB, see `lorch jobs list`"
                )))
            }
            several => {
                let ids: Vec<String> = several.iter().map(|j| j.id()).collect();
                Err(Error::Usage(format!(
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
