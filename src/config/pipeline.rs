//! `[pipeline.NAME]` (docs/pipelines.md): its steps, read and checked one by one and then
//! together (unique names, `needs` that name steps, no cycle), and their order.

use std::path::Path;
use toml::Spanned;

use super::fields::*;
use super::*;

impl Config {
    /// A `[pipeline.NAME]` entry, its steps checked one by one and then together: unique names,
    /// `needs` that name steps, no cycle.
    pub(super) fn pipeline(
        &self,
        name: &Spanned<String>,
        raw: Spanned<RawPipeline>,
    ) -> Result<Pipeline, Vec<Problem>> {
        let key = format!("pipeline {}", name.get_ref());
        let mut problems = Vec::new();
        if let Err(why) = check_pipeline_name(name.get_ref()) {
            problems.push(self.problem(name.span(), format!("{key}: {why}")));
        }
        let span = raw.span();
        let raw = raw.into_inner();
        if raw.steps.is_empty() {
            problems.push(self.problem(
                span.clone(),
                format!(
                    "{key}: no steps; add one with [[pipeline.{}.steps]] and job = \"PACKAGE/JOB\"",
                    name.get_ref()
                ),
            ));
        }
        // Every step's name, a step with a mistake included: what needs it is not named again.
        let declared: Vec<String> = raw.steps.iter().map(declared_name).collect();
        let mut steps = Vec::new();
        for (i, table) in raw.steps.into_iter().enumerate() {
            let step_key = format!("{key}: step {}", i + 1);
            let mut fields = Fields::new(self, &step_key, table);
            let step = fields.step();
            let step_problems = fields.finish(STEP_KEYS);
            if step_problems.is_empty()
                && let Some(step) = step
            {
                steps.push((i, step));
            }
            problems.extend(step_problems);
        }
        for (i, step) in &steps {
            if let Some(first) = declared[..*i].iter().position(|n| *n == step.name) {
                problems.push(self.problem(
                    step.name_at.clone(),
                    format!(
                        "{key}: step {}: the name '{}' is taken by step {}; give one of them another with name = \"...\"",
                        i + 1,
                        step.name,
                        first + 1
                    ),
                ));
            }
            for need in step.needs.iter().filter(|n| !declared.contains(n)) {
                let hint = crate::suggest::hint(need, declared.iter().map(String::as_str));
                problems.push(self.problem(
                    step.needs_at.clone(),
                    format!(
                        "{key}: step '{}': needs '{need}', which is not a step of this pipeline{hint}; its steps: {}",
                        step.name,
                        declared.join(", ")
                    ),
                ));
            }
        }
        let steps = steps.into_iter().map(|(_, step)| step).collect();
        let pipeline = Pipeline {
            defined_at: format!(
                "{}:{}",
                self.path.as_deref().unwrap_or(Path::new("")).display(),
                line_column(&self.text, name.span().start).0
            ),
            steps,
        };
        if problems.is_empty()
            && let Err(cycle) = pipeline.order()
        {
            problems.push(self.problem(
                name.span(),
                format!("{key}: its steps form a cycle: {}", cycle.join(" → ")),
            ));
        }
        match problems.is_empty() {
            true => Ok(pipeline),
            false => Err(problems),
        }
    }
}

impl Fields<'_> {
    /// A pipeline step; `None` when a key it needs is missing or wrong.
    pub(super) fn step(&mut self) -> Option<Step> {
        let job = self.required("job", "\"ingester/extract_gmail\"");
        if let Some(job) = &job
            && let Err(why) = check_job_id(job.get_ref())
        {
            self.problem(job.span(), format!("job: {why}"));
        }
        let name = self.checked("name", check_pipeline_name);
        let needs_at = self
            .table
            .get("needs")
            .map_or(self.span.clone(), |v| v.span());
        let needs = self.table.remove("needs").and_then(|value| {
            let span = value.span();
            let names = match value.into_inner() {
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>(),
                _ => None,
            };
            if names.is_none() {
                self.problem(
                    span,
                    "needs: expected a list of step names such as [\"extract\"]".to_owned(),
                );
            }
            names
        });
        let continue_on_failure = self.table.remove("continue_on_failure").and_then(|value| {
            let span = value.span();
            let flag = value.get_ref().as_bool();
            if flag.is_none() {
                self.problem(
                    span,
                    format!(
                        "continue_on_failure: expected true or false, found {}",
                        value.get_ref()
                    ),
                );
            }
            flag
        });
        let options = self.run_options();
        let job = job?;
        let default_name = job
            .get_ref()
            .split_once('/')
            .map_or("", |(_, j)| j)
            .to_owned();
        let name_at = name.as_ref().map_or(job.span(), |n| n.span());
        Some(Step {
            name: name.map_or(default_name, Spanned::into_inner),
            name_at,
            needs_at,
            job,
            needs: needs.unwrap_or_default(),
            continue_on_failure: continue_on_failure.unwrap_or(false),
            options,
        })
    }
}

/// The name a step table declares: its `name`, else its job's name.
pub(super) fn declared_name(table: &Spanned<RawTable>) -> String {
    let text = |key: &str| table.get_ref().get(key).and_then(|v| v.get_ref().as_str());
    match (text("name"), text("job")) {
        (Some(name), _) => name.to_owned(),
        (None, Some(job)) => job.split_once('/').map_or(job, |(_, j)| j).to_owned(),
        (None, None) => String::new(),
    }
}

/// A pipeline or step name: lowercase letters, digits, `_` and `-`.
pub(super) fn check_pipeline_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    match ok {
        true => Ok(()),
        false => Err(format!(
            "'{name}' is not a name lorch accepts: lowercase letters, digits, _ and -"
        )),
    }
}

impl Pipeline {
    /// The indexes of the steps in an order where each comes after every step it needs (each
    /// step in file order, preceded by what it needs that is not listed yet), or the steps of a
    /// cycle, its first step again at the end.
    pub fn order(&self) -> Result<Vec<usize>, Vec<String>> {
        let index = |name: &str| self.steps.iter().position(|s| s.name == name);
        // 0: not visited, 1: on the current path, 2: done.
        let mut state = vec![0u8; self.steps.len()];
        let mut order = Vec::with_capacity(self.steps.len());
        let mut path = Vec::new();
        fn visit(
            pipeline: &Pipeline,
            i: usize,
            state: &mut [u8],
            path: &mut Vec<usize>,
            order: &mut Vec<usize>,
            index: &dyn Fn(&str) -> Option<usize>,
        ) -> Result<(), Vec<String>> {
            match state[i] {
                2 => return Ok(()),
                1 => {
                    let from = path.iter().position(|&p| p == i).unwrap_or(0);
                    let mut cycle: Vec<String> = path[from..]
                        .iter()
                        .map(|&p| pipeline.steps[p].name.clone())
                        .collect();
                    cycle.push(pipeline.steps[i].name.clone());
                    return Err(cycle);
                }
                _ => {}
            }
            state[i] = 1;
            path.push(i);
            for need in &pipeline.steps[i].needs {
                if let Some(n) = index(need) {
                    visit(pipeline, n, state, path, order, index)?;
                }
            }
            path.pop();
            state[i] = 2;
            order.push(i);
            Ok(())
        }
        for i in 0..self.steps.len() {
            visit(self, i, &mut state, &mut path, &mut order, &index)?;
        }
        Ok(order)
    }
}
