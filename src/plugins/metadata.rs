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

/// Checks names, parameters and defaults; the error names the first offending item.
pub fn check(metadata: &PluginMetadata) -> Result<(), String> {
    let mut ids = HashSet::new();
    for job in &metadata.jobs {
        if !valid_name(&job.package, true) {
            return Err(format!(
                "package name {:?} must match [a-z0-9_-]+",
                job.package
            ));
        }
        if !valid_name(&job.name, false) {
            return Err(format!(
                "job name {:?} in package {} must match [a-z0-9_]+",
                job.name, job.package
            ));
        }
        let id = format!("{}/{}", job.package, job.name);
        if !ids.insert(id.clone()) {
            return Err(format!("job {id} is registered twice"));
        }
        let mut names = HashSet::new();
        for param in &job.params {
            if !valid_name(&param.name, false) {
                return Err(format!(
                    "parameter name {:?} of {id} must match [a-z0-9_]+",
                    param.name
                ));
            }
            if !names.insert(&param.name) {
                return Err(format!(
                    "parameter {} of {id} is declared twice",
                    param.name
                ));
            }
            if let Some(default) = &param.default {
                if param.required {
                    return Err(format!(
                        "parameter {} of {id} is required and has a default",
                        param.name
                    ));
                }
                params::parse_value(param.kind, default).map_err(|why| {
                    format!(
                        "default {default:?} of parameter {} of {id}: {why}",
                        param.name
                    )
                })?;
            }
        }
    }
    Ok(())
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
        for (metadata, expected) in cases {
            let err = check_json(metadata).unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }
}
