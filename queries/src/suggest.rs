//! "Did you mean" for a name the user typed (an action, a key, a column, a value), from the
//! names it could have been: the closest by Jaro-Winkler similarity, as clap and cargo do.

/// ` (did you mean `x`?)`, or empty when no candidate is close.
pub fn did_you_mean<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match closest(typed, candidates) {
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

/// The candidate closest to `typed`, if any is close enough to be what was meant.
pub fn closest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| *c != typed)
        .map(|c| (strsim::jaro_winkler(typed, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_the_closest_name_only_when_close() {
        assert_eq!(did_you_mean("generate_datset", ["generate_dataset", "analyse"]), " (did you mean `generate_dataset`?)");
        assert_eq!(
            did_you_mean("moderatly_sensitive", ["highly_sensitive", "moderately_sensitive"]),
            " (did you mean `moderately_sensitive`?)"
        );
        assert_eq!(did_you_mean("xyz", ["generate_dataset", "analyse"]), "");
        assert_eq!(did_you_mean("a", std::iter::empty()), "");
    }
}
