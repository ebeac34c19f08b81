//! Transcript search on Postgres, matching what SQLite's FTS5 (`unicode61 remove_diacritics`)
//! finds: a line's words are folded here (compatibility-decomposed, marks dropped, lower case,
//! split at anything not a letter or digit) and stored as a `tsvector` built straight from them
//! (`array_to_tsvector`: no text search configuration, so no server locale, is involved); a
//! search is every user word's folded pieces, each a required prefix.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// The folded words of `text`, in order.
pub(super) fn words(text: &str) -> Vec<String> {
    let folded: String = text
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// User words → a `tsquery` (as text, for a `::tsquery` cast) that cannot be a syntax error:
/// each folded piece quoted and matched as a prefix, all required. None when there is no word
/// to search.
pub(super) fn query(text: &str) -> Option<String> {
    let terms: Vec<String> = words(text)
        .into_iter()
        .map(|w| format!("'{}':*", w.replace('\'', "''")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" & "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_folded_and_queries_are_safe() {
        assert_eq!(
            words("The refunded amount, CAFÉ closed!"),
            ["the", "refunded", "amount", "cafe", "closed"]
        );
        assert_eq!(query("refund\"").as_deref(), Some("'refund':*"));
        assert_eq!(
            query("\"unterminated AND (NOT * ^").as_deref(),
            Some("'unterminated':* & 'and':* & 'not':*")
        );
        assert_eq!(query(" ?! "), None);
    }
}
