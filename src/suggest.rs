//! "Did you mean" hints for mistyped names.

/// The candidate closest to `input`, when it is close enough to be worth suggesting.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(input, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
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
    }
}
