//! `lorch run-pipeline`, `lorch pipelines list|show` (docs/pipelines.md): their arguments to
//! calls into `pipelines`, and what they print.

use std::path::Path;

use serde_json::json;

use crate::error::{Exit, Result};
use crate::output;
use crate::output::stderr;

pub use crate::pipelines::{Request, run};
use crate::pipelines::{find, read_config};

/// `lorch pipelines list`: each pipeline, its steps, its last run.
pub fn list(flag: Option<&Path>, json: bool) -> Result<Exit> {
    let config = super::read_config_reporting(flag)?;
    let (home, store) = super::open_home()?;
    super::reap_all(&store, &home)?;
    let mut listed = Vec::new();
    for (name, pipeline) in &config.pipelines {
        let last = store.pipeline_runs(Some(name), None, Some(1))?.pop();
        listed.push(json!({
            "name": name,
            "steps": pipeline.steps.len(),
            "defined_at": pipeline.defined_at,
            "last_run": last.map(|r| json!({
                "pipeline_run_id": r.pipeline_run_id,
                "status": r.status,
                "reason": r.reason,
                "started_at": r.started_at,
            })),
        }));
    }
    if json {
        output::print_json(&json!({ "pipelines": listed }))?;
    } else if listed.is_empty() {
        stderr!(
            "no pipelines: add a [pipeline.NAME] entry to the configuration file (docs/pipelines.md)"
        );
    } else {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
        let rows: Vec<Vec<String>> = listed
            .iter()
            .map(|p| {
                let last = match &p["last_run"] {
                    serde_json::Value::Null => "-".to_owned(),
                    run => format!("{} ({})", text(&run["started_at"]), text(&run["status"])),
                };
                vec![
                    text(&p["name"]),
                    p["steps"].to_string(),
                    last,
                    text(&p["defined_at"]),
                ]
            })
            .collect();
        output::print(&output::table(
            &["PIPELINE", "STEPS", "LAST RUN", "DEFINED AT"],
            &rows,
        ))?;
    }
    Ok(match config.problems.is_empty() {
        true => Exit::Success,
        false => Exit::Environment,
    })
}

/// `lorch pipelines show NAME [--json] [--dot]`: the steps in the order they run.
pub fn show(flag: Option<&Path>, name: &str, json: bool, dot: bool) -> Result<Exit> {
    let config = read_config(flag)?;
    let pipeline = find(&config, name)?;
    let order = pipeline.order().unwrap_or_default();
    let steps: Vec<&crate::config::Step> = order.iter().map(|&i| &pipeline.steps[i]).collect();
    if dot {
        output::print(&dot_graph(name, &steps))?;
    } else if json {
        output::print_json(&json!({
            "name": name,
            "defined_at": pipeline.defined_at,
            "steps": steps,
        }))?;
    } else {
        let mut rows = Vec::new();
        for (n, step) in steps.iter().enumerate() {
            let mut notes = Vec::new();
            if let Some(account) = &step.options.account {
                notes.push(format!("account {account}"));
            }
            if step.continue_on_failure {
                notes.push("continue_on_failure".to_owned());
            }
            let needs = match step.needs.is_empty() {
                true => "-".to_owned(),
                false => step.needs.join(", "),
            };
            rows.push(vec![
                format!("{}.", n + 1),
                step.name.clone(),
                step.job.get_ref().clone(),
                needs,
                notes.join(", "),
            ]);
        }
        let mut text = format!(
            "pipeline {name} ({}), {} steps\n",
            pipeline.defined_at,
            steps.len()
        );
        text.push_str(&output::table(&["", "STEP", "JOB", "NEEDS", ""], &rows));
        output::print(&text)?;
    }
    Ok(Exit::Success)
}

/// The steps as a Graphviz digraph: an edge from each need to the step that needs it.
fn dot_graph(name: &str, steps: &[&crate::config::Step]) -> String {
    let quote = |text: &str| text.replace('\\', "\\\\").replace('"', "\\\"");
    let mut text = format!("digraph \"{}\" {{\n  rankdir=LR;\n", quote(name));
    for step in steps {
        let (id, job) = (quote(&step.name), quote(step.job.get_ref()));
        text.push_str(&format!(
            "  \"{id}\" [shape=box, label=\"{id}\\n{job}\"];\n"
        ));
    }
    for step in steps {
        for need in &step.needs {
            text.push_str(&format!(
                "  \"{}\" -> \"{}\";\n",
                quote(need),
                quote(&step.name)
            ));
        }
    }
    text.push_str("}\n");
    text
}
