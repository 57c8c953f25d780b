//! `lorch config check|show`: the configuration file (docs/configuration.md), checked the way
//! every command that reads it checks it, plus whether the jobs it names exist.

use serde_json::json;

use crate::config::{Config, Problem, locate};
use crate::error::{Error, Exit, Result};
use crate::output::{self, stderr};
use crate::plugins::{Catalog, Lookup};

/// Every mistake of the file at `flag`'s place, each with its file:line:column; exit 2 when
/// there is one.
pub fn check(flag: Option<&std::path::Path>, catalog: &Catalog, json: bool) -> Result<Exit> {
    let (config, problems) = match Config::read_file(flag) {
        Err(problems) => (Config::default(), problems),
        Ok(config) => {
            let mut problems = config.problems.clone();
            problems.extend(unknown_jobs(&config, catalog));
            problems.sort_by_key(|p| (p.line, p.column));
            (config, problems)
        }
    };
    let file = locate(flag).map(|(path, _)| path);
    if json {
        output::print_json(&json!({
            "file": config.path.as_ref().or(file.as_ref()),
            "exists": config.path.is_some(),
            "ok": problems.is_empty(),
            "jobs": config.jobs.len(),
            "schedules": config.schedules.len(),
            "problems": problems,
        }))?;
    } else if problems.is_empty() {
        let text = match (&config.path, &file) {
            (Some(path), _) => format!(
                "{}: ok ({}, {}, {})\n",
                path.display(),
                crate::output::count(config.jobs.len(), "job default", "job defaults"),
                crate::output::count(config.schedules.len(), "schedule", "schedules"),
                crate::output::count(config.pipelines.len(), "pipeline", "pipelines")
            ),
            (None, Some(path)) => format!(
                "no configuration file at {}: lorch runs with its defaults\n",
                path.display()
            ),
            (None, None) => {
                "no configuration file (HOME is not set): lorch runs with its defaults\n".to_owned()
            }
        };
        output::print(&text)?;
    } else {
        for problem in &problems {
            stderr!("error: {problem}");
        }
    }
    Ok(match problems.is_empty() {
        true => Exit::Success,
        false => Exit::Usage,
    })
}

/// The jobs the file names that no plugin provides, and parameters the jobs do not take (or
/// of the wrong type). A job whose plugin failed to load is not the file's mistake:
/// `report_problems` has warned about the plugin.
fn unknown_jobs(config: &Config, catalog: &Catalog) -> Vec<Problem> {
    catalog.report_problems();
    let mut problems = Vec::new();
    for (name, key, params) in config.jobs_named() {
        let Some((package, job)) = name.get_ref().split_once('/') else {
            continue;
        };
        match catalog.find(package, job) {
            Err(Lookup::Unknown(why)) => {
                problems.push(config.problem(name.span(), format!("{key}: {why}")));
            }
            Ok(job) => {
                // Checked as run-job checks --param, without the required ones: a run may give
                // them on its command line.
                let declared = lorch_plugin_api::abi::JobMetadata {
                    params: job
                        .meta()
                        .params
                        .iter()
                        .map(|p| lorch_plugin_api::abi::ParamMetadata {
                            required: false,
                            ..p.clone()
                        })
                        .collect(),
                    ..job.meta().clone()
                };
                if let Err(why) = crate::params::resolve(&declared, &params) {
                    problems.push(config.problem(name.span(), format!("{key}: params: {why}")));
                }
            }
            Err(Lookup::Unavailable(_)) => {}
        }
    }
    problems
}

/// The configuration in effect: the file's path, then its contents as lorch read them.
pub fn show(flag: Option<&std::path::Path>, json: bool) -> Result<Exit> {
    let config = Config::read_file(flag).map_err(super::config_problems)?;
    for problem in &config.problems {
        stderr!("warning: {problem} (this entry is left out)");
    }
    if json {
        output::print_json(&json!({ "file": config.path, "config": config }))?;
        return Ok(Exit::Success);
    }
    let text = match &config.path {
        None => match locate(flag) {
            Some((path, _)) => format!(
                "# no configuration file at {}: lorch runs with its defaults\n",
                path.display()
            ),
            None => "# no configuration file: lorch runs with its defaults\n".to_owned(),
        },
        Some(path) => {
            let body = toml::to_string_pretty(&config).map_err(|e| {
                Error::Environment(anyhow::anyhow!("cannot print the configuration: {e}"))
            })?;
            format!("# {}\n{body}", path.display())
        }
    };
    output::print(&text)?;
    Ok(Exit::Success)
}
