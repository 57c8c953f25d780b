//! Every step's plan, checked before anything runs.

use std::path::Path;

use crate::config::{Config, Pipeline};
use crate::error::{Error, Result};
use crate::events::LocalStore;
use crate::lifecycle::StepOf;
use crate::plan;
use crate::plan::RunOptions;
use crate::plugins::Catalog;

use super::{Shared, Step};

/// Every step's plan, checked before anything runs: its job exists, its parameters fit, its
/// window resolves (from its last success too: every step starts from the watermark its job had
/// when the pipeline started). Every mistake is named at its place; with one, nothing runs.
pub fn plan_steps<'a>(
    catalog: &'a Catalog,
    config: &Config,
    pipeline: &'a Pipeline,
    shared: &Shared,
    home: &Path,
    store: &LocalStore,
) -> Result<Vec<Step<'a>>> {
    catalog.report_problems();
    let mut steps = Vec::new();
    let mut problems = Vec::new();
    for step in &pipeline.steps {
        let at = |why: String| {
            let message = format!("pipeline step '{}': {why}", step.name);
            config.problem(step.job.span(), message)
        };
        match plan_step(catalog, pipeline, step, shared, home, store) {
            Ok(planned) => steps.push(planned),
            Err(Error::Usage(why)) => problems.push(at(why)),
            Err(other) => return Err(other),
        }
    }
    match problems.is_empty() {
        true => Ok(steps),
        false => Err(crate::config::problems(problems)),
    }
}

fn plan_step<'a>(
    catalog: &'a Catalog,
    pipeline: &'a Pipeline,
    step: &'a crate::config::Step,
    shared: &Shared,
    home: &Path,
    store: &LocalStore,
) -> Result<Step<'a>> {
    let id = step.job.get_ref();
    let (package, name) = id.split_once('/').unwrap_or_default();
    let job = catalog.find(package, name)?;
    let options = RunOptions {
        account: shared.account.clone(),
        since: shared.since.clone(),
        until: Some(shared.until.clone()),
        ..RunOptions::default()
    };
    let mut options = plan::with_defaults(options, Some(&step.options));
    let resumes = plan::last_success(&options);
    if resumes && options.initial_since.is_none() {
        options.initial_since = shared.initial_since.clone();
    }
    let mut run_plan = plan::plan(job, &options, home.to_owned(), shared.now)?;
    // A carried step does not run: its window is not looked at.
    if resumes && !shared.carried.contains(&step.name) {
        let initial = options.initial_since.as_deref();
        plan::resume_from_last_success(&mut run_plan, store, initial, plan::Covered::Empty)?;
    }
    let needs = step
        .needs
        .iter()
        .filter_map(|n| pipeline.steps.iter().position(|s| &s.name == n))
        .collect();
    Ok(Step {
        name: &step.name,
        job_id: id.clone(),
        needs,
        continue_on_failure: step.continue_on_failure,
        plan: run_plan,
        resumes,
    })
}

/// The steps, each run's plan naming the pipeline run (payload, and `trace_id` unless the step
/// has one of its own).
pub fn steps_with_ids<'a>(mut steps: Vec<Step<'a>>, pipeline: &str, id: &str) -> Vec<Step<'a>> {
    for step in &mut steps {
        step.plan.pipeline = Some(StepOf {
            pipeline: pipeline.to_owned(),
            pipeline_run_id: id.to_owned(),
            step: step.name.to_owned(),
        });
        step.plan.trace_id.get_or_insert_with(|| id.to_owned());
    }
    steps
}
