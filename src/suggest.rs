//! "Did you mean" hints for mistyped names.

/// The candidate closest to `input`, when it is close enough to be worth suggesting: among
/// those Jaro-Winkler finds close (0.8 or more), the fewest edits for their length, so that a
/// shared prefix alone does not win (`retry` is `retries`, not `retry_backoff`).
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|candidate| strsim::jaro_winkler(input, candidate) >= 0.8)
        .map(|candidate| {
            let edits = strsim::normalized_damerau_levenshtein(input, candidate);
            (edits, strsim::jaro_winkler(input, candidate), candidate)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|(_, _, candidate)| candidate)
}

/// ` (did you mean `x`?)` or nothing.
pub fn hint<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(input, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let names = ["extract_gmail", "extract_slack", "canonicalize_email"];
        assert_eq!(closest("extract_gmial", names), Some("extract_gmail"));
        assert_eq!(closest("extract_slak", names), Some("extract_slack"));
        assert_eq!(closest("zzz", names), None);
        assert_eq!(
            hint("ingestr", ["ingester", "canonizer"]),
            " (did you mean `ingester`?)"
        );
        assert_eq!(hint("qqq", ["ingester"]), "");
        // A shared prefix alone does not win: users mean `retries`.
        let keys = [
            "timeout",
            "kill_after",
            "retries",
            "retry_backoff",
            "params",
        ];
        assert_eq!(closest("retry", keys), Some("retries"));
        assert_eq!(closest("retry_backof", keys), Some("retry_backoff"));
    }
}
