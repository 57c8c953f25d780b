//! Example lorch job package `canonizer`: turns email addresses into one canonical form so the
//! same person is counted once.
//!
//! The crate is both a plugin (`cdylib`) and a library (`rlib`): `examples/custom-lorch` links it
//! into its own `lorch` binary, where the same [`job!`](lorch_plugin_api::job!) registration
//! makes it a built-in job.

use std::collections::BTreeSet;

use lorch_plugin_api::{Args, Context, JobError, JobResult, ParamSpec, Value, json};

lorch_plugin_api::export_plugin!();

lorch_plugin_api::job! {
    /// Canonicalizes the email addresses of a contact list.
    ///
    /// Lower-cases and trims each address, drops `+tags`, and for Gmail addresses drops the
    /// dots and maps googlemail.com to gmail.com. Emits `canonizer.emails_canonicalized` with
    /// the number of addresses read, changed and distinct after canonicalization. Reads
    /// `--param input=PATH` (JSON Lines with an `email` field) or the bundled sample.
    package = "canonizer",
    name = "canonicalize_email",
    params = [
        ParamSpec::string("input").help("Contacts to read (JSON Lines with an `email` field); default: the bundled sample"),
        ParamSpec::bool("keep_tags").default("false").help("Keep `+tag` suffixes"),
    ],
    run = canonicalize_email,
}

fn canonicalize_email(ctx: &Context, args: &Args) -> JobResult {
    let (source, text) = match args.params.string("input") {
        Some(path) => (
            path.to_owned(),
            std::fs::read_to_string(path)
                .map_err(|e| JobError::from(e).context(format!("cannot read {path}")))?,
        ),
        None => (
            "bundled sample".to_owned(),
            include_str!("../data/contacts.jsonl").to_owned(),
        ),
    };
    let keep_tags = args.params.bool("keep_tags").unwrap_or(false);
    let (mut read, mut changed, mut distinct) = (0, 0, BTreeSet::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value = serde_json::from_str(line)?;
        let Some(email) = record["email"].as_str() else {
            continue;
        };
        let canonical = canonical_email(email, keep_tags);
        read += 1;
        changed += usize::from(canonical != email);
        distinct.insert(canonical);
    }
    ctx.info(format!(
        "{read} addresses from {source}: {changed} changed, {} distinct",
        distinct.len()
    ));
    ctx.emit(
        "canonizer.emails_canonicalized",
        json!({ "source": source, "read": read, "changed": changed, "distinct": distinct.len() }),
    )?;
    Ok(())
}

/// The canonical form of an address; text without an `@` is only trimmed and lower-cased.
pub fn canonical_email(email: &str, keep_tags: bool) -> String {
    let email = email.trim().to_lowercase();
    let Some((local, domain)) = email.rsplit_once('@') else {
        return email;
    };
    let local = if keep_tags {
        local
    } else {
        local.split('+').next().unwrap_or(local)
    };
    match domain {
        "gmail.com" | "googlemail.com" => format!("{}@gmail.com", local.replace('.', "")),
        _ => format!("{local}@{domain}"),
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_email;

    #[test]
    fn canonical_forms() {
        assert_eq!(
            canonical_email(" Alice+work@Example.com ", false),
            "alice@example.com"
        );
        assert_eq!(
            canonical_email("alice+work@example.com", true),
            "alice+work@example.com"
        );
        assert_eq!(
            canonical_email("Bob.Builder@googlemail.com", false),
            "bobbuilder@gmail.com"
        );
        assert_eq!(
            canonical_email("bob.builder@example.com", false),
            "bob.builder@example.com"
        );
        assert_eq!(canonical_email("not an address", false), "not an address");
    }
}
