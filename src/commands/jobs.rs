//! `lorch jobs list` and `lorch jobs show`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::error::{Exit, Result};
use crate::output;
use crate::output::stderr;
use crate::params;
use crate::plugins::{Catalog, Job};

/// lorchestra's format: `PACKAGE:` then the indented job names, all sorted; with a package,
/// `Jobs in PACKAGE:` then its jobs.
pub fn list(catalog: &Catalog, package: Option<&str>, json: bool) -> Result<Exit> {
    catalog.report_problems();
    let jobs: Vec<&Job> = match package {
        Some(package) => {
            catalog.check_package(package)?;
            catalog.package_jobs(package).collect()
        }
        None => catalog.jobs().collect(),
    };
    if json {
        let jobs: Vec<Value> = jobs
            .iter()
            .map(|job| {
                json!({
                    "id": job.id(),
                    "package": job.package(),
                    "job": job.name(),
                    "summary": job.summary(),
                    "location": job.location().to_string(),
                })
            })
            .collect();
        output::print_json(&json!({ "jobs": jobs }))?;
        return Ok(Exit::Success);
    }
    // One buffer sized up front, and no formatting machinery for each of 10,000 lines.
    let mut text = String::with_capacity(jobs.len() * 24);
    let mut line = |parts: &[&str]| {
        parts.iter().for_each(|part| text.push_str(part));
        text.push('\n');
    };
    match package {
        Some(package) => {
            line(&["Jobs in ", package, ":"]);
            jobs.iter().for_each(|job| line(&["  ", job.name()]));
        }
        None => {
            // Jobs come sorted by package: a header each time the package changes.
            let mut current = None;
            for job in &jobs {
                if current != Some(job.package()) {
                    line(&[job.package(), ":"]);
                    current = Some(job.package());
                }
                line(&["  ", job.name()]);
            }
            if jobs.is_empty() {
                stderr!("no jobs found; `lorch plugins list` shows where lorch looked");
            }
        }
    }
    output::print(&text)?;
    Ok(Exit::Success)
}

/// `PACKAGE/JOB`, `Location:`, the parameters and the description.
pub fn show(catalog: &Catalog, package: &str, name: &str, json: bool) -> Result<Exit> {
    catalog.report_problems();
    let job = catalog.find(package, name)?;
    if json {
        let params: Vec<Value> = job
            .meta()
            .params
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "type": p.kind.as_str(),
                    "required": p.required,
                    "default": p.default.as_deref().and_then(|d| params::parse_value(p.kind, d).ok()),
                    "help": p.help,
                })
            })
            .collect();
        output::print_json(&json!({
            "id": job.id(),
            "package": job.package(),
            "job": job.name(),
            "location": job.location().to_string(),
            "description": job.meta().description,
            "params": params,
        }))?;
        return Ok(Exit::Success);
    }

    let mut text = format!("{}\nLocation: {}\n", job.id(), job.location());
    if job.meta().params.is_empty() {
        text.push_str("Parameters: none besides --account, --since and --until\n");
    } else {
        text.push_str("Parameters (--param KEY=VALUE, besides --account, --since and --until):\n");
        let signatures: Vec<String> = job.meta().params.iter().map(params::signature).collect();
        let width = signatures.iter().map(String::len).max().unwrap_or(0);
        for (param, signature) in job.meta().params.iter().zip(&signatures) {
            let mut notes = Vec::new();
            if param.required {
                notes.push("required".to_owned());
            }
            if let Some(default) = &param.default {
                notes.push(format!("default: {default}"));
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join(", "))
            };
            let line = format!("  {signature:width$}  {}{notes}", param.help);
            writeln!(text, "{}", line.trim_end()).unwrap();
        }
    }
    if !job.meta().description.is_empty() {
        text.push_str("Description:\n");
        for line in job.meta().description.lines() {
            let line = format!("  {line}");
            writeln!(text, "{}", line.trim_end()).unwrap();
        }
    }
    output::print(&text)?;
    Ok(Exit::Success)
}
