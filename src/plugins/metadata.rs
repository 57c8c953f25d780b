//! The rules a plugin's metadata must follow before any of its jobs is listed.

use std::collections::HashSet;

use lorch_plugin_api::abi::PluginMetadata;

use crate::params;

/// Package names: `[a-z0-9_-]`; job and parameter names: `[a-z0-9_]`.
fn valid_name(name: &str, hyphens: bool) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || (hyphens && b == b'-')
        })
}

/// Checks names, parameters and defaults; the error names every offending item, so a plugin
/// author fixes them in one go.
pub fn check(metadata: &PluginMetadata) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut ids = HashSet::new();
    for job in &metadata.jobs {
        if !valid_name(&job.package, true) {
            problems.push(format!(
                "package name {:?} must match [a-z0-9_-]+",
                job.package
            ));
        }
        if !valid_name(&job.name, false) {
            problems.push(format!(
                "job name {:?} in package {} must match [a-z0-9_]+",
                job.name, job.package
            ));
        }
        let id = format!("{}/{}", job.package, job.name);
        if !ids.insert(id.clone()) {
            problems.push(format!("job {id} is registered twice"));
        }
        let mut names = HashSet::new();
        for param in &job.params {
            let name = &param.name;
            if !valid_name(name, false) {
                problems.push(format!(
                    "parameter name {name:?} of {id} must match [a-z0-9_]+"
                ));
            }
            if !names.insert(name) {
                problems.push(format!("parameter {name} of {id} is declared twice"));
            }
            let Some(default) = &param.default else {
                continue;
            };
            if param.required {
                problems.push(format!(
                    "parameter {name} of {id} is required and has a default"
                ));
            }
            if let Err(why) = params::parse_value(param.kind, default) {
                problems.push(format!(
                    "default {default:?} of parameter {name} of {id}: {why}"
                ));
            }
        }
    }
    match problems.as_slice() {
        [] => Ok(()),
        [one] => Err(one.clone()),
        all => Err(format!("{} problems: {}", all.len(), all.join("; "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check_json(value: serde_json::Value) -> Result<(), String> {
        check(&serde_json::from_value(value).unwrap())
    }

    #[test]
    fn accepts_good_names() {
        let ok = json!({"jobs": [{"package": "my-pkg_2", "name": "job_1",
            "params": [{"name": "n", "type": "int", "default": "3"}]}]});
        assert_eq!(check_json(ok), Ok(()));
    }

    #[test]
    fn rejects_bad_metadata_naming_the_item() {
        let cases = [
            (
                json!({"jobs": [{"package": "Pkg", "name": "j"}]}),
                "package name \"Pkg\"",
            ),
            (
                json!({"jobs": [{"package": "p", "name": "my-job"}]}),
                "job name \"my-job\"",
            ),
            (
                json!({"jobs": [{"package": "p", "name": ""}]}),
                "job name \"\"",
            ),
            (
                json!({"jobs": [{"package": "p", "name": "j"}, {"package": "p", "name": "j"}]}),
                "p/j is registered twice",
            ),
            (
                json!({"jobs": [{"package": "p", "name": "j", "params": [{"name": "A", "type": "int"}]}]}),
                "parameter name \"A\"",
            ),
            (
                json!({"jobs": [{"package": "p", "name": "j", "params": [{"name": "a", "type": "int"}, {"name": "a", "type": "bool"}]}]}),
                "declared twice",
            ),
            (
                json!({"jobs": [{"package": "p", "name": "j", "params": [{"name": "a", "type": "int", "default": "x"}]}]}),
                "default \"x\" of parameter a of p/j",
            ),
            (
                json!({"jobs": [{"package": "p", "name": "j", "params": [{"name": "a", "type": "int", "default": "1", "required": true}]}]}),
                "required and has a default",
            ),
        ];
        let every = json!({"jobs": [{"package": "Pkg", "name": "my-job", "params": [
            {"name": "a", "type": "int", "default": "x"},
            {"name": "a", "type": "bool", "required": true, "default": "1"}]}]});
        let err = check_json(every).unwrap_err();
        for expected in [
            "5 problems: ",
            "package name \"Pkg\"",
            "job name \"my-job\"",
            "default \"x\"",
            "declared twice",
            "required and has a default",
        ] {
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
        for (metadata, expected) in cases {
            let err = check_json(metadata).unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }
}
