//! `lorch plugins list`: the search path, each plugin file, its ABI and jobs or its error.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::error::{Exit, Result};
use crate::output;
use crate::output::stderr;
use crate::plugins::{Catalog, Location, SearchPath};

pub fn list(search_path: &SearchPath, catalog: &Catalog, json: bool) -> Result<Exit> {
    // Where a job id ended up, to mark the copies that were ignored as duplicates.
    let provider =
        |package: &str, name: &str| catalog.find(package, name).ok().map(|j| j.location.clone());
    let builtin: Vec<String> = catalog
        .jobs()
        .filter(|j| j.location == Location::BuiltIn)
        .map(|j| j.id())
        .collect();

    if json {
        let dirs: Vec<Value> = search_path
            .dirs()
            .map(|(dir, origin)| json!({ "path": dir, "origin": origin, "exists": dir.is_dir() }))
            .collect();
        let files: Vec<Value> = catalog
            .files
            .iter()
            .map(|file| match &file.status {
                Ok((abi, jobs)) => {
                    let ids: Vec<String> = jobs
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
        output::print_json(&json!({
            "search_path": dirs,
            "builtin_jobs": builtin,
            "plugins": files,
            "problems": problems,
        }))?;
        return Ok(Exit::Success);
    }

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
        match &file.status {
            Ok((abi, jobs)) => {
                writeln!(text, "{} (ABI {abi})", file.path.display()).unwrap();
                for job in jobs {
                    let id = format!("{}/{}", job.package, job.name);
                    match provider(&job.package, &job.name) {
                        Some(Location::File(path)) if path == file.path => {
                            writeln!(text, "  {id}").unwrap()
                        }
                        Some(other) => {
                            writeln!(text, "  {id} (ignored: already provided by {other})").unwrap()
                        }
                        None => writeln!(text, "  {id}").unwrap(),
                    }
                }
            }
            Err(error) => writeln!(text, "{}\n  error: {error}", file.path.display()).unwrap(),
        }
    }
    if catalog.files.is_empty() && builtin.is_empty() {
        text.push_str("No plugins found.\n");
    }
    output::print(&text)?;
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
