//! `--param KEY=VALUE`: checked against the job's declared parameters before anything runs.

use lorch_plugin_api::ParamKind;
use lorch_plugin_api::abi::{JobMetadata, ParamMetadata};
use serde_json::{Map, Value};

use crate::suggest;

/// An account (`--account`, `account =` in lorch.toml): never empty, since no account is
/// written by leaving it out, and an empty one would be a second name for it (a variable left
/// unset in a cron line, `--account "$ACCT"`, gives one); no control characters, which would
/// reach lock file names, metric labels and terminals.
pub fn check_account(account: &str) -> Result<(), String> {
    if account.is_empty() {
        return Err("an account cannot be empty: leave --account out (or `account` out of lorch.toml) for no account; in a cron line, check the variable it names is set".to_owned());
    }
    if let Some(c) = account.chars().find(|c| c.is_control()) {
        return Err(format!(
            "an account cannot hold control characters (found {})",
            c.escape_default()
        ));
    }
    Ok(())
}

/// [`check_account`] as a command-line value parser.
pub fn account(text: &str) -> Result<String, String> {
    check_account(text).map(|()| text.to_owned())
}

/// Parses one value as `kind`; the error names the expected form.
pub fn parse_value(kind: ParamKind, text: &str) -> Result<Value, String> {
    let parsed = match kind {
        ParamKind::String => Some(Value::from(text)),
        ParamKind::Int => match text.trim().parse::<i64>() {
            Ok(n) => Some(Value::from(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
                ) =>
            {
                return Err(format!(
                    "{} is out of range for an integer (from {} to {})",
                    text.trim(),
                    i64::MIN,
                    i64::MAX
                ));
            }
            Err(_) => None,
        },
        ParamKind::Float => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::from),
        ParamKind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(Value::Bool(true)),
            "false" | "no" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
    };
    parsed.ok_or_else(|| {
        let expected = match kind {
            ParamKind::String => "text",
            ParamKind::Int => "an integer such as 42",
            ParamKind::Float => "a number such as 0.5",
            ParamKind::Bool => "true or false (also yes/no, 1/0)",
        };
        format!("expected {expected}")
    })
}

/// Turns the `--param` flags into typed values with the declared defaults filled in, or says
/// exactly which flag is wrong and what the job accepts.
pub fn resolve(job: &JobMetadata, given: &[String]) -> Result<Map<String, Value>, String> {
    let id = format!("{}/{}", job.package, job.name);
    let mut values = Map::new();
    for flag in given {
        let Some((key, text)) = flag.split_once('=') else {
            return Err(format!(
                "invalid --param '{flag}': expected KEY=VALUE{}",
                accepted(job)
            ));
        };
        let key = key.trim();
        let Some(param) = job.params.iter().find(|p| p.name == key) else {
            let hint = suggest::hint(key, job.params.iter().map(|p| p.name.as_str()));
            return Err(format!(
                "{id} has no parameter '{key}'{hint}{}",
                accepted(job)
            ));
        };
        if values.contains_key(key) {
            return Err(format!("--param {key} is given more than once"));
        }
        let value = parse_value(param.kind, text).map_err(|why| {
            format!(
                "invalid value '{text}' for --param {key} ({} parameter of {id}): {why}",
                param.kind.as_str()
            )
        })?;
        values.insert(key.to_owned(), value);
    }
    for param in &job.params {
        if values.contains_key(&param.name) {
            continue;
        }
        if let Some(default) = &param.default {
            // Defaults were checked when the plugin was loaded.
            if let Ok(value) = parse_value(param.kind, default) {
                values.insert(param.name.clone(), value);
            }
        } else if param.required {
            return Err(format!(
                "{id} requires --param {}=<{}>{}",
                param.name,
                param.kind.as_str(),
                if param.help.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", param.help)
                }
            ));
        }
    }
    Ok(values)
}

/// A sentence listing the declared parameters, for error messages.
fn accepted(job: &JobMetadata) -> String {
    if job.params.is_empty() {
        return "; this job takes no --param".to_owned();
    }
    let list: Vec<String> = job.params.iter().map(signature).collect();
    format!("; accepted: {}", list.join(", "))
}

/// `limit=<int>`, as `jobs show` and error messages write a parameter.
pub fn signature(param: &ParamMetadata) -> String {
    format!("{}=<{}>", param.name, param.kind.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job() -> JobMetadata {
        serde_json::from_value(json!({
            "package": "pkg", "name": "job",
            "params": [
                {"name": "limit", "type": "int", "default": "100", "help": "Max"},
                {"name": "ratio", "type": "float"},
                {"name": "dry", "type": "bool", "default": "false"},
                {"name": "label", "type": "string", "required": true, "help": "A label"},
            ]
        }))
        .unwrap()
    }

    fn given(flags: &[&str]) -> Vec<String> {
        flags.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn typed_values_and_defaults() {
        let values = resolve(&job(), &given(&["label=a=b", "ratio=0.25"])).unwrap();
        assert_eq!(
            Value::Object(values),
            json!({"limit": 100, "ratio": 0.25, "dry": false, "label": "a=b"})
        );
        let values = resolve(&job(), &given(&["label=", "limit=-3", "dry=YES"])).unwrap();
        assert_eq!(
            Value::Object(values),
            json!({"limit": -3, "dry": true, "label": ""})
        );
    }

    #[test]
    fn errors_name_the_flag_and_what_is_accepted() {
        let err = resolve(&job(), &given(&["label=x", "limt=5"])).unwrap_err();
        assert!(
            err.contains("pkg/job has no parameter 'limt' (did you mean `limit`?)"),
            "{err}"
        );
        assert!(
            err.contains("accepted: limit=<int>, ratio=<float>, dry=<bool>, label=<string>"),
            "{err}"
        );

        let err = resolve(&job(), &given(&["label=x", "limit=many"])).unwrap_err();
        assert_eq!(
            err,
            "invalid value 'many' for --param limit (int parameter of pkg/job): expected an integer such as 42"
        );

        let err = resolve(&job(), &given(&["label=x", "ratio=NaN"])).unwrap_err();
        assert!(err.contains("expected a number"), "{err}");

        let err = resolve(&job(), &given(&["label=x", "dry=maybe"])).unwrap_err();
        assert!(err.contains("expected true or false"), "{err}");

        let err = resolve(&job(), &given(&[])).unwrap_err();
        assert_eq!(err, "pkg/job requires --param label=<string> (A label)");

        let err = resolve(&job(), &given(&["label"])).unwrap_err();
        assert!(
            err.starts_with("invalid --param 'label': expected KEY=VALUE"),
            "{err}"
        );

        let err = resolve(&job(), &given(&["label=a", "label=b"])).unwrap_err();
        assert_eq!(err, "--param label is given more than once");

        let none: JobMetadata =
            serde_json::from_value(json!({"package": "p", "name": "j"})).unwrap();
        let err = resolve(&none, &given(&["x=1"])).unwrap_err();
        assert_eq!(err, "p/j has no parameter 'x'; this job takes no --param");
    }
}
