//! `lorch plugins list`: the search path, each plugin file, its ABI and jobs or its error;
//! `lorch plugins install`: plugin files checked and put where lorch looks.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::error::{Error, Exit, Result};
use crate::output;
use crate::output::stderr;
use crate::plugins::{Catalog, Location, SearchPath};

pub fn list(search_path: &SearchPath, catalog: &Catalog, json: bool) -> Result<Exit> {
    let builtin: Vec<String> = catalog
        .jobs()
        .filter(|j| *j.location() == Location::BuiltIn)
        .map(|j| j.id())
        .collect();
    if json {
        output::print_json(&list_json(search_path, catalog, builtin))?;
        return Ok(Exit::Success);
    }
    output::print(&list_text(search_path, catalog, &builtin))?;
    // Directory problems have no file line above to sit under.
    let shown = |location: &str| {
        catalog
            .files
            .iter()
            .any(|f| f.path.display().to_string() == location)
    };
    catalog
        .problems
        .iter()
        .filter(|p| !shown(&p.location))
        .for_each(|p| stderr!("warning: {p}"));
    Ok(Exit::Success)
}

fn list_json(search_path: &SearchPath, catalog: &Catalog, builtin: Vec<String>) -> Value {
    let dirs: Vec<Value> = search_path
        .dirs()
        .map(|(dir, origin)| json!({ "path": dir, "origin": origin, "exists": dir.is_dir() }))
        .collect();
    let files: Vec<Value> = catalog
        .files
        .iter()
        .map(|file| match &file.status {
            Ok((abi, declared)) => {
                let ids: Vec<String> = declared
                    .heads()
                    .iter()
                    .map(|j| format!("{}/{}", j.package, j.name))
                    .collect();
                json!({ "path": file.path, "abi_version": abi, "jobs": ids, "error": null })
            }
            Err(error) => {
                json!({ "path": file.path, "abi_version": null, "jobs": [], "error": error })
            }
        })
        .collect();
    let problems: Vec<Value> = catalog
        .problems
        .iter()
        .map(|p| json!({ "location": p.location, "message": p.message }))
        .collect();
    json!({
        "search_path": dirs,
        "builtin_jobs": builtin,
        "plugins": files,
        "problems": problems,
    })
}

/// The search path, then each plugin file with its jobs, marking the copies of a job that
/// another file already provides.
fn list_text(search_path: &SearchPath, catalog: &Catalog, builtin: &[String]) -> String {
    let provider =
        |package: &str, name: &str| catalog.find(package, name).ok().map(|j| j.location());
    let mut text = String::from("Search path:\n");
    for (dir, origin) in search_path.dirs() {
        let missing = if dir.is_dir() { "" } else { ", missing" };
        writeln!(text, "  {} ({origin}{missing})", dir.display()).unwrap();
    }
    if !builtin.is_empty() {
        text.push_str("built-in\n");
        builtin
            .iter()
            .for_each(|id| writeln!(text, "  {id}").unwrap());
    }
    for file in &catalog.files {
        let (abi, declared) = match &file.status {
            Ok(loaded) => loaded,
            Err(error) => {
                writeln!(text, "{}\n  error: {error}", file.path.display()).unwrap();
                continue;
            }
        };
        writeln!(text, "{} (ABI {abi})", file.path.display()).unwrap();
        for job in declared.heads() {
            let id = format!("{}/{}", job.package, job.name);
            match provider(job.package, job.name) {
                Some(Location::File(path)) if *path == file.path => {
                    writeln!(text, "  {id}").unwrap()
                }
                Some(other) => {
                    writeln!(text, "  {id} (ignored: already provided by {other})").unwrap()
                }
                None => writeln!(text, "  {id}").unwrap(),
            }
        }
    }
    if catalog.files.is_empty() && builtin.is_empty() {
        text.push_str("No plugins found.\n");
    }
    text
}

/// Checks every file first (nothing is installed when one is not a plugin), then installs each
/// and says what it installed, and whether lorch would still refuse it.
pub fn install(files: &[std::path::PathBuf], to: Option<std::path::PathBuf>) -> Result<Exit> {
    use crate::plugins::install;
    let dir = to
        .or_else(crate::paths::default_plugin_dir)
        .ok_or_else(|| {
            Error::Environment(anyhow::anyhow!(
                "no plugin directory: HOME is not set; set HOME or XDG_DATA_HOME, or pass --to DIR"
            ))
        })?;
    let (checked, problems): (Vec<_>, Vec<_>) = files
        .iter()
        .map(|f| install::check(f))
        .partition(|r| r.is_ok());
    if !problems.is_empty() {
        let problems: Vec<String> = problems.into_iter().filter_map(|r| r.err()).collect();
        return Err(Error::Usage(format!(
            "nothing was installed: {}",
            problems.join("; ")
        )));
    }
    let mut text = String::new();
    for plugin in checked.into_iter().flatten() {
        let target = install::install(&plugin, &dir).map_err(|e| {
            Error::Environment(anyhow::anyhow!(
                "cannot install {} into {}: {e}",
                plugin.source.display(),
                dir.display()
            ))
        })?;
        let ids: Vec<String> = plugin
            .jobs
            .iter()
            .map(|j| format!("{}/{}", j.package, j.name))
            .collect();
        writeln!(
            text,
            "installed {} (ABI {}): {}",
            target.display(),
            plugin.abi,
            ids.join(", ")
        )
        .unwrap();
        if let Some(why) = install::refused(&target) {
            stderr!("warning: {}: {why}", target.display());
        }
    }
    output::print(&text)?;
    Ok(Exit::Success)
}
